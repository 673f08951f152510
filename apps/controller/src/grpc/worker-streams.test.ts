// Desired-state pushes when the database fails: a failed push is retried for that worker
// with backoff until it succeeds (no later change needed), stops with the worker's
// stream, and pushes to one worker never overlap.
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ControllerMessage } from '@fleet/proto';
import { WorkerStream, WorkerStreams, type ConnectCall } from './worker-streams.ts';
import { refuseWrites, tempDb, type TempDb } from '../storage/testing.ts';
import { VmSecrets } from '../secrets/vm-secrets.ts';

const log = pino({ level: 'silent' });
let t: TempDb;
let workerId: string;
let vmId: string;

function fakeCall(): { call: ConnectCall; sent: ControllerMessage[] } {
  const sent: ControllerMessage[] = [];
  const call = { write: (m: ControllerMessage) => void sent.push(m), emit: () => true } as unknown as ConnectCall;
  return { call, sent };
}

async function until(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

beforeEach(async () => {
  t = await tempDb();
  workerId = randomUUID();
  vmId = randomUUID();
  await t.db.worker.create({ data: { id: workerId, name: 'w1', machineId: 'm' } });
  // Placed, with no access row yet: building its desired state must write one (a new key pair).
  await t.db.vm.create({ data: { id: vmId, name: 'vm-1', state: 'scheduled', image: 'img', cpus: 1, memoryMib: 512, workerId, attempt: 1 } });
  await t.db.allocation.create({ data: { id: randomUUID(), vmId, attempt: 1, workerId, cpus: 1, memoryMib: 512 } });
});
afterEach(async () => {
  await t.close();
});

describe('WorkerStreams push retry', () => {
  it('never sends an attempt whose allocation is gone (deleted before it was ever sent)', async () => {
    const streams = new WorkerStreams(t.db, log, { secrets: VmSecrets.ephemeral() });
    const { call, sent } = fakeCall();
    streams.attach(new WorkerStream(workerId, 'w1', call));
    await t.db.allocation.deleteMany({ where: { vmId } });
    streams.markDirty(workerId);
    await until(() => sent.length === 1);
    expect(sent[0]!.desiredState!.vms).toEqual([]);
  });

  it('pushes to several workers marked together side by side: their delivery marks share one commit', async () => {
    const streams = new WorkerStreams(t.db, log, { secrets: VmSecrets.ephemeral() });
    const calls = [fakeCall()];
    streams.attach(new WorkerStream(workerId, 'w1', calls[0]!.call));
    for (const n of [2, 3]) {
      const w = randomUUID();
      const v = randomUUID();
      await t.db.worker.create({ data: { id: w, name: `w${n}`, machineId: `m${n}` } });
      await t.db.vm.create({ data: { id: v, name: `vm-${n}`, state: 'scheduled', image: 'img', cpus: 1, memoryMib: 512, workerId: w, attempt: 1 } });
      await t.db.allocation.create({ data: { id: randomUUID(), vmId: v, attempt: 1, workerId: w, cpus: 1, memoryMib: 512 } });
      const c = fakeCall();
      calls.push(c);
      streams.attach(new WorkerStream(w, `w${n}`, c.call));
      streams.markDirty(w);
    }
    streams.markDirty(workerId);
    await until(() => calls.every((c) => c.sent.length === 1));
    expect(calls.map((c) => c.sent[0]!.desiredState!.vms!.length)).toEqual([1, 1, 1]);
    expect(streams.deliveryStats).toEqual({ groups: 1, writes: 3, retried: 0, prismaGroups: 0 });
    expect(await t.db.allocation.count({ where: { deliveredAt: null } })).toBe(0);
  });

  it('retries a push that failed on storage until it succeeds, without any further change', async () => {
    const observed: unknown[] = [];
    const streams = new WorkerStreams(t.db, log, { secrets: VmSecrets.ephemeral(), sink: { observe: (e) => observed.push(e) }, backoff: { baseMs: 10, maxMs: 40 } });
    const { call, sent } = fakeCall();
    const stream = new WorkerStream(workerId, 'w1', call);
    streams.attach(stream);

    await refuseWrites(t.db, true);
    streams.markDirty(workerId);
    await until(() => observed.length >= 3); // several attempts, backing off
    expect(sent).toHaveLength(0);
    expect(streams.retrying).toBe(1);
    expect(stream.delivered.size).toBe(0);

    await refuseWrites(t.db, false);
    await until(() => sent.length === 1);
    expect(streams.retrying).toBe(0);
    const vms = sent[0]!.desiredState!.vms!;
    expect(vms.map((v) => v.vmId)).toEqual([vmId]);
    expect(vms[0]!.spec!.authorizedKeys![0]).toMatch(/^ssh-ed25519 /);
    expect(stream.delivered.has(`${vmId}/1`)).toBe(true);
    expect(await t.db.vmAccess.count()).toBe(1);
    // Recorded as delivered in the database (a delete through any controller then waits for the worker).
    expect((await t.db.allocation.findFirstOrThrow({ where: { vmId } })).deliveredAt).not.toBeNull();

    // Nothing more is sent without a change.
    await new Promise((r) => setTimeout(r, 60));
    expect(sent).toHaveLength(1);
  });

  it('while a retry waits, new changes wait for it; retryNow sends at once', async () => {
    const streams = new WorkerStreams(t.db, log, { secrets: VmSecrets.ephemeral(), backoff: { baseMs: 60_000, maxMs: 60_000 } });
    const { call, sent } = fakeCall();
    streams.attach(new WorkerStream(workerId, 'w1', call));
    await refuseWrites(t.db, true);
    streams.markDirty(workerId);
    await until(() => streams.retrying === 1);
    await refuseWrites(t.db, false);
    streams.markDirty(workerId); // does not jump the backoff
    await new Promise((r) => setTimeout(r, 50));
    expect(sent).toHaveLength(0);
    streams.retryNow(); // the storage is back
    await until(() => sent.length === 1);
    expect(streams.retrying).toBe(0);
  });

  it('stops retrying when the stream ends; a new stream starts clean', async () => {
    let attempts = 0;
    const streams = new WorkerStreams(t.db, log, {
      backoff: { baseMs: 10, maxMs: 10 },
      assignments: async () => {
        attempts++;
        throw Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
      },
    });
    const first = new WorkerStream(workerId, 'w1', fakeCall().call);
    streams.attach(first);
    streams.markDirty(workerId);
    await until(() => attempts >= 2);
    streams.detach(first);
    const after = attempts;
    await new Promise((r) => setTimeout(r, 60));
    expect(attempts).toBeLessThanOrEqual(after + 1); // at most the attempt already under way
    expect(streams.retrying).toBe(0);
  });

  it('never runs two pushes to one worker at once (a newer revision never carries older state)', async () => {
    let running = 0;
    let maxRunning = 0;
    let calls = 0;
    const streams = new WorkerStreams(t.db, log, {
      assignments: async () => {
        calls++;
        running++;
        maxRunning = Math.max(maxRunning, running);
        await new Promise((r) => setTimeout(r, 20));
        running--;
        return [];
      },
    });
    const { call, sent } = fakeCall();
    const stream = new WorkerStream(workerId, 'w1', call);
    streams.attach(stream);
    const hello = streams.pushOrRetry(stream);
    for (let i = 0; i < 5; i++) {
      streams.markDirty(workerId);
      await new Promise((r) => setTimeout(r, 3));
    }
    await hello;
    await until(() => running === 0 && sent.length === calls && calls >= 2);
    await new Promise((r) => setTimeout(r, 50));
    expect(maxRunning).toBe(1);
    expect(sent.map((m) => m.desiredState!.revision)).toEqual(sent.map((_, i) => i + 1));
  });
});
