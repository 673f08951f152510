// A controller and two synthetic workers as separate processes: 50 VMs are
// placed by labels, resources and macOS slots; the ones that cannot run say why.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  enrollAndRunWorker,
  removeDir,
  startControllerProcess,
  tempDir,
  waitUntil,
  type ControllerProcess,
  type WorkerProcess,
} from './support/fleet-processes.ts';

let controller: ControllerProcess;
let eu: WorkerProcess;
let us: WorkerProcess;
const dirs: string[] = [];

beforeAll(async () => {
  const d = await tempDir('ctl-sched');
  dirs.push(d);
  controller = await startControllerProcess({ dataDir: d });
  [eu, us] = await Promise.all([
    enrollAndRunWorker(controller, { name: 'mac-eu', labels: 'pool=ci,region=eu', cpus: 24, memoryMib: 65536, vmSlots: 30, macosSlots: 2 }),
    enrollAndRunWorker(controller, { name: 'mac-us', labels: 'pool=ci,region=us', cpus: 24, memoryMib: 65536, vmSlots: 30, macosSlots: 2 }),
  ]);
  dirs.push(eu.dataDir, us.dataDir);
});

afterAll(async () => {
  await Promise.all([eu?.kill(), us?.kill()]);
  await controller?.kill();
  await Promise.all(dirs.map(removeDir));
});

describe('scheduling across two workers', () => {
  it('places 50 VMs by selector, resources and macOS slots, and explains the rest', async () => {
    const specs: Record<string, unknown>[] = [];
    for (let i = 0; i < 20; i++) specs.push({ name: `eu-${i}`, image: 'synthetic:ok', cpus: 1, memoryMib: 1024, selector: { region: 'eu' } });
    for (let i = 0; i < 20; i++) specs.push({ name: `us-${i}`, image: 'synthetic:ok', cpus: 1, memoryMib: 1024, selector: { region: 'us' } });
    for (let i = 0; i < 3; i++) specs.push({ name: `macos-${i}`, image: 'synthetic:macos', os: 'macos', cpus: 1, memoryMib: 1024, selector: { region: 'eu' } });
    for (let i = 0; i < 4; i++) specs.push({ name: `gpu-${i}`, image: 'synthetic:ok', selector: { gpu: 'true' } });
    for (let i = 0; i < 3; i++) specs.push({ name: `huge-${i}`, image: 'synthetic:ok', cpus: 64 });
    expect(specs).toHaveLength(50);
    // Concurrent creates: the scheduler must never hand out one slot twice.
    await Promise.all(specs.map((s) => controller.api.createVm(s)));

    await waitUntil(async () => (await controller.api.vms()).filter((v) => v.state === 'running').length === 42, 60_000, '42 VMs running');
    const vms = await controller.api.vms();
    const byName = new Map(vms.map((v) => [v.name as string, v]));
    for (let i = 0; i < 20; i++) {
      expect(byName.get(`eu-${i}`)).toMatchObject({ state: 'running', worker: 'mac-eu' });
      expect(byName.get(`eu-${i}`).ip).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
      expect(byName.get(`us-${i}`)).toMatchObject({ state: 'running', worker: 'mac-us' });
    }
    const macos = [0, 1, 2].map((i) => byName.get(`macos-${i}`));
    expect(macos.filter((v) => v.state === 'running')).toHaveLength(2);
    const waitingMac = macos.find((v) => v.state === 'pending');
    expect(waitingMac.reason).toMatch(/macOS/);
    for (let i = 0; i < 4; i++) {
      expect(byName.get(`gpu-${i}`).state).toBe('pending');
      expect(byName.get(`gpu-${i}`).reason).toMatch(/selector.*gpu=true/);
    }
    for (let i = 0; i < 3; i++) {
      expect(byName.get(`huge-${i}`).state).toBe('pending');
      expect(byName.get(`huge-${i}`).reason).toMatch(/64 CPUs/);
    }

    const workers = (await controller.api.ok('GET', '/v1/workers')).workers as any[];
    for (const w of workers) {
      expect(w.used.vms).toBeLessThanOrEqual(w.capacity.vmSlots);
      expect(w.used.macosVms).toBeLessThanOrEqual(w.capacity.macosSlots);
      expect(w.used.cpus).toBeLessThanOrEqual(w.capacity.cpus);
    }
    expect(workers.find((w) => w.name === 'mac-eu').used).toMatchObject({ vms: 22, macosVms: 2 });
    expect(workers.find((w) => w.name === 'mac-us').used).toMatchObject({ vms: 20, macosVms: 0 });

    // Freeing a macOS slot lets the waiting macOS VM run.
    const running = macos.find((v) => v.state === 'running');
    await controller.api.request('DELETE', `/v1/vms/${running.name}`);
    await waitUntil(async () => (await controller.api.vm(waitingMac.name))?.state === 'running', 30_000, 'third macOS VM running after a slot frees');
    await waitUntil(async () => (await controller.api.vm(running.name)) === null, 30_000, 'deleted macOS VM gone');

    // Every transition left an event.
    const log = await controller.api.ok('GET', '/v1/vms/eu-0/events');
    const transitions = log.events.map((e: { kind: string; data: { to?: string } }) => e.data.to ?? e.kind);
    expect(transitions).toEqual(expect.arrayContaining(['vm.created', 'scheduled', 'running']));
  });

  it('spec updates reach the worker: generation, power off and on', async () => {
    const before = await controller.api.vm('eu-1');
    expect(before.observedGeneration).toBe(before.generation);
    const updated = await controller.api.ok('PATCH', '/v1/vms/eu-1', { image: 'synthetic:ok-v2' });
    expect(updated.generation).toBe(before.generation + 1);
    await waitUntil(async () => {
      const vm = await controller.api.vm('eu-1');
      return vm.observedGeneration === before.generation + 1 && vm.state === 'running';
    }, 30_000, 'worker applied generation 2');

    await controller.api.ok('PATCH', '/v1/vms/eu-1', { powerState: 'stopped' });
    await waitUntil(async () => (await controller.api.vm('eu-1')).state === 'stopped', 30_000, 'eu-1 stopped');
    expect((await controller.api.vm('eu-1')).ip).toBeNull();
    // A stopped VM keeps its place (and its slot) on the worker.
    expect((await controller.api.vm('eu-1')).worker).toBe('mac-eu');
    await controller.api.ok('PATCH', '/v1/vms/eu-1', { powerState: 'running' });
    await waitUntil(async () => (await controller.api.vm('eu-1')).state === 'running', 30_000, 'eu-1 running again');

    // Resizing a placed VM is refused with a reason rather than silently ignored.
    const resize = await controller.api.request('PATCH', '/v1/vms/eu-1', { cpus: 4 });
    expect(resize.status).toBe(409);
    expect(resize.body.error.message).toMatch(/while it is placed/);
  });

  it('a drained worker keeps its VMs and gets no new ones', async () => {
    await controller.api.ok('POST', '/v1/workers/mac-us/drain');
    await controller.api.createVm({ name: 'after-drain', image: 'synthetic:ok', selector: { region: 'us' } });
    await waitUntil(async () => /paused/.test((await controller.api.vm('after-drain'))?.reason ?? ''), 20_000, 'pending reason mentions the drain');
    expect((await controller.api.vm('us-0')).state).toBe('running');
    await controller.api.ok('POST', '/v1/workers/mac-us/resume');
    await waitUntil(async () => (await controller.api.vm('after-drain'))?.state === 'running', 30_000, 'after-drain running after resume');
  });

  it('custom MACs never share a worker; a network mode no worker offers waits with the reason (issue 18)', async () => {
    const mac = '02:00:5e:10:00:42';
    await controller.api.createVm({ name: 'mac-a', image: 'synthetic:ok', cpus: 1, memoryMib: 512, selector: { region: 'eu' }, mac });
    await waitUntil(async () => (await controller.api.vm('mac-a'))?.state === 'running', 30_000, 'mac-a running');
    expect(await controller.api.vm('mac-a')).toMatchObject({ worker: 'mac-eu', mac, macSource: 'custom', network: { mode: 'nat' } });
    // The same MAC (in upper case) pinned to the same worker waits, naming the VM that holds it.
    await controller.api.createVm({ name: 'mac-b', image: 'synthetic:ok', cpus: 1, memoryMib: 512, selector: { region: 'eu' }, mac: mac.toUpperCase() });
    await waitUntil(async () => /already used by vm mac-a/.test((await controller.api.vm('mac-b'))?.reason ?? ''), 20_000, 'mac-b pending for its MAC');
    expect((await controller.api.vm('mac-b')).reason).toMatch(/^MAC 02:00:5e:10:00:42 is already used by vm mac-a on every eligible worker with room \(mac-eu\)/);
    // Free to go anywhere, it goes to the other worker.
    await controller.api.createVm({ name: 'mac-c', image: 'synthetic:ok', cpus: 1, memoryMib: 512, mac });
    await waitUntil(async () => (await controller.api.vm('mac-c'))?.state === 'running', 30_000, 'mac-c running');
    expect((await controller.api.vm('mac-c')).worker).toBe('mac-us');
    // Once mac-a is gone from mac-eu, mac-b takes its place there.
    await controller.api.request('DELETE', '/v1/vms/mac-a');
    await waitUntil(async () => (await controller.api.vm('mac-b'))?.state === 'running', 30_000, 'mac-b running after mac-a is deleted');
    expect((await controller.api.vm('mac-b')).worker).toBe('mac-eu');

    // Host-only: placed on a worker that offers it, or waiting with the reason when none does.
    await controller.api.createVm({ name: 'ho-1', image: 'synthetic:ok', cpus: 1, memoryMib: 512, network: { mode: 'host-only' } });
    const workers = (await controller.api.ok('GET', '/v1/workers')).workers as { name: string; networks: { mode: string }[] }[];
    const offering = workers.filter((w) => w.networks.some((n) => n.mode === 'host-only')).map((w) => w.name);
    if (offering.length > 0) {
      await waitUntil(async () => (await controller.api.vm('ho-1'))?.state === 'running', 30_000, 'ho-1 running');
      expect(offering).toContain((await controller.api.vm('ho-1')).worker);
    } else {
      await waitUntil(async () => /network mode host-only/.test((await controller.api.vm('ho-1'))?.reason ?? ''), 20_000, 'ho-1 pending for its mode');
      expect((await controller.api.vm('ho-1')).reason).toBe('no worker offers network mode host-only (2 eligible online workers offer nat)');
    }
    // Mode none needs no network: it runs anywhere, without a MAC.
    await controller.api.createVm({ name: 'none-1', image: 'synthetic:ok', cpus: 1, memoryMib: 512, network: { mode: 'none' } });
    await waitUntil(async () => (await controller.api.vm('none-1'))?.state === 'running', 30_000, 'none-1 running');
    expect(await controller.api.vm('none-1')).toMatchObject({ network: { mode: 'none' }, mac: null });
    // A running VM's mode cannot change (409); stopped, it can.
    const change = await controller.api.request('PATCH', '/v1/vms/none-1', { network: { mode: 'nat' } });
    expect(change.status).toBe(409);
    expect(change.body.error.message).toMatch(/stop it first/);

    for (const name of ['mac-b', 'mac-c', 'ho-1', 'none-1']) await controller.api.request('DELETE', `/v1/vms/${name}`);
    await waitUntil(async () => (await controller.api.vms()).every((v) => !['mac-b', 'mac-c', 'ho-1', 'none-1'].includes(v.name)), 30_000, 'issue 18 VMs gone');
  });

  it('deletes during scheduling always win and leave no capacity behind', async () => {
    const before = (await controller.api.worker('mac-eu')).used.vms;
    const names = Array.from({ length: 10 }, (_, i) => `churn-${i}`);
    await Promise.all(
      names.map(async (name) => {
        await controller.api.createVm({ name, image: 'synthetic:ok', cpus: 1, memoryMib: 512, selector: { region: 'eu' } });
        const r = await controller.api.request('DELETE', `/v1/vms/${name}`);
        expect([202, 204]).toContain(r.status);
      }),
    );
    await waitUntil(async () => (await controller.api.vms()).every((v) => !v.name.startsWith('churn-')), 30_000, 'churn VMs gone');
    await waitUntil(async () => (await controller.api.worker('mac-eu')).used.vms === before, 30_000, 'capacity returned');
    // Deleting again is a clean 404, not an error.
    expect((await controller.api.request('DELETE', '/v1/vms/churn-0')).status).toBe(404);
  });
});
