// The macOS VM split in two (issue 17): the root network host (net-host.ts: vmnet, filter, pump,
// control socket) and the VM agent (vm-agent.ts: the VZ VM), joined by a unix socket on which
// the host checks the agent's uid and hands over the VM end of the NIC socketpair with
// SCM_RIGHTS. Here both halves run on Linux with the fake addon and the real native calls; the
// agent runs in this process (same uid) or — as root — in a child process of another uid.
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FramePort, closeFd, peerCredentials, recvFds, sendFds, socketpairDgram, unixAccept, unixConnect, unixListen } from '@fleet/native-vz';
import { FakeVzHost } from '@fleet/native-vz/vz-fake';
import { DHCP } from '../../../../../packages/netfilter/src/testing/frames.ts';
import { GW_MAC, VM_IP, VM_MAC, hostDhcp, vmDhcp } from '../../../../../packages/netfilter/src/testing/scenario.ts';
import { CONTROL_SOCKET, STATUS_LOG } from '../../host-process/qemu-host-config.ts';
import { controlRequest } from '../../host-process/control-client.ts';
import { subnetCidr, type VzHostConfig, type VzHostStatus } from '../../host-process/vz-host-config.ts';
import { parseAgentCommand, parseAgentEvent, type AgentEvent, type VmJob } from '../../host-process/agent-protocol.ts';
import { AgentListener, handOver, receiveJob, type FdPassing } from '../../host-process/agent-link.ts';
import { runNetHost, type AgentLauncher } from './net-host.ts';
import { runVmAgent } from './vm-agent.ts';

const NATIVE = fileURLToPath(new URL('../../../../../packages/native-vz/build/Release/native_vz.node', import.meta.url));
const NP: FdPassing = { unixListen, unixAccept, unixConnect, peerCredentials, sendFds, recvFds, closeFd };
const UID = process.getuid!();
const GID = process.getgid!();

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'fvzh-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function bundle(): Promise<string> {
  const b = path.join(dir, 'bundle');
  await mkdir(b, { recursive: true });
  const config = {
    version: 1, os: 'darwin', arch: 'arm64', cpuCountMin: 2, cpuCount: 2, memorySizeMin: 2 ** 31, memorySize: 2 ** 32,
    macAddress: VM_MAC, display: { width: 1024, height: 768 }, diskFormat: 'raw',
    hardwareModel: Buffer.from('hw:1').toString('base64'), ecid: Buffer.from('ecid:1').toString('base64'),
  };
  await writeFile(path.join(b, 'config.json'), JSON.stringify(config));
  return b;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function hostConfig(over: Partial<VzHostConfig> = {}): Promise<VzHostConfig> {
  return {
    vmId: 'vm-1', attempt: 1, name: 'vm-1', guest: 'macos', bundleDir: await bundle(), runDir: path.join(dir, 'run'),
    serialLogPath: path.join(dir, 'serial.log'), vmUser: { uid: UID, gid: GID }, agentSocket: path.join(dir, 'agent.sock'),
    agentLabel: 'dev.fleet.vm.test', agentLog: path.join(dir, 'agent.log'),
    cpus: 2, memoryBytes: 2 ** 32, mac: VM_MAC,
    network: { startAddress: '192.168.64.1', endAddress: '192.168.64.254', subnetMask: '255.255.255.0' },
    stopTimeoutMs: 500,
    ...over,
  };
}

/** An agent launcher that runs the agent in this process on the fake VZ (what launchd does on a Mac). */
function inProcessAgent(vz: FakeVzHost, seen: { nic?: number; exit?: Promise<number>; starts: number; stops: number }): AgentLauncher {
  return {
    start: async ({ socketPath }) => {
      seen.starts++;
      seen.exit = (async () => {
        const { job, fds, channel } = await receiveJob(NP, socketPath, parseAgentCommand);
        seen.nic = fds[0];
        // The fake VZ does not dup() the NIC fd like the addon: keep it open to play the guest.
        return runVmAgent(job as VmJob, fds[0], channel, { addon: vz.addon(), closeFd: () => {} });
      })();
    },
    stop: async () => {
      seen.stops++;
    },
  };
}

describe('macOS VM host data path (pump with vmnet as the uplink)', () => {
  it('passes the VM\'s DHCP to vmnet, drops spoofed frames, delivers the ACK and reports the leased IP — the VM in the agent, the network in the host', async () => {
    const host = new FakeVzHost({ guestShutdownMs: 5 });
    const cfg = await hostConfig();
    const seen: { nic?: number; exit?: Promise<number>; starts: number; stops: number } = { starts: 0, stops: 0 };
    const exit = runNetHost(cfg, {
      addon: host.addon(),
      fd: NP,
      socketpairDgram: (o) => socketpairDgram(o),
      gatewayMac: async () => GW_MAC,
      agent: inProcessAgent(host, seen),
    });
    await expect.poll(() => host.machines[0]?.state(), { timeout: 2000 }).toBe('running');
    // The agent got the VM end through SCM_RIGHTS (a new fd number), and the host's listening socket is gone.
    const vmEnd = seen.nic!;
    expect(vmEnd).toBeGreaterThan(2);
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
    expect(st.agentPid).toBe(process.pid);
    await controlRequest(sock, 'stop');
    expect(await exit).toBe(0);
    expect(await seen.exit).toBe(0);
    expect(seen.stops).toBe(1); // the agent's launchd job is booted out when the VM ended
    guest.close(); // closes vmEnd too
    await sleep(0);
  });

  it('network modes (issue 18): host-only starts vmnet in host mode and drops everything beyond its subnet; none starts no vmnet and hands over no NIC', async () => {
    const host = new FakeVzHost({ guestShutdownMs: 5 });
    const cfg = await hostConfig({ networkMode: 'host-only', network: { startAddress: '192.168.128.1', endAddress: '192.168.128.254', subnetMask: '255.255.255.0' } });
    const seen: { nic?: number; exit?: Promise<number>; starts: number; stops: number } = { starts: 0, stops: 0 };
    const exit = runNetHost(cfg, { addon: host.addon(), fd: NP, socketpairDgram: (o) => socketpairDgram(o), gatewayMac: async () => GW_MAC, agent: inProcessAgent(host, seen) });
    await expect.poll(() => host.machines[0]?.state(), { timeout: 2000 }).toBe('running');
    expect(host.interfaces[0]!.opts.mode).toBe('host');
    expect(host.machines[0]!.config.network?.fd).toBeGreaterThan(2);
    const st = (await controlRequest(path.join(cfg.runDir, CONTROL_SOCKET), 'status')).status as VzHostStatus;
    expect(st.state).toBe('running');
    await controlRequest(path.join(cfg.runDir, CONTROL_SOCKET), 'stop');
    expect(await exit).toBe(0);
    if (seen.nic !== undefined) closeFd(seen.nic);

    const host2 = new FakeVzHost({ guestShutdownMs: 5 });
    const cfg2 = await hostConfig({ networkMode: 'none', runDir: path.join(dir, 'run-none'), agentSocket: path.join(dir, 'agent-none.sock') });
    const seen2: { nic?: number; exit?: Promise<number>; starts: number; stops: number } = { starts: 0, stops: 0 };
    const exit2 = runNetHost(cfg2, { addon: host2.addon(), fd: NP, socketpairDgram: () => { throw new Error('no socketpair for mode none'); }, gatewayMac: async () => GW_MAC, agent: inProcessAgent(host2, seen2) });
    await expect.poll(() => host2.machines[0]?.state(), { timeout: 2000 }).toBe('running');
    expect(host2.interfaces).toHaveLength(0);
    expect(host2.machines[0]!.config.network).toBeUndefined();
    expect(seen2.nic).toBeUndefined();
    const st2 = (await controlRequest(path.join(cfg2.runDir, CONTROL_SOCKET), 'status')).status as VzHostStatus;
    expect(st2).toMatchObject({ state: 'running', tap: '' });
    expect(st2.ip).toBeUndefined();
    await controlRequest(path.join(cfg2.runDir, CONTROL_SOCKET), 'stop');
    expect(await exit2).toBe(0);
  });

  it('a fence before the agent connected: the VM never starts and ends stopped, fenced', async () => {
    const host = new FakeVzHost({ guestShutdownMs: 5 });
    const lease = path.join(dir, 'lease.json');
    await writeFile(lease, JSON.stringify({ expiresAt: Date.now() - 1000 }));
    const cfg = await hostConfig({ fence: { leaseFile: lease, graceMs: 0 } });
    let started = 0;
    const code = await runNetHost(cfg, {
      addon: host.addon(), fd: NP, socketpairDgram: (o) => socketpairDgram(o), gatewayMac: async () => GW_MAC,
      agent: { start: async () => void started++, stop: async () => {} },
      agentConnectTimeoutMs: 5_000,
      fenceCheckMs: 20,
    });
    expect(code).toBe(0);
    expect(host.machines).toHaveLength(0);
    const last = (await import('node:fs')).readFileSync(path.join(cfg.runDir, STATUS_LOG), 'utf8').trim().split('\n').at(-1)!;
    expect(JSON.parse(last)).toMatchObject({ state: 'stopped' });
    expect(JSON.parse(last).message).toMatch(/^fenced/);
  });

  it('an agent that never connects fails the start with a clear reason, and one that dies mid-run fails the VM', async () => {
    const host = new FakeVzHost({ guestShutdownMs: 5 });
    const cfg = await hostConfig();
    const code = await runNetHost(cfg, {
      addon: host.addon(), fd: NP, socketpairDgram: (o) => socketpairDgram(o), gatewayMac: async () => GW_MAC,
      agent: { start: async () => {}, stop: async () => {} },
      agentConnectTimeoutMs: 300,
    });
    expect(code).toBe(1);
    const last = JSON.parse((await import('node:fs')).readFileSync(path.join(cfg.runDir, STATUS_LOG), 'utf8').trim().split('\n').at(-1)!);
    expect(last).toMatchObject({ state: 'failed', failureKind: 'agent' });
    expect(last.message).toMatch(/did not connect/);

    // An agent that takes the job and then goes away (killed, crashed).
    const cfg2 = await hostConfig({ runDir: path.join(dir, 'run2'), agentSocket: path.join(dir, 'agent2.sock') });
    const code2 = await runNetHost(cfg2, {
      addon: host.addon(), fd: NP, socketpairDgram: (o) => socketpairDgram(o), gatewayMac: async () => GW_MAC,
      agent: {
        start: async ({ socketPath }) => {
          void (async () => {
            const { fds, channel } = await receiveJob(NP, socketPath, parseAgentCommand);
            channel.send({ event: 'accepted', pid: 4242 });
            channel.send({ event: 'state', state: 'running' });
            // Garbage first: the host must survive it.
            channel.send({ event: 'state', state: 'pwned' });
            await sleep(50);
            for (const f of fds) closeFd(f);
            channel.close();
          })();
        },
        stop: async () => {},
      },
    });
    expect(code2).toBe(1);
    const lines = (await import('node:fs')).readFileSync(path.join(cfg2.runDir, STATUS_LOG), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { event: string; state: string; message?: string });
    expect(lines.some((l) => l.event.startsWith('agent-bad-line'))).toBe(true);
    expect(lines.at(-1)).toMatchObject({ state: 'failed' });
    expect(lines.at(-1)!.message).toMatch(/VM agent \(pid 4242\) exited while the VM was running/);
  });

  it('the agent stops its VM hard the moment the root host\'s link drops (a VM nobody can fence must not run on)', async () => {
    const host = new FakeVzHost({ guestShutdownMs: 5 });
    const sock = path.join(dir, 'agent.sock');
    const listener = AgentListener.open(NP, sock, { uid: UID, gid: GID });
    const [ours, vmEnd] = socketpairDgram({ nonblock: false });
    const agentDone = (async () => {
      const { job, fds, channel } = await receiveJob(NP, sock, parseAgentCommand);
      return runVmAgent(job as VmJob, fds[0]!, channel, { addon: host.addon(), closeFd: () => {} });
    })();
    const { fd } = await listener.accept(5000);
    listener.close();
    const events: AgentEvent[] = [];
    const job: VmJob = { kind: 'vm', vmId: 'v', attempt: 1, name: 'v', guest: 'macos', bundleDir: await bundle(), cpus: 2, memoryBytes: 2 ** 32, mac: VM_MAC, serialLogPath: path.join(dir, 's.log'), stopTimeoutMs: 5000 };
    const link = handOver(NP, fd, job, [vmEnd], parseAgentEvent);
    closeFd(vmEnd);
    link.onMessage((e) => events.push(e));
    await expect.poll(() => host.machines[0]?.state(), { timeout: 2000 }).toBe('running');
    expect(events[0]).toMatchObject({ event: 'accepted', pid: process.pid });
    link.close(); // the root host is gone (crashed, killed)
    expect(await agentDone).toBe(0);
    expect(host.machines[0]!.state()).toBe('stopped');
    closeFd(ours);
  });

  it('only the VM user may connect: a connection from another uid is refused and reported (root only)', async (ctx) => {
    if (UID !== 0) {
      console.warn('skipped: needs root to run a process as another uid');
      ctx.skip();
    }
    const host = new FakeVzHost({ guestShutdownMs: 5 });
    // The agent socket's directory must be traversable by the other uids (as the driver makes it).
    await chmod(dir, 0o711);
    const cfg = await hostConfig({ vmUser: { uid: 65534, gid: 65534 } });
    const connectAs = (uid: number, socketPath: string): Promise<number | null> =>
      new Promise((resolve) => {
        // Connects, then waits up to 3 s for the handover: prints how many fds arrived, or null.
        const script = `const n = require(${JSON.stringify(NATIVE)}); let fd; try { fd = n.unixConnect(${JSON.stringify(socketPath)}); } catch (e) { process.stdout.write(JSON.stringify({ err: String(e.code) })); process.exit(0); }
          const t0 = Date.now(); const poll = () => { let r = null; try { r = n.recvFds(fd, 4, 65536); } catch (e) { process.stdout.write(JSON.stringify({ err: String(e.code) })); process.exit(0); }
          if (r) { process.stdout.write(JSON.stringify({ fds: r.fds.length, bytes: r.data.length })); process.exit(0); }
          if (Date.now() - t0 > 3000) { process.stdout.write('null'); process.exit(0); } setTimeout(poll, 50); }; poll();`;
        const child = spawn(process.execPath, ['-e', script], { uid, gid: uid, stdio: ['ignore', 'pipe', 'inherit'], cwd: '/' });
        let out = '';
        child.stdout.on('data', (c: Buffer) => (out += c.toString()));
        child.once('exit', () => {
          resolve(out ? (JSON.parse(out) as { fds: number } | null)?.fds ?? null : null);
        });
      });
    const results: Array<number | null> = [];
    let connections: Promise<void> | undefined;
    const code = runNetHost(cfg, {
      addon: host.addon(), fd: NP, socketpairDgram: (o) => socketpairDgram(o), gatewayMac: async () => GW_MAC,
      agent: {
        start: async ({ socketPath }) => {
          // A different uid first: the 0600 socket keeps it out; and even with the socket opened up
          // (a mistake, or a race), the host checks the peer's uid on the connection and refuses it.
          connections = (async () => {
            results.push(await connectAs(65533, socketPath));
            await chmod(socketPath, 0o666);
            results.push(await connectAs(65533, socketPath));
            results.push(await connectAs(65534, socketPath));
          })();
        },
        stop: async () => {},
      },
      agentConnectTimeoutMs: 10_000,
    });
    expect(await code).toBe(1); // the VM user's process took the fd, then exited: the VM failed
    await connections;
    expect(results[0]).toBeNull(); // uid 65533 cannot even connect to the 0600 socket
    expect(results[1]).toBeNull(); // connected, but refused: closed without a job or an fd
    expect(results[2]).toBe(1); // the VM user's process received exactly one fd
    const lines = (await import('node:fs')).readFileSync(path.join(cfg.runDir, STATUS_LOG), 'utf8');
    expect(lines).toContain('agent-refused uid 65533');
    expect(lines).toMatch(/exited while the VM/);
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
    const cfg: VmJob = { kind: 'vm', vmId: 'l', attempt: 1, name: 'l', guest: 'linux', bundleDir: '/b', serialLogPath: '/r/serial.log', cpus: 2, memoryBytes: 2 ** 31, mac: '02:00:00:00:00:01' };
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
    const good = {
      vmId: 'v', attempt: 1, name: 'v', guest: 'macos', bundleDir: '/b', runDir: '/r', serialLogPath: '/u/serial.log', vmUser: { uid: 501, gid: 20 },
      agentSocket: '/r/agent.sock', agentLabel: 'dev.fleet.vm.v.1', agentLog: '/u/agent.log', cpus: 2, memoryBytes: 1, mac: '02:00:00:00:00:01',
      network: { startAddress: '192.168.64.1', endAddress: '192.168.64.254', subnetMask: '255.255.255.0' },
    };
    await writeFile(file, JSON.stringify(good));
    expect(readVzHostConfig(file).guest).toBe('macos');
    await writeFile(file, JSON.stringify({ ...good, mac: undefined }));
    expect(() => readVzHostConfig(file)).toThrow(/missing "mac"/);
    await writeFile(file, JSON.stringify({ ...good, guest: 'windows' }));
    expect(() => readVzHostConfig(file)).toThrow(/guest must be/);
    await writeFile(file, JSON.stringify({ ...good, runDir: 'rel' }));
    expect(() => readVzHostConfig(file)).toThrow(/rel is not an absolute path/);
    await writeFile(file, JSON.stringify({ ...good, vmUser: { uid: 0, gid: 0 } }));
    expect(() => readVzHostConfig(file)).toThrow(/non-root uid/);
    await writeFile(file, JSON.stringify({ ...good, agentLabel: 'a b/c' }));
    expect(() => readVzHostConfig(file)).toThrow(/not a launchd label/);
    await writeFile(file, JSON.stringify({ ...good, network: { ...good.network, subnetMask: 'x' } }));
    expect(() => readVzHostConfig(file)).toThrow(/network\.subnetMask/);
  });
});
