// Faults across processes: a worker killed with SIGKILL, a controller restarted
// under a running fleet, and a controller killed while a client creates VMs.
//
// Timings: heartbeat 500 ms, lostAfter 8 s, so fenceAfter is 6 s (failure-timing.ts):
// a controller restart shorter than that leaves every VM running.
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  enrollAndRunWorker,
  REPO_ROOT,
  removeDir,
  runWorker,
  startProcess,
  startControllerProcess,
  tempDir,
  waitUntil,
  type ControllerProcess,
  type WorkerProcess,
} from './support/fleet-processes.ts';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const OFFLINE = '8s';
let controller: ControllerProcess;
let ctlDir: string;
let apiPort: number;
let grpcPort: number;
const workers: WorkerProcess[] = [];
const dirs: string[] = [];

beforeAll(async () => {
  ctlDir = await tempDir('ctl-faults');
  dirs.push(ctlDir);
  [apiPort, grpcPort] = [await freePort(), await freePort()];
  controller = await startControllerProcess({ dataDir: ctlDir, apiPort, grpcPort, offlineTimeout: OFFLINE });
  for (const name of ['fault-a', 'fault-b']) {
    const w = await enrollAndRunWorker(controller, { name, cpus: 16, memoryMib: 32768, vmSlots: 10 });
    workers.push(w);
    dirs.push(w.dataDir);
  }
});

afterAll(async () => {
  await Promise.all(workers.map((w) => w.kill()));
  await controller?.kill();
  await Promise.all(dirs.map(removeDir));
});

describe('faults', () => {
  it('VMs of a killed worker fail and, with on-failure, restart on the other worker', async () => {
    for (let i = 0; i < 4; i++) await controller.api.createVm({ name: `survivor-${i}`, image: 'synthetic:ok', cpus: 1, memoryMib: 512, restartPolicy: 'on-failure' });
    await controller.api.createVm({ name: 'no-restart', image: 'synthetic:ok', cpus: 1, memoryMib: 512, restartPolicy: 'never' });
    await waitUntil(async () => (await controller.api.vms()).filter((v) => v.state === 'running').length === 5, 30_000, '5 VMs running');
    // The pack profile put them together; kill that worker outright.
    const host = (await controller.api.vm('survivor-0')).worker as string;
    const victim = workers.find((w) => w.name === host)!;
    const other = workers.find((w) => w.name !== host)!;
    await victim.kill('SIGKILL');

    // First unknown (the worker may still run them), never failed before the worker is lost.
    await waitUntil(async () => (await controller.api.vm('no-restart')).state === 'unknown', 10_000, 'no-restart unknown');
    expect((await controller.api.vm('survivor-0')).attempt).toBe(1);
    await waitUntil(async () => (await controller.api.worker(host)).status === 'offline', 20_000, `${host} offline`);
    await waitUntil(async () => (await controller.api.vm('no-restart')).state === 'failed', 10_000, 'no-restart failed');
    expect((await controller.api.vm('no-restart')).reason).toMatch(/lost/);
    await waitUntil(
      async () => {
        const vms = await Promise.all([0, 1, 2, 3].map((i) => controller.api.vm(`survivor-${i}`)));
        return vms.every((v) => v.state === 'running' && v.worker === other.name);
      },
      40_000,
      'survivors running on the other worker',
    );
    const survivor = await controller.api.vm('survivor-0');
    expect(survivor.restartCount).toBe(1);
    expect(survivor.attempt).toBe(2);
    const log = await controller.api.ok('GET', '/v1/vms/survivor-0/events');
    expect(log.events.map((e: { message: string }) => e.message).join('\n')).toMatch(/unknown: worker .* unreachable[\s\S]*failed: worker .* lost[\s\S]*restart 1/);
    // The dead worker's capacity is still held: only the worker can confirm its VMs are gone.
    expect((await controller.api.worker(host)).used.vms).toBe(5);

    // When it comes back it reports nothing running; the held capacity is released.
    const revived = runWorker({ name: victim.name, dataDir: victim.dataDir, cpus: 16, memoryMib: 32768, vmSlots: 10 });
    workers.splice(workers.indexOf(victim), 1, revived);
    await waitUntil(async () => (await controller.api.worker(host)).used.vms === 0, 20_000, `${host} capacity released after reconnect`);
    expect((await controller.api.vm('no-restart')).state).toBe('failed');
  });

  it('restarting the controller keeps state and workers reconnect', async () => {
    const before = await controller.api.vms();
    const running = before.filter((v) => v.state === 'running').map((v) => v.name).sort();
    expect(running.length).toBeGreaterThan(0);
    await controller.kill('SIGTERM');
    controller = await startControllerProcess({ dataDir: ctlDir, apiPort, grpcPort, offlineTimeout: OFFLINE });
    for (const w of workers) {
      await waitUntil(async () => (await controller.api.worker(w.name))?.connected === true, 40_000, `${w.name} reconnected`);
    }
    // Give the offline timeout a chance to (wrongly) fail anything.
    await new Promise((r) => setTimeout(r, 4000));
    const after = await controller.api.vms();
    expect(after.filter((v) => v.state === 'running').map((v) => v.name).sort()).toEqual(running);
    for (const w of (await controller.api.ok('GET', '/v1/workers')).workers as any[]) {
      const onIt = after.filter((v) => v.worker === w.name && v.state === 'running').length;
      expect(w.used.vms).toBe(onIt);
    }
  });

  it('a controller killed (-9) while a client creates VMs: retried with their Idempotency-Keys, none is lost or duplicated', async () => {
    const names = Array.from({ length: 12 }, (_, i) => `burst-${i}`);
    const keys = new Map(names.map((n) => [n, randomUUID()]));
    const outcome = new Map<string, number>();
    let refused = 0;
    // The kill follows the fourth answer at once: polled for, it could come after the client had
    // sent every create (a create takes a few milliseconds), and then it landed in no stream.
    let fourAnswered: () => void = () => undefined;
    const firstFour = new Promise<void>((resolve) => (fourAnswered = resolve));
    // The client: creates in order, retrying connection failures and 5xx with the same key and body.
    const create = async (name: string): Promise<void> => {
      for (let attempt = 0; attempt < 200; attempt++) {
        try {
          const res = await fetch(`${controller.apiUrl}/v1/vms`, {
            method: 'POST',
            headers: { authorization: `Bearer ${controller.adminToken}`, 'content-type': 'application/json', 'idempotency-key': keys.get(name)! },
            body: JSON.stringify({ name, image: 'synthetic:ok', cpus: 1, memoryMib: 256 }),
          });
          if (res.status < 500 && res.status !== 409) {
            outcome.set(name, res.status);
            if (outcome.size === 4) fourAnswered();
            return;
          }
          if (res.status === 409 && ((await res.json()) as { error?: { code?: string } }).error?.code !== 'idempotency_key_in_flight') {
            outcome.set(name, 409);
            return;
          }
        } catch {
          refused++; // the controller is down: retry
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`create ${name} never got through`);
    };
    const client = (async () => {
      for (const n of names) await create(n);
    })();
    await Promise.race([firstFour, new Promise((_, reject) => setTimeout(() => reject(new Error('timed out after 20000 ms waiting for the first creates')), 20_000).unref())]);
    await controller.kill('SIGKILL'); // mid-stream: some creates committed, maybe without their answer
    controller = await startControllerProcess({ dataDir: ctlDir, apiPort, grpcPort, offlineTimeout: OFFLINE });
    await client;
    expect(refused).toBeGreaterThan(0); // the kill did land in the stream of creates
    // Every create got its 201 (the original one or the replay of it), and each VM exists once.
    expect([...outcome.entries()].filter(([, code]) => code !== 201)).toEqual([]);
    const all = (await controller.api.vms()).filter((v) => v.name.startsWith('burst-'));
    expect(all.map((v) => v.name).sort()).toEqual([...names].sort());
    await waitUntil(async () => (await controller.api.vms()).filter((v) => v.name.startsWith('burst-') && v.state === 'running').length === names.length, 60_000, 'every burst VM running');
  });

  it('a second controller on the same database refuses to start and names the running one', async () => {
    const second = startProcess([
      `${REPO_ROOT}/apps/controller/bin/fleet-controller.js`, 'run', '--data-dir', ctlDir, '--listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0',
    ]);
    expect(await second.exited).toBe(1);
    expect(second.output()).toMatch(/another Fleet controller is running on the database .*fleet\.db \(pid \d+ on .*\)\. One controller per SQLite database/);
    // The running one did not notice.
    expect((await controller.api.ok('GET', '/v1/health')).status).toBe('ok');
  });
});
