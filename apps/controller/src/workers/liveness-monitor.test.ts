// The leader's liveness judgement from the database: heartbeats recorded by another controller
// keep a worker alive, a deposed leader changes nothing, and a heartbeat that lands between the
// leader's read and its write keeps the worker online.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { migrateDatabase, NotLeaderError, openDatabase, type FleetDb } from '@fleet/db';
import { EventLog } from '../events/event-log.ts';
import { FleetBus } from '../fleet-bus.ts';
import { Metrics } from '../observability/metrics.ts';
import { VmService } from '../vms/vm-service.ts';
import { LivenessMonitor } from './liveness-monitor.ts';
import { HeartbeatRecorder } from './heartbeat-recorder.ts';
import { VmSecrets } from '../secrets/vm-secrets.ts';

const log = pino({ level: 'silent' });
const timings = { heartbeatIntervalMs: 100, suspectAfterMs: 250, fenceAfterMs: 500, lostAfterMs: 1000 };
let dir: string;
let db: FleetDb;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-liveness-'));
  const url = `file:${path.join(dir, 'fleet.db')}`;
  await migrateDatabase(url);
  db = openDatabase({ url });
});
afterEach(async () => {
  await db.$disconnect();
  await rm(dir, { recursive: true, force: true });
});

function monitor(fence: () => Promise<void> = async () => undefined) {
  const bus = new FleetBus();
  const events = new EventLog(db);
  const metrics = new Metrics({ defaultMetrics: false });
  const vms = new VmService(db, events, bus, metrics, VmSecrets.ephemeral());
  const m = new LivenessMonitor(db, vms, events, bus, metrics, log, { timings, startupGraceMs: 0, fence, disconnect: () => undefined });
  m.start({ timer: false });
  return m;
}

const status = async (id: string) => (await db.worker.findUniqueOrThrow({ where: { id } })).status;

describe('liveness from the database', () => {
  it('heartbeats another controller records keep a worker online; a worker whose row stops changing is lost', async () => {
    await db.worker.createMany({
      data: [
        { id: 'alive', name: 'alive', machineId: 'm', status: 'online', connected: true, controllerId: 'ctl-other', lastSeenAt: new Date() },
        { id: 'silent', name: 'silent', machineId: 'm', status: 'online', connected: true, controllerId: 'ctl-other', lastSeenAt: new Date() },
      ],
    });
    const elsewhere = new HeartbeatRecorder(db, 'ctl-other', log);
    const m = monitor();
    const t0 = Date.now();
    await m.tick(t0);
    for (const dt of [400, 800, 1200, 1600]) {
      await elsewhere.record('alive'); // a heartbeat committed by the controller holding the stream
      await m.tick(t0 + dt);
    }
    expect(await status('alive')).toBe('online');
    expect(await status('silent')).toBe('offline');
    m.stop();
  });

  it('a deposed leader (its fence refuses) marks nothing lost', async () => {
    await db.worker.create({ data: { id: 'w', name: 'w', machineId: 'm', status: 'online', lastSeenAt: new Date() } });
    const m = monitor(async () => {
      throw new NotLeaderError('lost the lease');
    });
    const t0 = Date.now();
    await m.tick(t0);
    await m.tick(t0 + 5_000);
    expect(await status('w')).toBe('online');
    m.stop();
  });

  it('a heartbeat committed between the read and the write keeps the worker online', async () => {
    await db.worker.create({ data: { id: 'w', name: 'w', machineId: 'm', status: 'online', lastSeenAt: new Date(Date.now() - 60_000) } });
    const recorder = new HeartbeatRecorder(db, 'ctl-other', log);
    // The fence runs first inside the marking transaction: record a heartbeat right there.
    let sneak = true;
    const m = monitor(async () => {
      if (!sneak) return;
      sneak = false;
      await db.worker.update({ where: { id: 'w' }, data: { lastSeenAt: new Date() } });
    });
    const t0 = Date.now();
    await m.tick(t0);
    await m.tick(t0 + 2_000);
    expect(await status('w')).toBe('online');
    await recorder.record('w'); // and the recorder still finds it online
    m.stop();
  });

  it('the recorder refuses to renew a worker the leader marked offline', async () => {
    await db.worker.create({ data: { id: 'w', name: 'w', machineId: 'm', status: 'offline' } });
    const told: string[] = [];
    const recorder = new HeartbeatRecorder(db, 'ctl-a', log, { onNotOnline: (id) => told.push(id) });
    await expect(recorder.record('w')).rejects.toThrow(/not online/);
    expect(told).toEqual(['w']);
  });
});
