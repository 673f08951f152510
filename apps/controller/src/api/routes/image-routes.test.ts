// The images and registries REST routes through the real API server (auth, validation, the error
// shape, OpenAPI) on a real database; the registry behind them is scripted.
import { randomBytes, randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OciError } from '@fleet/oci';
import { AccountService } from '../../accounts/account-service.ts';
import { ImageOperationService } from '../../images/image-operation-service.ts';
import { RegistryService } from '../../images/registry-service.ts';
import { WorkerImageService } from '../../images/worker-image-service.ts';
import { staticKeyProvider } from '../../secrets/key-provider.ts';
import { RegistrySecrets } from '../../secrets/registry-secrets.ts';
import { SecretBox } from '../../secrets/secret-box.ts';
import { SettingsService } from '../../settings.ts';
import { computeOverview } from '../../stats/overview.ts';
import { tempDb, type TempDb } from '../../storage/testing.ts';
import { buildApiServer } from '../api-server.ts';
import type { ApiContext } from '../context.ts';
import { coreServices } from '../testing.ts';

const log = pino({ level: 'silent' });
const DIGEST = 'sha256:' + 'a'.repeat(64);
const PASSWORD = 'route-canary-pw-5e1';

let t: TempDb;
let app: FastifyInstance;
let admin: { authorization: string };
let writer: { authorization: string };
let reader: { authorization: string };
let pingError: unknown;
let pinged: { registry: string; username?: string; password?: string }[];

beforeEach(async () => {
  t = await tempDb();
  const db = t.db;
  const { metrics, bus, events, vms, workers, tokens } = coreServices(db, log);
  pingError = undefined;
  pinged = [];
  const registries = new RegistryService(db, new RegistrySecrets(new SecretBox(staticKeyProvider([randomBytes(32)], 'test'))), events, {
    clientFactory: (o) => ({
      ping: async () => {
        pinged.push(o);
        if (pingError) throw pingError;
      },
    }),
  });
  const inventory = new WorkerImageService(db);
  const resolver = {
    resolveManifest: async (reference: string) => {
      if (reference.includes('missing')) throw new (await import('../../errors.ts')).FleetError(422, 'image_unresolvable', `cannot resolve ${reference}: not found`);
      return { ref: { registry: '127.0.0.1:5000', repository: 'fleet/guest', tag: '1' }, digest: DIGEST, pinned: `127.0.0.1:5000/fleet/guest@${DIGEST}`, mediaType: 'm', json: {} };
    },
  };
  const operations = new ImageOperationService(db, events, bus, registries, resolver, inventory, { formatOf: () => 'fleet-qemu' });
  const ctx: ApiContext = {
    vms,
    workers,
    tokens,
    events,
    bus,
    metrics,
    settings: new SettingsService(db, 'pack'),
    grpcAdvertiseAddress: '127.0.0.1:7443',
    accounts: new AccountService(db, events, tokens),
    images: { registries, inventory, operations },
    overview: () => computeOverview({ db, listWorkers: () => workers.list() }),
    info: async () => {
      throw new Error('unused');
    },
  };
  app = await buildApiServer(ctx, log);
  const token = async (name: string, role: 'admin' | 'write' | 'read') => ({ authorization: `Bearer ${(await tokens.createApiToken({ name, roles: [role] }, 'test')).token}` });
  admin = await token('admin', 'admin');
  writer = await token('writer', 'write');
  reader = await token('reader', 'read');
});
afterEach(async () => {
  await app.close();
  await t.close();
});

async function worker(name: string, o: { labels?: Record<string, string> } = {}): Promise<string> {
  const id = randomUUID();
  await t.db.worker.create({ data: { id, name, machineId: name, status: 'online', drivers: '["qemu"]', labels: JSON.stringify(o.labels ?? {}), imageCacheBytes: 3000n, imageCacheLimit: 10_000n } });
  return id;
}

describe('registries', () => {
  it('PUT /v1/registries/{host} with a port in the path (plain or URL-encoded), GET, DELETE', async () => {
    const put = await app.inject({ method: 'PUT', url: '/v1/registries/127.0.0.1:5000', headers: admin, payload: { username: 'ci', password: PASSWORD, insecure: true } });
    expect(put.statusCode).toBe(200);
    expect(put.json()).toMatchObject({ host: '127.0.0.1:5000', username: 'ci', passwordSet: true, insecure: true, caSet: false, createdBy: 'token:admin' });
    expect(put.body).not.toContain(PASSWORD);
    expect(pinged).toMatchObject([{ registry: '127.0.0.1:5000', username: 'ci', password: PASSWORD }]);

    const encoded = await app.inject({ method: 'PUT', url: '/v1/registries/127.0.0.1%3A5000', headers: admin, payload: { insecure: false, verify: false } });
    expect(encoded.statusCode).toBe(200);
    expect(encoded.json()).toMatchObject({ host: '127.0.0.1:5000', passwordSet: true, insecure: false });

    const v6 = await app.inject({ method: 'PUT', url: '/v1/registries/%5B%3A%3A1%5D%3A5000', headers: admin, payload: { verify: false } });
    expect(v6.statusCode).toBe(200);
    expect(v6.json().host).toBe('[::1]:5000');
    expect((await app.inject({ method: 'GET', url: '/v1/registries/[::1]:5000', headers: reader })).json().host).toBe('[::1]:5000');

    const list = await app.inject({ method: 'GET', url: '/v1/registries', headers: reader });
    expect(list.statusCode).toBe(200);
    expect(list.json().items.map((r: { host: string }) => r.host)).toEqual(['127.0.0.1:5000', '[::1]:5000']);
    expect(list.body).not.toContain(PASSWORD);

    expect((await app.inject({ method: 'DELETE', url: '/v1/registries/127.0.0.1:5000', headers: admin })).statusCode).toBe(204);
    const again = await app.inject({ method: 'DELETE', url: '/v1/registries/127.0.0.1:5000', headers: admin });
    expect(again.statusCode).toBe(404);
    expect(again.json()).toEqual({ error: { code: 'not_found', message: 'registry "127.0.0.1:5000" not found' } });
  });

  it('writes need admin, reads need read', async () => {
    expect((await app.inject({ method: 'PUT', url: '/v1/registries/r.example.com', headers: writer, payload: { verify: false } })).statusCode).toBe(403);
    expect((await app.inject({ method: 'DELETE', url: '/v1/registries/r.example.com', headers: writer })).statusCode).toBe(403);
    expect((await app.inject({ method: 'GET', url: '/v1/registries' })).statusCode).toBe(401);
  });

  it('answers a refused login with 422 registry_login_failed, a bad host or body with 400', async () => {
    pingError = new OciError('unauthorized', 'registry 127.0.0.1:5000 answered 401 for the registry API (/v2/): wrong or missing credentials', { status: 401 });
    const refused = await app.inject({ method: 'PUT', url: '/v1/registries/127.0.0.1:5000', headers: admin, payload: { username: 'ci', password: PASSWORD } });
    expect(refused.statusCode).toBe(422);
    expect(refused.json().error).toMatchObject({ code: 'registry_login_failed', details: { registry: '127.0.0.1:5000', cause: 'unauthorized', status: 401 } });
    expect(refused.body).not.toContain(PASSWORD);
    pingError = new OciError('network', 'connection refused');
    expect((await app.inject({ method: 'PUT', url: '/v1/registries/127.0.0.1:5000', headers: admin, payload: {} })).json().error.code).toBe('registry_unreachable');
    expect((await app.inject({ method: 'PUT', url: '/v1/registries/bad%20host', headers: admin, payload: { verify: false } })).statusCode).toBe(400);
    expect((await app.inject({ method: 'PUT', url: '/v1/registries/r.example.com', headers: admin, payload: { insecure: 'yes' } })).statusCode).toBe(400);
    expect((await app.inject({ method: 'PUT', url: '/v1/registries/r.example.com', headers: admin, payload: { caPem: 'nope', verify: false } })).json().error.code).toBe('bad_request');
  });
});

describe('images', () => {
  it("GET /v1/workers/{name}/images and /v1/images show the workers' caches", async () => {
    const w1 = await worker('w1');
    await t.db.workerImage.create({ data: { workerId: w1, digest: DIGEST, reference: `127.0.0.1:5000/fleet/guest@${DIGEST}`, format: 'fleet-qemu', sizeBytes: 2048n, state: 'pulling', bytesDone: 512n, bytesTotal: 2048n } });
    const one = await app.inject({ method: 'GET', url: '/v1/workers/w1/images', headers: reader });
    expect(one.statusCode).toBe(200);
    expect(one.json()).toEqual({
      worker: 'w1',
      usedBytes: 3000,
      limitBytes: 10000,
      items: [{ digest: DIGEST, reference: `127.0.0.1:5000/fleet/guest@${DIGEST}`, format: 'fleet-qemu', sizeBytes: 2048, state: 'pulling', progress: { bytesDone: 512, bytesTotal: 2048, percent: 25 }, error: '', inUse: 0, lastUsedAt: null }],
    });
    expect((await app.inject({ method: 'GET', url: '/v1/workers/nope/images', headers: reader })).statusCode).toBe(404);
    const all = await app.inject({ method: 'GET', url: '/v1/images', headers: reader });
    expect(all.json().items).toEqual([{ digest: DIGEST, reference: `127.0.0.1:5000/fleet/guest@${DIGEST}`, format: 'fleet-qemu', sizeBytes: 2048, workers: [{ name: 'w1', state: 'pulling', inUse: 0, lastUsedAt: null, progress: { bytesDone: 512, bytesTotal: 2048, percent: 25 } }] }]);
  });

  it('POST /v1/images/prefetch answers 202 with the operations; GET /v1/image-operations follows them', async () => {
    await worker('w1', { labels: { pool: 'ci' } });
    await worker('w2', { labels: { pool: 'build' } });
    expect((await app.inject({ method: 'POST', url: '/v1/images/prefetch', headers: reader, payload: { reference: '127.0.0.1:5000/fleet/guest:1' } })).statusCode).toBe(403);
    const res = await app.inject({ method: 'POST', url: '/v1/images/prefetch', headers: writer, payload: { reference: '127.0.0.1:5000/fleet/guest:1', selector: { pool: 'ci' } } });
    expect(res.statusCode).toBe(202);
    const body = res.json();
    expect(body).toMatchObject({ reference: '127.0.0.1:5000/fleet/guest:1', digest: DIGEST, format: 'fleet-qemu' });
    expect(body.operations).toHaveLength(1);
    expect(body.operations[0]).toMatchObject({ kind: 'prefetch', worker: 'w1', vm: null, state: 'pending', progress: null, createdBy: 'token:writer' });

    const op = await app.inject({ method: 'GET', url: `/v1/image-operations/${body.operations[0].id}`, headers: reader });
    expect(op.json()).toEqual(body.operations[0]);
    expect((await app.inject({ method: 'GET', url: '/v1/image-operations?worker=w1&state=pending', headers: reader })).json().items).toHaveLength(1);
    expect((await app.inject({ method: 'GET', url: '/v1/image-operations?state=failed', headers: reader })).json().items).toHaveLength(0);
    expect((await app.inject({ method: 'GET', url: '/v1/image-operations?state=bogus', headers: reader })).statusCode).toBe(400);
    expect((await app.inject({ method: 'GET', url: '/v1/image-operations?worker=nope', headers: reader })).statusCode).toBe(404);
    expect((await app.inject({ method: 'GET', url: '/v1/image-operations/nope', headers: reader })).statusCode).toBe(404);

    const none = await app.inject({ method: 'POST', url: '/v1/images/prefetch', headers: writer, payload: { reference: '127.0.0.1:5000/fleet/guest:1', selector: { pool: 'gpu' } } });
    expect(none.statusCode).toBe(422);
    expect(none.json().error.code).toBe('no_eligible_worker');
    expect(none.json().error.message).toMatch(/w1: lacks pool=gpu; w2: lacks pool=gpu/);
    expect((await app.inject({ method: 'POST', url: '/v1/images/prefetch', headers: writer, payload: { reference: '127.0.0.1:5000/fleet/missing:1' } })).json().error.code).toBe('image_unresolvable');
    expect((await app.inject({ method: 'POST', url: '/v1/images/prefetch', headers: writer, payload: { reference: 'fleet-guest' } })).statusCode).toBe(400);
    expect((await app.inject({ method: 'POST', url: '/v1/images/prefetch', headers: writer, payload: {} })).statusCode).toBe(400);
  });

  it('DELETE /v1/workers/{name}/images/{digest}: 202, 404, 409 in use, 400 for a malformed digest', async () => {
    const w1 = await worker('w1');
    await t.db.workerImage.create({ data: { workerId: w1, digest: DIGEST, state: 'ready', inUse: 1 } });
    const inUse = await app.inject({ method: 'DELETE', url: `/v1/workers/w1/images/${DIGEST}`, headers: writer });
    expect(inUse.statusCode).toBe(409);
    expect(inUse.json().error.code).toBe('conflict');
    await t.db.workerImage.update({ where: { workerId_digest: { workerId: w1, digest: DIGEST } }, data: { inUse: 0 } });
    const ok = await app.inject({ method: 'DELETE', url: `/v1/workers/w1/images/${DIGEST}`, headers: writer });
    expect(ok.statusCode).toBe(202);
    expect(ok.json()).toMatchObject({ kind: 'delete', worker: 'w1', digest: DIGEST, state: 'pending' });
    expect((await app.inject({ method: 'DELETE', url: `/v1/workers/w1/images/sha256:${'b'.repeat(64)}`, headers: writer })).statusCode).toBe(404);
    expect((await app.inject({ method: 'DELETE', url: '/v1/workers/w1/images/latest', headers: writer })).statusCode).toBe(400);
    expect((await app.inject({ method: 'DELETE', url: `/v1/workers/w1/images/${DIGEST}`, headers: reader })).statusCode).toBe(403);
  });

  it('POST /v1/vms/{name}/push: 409 until the VM is stopped, then 202', async () => {
    const w1 = await worker('w1');
    await t.db.vm.create({ data: { id: randomUUID(), name: 'base', state: 'running', desiredPower: 'running', image: 'fleet-guest', cpus: 1, memoryMib: 512, workerId: w1, attempt: 1 } });
    const running = await app.inject({ method: 'POST', url: '/v1/vms/base/push', headers: writer, payload: { reference: '127.0.0.1:5000/fleet/base:1' } });
    expect(running.statusCode).toBe(409);
    expect(running.json().error.message).toContain('fleet vm stop base');
    await t.db.vm.update({ where: { name: 'base' }, data: { state: 'stopped', desiredPower: 'stopped' } });
    const ok = await app.inject({ method: 'POST', url: '/v1/vms/base/push', headers: writer, payload: { reference: '127.0.0.1:5000/fleet/base:1' } });
    expect(ok.statusCode).toBe(202);
    expect(ok.json()).toMatchObject({ kind: 'push', worker: 'w1', vm: 'base', reference: '127.0.0.1:5000/fleet/base:1', state: 'pending' });
    expect((await app.inject({ method: 'POST', url: '/v1/vms/nope/push', headers: writer, payload: { reference: '127.0.0.1:5000/fleet/base:1' } })).statusCode).toBe(404);
    expect((await app.inject({ method: 'POST', url: '/v1/vms/base/push', headers: writer, payload: { reference: 'local-name' } })).statusCode).toBe(400);
  });

  it('documents the routes and their errors in the OpenAPI document', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/v1/openapi.json' })).json();
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/registries', '/v1/registries/{host}', '/v1/images', '/v1/images/prefetch', '/v1/workers/{name}/images', '/v1/workers/{name}/images/{digest}', '/v1/vms/{name}/push', '/v1/image-operations', '/v1/image-operations/{id}']));
    expect(Object.keys(doc.paths['/v1/images/prefetch'].post.responses).sort()).toEqual(['202', '400', '401', '403', '409', '413', '415', '422', '502', '503']);
    expect(Object.keys(doc.paths['/v1/registries/{host}'].put.responses).sort()).toEqual(['200', '400', '401', '403', '413', '414', '415', '422', '502', '503']);
    expect(Object.keys(doc.paths['/v1/workers/{name}/images/{digest}'].delete.responses).sort()).toEqual(['202', '400', '401', '403', '404', '409', '414', '503']);
  });
});
