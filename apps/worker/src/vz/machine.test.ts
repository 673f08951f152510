// The host-side VM state machine, driving the real VzVirtualMachine wrapper over the fake addon.
import { describe, expect, it } from 'vitest';
import { VzVirtualMachine, type VzMachineConfig } from '@fleet/native-vz/vz';
import { FakeVzHost } from '@fleet/native-vz/vz-fake';
import { VzMachineRunner, type HostState } from './machine.ts';

const cfg: VzMachineConfig = {
  guest: 'macos',
  cpus: 4,
  memoryBytes: 4 * 1024 ** 3,
  disks: [{ path: '/vm/disk.img', readOnly: false }],
  macos: { hardwareModel: Buffer.from('hw:1'), machineIdentifier: Buffer.from('ecid:1'), auxiliaryStoragePath: '/vm/nvram.bin' },
};

function setup(host = new FakeVzHost(), stopTimeoutMs = 200): { host: FakeVzHost; runner: VzMachineRunner; states: Array<[HostState, string | undefined]> } {
  const vm = new VzVirtualMachine(host.addon(), cfg);
  const runner = new VzMachineRunner(vm, { stopTimeoutMs });
  const states: Array<[HostState, string | undefined]> = [];
  runner.on('state', (s, m) => states.push([s, m]));
  return { host, runner, states };
}

describe('VzMachineRunner', () => {
  it('starts, pauses, resumes and stops gracefully when the guest honours the power button', async () => {
    const { host, runner, states } = setup();
    await runner.start();
    expect(runner.state).toBe('running');
    await runner.pause();
    expect(runner.paused).toBe(true);
    await runner.resume();
    expect(runner.paused).toBe(false);
    await runner.stop();
    expect(runner.state).toBe('stopped');
    expect(host.machines[0]!.calls).toEqual(['start', 'pause', 'resume', 'requestStop']);
    expect(states.map(([s]) => s)).toEqual(['starting', 'running', 'running', 'running', 'stopping', 'stopped']);
    expect(states.at(-1)![1]).toBe('stopped');
  });

  it('stops hard after the timeout when the guest ignores the request (a macOS guest shows a dialog)', async () => {
    const { host, runner } = setup(new FakeVzHost({ guestShutdownMs: Infinity }), 50);
    await runner.start();
    const t0 = Date.now();
    await runner.stop();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(45);
    expect(runner.state).toBe('stopped');
    expect(runner.message).toBe('guest did not power off within 50 ms: stopped hard');
    expect(host.machines[0]!.calls).toEqual(['start', 'requestStop', 'stop']);
  });

  it('kill stops hard at once; a paused VM stops hard too', async () => {
    const a = setup();
    await a.runner.start();
    await a.runner.kill();
    expect(a.runner.state).toBe('stopped');
    expect(a.host.machines[0]!.calls).toEqual(['start', 'stop']);
    const b = setup();
    await b.runner.start();
    await b.runner.pause();
    await b.runner.stop();
    expect(b.runner.state).toBe('stopped');
    expect(b.host.machines[0]!.calls).toEqual(['start', 'pause', 'requestStop', 'stop']);
  });

  it('a third macOS guest fails with the limit kind and a clear message, never "running"', async () => {
    const { runner, states } = setup(new FakeVzHost({ foreignMacosGuests: 2 }));
    await expect(runner.start()).rejects.toThrow(/maximum number of macOS VMs/);
    expect(runner.state).toBe('failed');
    expect(runner.failure?.kind).toBe('limit-exceeded');
    expect(states.map(([s]) => s)).toEqual(['starting', 'failed']);
  });

  it('reports a guest power-off as stopped and a crash as failed', async () => {
    const a = setup();
    await a.runner.start();
    a.host.machines[0]!.guestPowerOff();
    await a.runner.exited();
    expect([a.runner.state, a.runner.message]).toEqual(['stopped', 'guest powered off']);
    const b = setup();
    await b.runner.start();
    b.host.machines[0]!.crash('The virtual machine stopped unexpectedly.');
    await b.runner.exited();
    expect(b.runner.state).toBe('failed');
    expect(b.runner.message).toMatch(/internal error: VM stopped: The virtual machine stopped unexpectedly\./);
    // After the end, it can start again.
    await b.runner.start();
    expect(b.runner.state).toBe('running');
  });

  it('refuses pause/resume when not running, with the state named', async () => {
    const { runner } = setup();
    await expect(runner.pause()).rejects.toThrow('cannot pause: the VM is stopped');
    await expect(runner.resume()).rejects.toThrow('cannot resume: the VM is stopped');
  });
});
