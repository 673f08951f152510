// The TypeScript side of the macOS half against a fake of the addon's exact JS interface
// (src/vz-fake.ts). This proves the wrappers' contract, not that the Objective-C works.
import { describe, expect, it } from 'vitest';
import { FakeVzHost } from './vz-fake.ts';
import { VZErrorCode, VmnetPort, VzError, VzVirtualMachine, loadVzAddon, normalizeMachineConfig, vmnetStartMessage, type VzMachineConfig } from './vz.ts';

const limits = { minCpus: 1, maxCpus: 8, minMemoryBytes: 128 * 1024 * 1024, maxMemoryBytes: 16 * 1024 * 1024 * 1024 };

function macConfig(over: Partial<VzMachineConfig> = {}): VzMachineConfig {
  return {
    guest: 'macos',
    cpus: 4,
    memoryBytes: 4 * 1024 ** 3,
    disks: [{ path: '/vm/disk.img', readOnly: false }],
    network: { fd: 7, mac: '7e:00:00:00:00:01' },
    macos: { hardwareModel: Buffer.from('hw:1'), machineIdentifier: Buffer.from('ecid:1'), auxiliaryStoragePath: '/vm/nvram.bin' },
    ...over,
  };
}

describe('loadVzAddon', () => {
  it.runIf(process.platform !== 'darwin')('refuses to load anywhere but macOS, saying why', () => {
    expect(() => loadVzAddon()).toThrow(/exist only on macOS \(this host is linux\)/);
  });
});

describe('normalizeMachineConfig', () => {
  it('clamps CPUs and memory to the framework limits (memory to whole MiB) and says what it changed', () => {
    const { config, adjustments } = normalizeMachineConfig(macConfig({ cpus: 64, memoryBytes: 100 * 1024 * 1024 + 5 }), limits);
    expect(config.cpus).toBe(8);
    expect(config.memoryBytes).toBe(128 * 1024 * 1024);
    expect(adjustments).toHaveLength(2);
    const odd = normalizeMachineConfig(macConfig({ memoryBytes: 2 * 1024 ** 3 + 12345 }), limits);
    expect(odd.config.memoryBytes).toBe(2 * 1024 ** 3);
  });

  it('rejects what the framework would reject less clearly, naming the field', () => {
    expect(() => normalizeMachineConfig(macConfig({ network: { fd: 3, mac: 'zz:00:00:00:00:01' } }), limits)).toThrow(/network\.mac/);
    expect(() => normalizeMachineConfig(macConfig({ network: { fd: 3, mac: '7e:00:00:00:00:01', mtu: 1400 } }), limits)).toThrow(/mtu must be 1500\.\.65535/);
    expect(() => normalizeMachineConfig(macConfig({ disks: [] }), limits)).toThrow(/at least one disk/);
    expect(() => normalizeMachineConfig(macConfig({ disks: [{ path: 'rel.img', readOnly: false }] }), limits)).toThrow(/absolute/);
    const { macos: _m, ...noMac } = macConfig();
    expect(() => normalizeMachineConfig(noMac, limits)).toThrow(/needs hardwareModel/);
    expect(() => normalizeMachineConfig({ ...noMac, guest: 'linux', suspendable: true, linux: { kind: 'efi', variableStorePath: '/vm/nvram.bin', create: false } }, limits)).toThrow(/macOS guests only/);
    expect(() => normalizeMachineConfig(macConfig({ display: { width: 100, height: 768 } }), limits)).toThrow(/display\.width/);
  });
});

describe('VzVirtualMachine over the addon interface', () => {
  it('turns request ids into promises and KVO state into events', async () => {
    const host = new FakeVzHost();
    const vm = new VzVirtualMachine(host.addon(), macConfig());
    const states: string[] = [];
    vm.on('state', (s) => states.push(s));
    await vm.start();
    expect(vm.state()).toBe('running');
    await vm.pause();
    await vm.resume();
    await vm.stop();
    expect(states).toEqual(['starting', 'running', 'pausing', 'paused', 'resuming', 'running', 'stopping', 'stopped']);
    expect(host.machines[0]!.calls).toEqual(['start', 'pause', 'resume', 'stop']);
  });

  it('rejects with the framework domain, code and message', async () => {
    const host = new FakeVzHost({ foreignMacosGuests: 2 });
    const vm = new VzVirtualMachine(host.addon(), macConfig());
    const err = await vm.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VzError);
    expect((err as VzError).is(VZErrorCode.VirtualMachineLimitExceeded)).toBe(true);
    expect((err as VzError).message).toBe('start: The maximum supported number of active virtual machines has been reached.');
    const bad = (await vm.pause().then(() => undefined, (e: unknown) => e as VzError))!;
    expect(bad.code).toBe(VZErrorCode.InvalidVirtualMachineStateTransition);
  });

  it('turns a configuration the framework refuses into a VzError (entitlement missing)', () => {
    const host = new FakeVzHost({ entitled: false });
    let err: unknown;
    try {
      new VzVirtualMachine(host.addon(), macConfig());
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VzError);
    expect((err as VzError).code).toBe(VZErrorCode.InvalidVirtualMachineConfiguration);
    expect((err as VzError).message).toMatch(/com\.apple\.security\.virtualization/);
  });

  it('reports guest power-off, crashes and install progress; close rejects what is pending', async () => {
    const host = new FakeVzHost({ restoreImages: { '/x.ipsw': { buildVersion: '23A344', osVersion: '14.0.0' } } });
    const vm = new VzVirtualMachine(host.addon(), macConfig());
    const progress: number[] = [];
    await vm.install('/x.ipsw', (f) => progress.push(f));
    expect(progress.at(-1)).toBe(1);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    await vm.start();
    const off = new Promise<void>((r) => vm.once('guestStopped', () => r()));
    await vm.requestStop();
    await off;
    await vm.start();
    const crashed = new Promise<VzError>((r) => vm.once('stoppedWithError', r));
    host.machines[0]!.crash();
    expect((await crashed).code).toBe(VZErrorCode.Internal);
    const pending = vm.install('/x.ipsw', () => {});
    vm.close();
    await expect(pending).rejects.toThrow(/closed/);
    await expect(vm.start()).rejects.toThrow(/closed/);
  });

  it('rejects (does not crash on) a relative or empty path for save, restore and install', async () => {
    const host = new FakeVzHost();
    const vm = new VzVirtualMachine(host.addon(), macConfig());
    await expect(vm.saveState('')).rejects.toThrow(/save state: .*path must be absolute/);
    await expect(vm.restoreState('state.vzvmsave')).rejects.toThrow(/restore state: .*path must be absolute/);
    await expect(vm.install('x.ipsw', () => {})).rejects.toBeInstanceOf(VzError);
    expect(host.machines[0]!.calls).toEqual([]);
  });

  it('cancels an install (VZErrorOperationCancelled)', async () => {
    const host = new FakeVzHost({ restoreImages: { '/x.ipsw': { buildVersion: 'b', osVersion: '14.0.0' } } });
    const vm = new VzVirtualMachine(host.addon(), macConfig());
    const p = vm.install('/x.ipsw', () => vm.cancelInstall());
    await expect(p).rejects.toMatchObject({ code: VZErrorCode.OperationCancelled });
  });
});

describe('VmnetPort', () => {
  it('starts, delivers frames in batches from the receive area and sends batches', async () => {
    const host = new FakeVzHost();
    const port = await VmnetPort.start(host.addon(), { mode: 'shared', startAddress: '192.168.64.1', endAddress: '192.168.64.254', subnetMask: '255.255.255.0' }, { batch: 4 });
    expect(port.info).toMatchObject({ mtu: 1500, startAddress: '192.168.64.1' });
    const got: string[] = [];
    let batches = 0;
    port.onBatch((b) => {
      batches++;
      for (let i = 0; i < b.count; i++) got.push(b.buffer.subarray(b.offsets[i]!, b.offsets[i]! + b.lengths[i]!).toString());
    });
    const fake = host.interfaces[0]!;
    fake.deliver(Array.from({ length: 10 }, (_, i) => Buffer.from(`frame-${i}`)));
    await new Promise((r) => setTimeout(r, 20));
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => `frame-${i}`));
    expect(batches).toBe(3); // 4 + 4 + 2
    const buf = Buffer.from('aaaabbbb');
    expect(port.sendBatch(buf, Uint32Array.of(0, 4), Uint32Array.of(4, 4), 2)).toBe(2);
    fake.writeCapacity = 1;
    expect(port.sendBatch(buf, Uint32Array.of(0, 4), Uint32Array.of(4, 4), 2)).toBe(1);
    expect(fake.written.map(String)).toEqual(['aaaa', 'bbbb', 'aaaa']);
    expect(port.stats()).toMatchObject({ txFrames: 3, txDrops: 1, rxFrames: 10 });
    port.close();
    expect(() => port.sendBatch(buf, Uint32Array.of(0), Uint32Array.of(4), 1)).toThrow(/closed/);
  });

  it('refuses a batch that would read more than vmnet\'s 256 KB per call', async () => {
    const host = new FakeVzHost();
    await expect(VmnetPort.start(host.addon(), { mode: 'shared' }, { batch: 64, frameSize: 65536 })).rejects.toThrow(/at most 256 KiB/);
    await expect(VmnetPort.start(host.addon(), { mode: 'shared' }, { batch: 200, frameSize: 2048 })).rejects.toThrow(/at most 256 KiB/);
    (await VmnetPort.start(host.addon(), { mode: 'shared' }, { batch: 128, frameSize: 2048 })).close();
  });

  it('keeps frames queued while paused and drains them on resume', async () => {
    const host = new FakeVzHost();
    const port = await VmnetPort.start(host.addon(), { mode: 'shared' }, { batch: 8 });
    let n = 0;
    port.onBatch((b) => (n += b.count));
    port.pause();
    host.interfaces[0]!.deliver([Buffer.from('x'), Buffer.from('y')]);
    await new Promise((r) => setTimeout(r, 10));
    expect(n).toBe(0);
    port.onBatch((b) => (n += b.count));
    await new Promise((r) => setTimeout(r, 10));
    expect(n).toBe(2);
  });

  it('fails to start without root (vmnet says VMNET_FAILURE, not VMNET_INVALID_ACCESS) with the root hint', async () => {
    const host = new FakeVzHost({ root: false, euid: 502 });
    const err = (await VmnetPort.start(host.addon(), { mode: 'shared' }).catch((e: unknown) => e)) as VzError;
    expect(err).toBeInstanceOf(VzError);
    expect(err.code).toBe(1001);
    expect(err.message).toContain('VMNET_FAILURE) in a process that is not root (euid 502)');
    expect(err.message).toContain('starting a vmnet interface needs root');
    expect(err.message).toContain('run the worker as root');
    expect(err.message).toContain('On macOS 26');
    expect(err.message).toContain('is reported to work without root');
  });

  it('explains each vmnet start status, with the root hint only where root is the likely cause', () => {
    expect(vmnetStartMessage('VMNET_FAILURE', { euid: 501 })).toContain('needs root');
    // As root, VMNET_FAILURE is something else: no root hint.
    expect(vmnetStartMessage('VMNET_FAILURE', { euid: 0 })).not.toContain('needs root');
    expect(vmnetStartMessage('VMNET_FAILURE', { euid: 0 })).toContain('as root');
    expect(vmnetStartMessage('VMNET_FAILURE')).not.toContain('needs root');
    expect(vmnetStartMessage('VMNET_INVALID_ACCESS', { euid: 0 })).toContain('needs root');
    expect(vmnetStartMessage('VMNET_NOT_AUTHORIZED')).toContain('needs root');
    expect(vmnetStartMessage('VMNET_SHARING_SERVICE_BUSY')).toContain('turn off Internet Sharing');
    expect(vmnetStartMessage('VMNET_SOMETHING')).toBe('vmnet_start_interface failed: VMNET_SOMETHING');
    expect(vmnetStartMessage('vmnet_return_t 1011', { euid: 501 })).toBe('vmnet_start_interface failed: vmnet_return_t 1011 (not root: euid 501)');
  });

  it('reports a vmnet start failure as root without the root hint (e.g. Internet Sharing on)', async () => {
    const host = new FakeVzHost({ vmnetStartFailure: 'VMNET_SHARING_SERVICE_BUSY' });
    const err = (await VmnetPort.start(host.addon(), { mode: 'shared' }).catch((e: unknown) => e)) as VzError;
    expect(err.code).toBe(1009);
    expect(err.message).toMatch(/^start vmnet interface: vmnet cannot start a shared-mode interface .*Internet Sharing/);
  });
});
