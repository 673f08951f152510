// Idempotency-Key on the REST API, through the real server (buildApiServer) over a temporary
// SQLite database: stored and replayed responses, reuse with another body, in-flight requests,
// 5xx, scoping, expiry, and the crash window between a committed VM and its stored response.
import { AccountService } from '../accounts/account-service.ts';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { migrateDatabase, openDatabase, type FleetDb } from '@fleet/db';
import { EventLog } from '../events/event-log.ts';
import { FleetBus } from '../fleet-bus.ts';
import { Metrics } from '../observability/metrics.ts';
import { VmService } from '../vms/vm-service.ts';
import { TokenRejected, type TokenService } from '../auth/token-service.ts';
import type { WorkerService } from '../workers/worker-service.ts';
import type { WorkerObject } from './schemas.ts';
import { IDEMPOTENCY_TTL_MS, IdempotencyService, canonicalJson, requestHash } from '../idempotency/idempotency-service.ts';
import { buildApiServer } from './api-server.ts';
import type { ApiContext } from './context.ts';
import { VmSecrets } from '../secrets/vm-secrets.ts';

const log = pino({ level: 'silent' });
let dir: string;
let db: FleetDb;
let vms: VmService;
let clock: number;
const apps: FastifyInstance[] = [];

/** drain/resume, controllable: `gate` holds a call, `failNext` makes one throw (a 500). */
const workerCalls: string[] = [];
let gate: Promise<void> | null = null;
let failNext = false;
const workers = {
  list: async () => [],
  getByName: async (name: string) => ({ name }),
  setPaused: async (name: string, paused: boolean) => {
    workerCalls.push(`${name}:${paused}`);
    if (gate) await gate;
    if (failNext) {
      failNext = false;
      throw new Error('database went away');
    }
    return { name, paused };
  },
  view: async (w: { name: string; paused?: boolean }): Promise<WorkerObject> => ({
    id: `id-${w.name}`, name: w.name, status: 'online', connected: true, paused: w.paused ?? false, hostname: 'h', os: 'linux', arch: 'x64',
    version: 't', labels: {}, drivers: ['synthetic'], capacity: { cpus: 4, memoryMib: 4096, vmSlots: 4, macosSlots: 0, natAddresses: 0 },
    used: { cpus: 0, memoryMib: 0, vms: 0, macosVms: 0, natAddresses: 0 }, networks: [], lastSeenAt: null, createdAt: '2026-01-01T00:00:00.000Z', certificateExpiresAt: null,
  }),
} as unknown as WorkerService;

const tokens = {
  authenticate: async (t: string) => {
    if (t === 'alice' || t === 'bob') return { tokenId: t, name: t, roles: ['write'] };
    throw new TokenRejected('unknown token');
  },
} as unknown as TokenService;

/** A controller process: its own IdempotencyService (a restart is a new one on the same database). */
async function controllerProcess(): Promise<{ app: FastifyInstance; idempotency: IdempotencyService }> {
  const events = new EventLog(db);
  const bus = new FleetBus();
  const metrics = new Metrics({ defaultMetrics: false });
  const idempotency = new IdempotencyService(db, { now: () => new Date(clock) });
  const ctx = {
    db, vms, workers, tokens, events, bus, metrics, idempotency,
    accounts: new AccountService(db, events, tokens),
    settings: { schedulerProfile: async () => 'pack' },
    grpcAdvertiseAddress: '127.0.0.1:7443',
    info: async () => ({}),
  } as unknown as ApiContext;
  const app = await buildApiServer(ctx, log);
  apps.push(app);
  return { app, idempotency };
}

const spec = { name: 'web-1', image: 'ubuntu:24.04', cpus: 1, memoryMib: 512 };
const post = (app: FastifyInstance, url: string, body: unknown, opts: { key?: string; token?: string } = {}) =>
  app.inject({
    method: 'POST',
    url,
    headers: { authorization: `Bearer ${opts.token ?? 'alice'}`, ...(opts.key !== undefined ? { 'idempotency-key': opts.key } : {}) },
    ...(body !== undefined ? { payload: body as object } : {}),
  });

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-idem-'));
  const url = `file:${path.join(dir, 'fleet.db')}`;
  await migrateDatabase(url);
  db = openDatabase({ url });
  vms = new VmService(db, new EventLog(db), new FleetBus(), new Metrics({ defaultMetrics: false }), VmSecrets.ephemeral());
  clock = Date.parse('2026-01-01T00:00:00Z');
  workerCalls.length = 0;
  gate = null;
  failNext = false;
});
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close();
  await db.$disconnect();
  await rm(dir, { recursive: true, force: true });
});

describe('Idempotency-Key on POST /v1/vms', () => {
  it('stores the first response and replays it (same status and body, Idempotent-Replayed: true)', async () => {
    const { app } = await controllerProcess();
    const first = await post(app, '/v1/vms', spec, { key: 'k-1' });
    expect(first.statusCode).toBe(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const rec = await db.idempotencyKey.findFirstOrThrow();
    expect(rec).toMatchObject({ principal: 'alice', route: 'POST /v1/vms', key: 'k-1', state: 'completed', statusCode: 201, responseBody: first.body, resourceId: first.json().id });

    // The same body with its keys in another order is the same request.
    const again = await post(app, '/v1/vms', { memoryMib: 512, cpus: 1, image: 'ubuntu:24.04', name: 'web-1' }, { key: 'k-1' });
    expect(again.statusCode).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body).toBe(first.body);
    expect(await db.vm.count()).toBe(1);

    // Without the key, the retry is a new request: the name is taken.
    expect((await post(app, '/v1/vms', spec)).statusCode).toBe(409);
  });

  it('answers 422 idempotency_key_reused for the same key with a different body', async () => {
    const { app } = await controllerProcess();
    expect((await post(app, '/v1/vms', spec, { key: 'k-2' })).statusCode).toBe(201);
    const r = await post(app, '/v1/vms', { ...spec, name: 'web-2' }, { key: 'k-2' });
    expect(r.statusCode).toBe(422);
    expect(r.json().error).toMatchObject({ code: 'idempotency_key_reused' });
    expect(await db.vm.count()).toBe(1);
  });

  it('stores 4xx answers: a retry gets the same 409 (the name was taken by someone else)', async () => {
    const { app } = await controllerProcess();
    await vms.create(spec, 'token:bob');
    const first = await post(app, '/v1/vms', spec, { key: 'k-3' });
    expect(first.statusCode).toBe(409);
    await db.vm.deleteMany();
    const again = await post(app, '/v1/vms', spec, { key: 'k-3' });
    expect(again.statusCode).toBe(409);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body).toBe(first.body);
  });

  it('keys are per principal: another token with the same key gets its own outcome', async () => {
    const { app } = await controllerProcess();
    expect((await post(app, '/v1/vms', spec, { key: 'shared' })).statusCode).toBe(201);
    const bob = await post(app, '/v1/vms', spec, { key: 'shared', token: 'bob' });
    expect(bob.statusCode).toBe(409); // not alice's VM replayed to bob
    expect(bob.json().error.code).toBe('conflict');
    expect(bob.headers['idempotent-replayed']).toBeUndefined();
    expect(await db.idempotencyKey.count()).toBe(2);
  });

  it('refuses a malformed key with 400 and stores nothing', async () => {
    const { app } = await controllerProcess();
    for (const key of ['', 'x'.repeat(256), 'caf\u00e9', 'tab\there']) {
      const r = await post(app, '/v1/vms', spec, { key });
      expect(r.statusCode, JSON.stringify(key)).toBe(400);
      expect(r.json().error.message).toMatch(/Idempotency-Key must be 1 to 255 printable ASCII characters/);
    }
    expect(await db.vm.count()).toBe(0);
    expect(await db.idempotencyKey.count()).toBe(0);
    expect((await post(app, '/v1/vms', spec, { key: 'x'.repeat(255) })).statusCode).toBe(201);
  });

  it('forgets a key after 24 h (and the purge deletes the record)', async () => {
    const { app, idempotency } = await controllerProcess();
    expect((await post(app, '/v1/vms', spec, { key: 'k-old' })).statusCode).toBe(201);
    clock += IDEMPOTENCY_TTL_MS - 1000;
    expect((await post(app, '/v1/vms', { ...spec, name: 'web-2' }, { key: 'k-old' })).statusCode).toBe(422);
    expect(await idempotency.purgeExpired()).toBe(0);
    clock += 1000;
    const fresh = await post(app, '/v1/vms', { ...spec, name: 'web-2' }, { key: 'k-old' });
    expect(fresh.statusCode).toBe(201);
    expect(fresh.headers['idempotent-replayed']).toBeUndefined();
    expect(await db.idempotencyKey.count()).toBe(1);
    clock += IDEMPOTENCY_TTL_MS;
    expect(await idempotency.purgeExpired()).toBe(1);
    expect(await db.idempotencyKey.count()).toBe(0);
  });
});

describe('the crash window (a controller killed mid-request, then restarted)', () => {
  const scope = { principal: 'alice', route: 'POST /v1/vms', key: 'k-crash' };
  const hash = requestHash('POST', '/v1/vms', spec);

  it('VM committed, response not stored: the retry gets 201 with that VM, and no second VM', async () => {
    // The first process: the key claimed, the VM created with the record linked, then kill -9.
    const dead = new IdempotencyService(db, { now: () => new Date(clock) });
    const begun = await dead.begin(scope, hash);
    expect(begun.kind).toBe('execute');
    const recordId = (begun as { recordId: string }).recordId;
    const vm = await vms.create(spec, 'token:alice', { inTransaction: (tx, created) => dead.link(tx, recordId, created.id) });

    clock += 3000;
    const { app } = await controllerProcess();
    const retry = await post(app, '/v1/vms', spec, { key: 'k-crash' });
    expect(retry.statusCode).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.json()).toMatchObject({ id: vm.id, name: 'web-1', state: 'pending', createdBy: 'token:alice' });
    expect(await db.vm.count()).toBe(1);
    // Rebuilt once, then stored: the next retry is a plain replay of the same body.
    const again = await post(app, '/v1/vms', spec, { key: 'k-crash' });
    expect(again.body).toBe(retry.body);
    expect(await db.idempotencyKey.findFirstOrThrow()).toMatchObject({ state: 'completed', statusCode: 201, resourceId: vm.id });
  });

  it('key claimed, VM not committed: the retry executes cleanly (one VM)', async () => {
    const dead = new IdempotencyService(db, { now: () => new Date(clock) });
    expect((await dead.begin(scope, hash)).kind).toBe('execute');
    const { app } = await controllerProcess();
    const retry = await post(app, '/v1/vms', spec, { key: 'k-crash' });
    expect(retry.statusCode).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(await db.vm.count()).toBe(1);
    expect((await post(app, '/v1/vms', spec, { key: 'k-crash' })).headers['idempotent-replayed']).toBe('true');
  });

  it('the VM was deleted since: 404, never a second VM', async () => {
    const dead = new IdempotencyService(db, { now: () => new Date(clock) });
    const { recordId } = (await dead.begin(scope, hash)) as { recordId: string };
    await vms.create(spec, 'token:alice', { inTransaction: (tx, created) => dead.link(tx, recordId, created.id) });
    await vms.delete('web-1', 'token:alice');
    const { app } = await controllerProcess();
    const retry = await post(app, '/v1/vms', spec, { key: 'k-crash' });
    expect(retry.statusCode).toBe(404);
    expect(retry.json().error.message).toMatch(/has been deleted since/);
    expect(await db.vm.count()).toBe(0);
  });
});

describe('Idempotency-Key on actions (POST /v1/workers/{name}/drain)', () => {
  it('a request still running gets 409 idempotency_key_in_flight with Retry-After: 1', async () => {
    const { app } = await controllerProcess();
    let open!: () => void;
    gate = new Promise((r) => (open = r));
    const first = post(app, '/v1/workers/mac-1/drain', undefined, { key: 'd-1' });
    while (workerCalls.length === 0) await new Promise((r) => setTimeout(r, 5));
    const second = await post(app, '/v1/workers/mac-1/drain', undefined, { key: 'd-1' });
    expect(second.statusCode).toBe(409);
    expect(second.headers['retry-after']).toBe('1');
    expect(second.json().error.code).toBe('idempotency_key_in_flight');
    open();
    expect((await first).statusCode).toBe(200);
    const third = await post(app, '/v1/workers/mac-1/drain', undefined, { key: 'd-1' });
    expect(third.statusCode).toBe(200);
    expect(third.headers['idempotent-replayed']).toBe('true');
    expect(workerCalls).toEqual(['mac-1:true']);
  });

  it('a 5xx is not stored: the retry executes again', async () => {
    const { app } = await controllerProcess();
    failNext = true;
    expect((await post(app, '/v1/workers/mac-1/drain', undefined, { key: 'd-2' })).statusCode).toBe(500);
    expect(await db.idempotencyKey.count()).toBe(0);
    const retry = await post(app, '/v1/workers/mac-1/drain', undefined, { key: 'd-2' });
    expect(retry.statusCode).toBe(200);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(workerCalls).toEqual(['mac-1:true', 'mac-1:true']);
  });

  it('scopes keys by route: the same key on another path is another request', async () => {
    const { app } = await controllerProcess();
    expect((await post(app, '/v1/workers/mac-1/drain', undefined, { key: 'd-3' })).statusCode).toBe(200);
    const other = await post(app, '/v1/workers/mac-2/drain', undefined, { key: 'd-3' });
    expect(other.statusCode).toBe(200);
    expect(other.headers['idempotent-replayed']).toBeUndefined();
    expect(workerCalls).toEqual(['mac-1:true', 'mac-2:true']);
  });
});

describe('OpenAPI and routes without the header', () => {
  it('documents the header and the 409/422 answers on the routes that take it, and only there', async () => {
    const { app } = await controllerProcess();
    const doc = (await app.inject({ url: '/v1/openapi.json' })).json();
    for (const [p, expected] of [
      ['/v1/vms', true],
      ['/v1/workers/{name}/drain', true],
      ['/v1/workers/{name}/resume', true],
      ['/v1/accounts/{username}/disable', true],
      ['/v1/tokens', false],
      ['/v1/login', false],
    ] as const) {
      const op = doc.paths[p].post;
      const header = (op.parameters ?? []).find((x: { in: string; name: string }) => x.in === 'header' && x.name === 'idempotency-key');
      expect(Boolean(header), p).toBe(expected);
      if (!expected) continue;
      expect(header.required).toBeFalsy();
      expect(Object.keys(op.responses)).toEqual(expect.arrayContaining(['409', '422']));
      const ref = op.responses['422'].content['application/json'].schema;
      const schema = ref.$ref ? doc.components.schemas[ref.$ref.replace('#/components/schemas/', '')] : ref;
      expect(schema.properties.error.properties.code).toEqual({ type: 'string' });
    }
  });

  it('ignores the key on routes that do not take it', async () => {
    const { app } = await controllerProcess();
    const r = await post(app, '/v1/login', { username: 'nobody', password: 'wrong password' }, { key: 'l-1' });
    expect(r.statusCode).toBe(401);
    expect(await db.idempotencyKey.count()).toBe(0);
    expect((await post(app, '/v1/workers/mac-1/drain', undefined)).statusCode).toBe(200);
    expect(await db.idempotencyKey.count()).toBe(0);
  });
});

describe('request hash', () => {
  it('is canonical in key order and distinguishes method, path and body', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: null }, u: undefined })).toBe('{"a":{"c":null,"d":[1,{"y":2,"z":1}]},"b":1}');
    const h = requestHash('POST', '/v1/vms', { a: 1, b: 2 });
    expect(requestHash('post', '/v1/vms', { b: 2, a: 1 })).toBe(h);
    expect(requestHash('POST', '/v1/vms/x', { a: 1, b: 2 })).not.toBe(h);
    expect(requestHash('POST', '/v1/vms', { a: 1, b: '2' })).not.toBe(h);
    expect(requestHash('POST', '/v1/vms', undefined)).toBe(requestHash('POST', '/v1/vms', null));
  });
});
