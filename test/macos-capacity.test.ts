// Virtualization.framework refuses a macOS guest when the host's 2 macOS slots are taken, even
// by VMs outside Fleet (VZErrorVirtualMachineLimitExceeded). The worker must not keep accepting
// macOS VMs it cannot start: it re-advertises fewer macOS slots, the controller stops placing
// macOS VMs there (with a reason), and places them again once the host can take them.
// A synthetic worker stands in for the Mac (image synthetic:macos-limit injects the error).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enrollAndRunWorker, removeDir, startControllerProcess, tempDir, waitUntil, type ControllerProcess, type WorkerProcess } from './support/fleet-processes.ts';

let controller: ControllerProcess;
let mac: WorkerProcess;
const dirs: string[] = [];

beforeAll(async () => {
  const d = await tempDir('ctl-macos');
  dirs.push(d);
  controller = await startControllerProcess({ dataDir: d });
  // speed 0.01: the synthetic driver retries macOS guests 3 s after a limit error (5 min × 0.01).
  mac = await enrollAndRunWorker(controller, { name: 'mac-1', cpus: 8, memoryMib: 32768, vmSlots: 4, macosSlots: 2, speed: 0.01 });
  dirs.push(mac.dataDir);
});

afterAll(async () => {
  await mac?.kill();
  await controller?.kill();
  await Promise.all(dirs.map(removeDir));
});

describe('macOS slots taken outside Fleet', () => {
  it('a limit error closes the host to macOS VMs at the controller, with a reason, until it can take them again', async () => {
    const api = controller.api;
    await api.createVm({ name: 'mac-refused', image: 'synthetic:macos-limit', os: 'macos', cpus: 1, memoryMib: 1024 });
    await waitUntil(async () => (await api.vm('mac-refused'))?.state === 'failed', 30_000, 'mac-refused to fail');
    expect((await api.vm('mac-refused')).reason).toMatch(/VZErrorVirtualMachineLimitExceeded/);
    // The worker now offers the macOS guests it runs (none): the scheduler says why it waits.
    await waitUntil(async () => (await api.worker('mac-1')).capacity.macosSlots === 0, 10_000, 'mac-1 to offer 0 macOS slots');
    const events = (await api.ok<{ events: { kind: string; message: string }[] }>('GET', '/v1/events?kind=worker.capacity')).events;
    expect(events.some((e) => /0 macOS slots: VZErrorVirtualMachineLimitExceeded/.test(e.message))).toBe(true);
    await api.createVm({ name: 'mac-waits', image: 'synthetic:ok', os: 'macos', cpus: 1, memoryMib: 1024 });
    await new Promise((r) => setTimeout(r, 500));
    const waiting = await api.vm('mac-waits');
    expect(waiting.state).toBe('pending');
    expect(waiting.reason).toMatch(/macOS/);
    // A Linux VM is still welcome there.
    await api.createVm({ name: 'linux-ok', image: 'synthetic:ok', os: 'linux', cpus: 1, memoryMib: 1024 });
    await waitUntil(async () => (await api.vm('linux-ok'))?.state === 'running', 30_000, 'linux-ok running');

    // The host retries macOS guests later (5 min on a Mac, 3 s here): the waiting VM starts.
    await waitUntil(async () => (await api.worker('mac-1')).capacity.macosSlots === 2, 20_000, 'mac-1 to offer 2 macOS slots again');
    await waitUntil(async () => (await api.vm('mac-waits'))?.state === 'running', 30_000, 'mac-waits running');
  }, 90_000);
});
