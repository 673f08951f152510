// The incremental scheduler (issue 20): the pending queue and the worker views kept in memory
// (creates arrive as hints, placements are applied to the views) place exactly what a pass that
// reloads everything from the database places; changes nobody announces (a drain) are caught in
// the placement transaction and followed by a reload.
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { VmCreate } from '../api/schemas.ts';
import { EventLog } from '../events/event-log.ts';
import { FleetBus } from '../fleet-bus.ts';
import { Metrics } from '../observability/metrics.ts';
import { VmSecrets } from '../secrets/vm-secrets.ts';
import { tempDb, type TempDb } from '../storage/testing.ts';
import { VmService } from '../vms/vm-service.ts';
import { WorkerService, type HelloInfo } from '../workers/worker-service.ts';
import type { SchedulerProfile } from './placement.ts';
import { SchedulerLoop } from './scheduler-loop.ts';

const log = pino({ level: 'silent' });
const HELLO: HelloInfo = {
  protocolVersion: 1, version: 't', hostname: 'h', machineId: 'm', os: 'linux', arch: 'x64',
  cpus: 8, memoryMib: 16384, vmSlots: 3, macosSlots: 0, natAddresses: 0, labels: {}, drivers: ['synthetic'], networks: [],
};
/** Workers with different room and labels (the same ids in every environment). */
const WORKERS: { id: string; name: string; hello: Partial<HelloInfo> }[] = [
  { id: '00000000-0000-4000-8000-000000000001', name: 'w1', hello: { vmSlots: 2, labels: { rack: 'a' } } },
  { id: '00000000-0000-4000-8000-000000000002', name: 'w2', hello: { vmSlots: 3, cpus: 4, labels: { rack: 'b', gpu: 'yes' } } },
  { id: '00000000-0000-4000-8000-000000000003', name: 'w3', hello: { vmSlots: 4, memoryMib: 8192, labels: { rack: 'a' } } },
  { id: '00000000-0000-4000-8000-000000000004', name: 'w4', hello: { vmSlots: 1, labels: { rack: 'c' } } },
];

interface Env {
  t: TempDb;
  vms: VmService;
  workers: WorkerService;
  scheduler: SchedulerLoop;
}
const envs: Env[] = [];

/** `incremental`: the loop runs on hints; otherwise passes are driven by the test and reload everything. */
async function env(incremental: boolean, profile: SchedulerProfile): Promise<Env> {
  const t = await tempDb();
  const bus = new FleetBus();
  const events = new EventLog(t.db);
  const metrics = new Metrics({ defaultMetrics: false });
  const vms = new VmService(t.db, events, bus, metrics, VmSecrets.ephemeral());
  const workers = new WorkerService(t.db, events, bus, vms, metrics, log, {
    timings: { heartbeatIntervalMs: 100, suspectAfterMs: 60_000, fenceAfterMs: 60_000, lostAfterMs: 120_000 },
    controllerId: 'ctl-test',
    disconnect: () => undefined,
  });
  for (const w of WORKERS) {
    const row = await t.db.worker.create({ data: { id: w.id, name: w.name, machineId: `m-${w.name}` } });
    await workers.onHello(row, { ...HELLO, ...w.hello });
  }
  // No timer-driven reloads during the test (60 s): only hints and explicit requests.
  const scheduler = new SchedulerLoop(t.db, events, bus, metrics, log, async () => profile, 60_000, { startNow: incremental });
  const e = { t, vms, workers, scheduler };
  envs.push(e);
  return e;
}

afterEach(async () => {
  for (const e of envs.splice(0)) {
    e.scheduler.stop();
    await e.t.close();
  }
});

async function settle(e: Env): Promise<void> {
  const deadline = Date.now() + 10_000;
  do {
    await new Promise((r) => setTimeout(r, 5));
    if (Date.now() > deadline) throw new Error('scheduler did not settle');
  } while (!e.scheduler.idle);
}

/** name → where it is (or why it waits). */
async function outcome(e: Env): Promise<Record<string, string>> {
  const names = new Map(WORKERS.map((w) => [w.id, w.name]));
  const rows = await e.t.db.vm.findMany({ orderBy: { name: 'asc' } });
  return Object.fromEntries(rows.map((v) => [v.name, v.state === 'pending' ? `pending: ${v.reason}` : `${v.state} on ${names.get(v.workerId ?? '') ?? '?'}`]));
}

/** A wave of creates, concurrently (one group commit, one hint burst, one incremental pass). */
async function wave(e: Env, specs: VmCreate[]): Promise<void> {
  await Promise.all(specs.map((s) => e.vms.create(s, 'test')));
}

// Distinct priorities: the planner's order does not depend on creation times or random ids,
// so both environments see the same queue in the same order.
let prio = 1000;
const vm = (name: string, extra: Partial<VmCreate> = {}): VmCreate => ({ name, image: 'img', cpus: 1, memoryMib: 1024, priority: prio--, ...extra });

describe('incremental scheduler', () => {
  for (const profile of ['pack', 'spread'] as const) {
    it(`places what a full reload places (${profile}), wave after wave`, async () => {
      const inc = await env(true, profile);
      const full = await env(false, profile);
      await settle(inc);
      const reloads0 = inc.scheduler.stats.reloads;
      const waves: VmCreate[][] = [
        [vm('a1'), vm('a2', { cpus: 2 }), vm('a3', { selector: { rack: 'a' } }), vm('a4', { selector: { gpu: 'yes' } })],
        [vm('b1', { memoryMib: 4096 }), vm('b2', { selector: { rack: 'c' } }), vm('b3'), vm('b4', { cpus: 3 })],
        // More than the fleet holds: some stay pending, with the same reason either way.
        [vm('c1'), vm('c2', { selector: { rack: 'a' } }), vm('c3', { cpus: 4 }), vm('c4', { selector: { gpu: 'yes' } }), vm('c5'), vm('c6', { selector: { rack: 'nowhere' } })],
      ];
      for (const specs of waves) {
        await wave(inc, specs);
        await settle(inc);
        await wave(full, specs);
        await full.scheduler.passOnce();
        expect(await outcome(inc)).toEqual(await outcome(full));
      }
      // The waves were placed from memory: no reload since the start.
      expect(inc.scheduler.stats.reloads).toBe(reloads0);
      expect(inc.scheduler.stats.incremental).toBeGreaterThanOrEqual(waves.length);

      // A change announced without a hint (a worker now offers more): the next pass reloads,
      // and the VMs that waited are placed as a full pass places them.
      const w4 = await inc.t.db.worker.findUniqueOrThrow({ where: { name: 'w4' } });
      await inc.workers.onCapacityUpdate(w4, { cpus: 8, memoryMib: 16384, vmSlots: 4, macosSlots: 0, natAddresses: 0 }, 'test');
      await settle(inc);
      const w4full = await full.t.db.worker.findUniqueOrThrow({ where: { name: 'w4' } });
      await full.workers.onCapacityUpdate(w4full, { cpus: 8, memoryMib: 16384, vmSlots: 4, macosSlots: 0, natAddresses: 0 }, 'test');
      await full.scheduler.passOnce();
      expect(inc.scheduler.stats.reloads).toBe(reloads0 + 1);
      expect(await outcome(inc)).toEqual(await outcome(full));

      // And the views it keeps match the database's allocations after all that.
      const placed = await inc.t.db.vm.count({ where: { state: 'scheduled' } });
      expect(await inc.t.db.allocation.count()).toBe(placed);
      expect(placed).toBeGreaterThan(10);
    });
  }

  it('never places on a worker drained since the views were loaded; reloads and places elsewhere', async () => {
    const inc = await env(true, 'spread');
    await settle(inc);
    await wave(inc, [vm('d1'), vm('d2')]);
    await settle(inc);
    const reloads = inc.scheduler.stats.reloads;
    // A drain does not ask for a pass: the cached views still show w3 open.
    await inc.workers.setPaused('w3', true, 'test');
    await wave(inc, [vm('e1'), vm('e2'), vm('e3'), vm('e4'), vm('e5')]);
    await settle(inc);
    const w3 = WORKERS.find((w) => w.name === 'w3')!.id;
    const e = await inc.t.db.vm.findMany({ where: { name: { startsWith: 'e' } } });
    expect(e.map((v) => v.state)).toEqual(['scheduled', 'scheduled', 'scheduled', 'scheduled', 'scheduled']);
    expect(e.filter((v) => v.workerId === w3)).toEqual([]);
    // The placement transaction saw the drain: the views were reloaded.
    expect(inc.scheduler.stats.reloads).toBeGreaterThan(reloads);
  });

  it('places a group of creates committed together in one pass', async () => {
    const inc = await env(true, 'spread');
    await settle(inc);
    const passes = inc.scheduler.stats.incremental + inc.scheduler.stats.reloads;
    // One group commit; every create's hint arrives in the same turn.
    await wave(inc, [vm('g1'), vm('g2'), vm('g3'), vm('g4')]);
    await settle(inc);
    expect((await inc.t.db.vm.findMany({ where: { name: { startsWith: 'g' } } })).map((v) => v.state)).toEqual(['scheduled', 'scheduled', 'scheduled', 'scheduled']);
    expect(inc.scheduler.stats.incremental + inc.scheduler.stats.reloads).toBe(passes + 1);
  });

  it("starts a requested pass before the event loop's other waiting callbacks", async () => {
    // Under load a turn of the event loop carries every HTTP request and worker message read in
    // it; a pass that waited for the next turn waited for all of them (issue 20: most of the
    // scheduling latency at 1,000 workers).
    const inc = await env(true, 'spread');
    await settle(inc);
    const passes = inc.scheduler.stats.incremental;
    const atNextTurn = new Promise<number>((resolve) => setImmediate(() => resolve(inc.scheduler.stats.incremental)));
    inc.scheduler.request({ created: [] });
    expect(await atNextTurn).toBe(passes + 1);
    await settle(inc);
  });

  it('a stale queue entry (a VM already placed) is not placed again: the conditional update; then a reload', async () => {
    const inc = await env(true, 'spread');
    await settle(inc);
    const [asCreated] = await Promise.all([inc.vms.create(vm('once'), 'test')]);
    await settle(inc);
    const placed = await inc.t.db.vm.findUniqueOrThrow({ where: { name: 'once' } });
    expect(placed).toMatchObject({ state: 'scheduled', attempt: 1 });
    const reloads = inc.scheduler.stats.reloads;
    // A hint that is no longer true (the row as it was created, pending at attempt 0).
    inc.scheduler.request({ created: [asCreated!] });
    await settle(inc);
    expect(await inc.t.db.vm.findUniqueOrThrow({ where: { name: 'once' } })).toMatchObject({ state: 'scheduled', attempt: 1, workerId: placed.workerId });
    expect(await inc.t.db.allocation.count({ where: { vmId: placed.id } })).toBe(1);
    expect(inc.scheduler.stats.reloads).toBeGreaterThan(reloads);
  });
});
