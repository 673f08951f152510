// GET /v1/vms streams the list in batches (issue 20): the response must be the bytes the whole
// list made through the route's response schema before, in the same order, across batch
// boundaries and with the filters.
import { Type } from '@sinclair/typebox';
import Fastify, { type FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccountService } from '../../accounts/account-service.ts';
import type { WorkerStreams } from '../../grpc/worker-streams.ts';
import { VmSecrets } from '../../secrets/vm-secrets.ts';
import { SessionBroker } from '../../sessions/session-broker.ts';
import { SettingsService } from '../../settings.ts';
import { computeOverview } from '../../stats/overview.ts';
import { tempDb, type TempDb } from '../../storage/testing.ts';
import { toVmObject } from '../../vms/vm-view.ts';
import type { VmService } from '../../vms/vm-service.ts';
import { buildApiServer } from '../api-server.ts';
import type { ApiContext } from '../context.ts';
import { VmObject } from '../schemas.ts';
import { coreServices } from '../testing.ts';

const log = pino({ level: 'silent' });
let t: TempDb;
let app: FastifyInstance;
let vms: VmService;
let reader: { authorization: string };
const COUNT = 23;

beforeAll(async () => {
  t = await tempDb();
  const db = t.db;
  const core = coreServices(db, log);
  vms = core.vms;
  const { workers, tokens, events, bus, metrics } = core;
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
  const admin = { authorization: `Bearer ${(await tokens.createApiToken({ name: 'admin', roles: ['admin'] }, 'test')).token}` };
  reader = { authorization: `Bearer ${(await tokens.createApiToken({ name: 'reader', roles: ['read'] }, 'test')).token}` };
  for (let i = 0; i < COUNT; i++) {
    const spec = { name: `vm-${i}`, image: 'img', cpus: 1, memoryMib: 512, labels: { n: String(i) }, ...(i % 7 === 0 ? { password: 'secret-pass-1' } : {}) };
    const r = await app.inject({ method: 'POST', url: '/v1/vms', headers: admin, payload: spec });
    expect(r.statusCode, r.body).toBe(201);
  }
  // A second state, for the filter (set in the database: no worker runs these VMs).
  await db.vm.updateMany({ where: { name: { in: ['vm-3', 'vm-11', 'vm-19'] } }, data: { state: 'stopped' } });
});
afterAll(async () => {
  await app?.close();
  await t?.close();
});

/** What GET /v1/vms answered before it streamed: the whole list through the response schema's serializer. */
async function wholeList(filter: { state?: string }): Promise<string> {
  const ref = Fastify();
  ref.get('/ref', { schema: { response: { 200: Type.Object({ vms: Type.Array(VmObject) }) } } }, async () => {
    const withPassword = await vms.idsWithPassword();
    // No VM is placed (no worker name) and no counters are reported in this test.
    return { vms: (await vms.list(filter)).map((vm) => ({ ...toVmObject(vm, null, withPassword.has(vm.id)), networkCounters: null })) };
  });
  const body = (await ref.inject({ url: '/ref' })).body;
  await ref.close();
  return body;
}

describe('VmService.listInBatches', () => {
  it('yields what list() returns, in the same order, for any batch size', async () => {
    const all = (await vms.list()).map((v) => v.id);
    expect(all).toHaveLength(COUNT);
    for (const size of [1, 5, 22, 23, 500]) {
      const batches: string[][] = [];
      for await (const b of vms.listInBatches({}, size)) batches.push(b.map((v) => v.id));
      expect(batches.flat(), `batch size ${size}`).toEqual(all);
      expect(batches.every((b) => b.length <= size)).toBe(true);
      expect(batches).toHaveLength(Math.ceil(COUNT / size));
    }
    const stopped: string[] = [];
    for await (const b of vms.listInBatches({ state: 'stopped' }, 2)) stopped.push(...b.map((v) => v.name));
    expect(stopped).toEqual((await vms.list({ state: 'stopped' })).map((v) => v.name));
  });

  it('leaves out a VM deleted between its id and its batch being read', async () => {
    const gen = vms.listInBatches({}, 10);
    const first = await gen.next();
    expect(first.value).toHaveLength(10);
    const victim = (await vms.list())[15]!;
    await t.db.vm.delete({ where: { id: victim.id } });
    const rest: string[] = [];
    for await (const b of gen) rest.push(...b.map((v) => v.id));
    expect(rest).toHaveLength(COUNT - 11);
    expect(rest).not.toContain(victim.id);
    // Put it back for the other tests (same row).
    await t.db.vm.create({ data: victim });
  });
});

describe('GET /v1/vms (streamed)', () => {
  it('answers the same bytes as the whole list through the response schema', async () => {
    const r = await app.inject({ url: '/v1/vms', headers: reader });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.body).toBe(await wholeList({}));
    const parsed = r.json() as { vms: { name: string; passwordSet: boolean }[] };
    expect(parsed.vms).toHaveLength(COUNT);
    expect(parsed.vms.filter((v) => v.passwordSet).map((v) => v.name)).toEqual(['vm-0', 'vm-7', 'vm-14', 'vm-21']);
  });

  it('with ?state= as before', async () => {
    const r = await app.inject({ url: '/v1/vms?state=stopped', headers: reader });
    expect(r.statusCode).toBe(200);
    expect(r.body).toBe(await wholeList({ state: 'stopped' }));
    expect((r.json() as { vms: unknown[] }).vms).toHaveLength(3);
  });

  it('an empty match is an empty list', async () => {
    const r = await app.inject({ url: '/v1/vms?state=failed', headers: reader });
    expect(r.statusCode).toBe(200);
    expect(r.body).toBe('{"vms":[]}');
  });
});
