// startWorker as a whole: many workers in one process, and a restart that re-attaches to
// (persisted synthetic) instances and reports them in the new Hello.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { PowerState, VmPhase } from '@fleet/proto';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeController, type FakeController } from './link/fake-controller.test-helper.ts';
import { silentLogger } from './logger.ts';
import { startWorker, type WorkerHandle } from './worker.ts';

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const base = (fake: FakeController) => ({
  credentials: grpc.credentials.createInsecure(),
  controller: fake.address,
  synthetic: { speed: 0 },
  logger: silentLogger(),
  statusFlushMs: 10,
});

async function until(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('startWorker', () => {
  it('runs many synthetic workers in one process, each on its own connection', async () => {
    const fake = await startFakeController({ onConnect: (s) => s.welcome(1000) });
    cleanups.push(() => fake.close());
    const workers: WorkerHandle[] = [];
    for (let i = 0; i < 50; i++) {
      const w = await startWorker({ ...base(fake), name: `w${i}`, machineId: `m${i}` });
      workers.push(w);
      cleanups.push(() => w.stop());
    }
    await until(() => workers.every((w) => w.connected()));
    expect(fake.streams).toHaveLength(50);
    const peers = new Set(fake.streams.map((s) => s.call.getPeer()));
    expect(peers.size).toBe(50); // no shared HTTP/2 connection between workers
    for (const [i, s] of fake.streams.entries()) {
      s.send({ desiredState: { revision: '1', vms: [{ vmId: `vm-${i}`, name: `vm-${i}`, attempt: 1, generation: '1', desiredPower: PowerState.POWER_STATE_RUNNING, spec: { image: 'x', os: 'linux' } }] } });
    }
    await until(() => workers.every((w) => w.instances()[0]?.phase === VmPhase.VM_PHASE_RUNNING));
    await Promise.all(workers.map((w) => w.stop()));
    await expect(Promise.all(workers.map((w) => w.done))).resolves.toEqual(workers.map(() => ({ kind: 'stopped' })));
  });

  it('re-attaches to its instances after a restart and reports them in the first Hello', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'fleet-worker-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const fake = await startFakeController({ onConnect: (s) => s.welcome() });
    cleanups.push(() => fake.close());

    const first = await startWorker({ ...base(fake), dataDir, name: 'w1', machineId: 'm1' });
    const s0 = await fake.stream(0);
    await s0.hello();
    s0.send({ desiredState: { revision: '1', vms: [{ vmId: 'keep', name: 'keep', attempt: 2, generation: '4', desiredPower: PowerState.POWER_STATE_RUNNING, spec: { image: 'x', os: 'linux' } }] } });
    await until(() => first.instances()[0]?.phase === VmPhase.VM_PHASE_RUNNING);
    const before = first.instances()[0]!;
    await first.stop();

    const second = await startWorker({ ...base(fake), dataDir, name: 'w1', machineId: 'm1' });
    cleanups.push(() => second.stop());
    const hello = await (await fake.stream(1)).hello();
    expect(hello.vms).toEqual([expect.objectContaining({ vmId: 'keep', attempt: 2, phase: VmPhase.VM_PHASE_RUNNING, observedGeneration: '4', ip: before.ip, mac: before.mac })]);
  });
});
