// Every REST route rejects bad input with a 4xx and a message (never a 500),
// and refuses unauthenticated and under-privileged callers with 401/403.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type ControllerHandle } from '@fleet/controller';
import { ApiClient, removeDir, tempDir } from './support/fleet-processes.ts';

let controller: ControllerHandle;
let dataDir: string;
let admin: ApiClient;
let reader: ApiClient;
let writer: ApiClient;
let connector: ApiClient;

beforeAll(async () => {
  dataDir = await tempDir('ctl-api');
  controller = await startController({ dataDir, apiPort: 0, grpcPort: 0, grpcHost: '127.0.0.1', logLevel: 'silent' });
  admin = new ApiClient(controller.apiUrl, controller.adminToken);
  const mk = async (name: string, roles: string[]) => new ApiClient(controller.apiUrl, (await admin.ok('POST', '/v1/tokens', { name, roles })).token);
  reader = await mk('reader', ['read']);
  writer = await mk('writer', ['write']);
  connector = await mk('ci-connect', ['connect']);
  await admin.createVm({ name: 'existing', image: 'img' });
});
afterAll(async () => {
  await controller?.stop();
  await removeDir(dataDir);
});

const expectClientError = (r: { status: number; body: any }, status: number, message?: RegExp) => {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(typeof r.body.error?.message).toBe('string');
  expect(r.body.error.message.length).toBeGreaterThan(5);
  if (message) expect(r.body.error.message).toMatch(message);
};

describe('authentication and roles', () => {
  const routes: [string, string, unknown?][] = [
    ['GET', '/v1/vms'],
    ['POST', '/v1/vms', { name: 'x', image: 'i' }],
    ['GET', '/v1/vms/existing'],
    ['PATCH', '/v1/vms/existing', { priority: 1 }],
    ['DELETE', '/v1/vms/existing'],
    ['GET', '/v1/vms/existing/events'],
    ['GET', '/v1/workers'],
    ['GET', '/v1/workers/nope'],
    ['POST', '/v1/workers/nope/drain'],
    ['POST', '/v1/workers/nope/resume'],
    ['DELETE', '/v1/workers/nope'],
    ['GET', '/v1/events'],
    ['POST', '/v1/tokens', { name: 't', roles: ['read'] }],
    ['GET', '/v1/tokens'],
    ['DELETE', '/v1/tokens/reader'],
    ['POST', '/v1/bootstrap-tokens', {}],
    ['GET', '/v1/bootstrap-tokens'],
    ['DELETE', '/v1/bootstrap-tokens/nope'],
    ['GET', '/v1/info'],
    ['GET', '/v1/whoami'],
    ['GET', '/v1/settings/scheduler'],
    ['PUT', '/v1/settings/scheduler', { profile: 'spread' }],
  ];

  it.each(routes)('%s %s without a token is 401', async (method, path, body) => {
    expectClientError(await admin.withToken(null).request(method, path, body), 401, /Authorization/);
  });

  it.each(routes)('%s %s with a garbage token is 401', async (method, path, body) => {
    expectClientError(await admin.withToken('fleet_aaaaaaaaaaaa_' + 'b'.repeat(43)).request(method, path, body), 401, /unknown token/);
  });

  it('read tokens cannot write, write tokens cannot administer, connect tokens cannot read', async () => {
    expectClientError(await reader.request('POST', '/v1/vms', { name: 'nope', image: 'i' }), 403, /lacks the "write" role/);
    expectClientError(await reader.request('DELETE', '/v1/vms/existing'), 403);
    expectClientError(await reader.request('POST', '/v1/workers/any/drain'), 403);
    expectClientError(await writer.request('POST', '/v1/tokens', { name: 'escalate', roles: ['admin'] }), 403, /admin/);
    expectClientError(await writer.request('DELETE', '/v1/workers/any'), 403);
    expectClientError(await writer.request('PUT', '/v1/settings/scheduler', { profile: 'spread' }), 403);
    expectClientError(await connector.request('GET', '/v1/vms'), 403);
    expect((await reader.request('GET', '/v1/vms')).status).toBe(200);
    expect((await writer.request('GET', '/v1/vms/existing')).status).toBe(200);
    expect((await connector.request('GET', '/v1/whoami')).body).toEqual({ name: 'ci-connect', roles: ['connect'] });
  });

  it('a revoked token stops working at once', async () => {
    const t = new ApiClient(controller.apiUrl, (await admin.ok('POST', '/v1/tokens', { name: 'short-lived', roles: ['read'] })).token);
    expect((await t.request('GET', '/v1/vms')).status).toBe(200);
    expect((await admin.request('DELETE', '/v1/tokens/short-lived')).status).toBe(204);
    expectClientError(await t.request('GET', '/v1/vms'), 401, /revoked/);
  });

  it('health and the OpenAPI document need no token', async () => {
    const anon = admin.withToken(null);
    expect((await anon.request('GET', '/v1/health')).body).toEqual({ status: 'ok', checks: { storage: { ok: true } }, controller: { id: expect.stringMatching(/^ctl-/), name: expect.any(String), role: 'leader', leader: expect.any(String) } });
    const doc = (await anon.request('GET', '/v1/openapi.json')).body;
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/vms', '/v1/vms/{name}', '/v1/workers', '/v1/tokens', '/v1/bootstrap-tokens', '/v1/events']));
  });
});

describe('bad input gets a 4xx with a message, never a 500', () => {
  const badVmBodies: [string, unknown, RegExp][] = [
    ['missing image', { name: 'a' }, /image/],
    ['bad name', { name: 'Not_A_Name', image: 'i' }, /name/],
    ['too long name', { name: 'a'.repeat(64), image: 'i' }, /name/],
    ['negative cpus', { name: 'a', image: 'i', cpus: -1 }, /cpus/],
    ['fractional cpus', { name: 'a', image: 'i', cpus: 1.5 }, /cpus/],
    ['string memory', { name: 'a', image: 'i', memoryMib: 'lots' }, /memoryMib/],
    ['unknown os', { name: 'a', image: 'i', os: 'windows' }, /os/],
    ['unknown field', { name: 'a', image: 'i', gpus: 2 }, /additional/],
    ['label value not a string', { name: 'a', image: 'i', labels: { k: 1 } }, /labels/],
    ['bad restart policy', { name: 'a', image: 'i', restartPolicy: 'always' }, /restartPolicy/],
    ['empty password', { name: 'a', image: 'i', password: '' }, /password/],
    ['password with a newline', { name: 'a', image: 'i', password: 'ab\ncd' }, /password/],
    ['password over 256 characters', { name: 'a', image: 'i', password: 'p'.repeat(257) }, /password/],
    ['a multicast MAC (issue 18)', { name: 'a', image: 'i', mac: '01:00:5e:00:00:01' }, /body\/mac: MAC "01:00:5e:00:00:01" is a multicast address/],
    ['the broadcast MAC', { name: 'a', image: 'i', mac: 'ff:ff:ff:ff:ff:ff' }, /broadcast/],
    ['an all-zero MAC', { name: 'a', image: 'i', mac: '00:00:00:00:00:00' }, /all zero/],
    ['a MAC with dashes', { name: 'a', image: 'i', mac: '02-00-5e-10-00-01' }, /separate the six octets with ":"/],
    ['a short MAC', { name: 'a', image: 'i', mac: '02:00:5e:10:00' }, /not six two-digit hex octets/],
    ['an unknown network mode', { name: 'a', image: 'i', network: { mode: 'bridged' } }, /network\/mode/],
    ['mode none with rules', { name: 'a', image: 'i', network: { mode: 'none', allow: ['10.0.0.0/8'] } }, /network mode "none" has no NIC to apply allow to/],
    ['mode none with a MAC', { name: 'a', image: 'i', network: { mode: 'none' }, mac: '02:00:00:00:00:01' }, /no NIC to give a MAC to/],
    ['array body', [1, 2], /body/],
    ['null body', null, /body/],
  ];
  it.each(badVmBodies)('POST /v1/vms with %s', async (_label, body, message) => {
    expectClientError(await admin.request('POST', '/v1/vms', body), 400, message);
  });

  it('malformed JSON is a 400', async () => {
    expectClientError(await admin.request('POST', '/v1/vms', undefined, '{"name": "a", '), 400);
  });

  it('duplicate VM names are a 409', async () => {
    expectClientError(await admin.request('POST', '/v1/vms', { name: 'existing', image: 'i' }), 409, /already exists/);
  });

  it('PATCH validates too', async () => {
    expectClientError(await admin.request('PATCH', '/v1/vms/existing', {}), 400);
    expectClientError(await admin.request('PATCH', '/v1/vms/existing', { cpus: 0 }), 400, /cpus/);
    expectClientError(await admin.request('PATCH', '/v1/vms/existing', { name: 'rename' }), 400);
    expectClientError(await admin.request('PATCH', '/v1/vms/missing-vm', { priority: 3 }), 404, /missing-vm/);
    expectClientError(await admin.request('PATCH', '/v1/vms/existing', { mac: '03:00:00:00:00:01' }), 400, /multicast/);
    expectClientError(await admin.request('PATCH', '/v1/vms/existing', { network: { mode: 'shared' } }), 400, /network\/mode/);
  });

  it('unknown VMs, workers and tokens are 404 with their name', async () => {
    expectClientError(await admin.request('GET', '/v1/vms/ghost'), 404, /ghost/);
    expectClientError(await admin.request('DELETE', '/v1/vms/ghost'), 404, /ghost/);
    expectClientError(await admin.request('GET', '/v1/vms/ghost/events'), 404, /ghost/);
    expectClientError(await admin.request('POST', '/v1/workers/ghost/drain'), 404, /ghost/);
    expectClientError(await admin.request('DELETE', '/v1/tokens/ghost'), 404, /ghost/);
    expectClientError(await admin.request('DELETE', '/v1/bootstrap-tokens/ghost'), 404, /ghost/);
    expectClientError(await admin.request('GET', '/v1/nothing-here'), 404);
  });

  it('token and bootstrap-token bodies are validated', async () => {
    expectClientError(await admin.request('POST', '/v1/tokens', { name: 't1', roles: ['superuser'] }), 400, /roles/);
    expectClientError(await admin.request('POST', '/v1/tokens', { name: 't1', roles: [] }), 400, /roles/);
    expectClientError(await admin.request('POST', '/v1/tokens', { name: 'reader', roles: ['read'] }), 409);
    expectClientError(await admin.request('POST', '/v1/bootstrap-tokens', { uses: 0 }), 400, /uses/);
    expectClientError(await admin.request('POST', '/v1/bootstrap-tokens', { expiresInHours: 'soon' }), 400, /expiresInHours/);
    expectClientError(await admin.request('PUT', '/v1/settings/scheduler', { profile: 'random' }), 400, /profile/);
  });

  it('query strings are validated', async () => {
    expectClientError(await admin.request('GET', '/v1/vms?state=exploded'), 400, /state/);
    expectClientError(await admin.request('GET', '/v1/events?limit=0'), 400, /limit/);
    expectClientError(await admin.request('GET', '/v1/events?limit=abc'), 400, /limit/);
    expectClientError(await admin.request('GET', '/v1/events?cursor=-5'), 400, /cursor/);
  });

  it('events page with a cursor', async () => {
    for (let i = 0; i < 5; i++) await admin.createVm({ name: `page-${i}`, image: 'i' });
    const first = await admin.ok('GET', '/v1/events?kind=vm.created&limit=2');
    expect(first.events).toHaveLength(2);
    expect(first.nextCursor).not.toBeNull();
    const second = await admin.ok('GET', `/v1/events?kind=vm.created&limit=2&cursor=${first.nextCursor}`);
    expect(second.events[0].id).toBeLessThan(first.events[1].id);
  });
});

describe('watch streams', () => {
  async function openWatch(path: string) {
    const stop = new AbortController();
    const res = await fetch(`${controller.apiUrl}${path}`, { headers: { authorization: `Bearer ${controller.adminToken}` }, signal: stop.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/application\/x-ndjson/);
    const lines: { type: string; vm: { name: string; state: string; priority: number } }[] = [];
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    const readUntil = async (pred: () => boolean) => {
      while (!pred()) {
        const { value, done } = await reader.read();
        if (done) throw new Error('watch stream ended early');
        buffer += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl).trim();
          buffer = buffer.slice(nl + 1);
          if (line) lines.push(JSON.parse(line));
        }
      }
    };
    return { lines, readUntil, close: () => stop.abort() };
  }

  it('?watch=true streams ADDED for existing VMs, then changes as NDJSON', async () => {
    const w = await openWatch('/v1/vms?watch=true');
    await w.readUntil(() => w.lines.some((l) => l.type === 'ADDED' && l.vm.name === 'existing'));
    await admin.createVm({ name: 'watched', image: 'img' });
    await w.readUntil(() => w.lines.some((l) => l.type === 'ADDED' && l.vm.name === 'watched'));
    await admin.request('DELETE', '/v1/vms/watched');
    await w.readUntil(() => w.lines.some((l) => l.type === 'DELETED' && l.vm.name === 'watched'));
    w.close();
  });

  it('a single VM can be watched: its snapshot, then only its own changes in order; an unknown one is a 404', async () => {
    await admin.createVm({ name: 'solo', image: 'img' });
    const w = await openWatch('/v1/vms/solo?watch=true');
    await w.readUntil(() => w.lines.length >= 1);
    expect(w.lines[0]).toMatchObject({ type: 'ADDED', vm: { name: 'solo' } });
    await admin.createVm({ name: 'bystander', image: 'img' });
    for (const priority of [1, 2, 3]) await admin.ok('PATCH', '/v1/vms/solo', { priority });
    await w.readUntil(() => w.lines.some((l) => l.vm.priority === 3));
    expect(w.lines.every((l) => l.vm.name === 'solo')).toBe(true);
    const priorities = w.lines.filter((l) => l.type === 'MODIFIED').map((l) => l.vm.priority).filter((p) => p > 0);
    expect(priorities).toEqual([1, 2, 3]);
    w.close();
    expectClientError(await admin.request('GET', '/v1/vms/ghost?watch=true'), 404, /ghost/);
  });
});

describe('VM passwords (write-only)', () => {
  const SECRET = 'Tart-admin: pass wörd';
  const leaks = (value: unknown) => JSON.stringify(value).includes(SECRET) || JSON.stringify(value).includes('NEWSECRET-2');

  it('is accepted at create, stored for sessions, and never returned by the API or its events', async () => {
    const created = await writer.ok('POST', '/v1/vms', { name: 'mac-pw', image: 'img', os: 'macos', username: 'admin', password: SECRET });
    expect(created.passwordSet).toBe(true);
    expect(leaks(created)).toBe(false);
    const got = await reader.ok('GET', '/v1/vms/mac-pw');
    expect(got).toMatchObject({ passwordSet: true, username: 'admin' });
    expect(leaks(got)).toBe(false);
    const list = await reader.ok('GET', '/v1/vms');
    expect(list.vms.find((v: { name: string }) => v.name === 'mac-pw')?.passwordSet).toBe(true);
    expect(list.vms.find((v: { name: string }) => v.name === 'existing')?.passwordSet).toBe(false);
    expect(leaks(list)).toBe(false);
    // What the session broker hands the worker (over mTLS) is the stored password, sealed at rest.
    const vm = await controller.db.vm.findUniqueOrThrow({ where: { name: 'mac-pw' } });
    const stored = async () => {
      const row = await controller.db.vmAccess.findUniqueOrThrow({ where: { vmId: vm.id } });
      expect(row.password).toBeNull();
      expect(row.privateKey).toBe('');
      if (row.passwordSealed) expect(row.passwordSealed).not.toContain('NEWSECRET');
      return controller.secrets.passwordOf(row);
    };
    expect(await stored()).toBe(SECRET);

    const patched = await writer.ok('PATCH', '/v1/vms/mac-pw', { password: 'NEWSECRET-2' });
    expect(patched.passwordSet).toBe(true);
    expect(leaks(patched)).toBe(false);
    expect(await stored()).toBe('NEWSECRET-2');
    const cleared = await writer.ok('PATCH', '/v1/vms/mac-pw', { password: null });
    expect(cleared.passwordSet).toBe(false);
    expect(await stored()).toBeNull();

    const events = await reader.ok('GET', '/v1/vms/mac-pw/events');
    expect(leaks(events)).toBe(false);
    const updates = events.events.filter((e: { kind: string }) => e.kind === 'vm.updated');
    expect(updates.map((e: { data: { password?: string } }) => e.data.password)).toEqual(['set', 'removed']);
  });

  it('needs the write role and valid input to change', async () => {
    expectClientError(await reader.request('PATCH', '/v1/vms/existing', { password: 'x1' }), 403);
    expectClientError(await writer.request('PATCH', '/v1/vms/existing', { password: '' }), 400, /password/);
    expectClientError(await writer.request('PATCH', '/v1/vms/existing', { password: 5 }), 400, /password/);
  });
});

describe('If-Match on PATCH /v1/vms/{name}', () => {
  it('applies a change made from the current version, refuses one made from an older version (412), rejects a malformed one (400)', async () => {
    await writer.ok('POST', '/v1/vms', { name: 'etag-vm', image: 'img', labels: { a: '1' } });
    const res = await fetch(`${controller.apiUrl}/v1/vms/etag-vm`, { headers: { authorization: `Bearer ${controller.adminToken}` } });
    const etag = res.headers.get('etag')!;
    const body = (await res.json()) as { updatedAt: string };
    expect(etag).toBe(`"${body.updatedAt}"`);
    const patch = (ifMatch: string, labels: Record<string, string>) =>
      fetch(`${controller.apiUrl}/v1/vms/etag-vm`, { method: 'PATCH', headers: { authorization: `Bearer ${controller.adminToken}`, 'content-type': 'application/json', 'if-match': ifMatch }, body: JSON.stringify({ labels }) });
    const first = await patch(etag, { a: '1', b: '2' });
    expect(first.status).toBe(200);
    expect(first.headers.get('etag')).not.toBe(etag);
    const second = await patch(etag, { a: '1', c: '3' }); // made from the old read: it would drop b
    expect(second.status).toBe(412);
    expect(((await second.json()) as { error: { message: string } }).error.message).toMatch(/changed since it was read/);
    expect((await reader.ok('GET', '/v1/vms/etag-vm')).labels).toEqual({ a: '1', b: '2' });
    expect((await patch('yesterday', { a: '9' })).status).toBe(400);
  });
});


describe('the API contract over real HTTP (issue 16)', () => {
  const raw = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(`${controller.apiUrl}${path}`, { ...init, headers: { authorization: `Bearer ${controller.adminToken}`, ...(init.headers as Record<string, string>) } });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: JSON.parse(text) as { error: { code: string; message: string } } };
  };

  it('out-of-range numbers in query strings are 400s naming the parameter, never 500s', async () => {
    for (const path of ['/v1/events', '/v1/vms/existing/events']) {
      for (const q of ['limit=1e400', 'limit=Infinity', 'cursor=99999999999999999999', 'cursor=1e400']) {
        const r = await raw(`${path}?${q}`);
        expect(r.status, `${path}?${q}`).toBe(400);
        expect(r.body.error.message).toMatch(new RegExp(q.split('=')[0]!));
      }
    }
  });

  it('the router and the HTTP parser answer in Fleet\'s error shape too', async () => {
    const bad = await raw('/v1/vms/%ZZ');
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('bad_url');
    const long = await raw(`/v1/workers/${'a'.repeat(3000)}/drain`, { method: 'POST' });
    expect(long.status).toBe(414);
    expect(long.body.error).toMatchObject({ code: 'uri_too_long', message: expect.stringMatching(/too long/) });
    const huge = await raw(`/v1/vms/${'a'.repeat(20_000)}`);
    expect(huge.status).toBe(431);
    expect(huge.body.error.code).toBe('headers_too_large');
    const xml = await raw('/v1/vms', { method: 'POST', headers: { 'content-type': 'application/xml' }, body: '<vm/>' });
    expect(xml.status).toBe(415);
    expect(xml.body.error.code).toBe('unsupported_media_type');
  });

  it('401s carry WWW-Authenticate; API answers carry nosniff', async () => {
    const r = await fetch(`${controller.apiUrl}/v1/vms`);
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe('Bearer realm="fleet"');
    expect(r.headers.get('x-content-type-options')).toBe('nosniff');
  });

  it('labels with keys outside the Kubernetes syntax, nested values or a NUL in image are refused', async () => {
    expectClientError(await admin.request('POST', '/v1/vms', { name: 'lbl-x', image: 'i', labels: { '<script>': 'x' } }), 400, /label key/);
    expectClientError(await admin.request('POST', '/v1/vms', { name: 'lbl-x', image: 'i', selector: { k: { nested: 'x' } } }), 400, /selector/);
    expectClientError(await admin.request('POST', '/v1/vms', { name: 'lbl-x', image: 'img\u0000' }), 400, /image/);
  });
});
