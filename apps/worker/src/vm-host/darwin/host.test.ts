// The macOS VM host's data path through the pump seam: VM NIC (a real socketpair end, as VZ
// would hold it) ⇄ FramePump ⇄ packages/netfilter ⇄ VmnetPort over the fake vmnet. The lease the
// filter snoops is the IP the host reports (the primary IP discovery on macOS).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FramePort, closeFd, socketpairDgram } from '@fleet/native-vz';
import { FakeVzHost } from '@fleet/native-vz/vz-fake';
import { DHCP } from '../../../../../packages/netfilter/src/testing/frames.ts';
import { GW_MAC, VM_IP, VM_MAC, hostDhcp, vmDhcp } from '../../../../../packages/netfilter/src/testing/scenario.ts';
import { CONTROL_SOCKET } from '../../host-process/qemu-host-config.ts';
import { controlRequest } from '../../host-process/control-client.ts';
import { subnetCidr, type VzHostConfig, type VzHostStatus } from '../../host-process/vz-host-config.ts';
import { runVzHost } from './host.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'fvzh-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function bundle(): Promise<string> {
  const b = path.join(dir, 'bundle');
  await mkdir(b);
  const config = {
    version: 1, os: 'darwin', arch: 'arm64', cpuCountMin: 2, cpuCount: 2, memorySizeMin: 2 ** 31, memorySize: 2 ** 32,
    macAddress: VM_MAC, display: { width: 1024, height: 768 }, diskFormat: 'raw',
    hardwareModel: Buffer.from('hw:1').toString('base64'), ecid: Buffer.from('ecid:1').toString('base64'),
  };
  await writeFile(path.join(b, 'config.json'), JSON.stringify(config));
  return b;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('macOS VM host data path (pump with vmnet as the uplink)', () => {
  it('passes the VM\'s DHCP to vmnet, drops spoofed frames, delivers the ACK and reports the leased IP', async () => {
    const host = new FakeVzHost({ guestShutdownMs: 5 });
    const cfg: VzHostConfig = {
      vmId: 'vm-1', attempt: 1, name: 'vm-1', guest: 'macos', bundleDir: await bundle(), runDir: path.join(dir, 'run'),
      cpus: 2, memoryBytes: 2 ** 32, mac: VM_MAC,
      network: { startAddress: '192.168.64.1', endAddress: '192.168.64.254', subnetMask: '255.255.255.0' },
      stopTimeoutMs: 500,
    };
    let vmEnd = -1;
    const exit = runVzHost(cfg, {
      addon: host.addon(),
      socketpairDgram: (o) => {
        const p = socketpairDgram(o);
        vmEnd = p[1];
        return p;
      },
      // The fake VZ does not dup() the NIC fd like the addon: keep the VM end open to play the guest.
      closeFd: (fd) => (fd === vmEnd ? undefined : closeFd(fd)),
      gatewayMac: async () => GW_MAC,
    });
    await expect.poll(() => host.machines[0]?.state(), { timeout: 2000 }).toBe('running');
    const sock = path.join(cfg.runDir, CONTROL_SOCKET);
    const guest = new FramePort(vmEnd, { batch: 16, frameSize: 2048 });
    const toGuest: Buffer[] = [];
    guest.onFrames((f) => toGuest.push(...f), { copy: true });
    const vmnet = host.interfaces[0]!;

    // Guest → vmnet: DISCOVER passes; a frame from another MAC (spoofing) is dropped.
    const discover = Buffer.from(vmDhcp({ type: DHCP.DISCOVER, xid: 42 }));
    const spoofed = Buffer.from(vmDhcp({ type: DHCP.DISCOVER, xid: 43, addr: { srcMac: '02:00:00:00:00:99' }, chaddr: '02:00:00:00:00:99' }));
    expect(guest.send([discover, spoofed])).toBe(2);
    await expect.poll(() => vmnet.written.length, { timeout: 2000 }).toBe(1);
    expect(vmnet.written[0]!.equals(discover)).toBe(true);

    // vmnet → guest: the gateway's ACK reaches the VM and the filter learns the lease.
    const ack = Buffer.from(hostDhcp({ type: DHCP.ACK, xid: 42 }));
    vmnet.deliver([ack]);
    await expect.poll(() => toGuest.length, { timeout: 2000 }).toBe(1);
    expect(toGuest[0]!.equals(ack)).toBe(true);
    const st = (await controlRequest(sock, 'status')).status as VzHostStatus;
    expect(st).toMatchObject({ state: 'running', ip: VM_IP, mac: VM_MAC, tap: 'vmnet:5e:00:00:00:00:01' });
    const counters = st.counters as { pump: { vmToHost: { passed: number; dropped: number }; tap: { txFrames: number } } };
    expect(counters.pump.vmToHost).toEqual({ passed: 1, dropped: 1 });
    expect(counters.pump.tap.txFrames).toBe(1);

    // Pause/resume through the control socket, then a graceful stop ends the host with 0.
    expect((await controlRequest(sock, 'pause')).status?.paused).toBe(true);
    expect((await controlRequest(sock, 'resume')).status?.paused).toBe(false);
    await controlRequest(sock, 'stop');
    expect(await exit).toBe(0);
    guest.close();
    await sleep(0);
  });

  it('computes the filter subnet from vmnet\'s address and mask', () => {
    expect(subnetCidr('192.168.64.1', '255.255.255.0')).toBe('192.168.64.0/24');
    expect(subnetCidr('10.77.3.1', '255.255.252.0')).toBe('10.77.0.0/22');
    expect(() => subnetCidr('10.0.0.1', '255.0.255.0')).toThrow(/contiguous/);
  });
});

describe('VM host config', () => {
  it('maps a Linux bundle to EFI boot on nvram.bin, or a direct kernel boot, with cached disk I/O', async () => {
    const { machineConfigFor } = await import('./machine-config.ts');
    const { parseTartConfig } = await import('../../vz/tart-bundle.ts');
    const linux = parseTartConfig({ version: 1, os: 'linux', arch: 'arm64', cpuCountMin: 1, cpuCount: 2, memorySizeMin: 2 ** 30, memorySize: 2 ** 31, macAddress: '02:00:00:00:00:01', display: { width: 800, height: 600 } });
    const cfg: VzHostConfig = {
      vmId: 'l', attempt: 1, name: 'l', guest: 'linux', bundleDir: '/b', runDir: '/r', cpus: 2, memoryBytes: 2 ** 31, mac: '02:00:00:00:00:01',
      network: { startAddress: '192.168.64.1', endAddress: '192.168.64.254', subnetMask: '255.255.255.0' },
    };
    expect(machineConfigFor(cfg, linux, 9)).toEqual({
      guest: 'linux', cpus: 2, memoryBytes: 2 ** 31,
      disks: [{ path: '/b/disk.img', readOnly: false, caching: 'cached' }],
      network: { fd: 9, mac: '02:00:00:00:00:01' },
      serialLogPath: '/r/serial.log', vsock: true, entropy: true, display: { width: 800, height: 600 },
      linux: { kind: 'efi', variableStorePath: '/b/nvram.bin', create: false },
    });
    const kernel = machineConfigFor({ ...cfg, linuxKernel: { kernelPath: '/k/vmlinuz', cmdline: 'console=hvc0' } }, linux, 9);
    expect(kernel.linux).toEqual({ kind: 'kernel', kernelPath: '/k/vmlinuz', cmdline: 'console=hvc0' });
    expect(() => machineConfigFor({ ...cfg, guest: 'macos' }, linux, 9)).toThrow(/holds a linux guest, not macos/);
  });

  it('rejects a config file with missing or malformed fields', async () => {
    const { readVzHostConfig } = await import('../../host-process/vz-host-config.ts');
    const file = path.join(dir, 'vz-host.json');
    const good = { vmId: 'v', attempt: 1, name: 'v', guest: 'macos', bundleDir: '/b', runDir: '/r', cpus: 2, memoryBytes: 1, mac: '02:00:00:00:00:01', network: { startAddress: '192.168.64.1', endAddress: '192.168.64.254', subnetMask: '255.255.255.0' } };
    await writeFile(file, JSON.stringify(good));
    expect(readVzHostConfig(file).guest).toBe('macos');
    await writeFile(file, JSON.stringify({ ...good, mac: undefined }));
    expect(() => readVzHostConfig(file)).toThrow(/missing "mac"/);
    await writeFile(file, JSON.stringify({ ...good, guest: 'windows' }));
    expect(() => readVzHostConfig(file)).toThrow(/guest must be/);
    await writeFile(file, JSON.stringify({ ...good, runDir: 'rel' }));
    expect(() => readVzHostConfig(file)).toThrow(/rel is not absolute/);
    await writeFile(file, JSON.stringify({ ...good, network: { ...good.network, subnetMask: 'x' } }));
    expect(() => readVzHostConfig(file)).toThrow(/network\.subnetMask/);
  });
});
