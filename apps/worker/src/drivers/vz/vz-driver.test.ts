// The vz driver end to end on Linux: driver → run dir → the root VM host (runNetHost, in this
// process) → the VM agent (runVmAgent, in this process, joined by a real unix socket and SCM_RIGHTS)
// → control socket → driver, with the fake addon underneath (real socketpair, real packet filter,
// fake VZ and vmnet). What the fake cannot show: that the Objective-C and launchd work.
import { readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeFd, peerCredentials, recvFds, sendFds, socketpairDgram, unixAccept, unixConnect, unixListen } from '@fleet/native-vz';
import { FakeVzHost, type FakeHostOptions } from '@fleet/native-vz/vz-fake';
import type { InstanceStatus } from '../driver.ts';
import { writeLeaseFile } from '../../fencing/lease-file.ts';
import type { VzHostConfig } from '../../host-process/vz-host-config.ts';
import { receiveJob, type FdPassing } from '../../host-process/agent-link.ts';
import { parseAgentCommand, type VmJob } from '../../host-process/agent-protocol.ts';
import { runNetHost } from '../../vm-host/darwin/net-host.ts';
import { runVmAgent } from '../../vm-host/darwin/vm-agent.ts';
import { VzDriver, type VzDriverOptions, type VzHostLauncher } from './vz-driver.ts';

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'fvz-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function imageBundle(name: string, os: 'darwin' | 'linux'): Promise<void> {
  const dir = path.join(root, 'images', name);
  await mkdir(dir, { recursive: true });
  await writeFile(
    path.join(dir, 'config.json'),
    JSON.stringify({
      version: 1,
      os,
      arch: 'arm64',
      cpuCountMin: 2,
      cpuCount: 2,
      memorySizeMin: 2 * 1024 ** 3,
      memorySize: 4 * 1024 ** 3,
      macAddress: '7e:00:00:00:00:01',
      display: { width: 1024, height: 768 },
      diskFormat: 'raw',
      ...(os === 'darwin' ? { hardwareModel: Buffer.from('hw:mac').toString('base64'), ecid: Buffer.from('ecid:img').toString('base64') } : {}),
    }),
  );
  await writeFile(path.join(dir, 'disk.img'), 'DISK');
  await writeFile(path.join(dir, 'nvram.bin'), 'NVRAM');
}

const NP: FdPassing = { unixListen, unixAccept, unixConnect, peerCredentials, sendFds, recvFds, closeFd };

/** Runs both halves in this process instead of a detached root host and a LaunchAgent. */
function inProcessLauncher(host: FakeVzHost, exits: Promise<number>[]): VzHostLauncher {
  return (configFile) => {
    // Parsed directly: readVzHostConfig refuses a root VM user, and this process may be root.
    const cfg = JSON.parse(readFileSync(configFile, 'utf8')) as VzHostConfig;
    const done = runNetHost(cfg, {
      addon: host.addon(),
      fd: NP,
      socketpairDgram: (o) => socketpairDgram(o),
      gatewayMac: async () => '3e:a6:f6:09:e4:64',
      agent: {
        start: async ({ socketPath }) => {
          void (async () => {
            const { job, fds, channel } = await receiveJob(NP, socketPath, parseAgentCommand);
            await runVmAgent(job as VmJob, fds[0]!, channel, { addon: host.addon(), closeFd });
          })();
        },
        stop: async () => {},
      },
    });
    exits.push(done);
    return { exited: done.then(() => undefined) };
  };
}

function driverFor(host: FakeVzHost, exits: Promise<number>[], over: Partial<VzDriverOptions> = {}): VzDriver {
  return new VzDriver({
    dataDir: path.join(root, 'd'),
    imagesDir: path.join(root, 'images'),
    launcher: inProcessLauncher(host, exits),
    cloneFile: (a, b) => copyFile(a, b),
    stopTimeoutMs: 200,
    startTimeoutMs: 5000,
    leaseFallbackAfterMs: 20,
    leasePollMs: 20,
    leaseFile: path.join(root, 'dhcpd_leases'),
    ...over,
  });
}

const spec = (image: string, os = 'macos') => ({ image, os, cpus: 4, memoryMib: 4096, diskGib: 64, labels: {}, username: 'admin', network: { allow: ['10.9.0.0/16'], block: ['8.8.8.8/32'], blockLocal: true } });
const req = (vmId: string, image = 'sonoma', os = 'macos') => ({ vmId, attempt: 1, name: vmId, generation: '1', spec: spec(image, os) });

describe('VzDriver', () => {
  it('clones the image with a fresh MAC, runs the VM, learns its IP from dhcpd_leases, stops it', async () => {
    await imageBundle('sonoma', 'darwin');
    const host = new FakeVzHost();
    const exits: Promise<number>[] = [];
    const d = driverFor(host, exits);
    const seen: InstanceStatus[] = [];
    d.subscribe((s) => seen.push(s));
    const created = await d.create(req('vm-a'));
    expect(created.state).toBe('stopped');
    expect(created.mac).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    expect(created.mac).not.toBe('7e:00:00:00:00:01');
    const mac = created.mac!;
    const running = await d.start(req('vm-a'));
    expect(running.state).toBe('running');
    expect(host.configs[0]).toMatchObject({ guest: 'macos', cpus: 4, memoryBytes: 4096 * 1024 * 1024, network: { mac } });
    expect(d.slots.holders()).toEqual(['vm-a#1']);
    // The VM's egress policy reaches its host's packet filter.
    const hostCfg = JSON.parse(await readFile(path.join(root, 'd', 'instances', 'vm-a.1', 'vz-host.json'), 'utf8')) as { filter: unknown };
    expect(hostCfg.filter).toEqual({ allow: ['10.9.0.0/16'], block: ['8.8.8.8/32'], blockLocal: true });

    // The filter saw no DHCP (fake VZ): the lease file is the fallback.
    const octets = mac.split(':').map((o) => parseInt(o, 16).toString(16)).join(':');
    await writeFile(path.join(root, 'dhcpd_leases'), `{\n\tname=vm-a\n\tip_address=192.168.64.5\n\thw_address=1,${octets}\n\tidentifier=1,${octets}\n\tlease=0x${Math.floor(Date.now() / 1000 + 600).toString(16)}\n}\n`);
    await expect.poll(() => seen.at(-1)?.ip, { timeout: 2000 }).toBe('192.168.64.5');

    const stopped = await d.stop(req('vm-a'));
    expect(stopped.state).toBe('stopped');
    expect(await exits[0]).toBe(0);
    expect(d.slots.holders()).toEqual([]);
    expect(host.machines[0]!.calls).toEqual(['start', 'requestStop']);
    await d.remove(req('vm-a'));
    expect(await d.list()).toEqual([]);
    await d.close();
  });

  it('runs a Tart image pulled from a registry (cloned from the image cache), refuses other formats, and exports a stopped VM for push', async () => {
    await imageBundle('pulled-bundle', 'darwin');
    const host = new FakeVzHost();
    const exits: Promise<number>[] = [];
    const d = driverFor(host, exits);
    const pulled = { digest: `sha256:${'b'.repeat(64)}`, reference: `ghcr.io/org/macos@sha256:${'b'.repeat(64)}`, format: 'tart' as const, dir: path.join(root, 'images'), bundleDir: path.join(root, 'images', 'pulled-bundle') };
    const r = { ...req('vm-p', 'ghcr.io/org/macos:latest'), spec: { ...spec('ghcr.io/org/macos:latest'), pulled } };
    const created = await d.create(r);
    expect(created.state).toBe('stopped');
    expect(await readFile(path.join(root, 'd', 'instances', 'vm-p.1', 'bundle', 'disk.img'), 'utf8')).toBe('DISK');
    expect(await d.exportImage({ vmId: 'vm-p', attempt: 1 })).toEqual({ format: 'tart', bundleDir: path.join(root, 'd', 'instances', 'vm-p.1', 'bundle') });
    const qemuImage = { ...pulled, format: 'fleet-qemu' as const };
    await expect(d.create({ ...req('vm-q', 'ghcr.io/org/linux:1'), spec: { ...spec('ghcr.io/org/linux:1'), pulled: qemuImage } })).rejects.toThrow(/vz driver runs Tart images/);
    await d.remove({ vmId: 'vm-p', attempt: 1 });
    await d.close();
  });

  it('fencing: kill() stops hard at once; host processes of reschedule VMs stop theirs when the lease file runs out, wait VMs keep running', async () => {
    await imageBundle('sonoma', 'darwin');
    await imageBundle('linux', 'linux');
    const host = new FakeVzHost();
    const exits: Promise<number>[] = [];
    const leaseFile = path.join(root, 'lease.json');
    writeLeaseFile(leaseFile, { validUntilUnixMs: Date.now() + 60_000, fenceAfterMs: 10_000, renewedAtUnixMs: Date.now() });
    const d = driverFor(host, exits, { fence: { leaseFile } });
    const seen: InstanceStatus[] = [];
    d.subscribe((s) => seen.push(s));

    // The worker's own forced stop: no ACPI request, the reason is the message.
    await d.create(req('k', 'linux', 'linux'));
    await d.start(req('k', 'linux', 'linux'));
    const killed = await d.kill(req('k', 'linux', 'linux'), 'fenced: no lease from the controller for 31s (disconnect policy reschedule)');
    expect(killed).toMatchObject({ state: 'stopped', message: 'fenced: no lease from the controller for 31s (disconnect policy reschedule)' });
    expect(host.machines[0]!.calls).toEqual(['start', 'stop']);
    expect(await exits[0]).toBe(0);

    // The VM host processes on their own (the worker may be dead): the lease runs out.
    await d.create({ ...req('r'), spec: { ...spec('sonoma'), disconnectPolicy: 'reschedule' as const } });
    await d.create({ ...req('w', 'linux', 'linux'), spec: { ...spec('linux', 'linux'), disconnectPolicy: 'wait' as const } });
    await d.start(req('r'));
    await d.start(req('w', 'linux', 'linux'));
    const hostCfg = (id: string) => JSON.parse(readFileSync(path.join(root, 'd', 'instances', `${id}.1`, 'vz-host.json'), 'utf8')) as { fence?: unknown };
    expect(hostCfg('r').fence).toEqual({ leaseFile, graceMs: 2000 });
    expect(hostCfg('w').fence).toBeUndefined();
    writeLeaseFile(leaseFile, { validUntilUnixMs: Date.now() - 1, fenceAfterMs: 10_000, renewedAtUnixMs: Date.now() - 10_001 });
    const t0 = Date.now();
    expect(await exits[1]).toBe(0);
    expect(Date.now() - t0).toBeLessThan(1000);
    const r = (await d.list()).find((s) => s.vmId === 'r')!;
    expect(r).toMatchObject({ state: 'stopped', message: expect.stringMatching(/^fenced: no lease from the controller for 10s/), disconnectPolicy: 'reschedule' });
    expect(host.machines[1]!.calls).toEqual(['start', 'stop']);
    expect(d.slots.holders()).toEqual([]);
    expect((await d.list()).find((s) => s.vmId === 'w')).toMatchObject({ state: 'running', disconnectPolicy: 'wait' });
    // A new driver (worker restart) sees the fenced one as stopped, not failed.
    const again = driverFor(host, exits, { fence: { leaseFile } });
    expect((await again.list()).find((s) => s.vmId === 'r')).toMatchObject({ state: 'stopped', message: expect.stringMatching(/^fenced: /) });
    await again.close();
    await d.stop(req('w', 'linux', 'linux'));
    await d.close();
  });

  it.runIf(process.getuid?.() === 0)('the bundle is the VM user\'s, everything root runs or reads stays root\'s; a hostile user cannot make root read, export or delete anything else', async () => {
    await imageBundle('sonoma', 'darwin');
    const host = new FakeVzHost();
    const exits: Promise<number>[] = [];
    const d = driverFor(host, exits, { vmUser: { uid: 65534, gid: 65534 } });
    // As a real data dir must be: traversable (not listable) by the VM user.
    await (await import('node:fs/promises')).chmod(root, 0o711);
    await d.create(req('owned'));
    const inst = path.join(root, 'd', 'instances', 'owned.1');
    expect((await stat(inst)).uid).toBe(0);
    expect((await stat(inst)).mode & 0o777).toBe(0o711);
    expect((await stat(path.join(inst, 'instance.json'))).uid).toBe(0);
    for (const f of ['bundle', 'bundle/disk.img', 'bundle/nvram.bin', 'bundle/config.json']) {
      expect((await stat(path.join(inst, f))).uid, f).toBe(65534);
    }
    expect((await stat(path.join(inst, 'bundle'))).mode & 0o777).toBe(0o700);

    // The user swaps the disk for a link to a root-only file, then asks for a push: refused.
    const secret = path.join(root, 'root-secret');
    await writeFile(secret, 'root only', { mode: 0o600 });
    const { symlinkSync, rmSync, lchownSync, existsSync } = await import('node:fs');
    rmSync(path.join(inst, 'bundle', 'disk.img'));
    symlinkSync(secret, path.join(inst, 'bundle', 'disk.img'));
    lchownSync(path.join(inst, 'bundle', 'disk.img'), 65534, 65534);
    const work = await mkdtemp(path.join(tmpdir(), 'fvz-push-'));
    await expect(d.exportImage(req('owned'), work)).rejects.toThrow(/symbolic link: refused/);

    // ... and plants a link to a root directory: remove() deletes as the user, so root's files stay.
    const precious = path.join(root, 'precious');
    await mkdir(precious);
    await writeFile(path.join(precious, 'keep'), 'keep');
    symlinkSync(precious, path.join(inst, 'bundle', 'escape'));
    await d.remove(req('owned'));
    expect(existsSync(inst)).toBe(false);
    expect(await readFile(path.join(precious, 'keep'), 'utf8')).toBe('keep');
    await rm(work, { recursive: true, force: true });
    await d.close();
  });

  it('never accepts a third macOS VM: no free slot fails at once, clearly', async () => {
    await imageBundle('sonoma', 'darwin');
    const host = new FakeVzHost();
    const exits: Promise<number>[] = [];
    const d = driverFor(host, exits);
    for (const id of ['m1', 'm2', 'm3']) await d.create(req(id));
    await d.start(req('m1'));
    await d.start(req('m2'));
    await expect(d.start(req('m3'))).rejects.toThrow('start m3: no macOS slot free on this host: all 2 macOS slots of this host are in use (m1#1, m2#1)');
    expect((await d.list()).find((s) => s.vmId === 'm3')).toMatchObject({ state: 'failed' });
    expect(host.machines).toHaveLength(2); // m3 never reached the framework
    await d.stop(req('m1'));
    expect((await d.start(req('m3'))).state).toBe('running');
    await d.stop(req('m2'));
    await d.stop(req('m3'));
    await d.close();
  });

  it('VZErrorVirtualMachineLimitExceeded fails the VM and closes the host to macOS VMs until one of ours stops', async () => {
    await imageBundle('sonoma', 'darwin');
    await imageBundle('debian', 'linux');
    const host = new FakeVzHost({ foreignMacosGuests: 1 }); // e.g. a Tart VM outside Fleet
    const exits: Promise<number>[] = [];
    const d = driverFor(host, exits);
    for (const id of ['m1', 'm2', 'm3']) await d.create(req(id));
    await d.create(req('l1', 'debian', 'linux'));
    await d.start(req('m1'));
    await expect(d.start(req('m2'))).rejects.toThrow(/maximum number of macOS VMs .*The maximum supported number of active virtual machines has been reached\./);
    expect((await d.list()).find((s) => s.vmId === 'm2')).toMatchObject({ state: 'failed' });
    expect(d.slots.available()).toBe(0);
    await expect(d.start(req('m3'))).rejects.toThrow(/no macOS slot free on this host: .*maximum number of macOS VMs/);
    // Linux guests are not covered by the limit.
    expect((await d.start(req('l1', 'debian', 'linux'))).state).toBe('running');
    expect(host.configs.at(-1)).toMatchObject({ guest: 'linux', linux: { kind: 'efi', create: false }, disks: [{ caching: 'cached' }] });
    await d.stop(req('m1'));
    expect(d.slots.available()).toBe(2);
    expect((await d.start(req('m3'))).state).toBe('running');
    await d.stop(req('m3'));
    await d.stop(req('l1', 'debian', 'linux'));
    await d.close();
  });

  it('re-attaches to running VMs after a worker restart, holding their macOS slots', async () => {
    await imageBundle('sonoma', 'darwin');
    const host = new FakeVzHost();
    const exits: Promise<number>[] = [];
    const d1 = driverFor(host, exits);
    await d1.create(req('keep'));
    await d1.start(req('keep'));
    await d1.close(); // the worker goes away; the host "process" keeps running
    const d2 = driverFor(host, exits);
    const listed = await d2.list();
    expect(listed).toMatchObject([{ vmId: 'keep', state: 'running' }]);
    expect(d2.slots.holders()).toEqual(['keep#1']);
    // A guest that powers itself off is reported, and frees the slot.
    const changes: InstanceStatus[] = [];
    d2.subscribe((s) => changes.push(s));
    host.machines[0]!.guestPowerOff();
    await expect.poll(() => changes.at(-1)?.state, { timeout: 2000 }).toBe('stopped');
    expect(d2.slots.holders()).toEqual([]);
    await d2.close();
  });

  it('reports vmnet without root and a missing entitlement as clear start failures', async () => {
    await imageBundle('sonoma', 'darwin');
    for (const [opts, re] of [
      [{ root: false }, /VMNET_FAILURE\) in a process that is not root.*needs root/],
      [{ entitled: false }, /com\.apple\.security\.virtualization.*restart the worker/],
    ] as Array<[FakeHostOptions, RegExp]>) {
      await rm(path.join(root, 'd'), { recursive: true, force: true });
      const host = new FakeVzHost(opts);
      const exits: Promise<number>[] = [];
      const d = driverFor(host, exits);
      await d.create(req('x'));
      await expect(d.start(req('x'))).rejects.toThrow(re);
      expect(await exits[0]).toBe(1);
      expect(d.slots.holders()).toEqual([]);
      await d.close();
    }
  });

  it('fails every start with the exact remedy when the signed node copy cannot be made', async () => {
    await imageBundle('sonoma', 'darwin');
    const warned: string[] = [];
    const remedy = '/d/vm-host-node/node is not signed with the com.apple.security.virtualization entitlement, so Virtualization.framework will refuse to run VMs. Fix: …';
    const d = new VzDriver({
      dataDir: path.join(root, 'd'),
      imagesDir: path.join(root, 'images'),
      cloneFile: (a, b) => copyFile(a, b),
      prepareSignedNode: () => Promise.reject(new Error(remedy)),
      vmUser: process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : { uid: process.getuid!(), gid: process.getgid!() },
      log: { info: () => {}, warn: (o) => warned.push((o as { err: string }).err) },
    });
    await d.list(); // worker start: the check runs here
    await d.create(req('x'));
    await expect(d.start(req('x'))).rejects.toThrow(`start x: ${remedy}`);
    expect(warned).toEqual([remedy]);
    expect((await d.list())[0]).toMatchObject({ state: 'failed', message: remedy });
    expect(d.slots.holders()).toEqual([]);
    await d.close();
  });

  it('installs an IPSW once into the image store, with progress as status messages', async () => {
    const host = new FakeVzHost();
    const exits: Promise<number>[] = [];
    let installs = 0;
    const d = driverFor(host, exits, {
      installer: async (r, onEvent) => {
        installs++;
        for (const percent of [0, 50, 100]) onEvent({ phase: 'install', percent, message: `installing macOS 14.4.0 (23E214): ${percent}%` });
        // What installFromIpsw leaves behind (tested on its own in install.test.ts).
        await imageBundle(path.basename(r.bundleDir), 'darwin');
      },
    });
    const messages: string[] = [];
    d.subscribe((s) => s.message && messages.push(s.message));
    const ipsw = 'UniversalMac_14.4_23E214_Restore.ipsw';
    await d.create(req('from-ipsw', ipsw));
    await d.create(req('again', ipsw));
    expect(installs).toBe(1);
    expect(messages).toEqual(['installing macOS 14.4.0 (23E214): 0%', 'installing macOS 14.4.0 (23E214): 50%', 'installing macOS 14.4.0 (23E214): 100%']);
    expect((await d.list()).map((s) => [s.vmId, s.state, s.message])).toEqual([
      ['from-ipsw', 'stopped', undefined],
      ['again', 'stopped', undefined],
    ]);
    await expect(d.create(req('abs', '/Users/admin/x.ipsw'))).rejects.toThrow(/paths are not accepted/);
    await expect(d.create(req('bad', '../etc'))).rejects.toThrow(/paths are not accepted/);
    await expect(d.create(req('abs-bundle', '/etc'))).rejects.toThrow(/paths are not accepted/);
    await expect(d.create(req('missing', 'nope'))).rejects.toThrow(/is .* a Tart VM bundle\?/);
    await expect(d.create(req('wrong-os', 'UniversalMac_14.4_23E214_Restore', 'linux'))).rejects.toThrow(/holds a macos guest, but the VM asks for linux/);
    expect((await d.list()).map((s) => s.vmId)).toEqual(['from-ipsw', 'again']);
    await d.close();
  });
});

describe('VzDriver IPSW installs through an agent of the VM user (issue 17)', () => {
  it.runIf(process.getuid?.() === 0)('the installer runs as the VM user, takes a macOS slot while it runs, and root copies the bundle by fd into its image store', async () => {
    const { spawn } = await import('node:child_process');
    const { chmod } = await import('node:fs/promises');
    const { fileURLToPath } = await import('node:url');
    await chmod(root, 0o711);
    const helper = fileURLToPath(new URL('./install-agent.test-helper.ts', import.meta.url));
    const repo = fileURLToPath(new URL('../../../../../', import.meta.url));
    const host = new FakeVzHost();
    const exits: Promise<number>[] = [];
    const agentUids: number[] = [];
    let slotsDuringInstall: string[] = [];
    const d = driverFor(host, exits, {
      // The installed disk is 64 GiB sparse: clone it keeping its holes (APFS clones on a Mac).
      cloneFile: async (a, b) => {
        const { open } = await import('node:fs/promises');
        const { copyFileFromFd } = await import('@fleet/native-vz');
        const fh = await open(a, 'r');
        try {
          await copyFileFromFd(fh.fd, b);
        } finally {
          await fh.close();
        }
      },
      vmUser: { uid: 65534, gid: 65534 },
      fdPassing: { unixListen, unixAccept, unixConnect, peerCredentials, sendFds, recvFds, closeFd },
      agentLauncher: {
        start: async ({ uid, gid, socketPath, label }) => {
          expect(label).toMatch(/^dev\.fleet\.install\.[0-9a-f]{12}$/);
          agentUids.push(uid);
          slotsDuringInstall = d.slots.holders();
          const child = spawn(process.execPath, ['--import', 'tsx', helper, socketPath, path.join(root, 'images', 'UniversalMac_15.1_Restore.ipsw')], { uid, gid, cwd: repo, stdio: ['ignore', 'inherit', 'inherit'] });
          child.unref();
        },
        stop: async () => {},
      },
    });
    const messages: string[] = [];
    d.subscribe((s) => s.message && messages.push(s.message));
    await mkdir(path.join(root, 'images'), { recursive: true });
    await writeFile(path.join(root, 'images', 'UniversalMac_15.1_Restore.ipsw'), 'IPSW');
    await d.create(req('inst', 'UniversalMac_15.1_Restore.ipsw'));
    expect(agentUids).toEqual([65534]);
    expect(slotsDuringInstall.some((k) => k.startsWith('install:'))).toBe(true);
    expect(d.slots.holders()).toEqual([]); // given back when the install ended
    expect(messages.some((m) => /%/.test(m))).toBe(true);
    // The image is root's (copied by fd), the instance's clone the VM user's.
    const image = path.join(root, 'images', 'UniversalMac_15.1_Restore');
    for (const f of ['config.json', 'disk.img', 'nvram.bin']) expect((await stat(path.join(image, f))).uid, f).toBe(0);
    expect((await stat(path.join(root, 'd', 'instances', 'inst.1', 'bundle', 'disk.img'))).uid).toBe(65534);
    // No staging left behind.
    expect((await (await import('node:fs/promises')).readdir(path.join(root, 'images'))).filter((n) => n.startsWith('.install-'))).toEqual([]);
    await d.close();
  });
});
