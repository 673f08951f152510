// The REST API's contract with its clients (issue 16): bounded numeric query parameters,
// every error in Fleet's {error: {code, message}} shape, label syntax, browser hardening
// headers, and an OpenAPI document that documents the error answers it gives.
import { AccountService } from '../accounts/account-service.ts';
import { computeOverview } from '../stats/overview.ts';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApiServer } from './api-server.ts';
import type { ApiContext } from './context.ts';
import { EventLog } from '../events/event-log.ts';
import { FleetBus } from '../fleet-bus.ts';
import { Metrics } from '../observability/metrics.ts';
import { VmService } from '../vms/vm-service.ts';
import { WorkerService } from '../workers/worker-service.ts';
import { TokenService } from '../auth/token-service.ts';
import { SettingsService } from '../settings.ts';
import { tempDb, type TempDb } from '../storage/testing.ts';
import type { FastifyInstance } from 'fastify';
import { VmSecrets } from '../secrets/vm-secrets.ts';

const log = pino({ level: 'silent' });
let t: TempDb;
let app: FastifyInstance;
let admin: { authorization: string };
let reader: { authorization: string };

beforeAll(async () => {
  t = await tempDb();
  const db = t.db;
  const metrics = new Metrics({ defaultMetrics: false });
  const bus = new FleetBus();
  const events = new EventLog(db);
  const vms = new VmService(db, events, bus, metrics, VmSecrets.ephemeral());
  const workers = new WorkerService(db, events, bus, vms, metrics, log, {
    timings: { heartbeatIntervalMs: 100, suspectAfterMs: 200, fenceAfterMs: 500, lostAfterMs: 1000 },
    controllerId: 'ctl-test',
    disconnect: () => undefined,
  });
  const tokens = new TokenService(db, events, 'f'.repeat(64));
  const ctx: ApiContext = {
    vms, workers, tokens, events, bus, metrics,
    settings: new SettingsService(db, 'pack'),
    grpcAdvertiseAddress: '127.0.0.1:7443',
    accounts: new AccountService(db, events, tokens),
    overview: () => computeOverview({ db, listWorkers: () => workers.list() }),
    info: async () => { throw new Error('unused'); },
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
