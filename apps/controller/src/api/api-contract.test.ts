// The REST API's contract with its clients (issue 16): bounded numeric query parameters,
// every error in Fleet's {error: {code, message}} shape, label syntax, browser hardening
// headers, and an OpenAPI document that documents the error answers it gives.
import { AccountService } from '../accounts/account-service.ts';
import { computeOverview } from '../stats/overview.ts';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApiServer } from './api-server.ts';
import type { ApiContext } from './context.ts';
import { SettingsService } from '../settings.ts';
import { tempDb, type TempDb } from '../storage/testing.ts';
import type { FastifyInstance } from 'fastify';
import { VmSecrets } from '../secrets/vm-secrets.ts';
import Ajv from 'ajv';
import { MAC_PATTERN } from '@fleet/api';
import { SessionBroker } from '../sessions/session-broker.ts';
import type { WorkerStreams } from '../grpc/worker-streams.ts';
import { coreServices } from './testing.ts';

const log = pino({ level: 'silent' });
let t: TempDb;
let app: FastifyInstance;
let admin: { authorization: string };
let reader: { authorization: string };

beforeAll(async () => {
  t = await tempDb();
  const db = t.db;
  const { metrics, bus, events, vms, workers, tokens } = coreServices(db, log);
  const ctx: ApiContext = {
    vms, workers, tokens, events, bus, metrics,
    settings: new SettingsService(db, 'pack'),
    grpcAdvertiseAddress: '127.0.0.1:7443',
    accounts: new AccountService(db, events, tokens),
    overview: () => computeOverview({ db, listWorkers: () => workers.list() }),
    info: async () => { throw new Error('unused'); },
    sessions: new SessionBroker({ db, streams: {} as unknown as WorkerStreams, bus, events, secrets: VmSecrets.ephemeral(), log }),
  };
  app = await buildApiServer(ctx, log);
  admin = { authorization: `Bearer ${(await tokens.createApiToken({ name: 'admin', roles: ['admin'] }, 'test')).token}` };
  reader = { authorization: `Bearer ${(await tokens.createApiToken({ name: 'reader', roles: ['read'] }, 'test')).token}` };
  expect((await app.inject({ method: 'POST', url: '/v1/vms', headers: admin, payload: { name: 'existing', image: 'img' } })).statusCode).toBe(201);
});
afterAll(async () => {
  await app?.close();
  await t?.close();
});

/** A Fleet-shaped client error: status, {error: {code, message}} and nothing else, JSON. */
function expectFleetError(r: { statusCode: number; headers: Record<string, unknown>; body: string }, status: number, message?: RegExp) {
  expect(r.statusCode, r.body).toBe(status);
  expect(String(r.headers['content-type'])).toMatch(/^application\/json/);
  const body = JSON.parse(r.body) as { error: { code: string; message: string } };
  expect(Object.keys(body)).toEqual(['error']);
  expect(typeof body.error.code).toBe('string');
  expect(body.error.message.length).toBeGreaterThan(5);
  expect(body.error.message).not.toMatch(/\n\s+at /); // never a stack trace
  if (message) expect(body.error.message).toMatch(message);
  return body.error;
}

describe('numeric query parameters are bounded', () => {
  for (const base of ['/v1/events', '/v1/vms/existing/events']) {
    for (const q of ['limit=1e400', 'limit=Infinity', 'limit=-Infinity', 'limit=NaN', 'limit=1e3', 'limit=1001', 'limit=0x10', 'limit=1.5', 'cursor=99999999999999999999', 'cursor=1e400', 'cursor=9007199254740992', 'cursor=Infinity', 'cursor=-1', 'cursor=']) {
      it(`GET ${base}?${q} is a 400 naming the parameter`, async () => {
        const r = await app.inject({ url: `${base}?${q}`, headers: reader });
        expectFleetError(r, 400, new RegExp(q.split('=')[0]!));
      });
    }
    it(`GET ${base} accepts the largest safe cursor and limit 1000`, async () => {
      expect((await app.inject({ url: `${base}?cursor=9007199254740991&limit=1000`, headers: reader })).statusCode).toBe(200);
    });
  }
});

describe('every error is Fleet-shaped', () => {
  it('bad percent-encoding in the path (GET /v1/vms/%ZZ) is a 400 bad_url', async () => {
    const e = expectFleetError(await app.inject({ url: '/v1/vms/%ZZ', headers: reader }), 400, /percent-encoding/);
    expect(e.code).toBe('bad_url');
  });

  it('an over-long path segment is a 414 uri_too_long that says so', async () => {
    // Up to 2 KiB a long segment reaches the route and fails its validation (400 naming the parameter) ...
    expectFleetError(await app.inject({ url: `/v1/vms/${'a'.repeat(500)}`, headers: reader }), 400, /params\/name/);
    expectFleetError(await app.inject({ method: 'POST', url: `/v1/workers/${'a'.repeat(500)}/drain`, headers: admin }), 400, /params\/name/);
    // ... beyond, the router refuses it whatever the method.
    const e = expectFleetError(await app.inject({ method: 'POST', url: `/v1/workers/${'a'.repeat(3000)}/drain`, headers: admin }), 414, /too long/);
    expect(e.code).toBe('uri_too_long');
  });

  it('a body over 1 MiB is a 413, a non-JSON content type a 415, malformed JSON a 400 invalid_json', async () => {
    const big = await app.inject({ method: 'POST', url: '/v1/vms', headers: { ...admin, 'content-type': 'application/json' }, payload: JSON.stringify({ name: 'x', image: 'y'.repeat(1024 * 1024 + 10) }) });
    expect(expectFleetError(big, 413, /1 MiB/).code).toBe('payload_too_large');
    const xml = await app.inject({ method: 'POST', url: '/v1/vms', headers: { ...admin, 'content-type': 'application/xml' }, payload: '<vm/>' });
    expect(expectFleetError(xml, 415, /application\/json/).code).toBe('unsupported_media_type');
    const broken = await app.inject({ method: 'POST', url: '/v1/vms', headers: { ...admin, 'content-type': 'application/json' }, payload: '{"name": "a", ' });
    expect(expectFleetError(broken, 400, /not valid JSON/).code).toBe('invalid_json');
    const empty = await app.inject({ method: 'POST', url: '/v1/vms', headers: { ...admin, 'content-type': 'application/json' }, payload: '' });
    expect(expectFleetError(empty, 400).code).toBe('invalid_json');
  });

  it('unknown routes are a 404 not_found naming the path', async () => {
    expect(expectFleetError(await app.inject({ method: 'POST', url: '/v1/nothing-here', headers: admin }), 404, /\/v1\/nothing-here/).code).toBe('not_found');
    expect(expectFleetError(await app.inject({ url: '/v1/nothing-here', headers: admin }), 404).code).toBe('not_found');
  });

  it('validation errors are 400 invalid_request; an unknown query parameter is named', async () => {
    expect(expectFleetError(await app.inject({ url: '/v1/vms?sate=running', headers: reader }), 400, /unknown query parameter "sate"/).code).toBe('invalid_request');
    expect(expectFleetError(await app.inject({ url: '/v1/events?bogus=1', headers: reader }), 400, /"bogus"/).code).toBe('invalid_request');
    expectFleetError(await app.inject({ method: 'POST', url: '/v1/vms', headers: admin, payload: { name: 'x', image: 'i', gpus: 2 } }), 400, /unknown property "gpus"/);
  });

  it('every 401 carries WWW-Authenticate: Bearer realm="fleet"', async () => {
    for (const headers of [{}, { authorization: 'Basic abc' }, { authorization: 'Bearer fleet_nope' }]) {
      const r = await app.inject({ url: '/v1/vms', headers });
      expectFleetError(r, 401);
      expect(r.headers['www-authenticate']).toBe('Bearer realm="fleet"');
    }
    const login = await app.inject({ method: 'POST', url: '/v1/login', payload: { username: 'nobody', password: 'wrong-password' } });
    expectFleetError(login, 401);
    expect(login.headers['www-authenticate']).toBe('Bearer realm="fleet"');
  });

  it('API responses carry X-Content-Type-Options: nosniff', async () => {
    expect((await app.inject({ url: '/v1/vms', headers: reader })).headers['x-content-type-options']).toBe('nosniff');
    expect((await app.inject({ url: '/v1/vms' })).headers['x-content-type-options']).toBe('nosniff');
  });
});

describe('labels and selectors use Kubernetes label syntax', () => {
  const create = (extra: Record<string, unknown>) => app.inject({ method: 'POST', url: '/v1/vms', headers: admin, payload: { name: 'lbl', image: 'img', ...extra } });
  const bad: [string, Record<string, unknown>][] = [
    ['a 500 000-character key', { ['k'.repeat(500_000)]: 'v' }],
    ['a key with a space', { 'a b': 'v' }],
    ['a key with quotes', { '"k"': 'v' }],
    ['a <script> key', { '<script>': 'v' }],
    ['an empty key', { '': 'v' }],
    ['a 64-character name', { ['k'.repeat(64)]: 'v' }],
    ['an upper-case prefix', { 'Example.com/k': 'v' }],
    ['an empty name after the prefix', { 'example.com/': 'v' }],
    ['a prefix over 253 characters', { [`${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}/k`]: 'v' }],
    ['a nested object value', { k: { nested: 'x' } }],
    ['an array value', { k: ['x'] }],
    ['a number value', { k: 1 }],
    ['a 64-character value', { k: 'v'.repeat(64) }],
    ['a value with a space', { k: 'a b' }],
    ['65 labels', Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']))],
  ];
  for (const field of ['labels', 'selector']) {
    it.each(bad)(`${field} with %s is a 400`, async (_what, value) => {
      expectFleetError(await create({ [field]: value }), 400, new RegExp(field));
    });
  }
  it('says what is wrong with a key', async () => {
    expectFleetError(await create({ labels: { 'a b': 'v' } }), 400, /body\/labels: label key "a b" must be an optional DNS-subdomain prefix/);
    expectFleetError(await create({ selector: { k: 'a b' } }), 400, /body\/selector\/k: label value "a b" must be empty or at most 63/);
    expectFleetError(await create({ labels: { k: { x: 1 } } }), 400, /body\/labels\/k must be string/);
  });
  it('PATCH and image prefetch selectors are checked the same way', async () => {
    expectFleetError(await app.inject({ method: 'PATCH', url: '/v1/vms/existing', headers: admin, payload: { selector: { 'a b': 'x' } } }), 400, /selector/);
    expectFleetError(await app.inject({ method: 'PATCH', url: '/v1/vms/existing', headers: admin, payload: { labels: { k: { x: 1 } } } }), 400, /labels/);
  });
  it('valid keys and values are accepted: prefixes, dots, dashes, underscores, empty values, 64 labels', async () => {
    const labels = { 'fleet.example.com/pool': 'ci', 'app.kubernetes.io/name': 'web_1', k: '', ['n'.repeat(63)]: 'v'.repeat(63), 'A-b_c.D': 'X.y-z' };
    const r = await create({ labels, selector: { 'example.com/arch': 'arm64' } });
    expect(r.statusCode, r.body).toBe(201);
    expect(r.json().labels).toEqual(labels);
    const many = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, 'v']));
    expect((await app.inject({ method: 'PATCH', url: '/v1/vms/lbl', headers: admin, payload: { labels: many } })).statusCode).toBe(200);
  });
});

describe('free text that reaches a process or a file has no control characters', () => {
  it.each([['image', { name: 'ctl', image: 'img\u0000x' }], ['image', { name: 'ctl', image: 'img\nx' }], ['image', { name: 'ctl', image: 'img\u007f' }]])('POST /v1/vms with a control character in %s is a 400', async (field, payload) => {
    expectFleetError(await app.inject({ method: 'POST', url: '/v1/vms', headers: admin, payload }), 400, new RegExp(field));
  });
  it('PATCH image too', async () => {
    expectFleetError(await app.inject({ method: 'PATCH', url: '/v1/vms/existing', headers: admin, payload: { image: 'a\u0000b' } }), 400, /image/);
  });
});

describe('network modes and custom MACs (issue 18)', () => {
  const create = (name: string, extra: Record<string, unknown>) => app.inject({ method: 'POST', url: '/v1/vms', headers: admin, payload: { name, image: 'img', ...extra } });
  const badMacs: [string, string, RegExp][] = [
    ['multicast', '01:00:5e:00:00:01', /multicast/],
    ['broadcast', 'ff:ff:ff:ff:ff:ff', /broadcast/],
    ['all zero', '00:00:00:00:00:00', /all zero/],
    ['too short', '02:00:5e:10:00', /not six two-digit hex octets/],
    ['too long', '02:00:5e:10:00:01:02', /not six two-digit hex octets/],
    ['dashes', '02-00-5e-10-00-01', /separate the six octets with ":"/],
    ['dots', '0200.5e10.0001', /separate the six octets with ":"/],
    ['a number', 42 as unknown as string, /mac must be string/],
  ];
  it.each(badMacs)('POST /v1/vms with a %s MAC is a 400 that says why', async (_what, mac, why) => {
    const e = expectFleetError(await create('badmac', { mac }), 400, why);
    expect(e.code).toBe('invalid_request');
    expect(e.message).toMatch(/mac/);
  });
  it('PATCH refuses a bad MAC the same way', async () => {
    expectFleetError(await app.inject({ method: 'PATCH', url: '/v1/vms/existing', headers: admin, payload: { mac: '03:00:00:00:00:01' } }), 400, /body\/mac: MAC "03:00:00:00:00:01" is a multicast address/);
  });
  it('takes an upper-case unicast MAC and returns it lower case; the mode defaults to nat', async () => {
    const r = await create('goodmac', { mac: '02:AB:CD:EF:00:01' });
    expect(r.statusCode, r.body).toBe(201);
    expect(r.json()).toMatchObject({ mac: '02:ab:cd:ef:00:01', macSource: 'custom', network: { mode: 'nat', allow: [], block: [], blockLocal: false } });
    const got = await app.inject({ url: '/v1/vms/goodmac', headers: admin });
    expect(got.json()).toMatchObject({ mac: '02:ab:cd:ef:00:01', network: { mode: 'nat' } });
  });
  it('knows the modes, and refuses rules or a MAC with mode none', async () => {
    expectFleetError(await create('m1', { network: { mode: 'bridged' } }), 400, /network\/mode/);
    expectFleetError(await create('m2', { network: { mode: 'none', allow: ['10.0.0.0/8'] } }), 400, /network mode "none" has no NIC to apply allow to/);
    expectFleetError(await create('m3', { network: { mode: 'none', block: ['10.0.0.0/8'], blockLocal: true } }), 400, /no NIC to apply block, blockLocal to/);
    expectFleetError(await create('m4', { network: { mode: 'none' }, mac: '02:00:00:00:00:01' }), 400, /no NIC to give a MAC to/);
    expect((await app.inject({ url: '/v1/vms/m2', headers: admin })).statusCode).toBe(404); // nothing written
    const ok = await create('m5', { network: { mode: 'host-only', allow: ['@host'] } });
    expect(ok.statusCode, ok.body).toBe(201);
    expect(ok.json().network).toEqual({ mode: 'host-only', allow: ['@host'], block: [], blockLocal: false });
    const patched = await app.inject({ method: 'PATCH', url: '/v1/vms/m5', headers: admin, payload: { network: { mode: 'none', allow: [] } } });
    expect(patched.statusCode, patched.body).toBe(200);
    expect(patched.json()).toMatchObject({ network: { mode: 'none', allow: [] }, mac: null });
  });
  it('documents the fields: the MAC rule, the modes, worker networks, the 409s', async () => {
    const text = (await app.inject({ url: '/v1/openapi.json' })).body;
    const doc = JSON.parse(text) as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
    expect(text).toContain(JSON.stringify(MAC_PATTERN).slice(1, -1));
    expect(text).toMatch(/— the worker's host-only network: the worker and the other VMs/);
    expect(text).toMatch(/"macSource"/);
    expect(text).toMatch(/the VM networks the worker offers/);
    expect(JSON.stringify(doc.paths['/v1/vms/{name}']!['patch']!.responses['409'])).toMatch(/network mode/);
  });
});

describe('the OpenAPI document is honest about errors', () => {
  type Op = { security?: unknown[]; parameters?: { in: string; name: string }[]; requestBody?: unknown; responses: Record<string, { content?: Record<string, { schema: Record<string, unknown> }> }> };
  let doc: { components: { schemas: Record<string, unknown> }; paths: Record<string, Record<string, Op>> };
  beforeAll(async () => {
    doc = (await app.inject({ url: '/v1/openapi.json' })).json();
  });
  const operations = () => Object.entries(doc.paths).flatMap(([p, ops]) => Object.entries(ops).map(([method, op]) => ({ p, method, op })));
  const resolve = (schema: Record<string, unknown>) => (typeof schema['$ref'] === 'string' ? (doc.components.schemas[schema['$ref'].replace('#/components/schemas/', '')] as Record<string, unknown>) : schema);

  it('registers the shared Error schema as a component', () => {
    expect(doc.components.schemas['Error']).toMatchObject({ type: 'object', required: ['error'], properties: { error: { required: ['code', 'message'] } } });
  });

  it('every operation documents its error answers with the error schema', () => {
    expect(operations().length).toBeGreaterThan(20);
    for (const { p, method, op } of operations()) {
      const where = `${method.toUpperCase()} ${p}`;
      const statuses = Object.keys(op.responses);
      const isPublic = Array.isArray(op.security) && op.security.length === 0;
      expect(statuses, where).toContain('400');
      expect(statuses, where).toContain('503');
      if (!isPublic) expect(statuses, where).toEqual(expect.arrayContaining(['401']));
      if (p.includes('{')) expect(statuses, where).toEqual(expect.arrayContaining(['404']));
      if (op.requestBody) expect(statuses, where).toEqual(expect.arrayContaining(['413', '415']));
      for (const status of statuses.filter((s) => Number(s) >= 400)) {
        if (p === '/v1/health' && status === '503') continue; // health answers its own body when degraded
        const schema = op.responses[status]!.content?.['application/json']?.schema;
        expect(schema, `${where} ${status}`).toBeDefined();
        expect((resolve(schema!)['properties'] as Record<string, unknown>)['error'], `${where} ${status}`).toBeDefined();
      }
    }
  });

  it('documents health as public, watch streams as NDJSON, and response schemas for live, host-key and ssh-access', () => {
    expect(doc.paths['/v1/health']!['get']!.security).toEqual([]);
    for (const p of ['/v1/vms', '/v1/vms/{name}']) expect(Object.keys(doc.paths[p]!['get']!.responses['200']!.content!)).toEqual(['application/json', 'application/x-ndjson']);
    expect(Object.keys(doc.paths['/v1/live']!['get']!.responses['200']!.content!)).toEqual(['application/x-ndjson']);
    for (const p of ['/v1/vms/{name}/host-key', '/v1/vms/{name}/ssh-access']) expect(doc.paths[p]!['get']!.responses['200']!.content!['application/json']!.schema).toBeDefined();
  });

  it('keeps the label-key pattern in the document', () => {
    const body = doc.paths['/v1/vms']!['post']!.requestBody as { content: Record<string, { schema: Record<string, unknown> }> };
    const vmCreate = resolve(body.content['application/json']!.schema);
    const labels = (vmCreate['properties'] as Record<string, Record<string, unknown>>)['labels']!;
    expect((labels['propertyNames'] as { pattern: string }).pattern).toMatch(/DNS|a-z0-9/);
    // (OpenAPI output folds patternProperties into additionalProperties: the value rule; propertyNames keeps the key rule)
    expect((labels['additionalProperties'] as { maxLength: number; pattern: string }).maxLength).toBe(63);
  });

  it('VM events document only the filters they apply; every query string refuses unknown parameters', async () => {
    const names = (doc.paths['/v1/vms/{name}/events']!['get']!.parameters ?? []).filter((x) => x.in === 'query').map((x) => x.name).sort();
    expect(names).toEqual(['actor', 'cursor', 'kind', 'limit', 'order']);
    for (const url of ['/v1/vms/existing/events?vm=x', '/v1/workers?x=1', '/v1/info?x=1', '/v1/stats/overview?x=1', '/v1/vms/existing?x=1']) {
      expectFleetError(await app.inject({ url, headers: admin }), 400, /unknown query parameter "(vm|x)"/);
    }
  });

  it('real error answers validate against the schema documented for their route and status', async () => {
    const ajv = new Ajv({ strict: false });
    const samples: [string, string, string, { method?: 'GET' | 'POST' | 'PATCH' | 'DELETE'; headers?: Record<string, string>; payload?: string | object }][] = [
      ['/v1/vms', 'get', '/v1/vms?state=exploded', { headers: reader }],
      ['/v1/vms', 'get', '/v1/vms', {}],
      ['/v1/vms', 'post', '/v1/vms', { method: 'POST', headers: reader, payload: { name: 'x', image: 'i' } }],
      ['/v1/vms', 'post', '/v1/vms', { method: 'POST', headers: admin, payload: { name: 'existing', image: 'i' } }],
      ['/v1/vms', 'post', '/v1/vms', { method: 'POST', headers: { ...admin, 'content-type': 'application/xml' }, payload: '<vm/>' }],
      ['/v1/vms/{name}', 'get', '/v1/vms/ghost', { headers: reader }],
      ['/v1/vms/{name}', 'patch', '/v1/vms/existing', { method: 'PATCH', headers: { ...admin, 'if-match': '"2000-01-01T00:00:00.000Z"' }, payload: { priority: 1 } }],
      ['/v1/events', 'get', '/v1/events?limit=1e400', { headers: reader }],
      ['/v1/tokens', 'post', '/v1/tokens', { method: 'POST', headers: admin, payload: { name: 'reader', roles: ['read'] } }],
      ['/v1/login', 'post', '/v1/login', { method: 'POST', payload: { username: 'nobody', password: 'wrong-password' } }],
    ];
    const seen = new Set<number>();
    for (const [p, method, url, opts] of samples) {
      const r = await app.inject({ url, ...opts });
      expect(r.statusCode, url).toBeGreaterThanOrEqual(400);
      seen.add(r.statusCode);
      const documented = doc.paths[p]![method]!.responses[String(r.statusCode)];
      expect(documented, `${method} ${p} ${r.statusCode} is documented`).toBeDefined();
      const validate = ajv.compile(resolve(documented!.content!['application/json']!.schema));
      expect(validate(r.json()), `${method} ${p} ${r.statusCode}: ${JSON.stringify(validate.errors)}`).toBe(true);
    }
    expect([...seen].sort()).toEqual([400, 401, 403, 404, 409, 412, 415]);
  });
});
