// Heartbeats heard close together share one write; each still records when it was heard.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { migrateDatabase, openDatabase, type FleetDb } from '@fleet/db';
import { HeartbeatRecorder, heartbeatBatchWindowMs } from './heartbeat-recorder.ts';

const log = pino({ level: 'silent' });
let dir: string;
let db: FleetDb;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-heartbeats-'));
  const url = `file:${path.join(dir, 'fleet.db')}`;
  await migrateDatabase(url);
  db = openDatabase({ url });
  await db.worker.createMany({ data: ['w1', 'w2', 'w3'].map((id) => ({ id, name: id, machineId: 'm', status: 'online' })) });
});
afterEach(async () => {
  await db.$disconnect();
  await rm(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Records w1, w2, w3 `gapMs` apart and returns their rows once all three are committed. */
async function staggered(recorder: HeartbeatRecorder, gapMs: number) {
  const done: Promise<void>[] = [];
  for (const id of ['w1', 'w2', 'w3']) {
    done.push(recorder.record(id));
    await sleep(gapMs);
  }
  await Promise.all(done);
  return db.worker.findMany({ where: { id: { in: ['w1', 'w2', 'w3'] } }, orderBy: { id: 'asc' } });
}

describe('HeartbeatRecorder', () => {
  it('writes the heartbeats heard within its window in one transaction, each with the time it was heard', async () => {
    const rows = await staggered(new HeartbeatRecorder(db, 'ctl-a', log, { batchWindowMs: 200 }), 20);
    // One flush: one version (updatedAt) for all three rows.
    expect(new Set(rows.map((r) => r.updatedAt.getTime())).size).toBe(1);
    const heard = rows.map((r) => r.lastSeenAt!.getTime());
    expect(heard[1]! - heard[0]!).toBeGreaterThanOrEqual(15);
    expect(heard[2]! - heard[1]!).toBeGreaterThanOrEqual(15);
    expect(rows.every((r) => r.controllerId === 'ctl-a' && r.connected)).toBe(true);
  });

  it('without a window, heartbeats of different event-loop turns are written apart', async () => {
    const rows = await staggered(new HeartbeatRecorder(db, 'ctl-a', log), 20);
    expect(new Set(rows.map((r) => r.updatedAt.getTime())).size).toBe(3);
  });

  it('sizes the window from the heartbeat interval: a twentieth, at most 50 ms', () => {
    expect(heartbeatBatchWindowMs(5_000)).toBe(50);
    expect(heartbeatBatchWindowMs(500)).toBe(25);
    expect(heartbeatBatchWindowMs(100)).toBe(5);
    expect(heartbeatBatchWindowMs(10)).toBe(0);
  });
});
