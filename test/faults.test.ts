// Faults across processes: a worker killed with SIGKILL, and a controller
// restarted under a running fleet.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  enrollAndRunWorker,
  removeDir,
  runWorker,
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
  controller = await startControllerProcess({ dataDir: ctlDir, apiPort, grpcPort, offlineTimeout: '3s' });
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

    await waitUntil(async () => (await controller.api.worker(host)).status === 'offline', 15_000, `${host} offline`);
    await waitUntil(async () => (await controller.api.vm('no-restart')).state === 'failed', 10_000, 'no-restart failed');
    expect((await controller.api.vm('no-restart')).reason).toMatch(/offline/);
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
    expect(log.events.map((e: { message: string }) => e.message).join('\n')).toMatch(/failed: worker .* went offline[\s\S]*restart 1/);
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
    controller = await startControllerProcess({ dataDir: ctlDir, apiPort, grpcPort, offlineTimeout: '3s' });
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
});
