// The scheduler loop when the database refuses writes: the failed pass is retried with
// backoff by itself (no new create or tick needed), and the placement, once committed,
// reaches the worker's desired state.
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EventLog } from '../events/event-log.ts';
import { FleetBus } from '../fleet-bus.ts';
import { Metrics } from '../observability/metrics.ts';
import { VmService } from '../vms/vm-service.ts';
import { WorkerService, type HelloInfo } from '../workers/worker-service.ts';
import { SchedulerLoop } from './scheduler-loop.ts';
import { refuseWrites, tempDb, type TempDb } from '../storage/testing.ts';
import { VmSecrets } from '../secrets/vm-secrets.ts';

const log = pino({ level: 'silent' });
const HELLO: HelloInfo = {
  protocolVersion: 1, version: 't', hostname: 'h', machineId: 'm', os: 'linux', arch: 'x64',
  cpus: 8, memoryMib: 16384, vmSlots: 4, macosSlots: 0, natAddresses: 0, labels: {}, drivers: ['synthetic'], networks: [],
};
let t: TempDb;
let scheduler: SchedulerLoop | undefined;
beforeEach(async () => {
  t = await tempDb();
});
afterEach(async () => {
  scheduler?.stop();
  await t.close();
});

describe('SchedulerLoop', () => {
  it('retries a pass that failed on storage with backoff, by itself, and announces the placement', async () => {
    const db = t.db;
    const metrics = new Metrics({ defaultMetrics: false });
    const bus = new FleetBus();
    const events = new EventLog(db);
    const vms = new VmService(db, events, bus, metrics, VmSecrets.ephemeral());
    const workers = new WorkerService(db, events, bus, vms, metrics, log, {
      timings: { heartbeatIntervalMs: 100, suspectAfterMs: 60_000, fenceAfterMs: 60_000, lostAfterMs: 120_000 },
      controllerId: 'ctl-test',
      disconnect: () => undefined,
    });
    const w = await db.worker.create({ data: { id: crypto.randomUUID(), name: 'w1', machineId: 'm' } });
    await workers.onHello(w, HELLO);
    await vms.create({ name: 'a', image: 'img', cpus: 1, memoryMib: 512 }, 'test');

    const pushed: string[] = [];
    bus.onDesiredStateChange((id) => pushed.push(id));
    const observed: unknown[] = [];
    scheduler = new SchedulerLoop(db, events, bus, metrics, log, async () => "pack", 60_000, {
      sink: { observe: (e) => observed.push(e) },
      backoff: { baseMs: 10, maxMs: 40 },
    });

    await refuseWrites(db, true);
    scheduler.trigger();
    const deadline = Date.now() + 5000;
    while (observed.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(observed.length).toBeGreaterThanOrEqual(3);
    expect(scheduler.failures).toBeGreaterThanOrEqual(3);
    expect((await db.vm.findUniqueOrThrow({ where: { name: 'a' } })).state).toBe('pending');
    expect(await db.allocation.count()).toBe(0);

    await refuseWrites(db, false);
    while ((await db.vm.findUniqueOrThrow({ where: { name: 'a' } })).state !== 'scheduled') {
      if (Date.now() > deadline) throw new Error('never placed');
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(await db.allocation.count()).toBe(1);
    while (pushed.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(pushed).toEqual([w.id]);
    expect(scheduler.failures).toBe(0);
  });
});
