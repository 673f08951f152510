// The REST API while the database refuses writes (a real SQLITE_READONLY, as on a full
// disk: reads keep working): writes answer 503 storage_unavailable with Retry-After,
// reads still answer, /v1/health says degraded and comes back by itself.
import { AccountService } from '../accounts/account-service.ts';
import { computeOverview } from '../stats/overview.ts';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildApiServer } from './api-server.ts';
import type { ApiContext } from './context.ts';
import { SettingsService } from '../settings.ts';
import { StorageHealth, settingsRowProbe } from '../storage/storage-health.ts';
import { refuseWrites, tempDb, type TempDb } from '../storage/testing.ts';
import type { FastifyInstance } from 'fastify';
import { coreServices } from './testing.ts';

const log = pino({ level: 'silent' });
let t: TempDb;
let app: FastifyInstance;
let storage: StorageHealth;
let auth: { authorization: string };
let reader: { authorization: string };

beforeEach(async () => {
  t = await tempDb();
  const db = t.db;
  const { metrics, bus, events, vms, workers, tokens } = coreServices(db, log);
  storage = new StorageHealth({ probe: settingsRowProbe(db), log, probeIntervalMs: 25, retryAfterS: 3 });
  tokens.onStorageError = (err) => storage.observe(err);
  const ctx: ApiContext = {
    vms, workers, tokens, events, bus, metrics,
    settings: new SettingsService(db, 'pack'),
    grpcAdvertiseAddress: '127.0.0.1:7443',
    storage,
    accounts: new AccountService(db, events, tokens),
    overview: () => computeOverview({ db, listWorkers: () => workers.list() }),
    info: async () => { throw new Error('unused'); },
  };
  app = await buildApiServer(ctx, log);
  auth = { authorization: `Bearer ${(await tokens.createApiToken({ name: 'admin', roles: ['admin'] }, 'test')).token}` };
  reader = { authorization: `Bearer ${(await tokens.createApiToken({ name: 'reader', roles: ['read'] }, 'test')).token}` };
});
afterEach(async () => {
  storage.stop();
  await app.close();
  await t.close();
});

const create = (name: string) => app.inject({ method: 'POST', url: '/v1/vms', headers: auth, payload: { name, image: 'img', cpus: 1, memoryMib: 512 } });

describe('storage unavailable', () => {
  it('answers writes with 503 + Retry-After, keeps reads, reports degraded health, and recovers without a restart', async () => {
    expect((await create('before')).statusCode).toBe(201);
    const healthy = await app.inject({ url: '/v1/health' });
    expect(healthy.statusCode).toBe(200);
    expect(healthy.json()).toEqual({ status: 'ok', checks: { storage: { ok: true } } });

    await refuseWrites(t.db, true);
    const refused = await create('during');
    expect(refused.statusCode).toBe(503);
    expect(refused.headers['retry-after']).toBe('3');
    expect(refused.json()).toMatchObject({ error: { code: 'storage_unavailable', details: { storage: 'SQLITE_READONLY', retryAfterSeconds: 3 } } });
    expect(refused.json().error.message).toMatch(/database cannot take this request right now: the database is read-only \(SQLITE_READONLY.*Retry after 3 s/);

    const health = await app.inject({ url: '/v1/health' });
    expect(health.statusCode).toBe(503);
    expect(health.headers['retry-after']).toBe('3');
    expect(health.json()).toMatchObject({ status: 'degraded', checks: { storage: { ok: false, code: 'SQLITE_READONLY', error: expect.stringMatching(/read-only/), since: expect.any(String) } } });

    // Reads still work, also for a token used for the first time (its lastUsedAt write fails and is retried later).
    const list = await app.inject({ url: '/v1/vms', headers: reader });
    expect(list.statusCode).toBe(200);
    expect(list.json().vms.map((v: { name: string }) => v.name)).toEqual(['before']);

    await refuseWrites(t.db, false);
    const deadline = Date.now() + 5000;
    while ((await app.inject({ url: '/v1/health' })).statusCode !== 200) {
      if (Date.now() > deadline) throw new Error('health did not come back');
      await new Promise((r) => setTimeout(r, 20));
    }
    expect((await create('after')).statusCode).toBe(201);
  });

  it('other errors stay what they were (409, 404)', async () => {
    expect((await create('dup')).statusCode).toBe(201);
    expect((await create('dup')).json()).toMatchObject({ error: { code: 'conflict' } });
    expect((await app.inject({ url: '/v1/vms/nope', headers: auth })).statusCode).toBe(404);
    expect(storage.ok).toBe(true);
  });

  it('documents 503 storage_unavailable with Retry-After on the routes', async () => {
    const doc = (await app.inject({ url: '/v1/openapi.json' })).json();
    for (const [path, method] of [['/v1/vms', 'post'], ['/v1/vms/{name}', 'get'], ['/v1/workers', 'get']] as const) {
      const r = doc.paths[path][method].responses['503'];
      expect(r.description).toMatch(/storage_unavailable/);
      expect(r.headers['Retry-After'].schema.type).toBe('integer');
    }
    const health = doc.paths['/v1/health'].get.responses['503'];
    expect(health.content['application/json'].schema.properties.status).toBeDefined();
  });
});
