// A worker's NAT network has a finite pool of VM addresses, and the worker holds one per VM
// instance from creation to removal, whatever its power state. The controller must not place
// more VMs on a worker than it has addresses, must say so in the pending reason, and must count
// stopped VMs too. A synthetic worker with a 2-address pool stands in for a small NAT subnet.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enrollAndRunWorker, removeDir, startControllerProcess, tempDir, waitUntil, type ControllerProcess, type WorkerProcess } from './support/fleet-processes.ts';

let controller: ControllerProcess;
let worker: WorkerProcess;
const dirs: string[] = [];

beforeAll(async () => {
  const d = await tempDir('ctl-nat-addresses');
  dirs.push(d);
  controller = await startControllerProcess({ dataDir: d });
  // 4 VM slots but only 2 addresses: the addresses are what binds.
  worker = await enrollAndRunWorker(controller, { name: 'nat-1', cpus: 8, memoryMib: 16384, vmSlots: 4, macosSlots: 0, natAddresses: 2, speed: 0.01 });
  dirs.push(worker.dataDir);
});

afterAll(async () => {
  await worker?.kill();
  await controller?.kill();
  await Promise.all(dirs.map(removeDir));
});

describe('VM addresses as a scheduling resource', () => {
  it('places no more VMs than the worker has addresses, counts stopped VMs, and says why the rest wait', async () => {
    const api = controller.api;
    const w = await api.worker('nat-1');
    expect(w.capacity).toMatchObject({ vmSlots: 4, natAddresses: 2 });
    expect(w.used).toMatchObject({ vms: 0, natAddresses: 0 });

    for (const name of ['a-1', 'a-2', 'a-3']) await api.createVm({ name, image: 'synthetic:ok', cpus: 1, memoryMib: 512 });
    await waitUntil(async () => (await api.vms()).filter((v) => v.state === 'running').length === 2, 30_000, '2 VMs running');
    const reason = 'waiting for a VM address: the only matching worker (nat-1) has no free VM address (2 of 2 in its NAT subnet in use)';
    await waitUntil(async () => (await api.vm('a-3'))?.reason === reason, 10_000, 'a-3 to wait for an address');
    expect((await api.vm('a-3')).state).toBe('pending');
    expect((await api.worker('nat-1')).used).toMatchObject({ vms: 2, natAddresses: 2 });

    // A stopped VM still holds its address: nothing moves.
    await api.ok('PATCH', '/v1/vms/a-1', { powerState: 'stopped' });
    await waitUntil(async () => (await api.vm('a-1'))?.state === 'stopped', 30_000, 'a-1 stopped');
    await new Promise((r) => setTimeout(r, 500));
    expect(await api.vm('a-3')).toMatchObject({ state: 'pending', reason });

    // Deleting it frees the address (once the worker confirms): the waiting VM runs.
    await api.ok('DELETE', '/v1/vms/a-1');
    await waitUntil(async () => (await api.vm('a-3'))?.state === 'running', 30_000, 'a-3 running');
    expect((await api.worker('nat-1')).used).toMatchObject({ vms: 2, natAddresses: 2 });
  }, 90_000);
});
