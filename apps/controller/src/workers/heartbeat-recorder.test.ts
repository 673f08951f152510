// Heartbeats heard close together share one write; each still records when it was heard.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { EventLog } from '../events/event-log.ts';
import { FleetBus } from '../fleet-bus.ts';
import { Metrics } from '../observability/metrics.ts';
import { VmSecrets } from '../secrets/vm-secrets.ts';
import { tempDb, type TempDb } from '../storage/testing.ts';
import { VmService } from '../vms/vm-service.ts';
import { HeartbeatRecorder, heartbeatBatchWindowMs } from './heartbeat-recorder.ts';
import { WorkerService } from './worker-service.ts';

const log = pino({ level: 'silent' });
let t: TempDb;

beforeEach(async () => {
  t = await tempDb();
  await t.db.worker.createMany({ data: ['w1', 'w2', 'w3'].map((id) => ({ id, name: id, machineId: 'm', status: 'online' })) });
});
afterEach(() => t.close());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Records w1, w2, w3 `gapMs` apart and returns their rows once all three are committed. */
async function staggered(recorder: HeartbeatRecorder, gapMs: number) {
  const done: Promise<void>[] = [];
  for (const id of ['w1', 'w2', 'w3']) {
    done.push(recorder.record(id));
    await sleep(gapMs);
  }
  await Promise.all(done);
  return t.db.worker.findMany({ where: { id: { in: ['w1', 'w2', 'w3'] } }, orderBy: { id: 'asc' } });
}

describe('HeartbeatRecorder', () => {
  it('writes the heartbeats heard within its window in one transaction, each with the time it was heard', async () => {
    const rows = await staggered(new HeartbeatRecorder(t.db, 'ctl-a', log, { batchWindowMs: 200 }), 20);
    // One flush: one version (updatedAt) for all three rows.
    expect(new Set(rows.map((r) => r.updatedAt.getTime())).size).toBe(1);
    const heard = rows.map((r) => r.lastSeenAt!.getTime());
    expect(heard[1]! - heard[0]!).toBeGreaterThanOrEqual(15);
    expect(heard[2]! - heard[1]!).toBeGreaterThanOrEqual(15);
    expect(rows.every((r) => r.controllerId === 'ctl-a' && r.connected)).toBe(true);
  });

  it('without a window, heartbeats of different event-loop turns are written apart', async () => {
    const rows = await staggered(new HeartbeatRecorder(t.db, 'ctl-a', log), 20);
    expect(new Set(rows.map((r) => r.updatedAt.getTime())).size).toBe(3);
  });

  it('sizes the window from the heartbeat interval: a twentieth, at most 50 ms', () => {
    expect(heartbeatBatchWindowMs(5_000)).toBe(50);
    expect(heartbeatBatchWindowMs(500)).toBe(25);
    expect(heartbeatBatchWindowMs(100)).toBe(5);
    expect(heartbeatBatchWindowMs(10)).toBe(0);
  });

  it('the controller\'s WorkerService records with the window its heartbeat interval gives', async () => {
    const bus = new FleetBus();
    const events = new EventLog(t.db);
    const metrics = new Metrics({ defaultMetrics: false });
    const vms = new VmService(t.db, events, bus, metrics, VmSecrets.ephemeral());
    const timings = { heartbeatIntervalMs: 5_000, suspectAfterMs: 11_000, fenceAfterMs: 20_000, lostAfterMs: 30_000 };
    const workers = new WorkerService(t.db, events, bus, vms, metrics, log, { timings, controllerId: 'ctl-a', disconnect: () => undefined });
    // 50 ms window: three heartbeats 5 ms apart share one write.
    const rows = await staggered(workers.heartbeats, 5);
    expect(new Set(rows.map((r) => r.updatedAt.getTime())).size).toBe(1);
  });
});
