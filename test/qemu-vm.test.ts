// A real VM through the real data path: QEMU (TCG) ─ socketpair ─ VM host process (FramePump +
// packet filter) ─ TAP ─ NatNetwork bridge + dnsmasq, everything inside a network namespace
// this test creates:
//
//   netns fleet-qvm-<id>: bridge fq<id> 192.168.64.1/24 + dnsmasq (range .100–.150), nft table,
//                         TAP fqt<id> (opened by the VM host process, which runs in the namespace)
//
// The VM's lease is reported by the filter (DHCP snooping), then the test SSHes into the VM
// from inside the namespace with a key passed on the kernel command line, checks the filter
// counters and stops the VM gracefully (QMP system_powerdown). 192.168.64.0/24 exists only
// inside the namespace; the NAT "uplink" is the namespace's loopback, so nothing can leave it.
// Needs root, `ip netns`, qemu-system-x86_64, ssh; otherwise skipped with a loud warning.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { realVmsMissing, warnSkipped } from './support/lab.ts';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureGuestImage, guestCmdline, macFromSeed, MARKERS, waitForSerialMarker } from '../guest-image/src/index.ts';
import { NatNetwork, VM_UPLINK_IF, createVethUplink, vmNetnsFor } from '../apps/worker/src/uplink/nat-network.ts';
import { TAP_IO_URING_BUILT, linkOffloads } from '../packages/native-vz/src/index.ts';
import { CONTROL_SOCKET, SERIAL_LOG, type VmHostConfig, type VmHostStatus } from '../apps/worker/src/host-process/qemu-host-config.ts';
import { controlRequest, watchControl } from '../apps/worker/src/host-process/control-client.ts';
import { QemuDriver, tapNameFor } from '../apps/worker/src/drivers/qemu.ts';
import type { InstanceStatus } from '../apps/worker/src/drivers/driver.ts';

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const LAUNCH = path.join(REPO_ROOT, 'apps/worker/src/vm-host/launch.mjs');
const ID = process.pid % 1000;
const NS = `fleet-qvm-${ID}`;
const BRIDGE = `fq${ID}`;
const TAP = `fqt${ID}`;
const SUBNET = '192.168.64.0/24';
const RANGE: [string, string] = ['192.168.64.100', '192.168.64.150'];
/** FLEET_TEST_VM_FRAMING=stream|dgram: the NIC framing of every VM here (default: each API's own default). */
const FRAMING = process.env.FLEET_TEST_VM_FRAMING === 'stream' ? ('stream' as const) : process.env.FLEET_TEST_VM_FRAMING === 'dgram' ? ('dgram' as const) : undefined;

const why = realVmsMissing(['ssh', 'ssh-keygen']);
if (why) warnSkipped('test/qemu-vm.test.ts', why, 'The VM host process (QEMU + pump + filter + TAP + dnsmasq) is');

const ipToNum = (ip: string): number => ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
const quiet = { debug() {}, info() {}, warn() {}, error() {} };

describe.skipIf(why !== '')('VM host process: QEMU ↔ pump ↔ filter ↔ TAP ↔ NAT bridge', () => {
  let tmp = '';
  let nat: NatNetwork | undefined;
  let host: ChildProcess | undefined;
  let hostExit: Promise<number | null> | undefined;

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'fleet-qvm-'));
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    nat = await NatNetwork.create({ name: BRIDGE, subnet: SUBNET, uplinkInterface: 'lo', dhcpRange: RANGE, netns: NS, dataDir: path.join(tmp, 'nat'), log: quiet });
  });

  afterAll(async () => {
    if (host && host.exitCode === null && host.signalCode === null) host.kill('SIGKILL');
    if (hostExit) await Promise.race([hostExit, new Promise((r) => setTimeout(r, 3000))]);
    // Whatever a failed test left behind (VM host processes, QEMU) runs with our temp dir in its command line.
    if (tmp) {
      for (const pid of (await import('node:fs')).readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        try {
          if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(tmp) && Number(pid) !== process.pid) process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    await nat?.destroy().catch(() => {});
    try {
      execFileSync('ip', ['netns', 'del', NS], { stdio: 'pipe' });
    } catch {
      /* already gone */
    }
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('boots, gets its lease reported by the filter, serves SSH in the namespace, stops gracefully', async () => {
    const img = await ensureGuestImage();
    const key = path.join(tmp, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'fleet-test', '-f', key]);
    const pub = readFileSync(`${key}.pub`, 'utf8').trim();
    const runDir = path.join(tmp, 'run');
    const mac = macFromSeed(`qvm-e2e-${ID}`);
    // dnsmasq serves reserved MACs only: reserve this VM's address, as the QEMU driver does at create().
    const reserved = await nat!.reserve({ key: 'vm-e2e#1', vmId: 'vm-e2e', mac, name: 'qvm-e2e', hostAccess: false });
    const cfg: VmHostConfig = {
      vmId: 'vm-e2e',
      attempt: 1,
      name: 'qvm-e2e',
      cpus: 1,
      memoryMib: 256,
      kernel: img.kernel,
      initrd: img.initrd,
      cmdline: guestCmdline(img.cmdlineBase, { authorizedKeys: [pub], hostname: 'qvm-e2e' }),
      mac,
      tap: TAP,
      runDir,
      filter: { gatewayIp: nat!.gatewayIp, gatewayMac: nat!.gatewayMac, subnet: SUBNET, dhcpServers: [nat!.dhcpServerIp], address: reserved.ip },
      accel: 'tcg',
      stopTimeoutMs: 15_000,
      // No nicFraming: -netdev dgram, the config's default (the driver tests below run the driver's
      // default, stream). FLEET_TEST_VM_FRAMING=stream|dgram sets both (issue 20).
      ...(FRAMING ? { nicFraming: FRAMING } : {}),
    };
    await (await import('node:fs/promises')).mkdir(runDir, { recursive: true });
    const cfgFile = path.join(runDir, 'config.json');
    await writeFile(cfgFile, JSON.stringify(cfg));

    const t0 = Date.now();
    // The host process runs inside the namespace, so its TAP is created there.
    host = spawn('ip', ['netns', 'exec', NS, process.execPath, LAUNCH, cfgFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    host.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    host.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    hostExit = new Promise((resolve) => host!.once('exit', (c) => resolve(c)));

    const sock = path.join(runDir, CONTROL_SOCKET);
    for (let i = 0; !existsSync(sock); i++) {
      if (i > 200 || host.exitCode !== null) throw new Error(`control socket never appeared; output:\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await nat!.addTap(TAP);

    // The lease, the instant the filter snoops the ACK.
    let last: VmHostStatus | undefined;
    const leased = new Promise<VmHostStatus>((resolve, reject) => {
      const w = watchControl(sock, (s) => {
        last = s;
        if (s.ip) {
          w.close();
          resolve(s);
        }
      }, reject);
      setTimeout(() => reject(new Error(`no lease within 60 s; last status ${JSON.stringify(last)}; output:\n${out}`)), 60_000);
    });
    const st = await leased;
    const leaseAt = Date.now();
    expect(st.ip).toBe(reserved.ip);
    const ipNum = ipToNum(st.ip!);
    expect(ipNum).toBeGreaterThanOrEqual(ipToNum(RANGE[0]));
    expect(ipNum).toBeLessThanOrEqual(ipToNum(RANGE[1]));
    expect(st.state).toBe('running');
    console.log(`[qemu-vm] boot-to-IP: ${st.bootToIpMs} ms from QEMU spawn (${leaseAt - t0} ms from host process spawn), ip ${st.ip}`);

    // dnsmasq agrees.
    const leases = readFileSync(nat!.leaseFile, 'utf8');
    expect(leases).toContain(cfg.mac);
    expect(leases).toContain(st.ip!);

    const ready = await waitForSerialMarker(path.join(runDir, SERIAL_LOG), MARKERS.ready, { timeoutMs: 60_000, abort: () => host!.exitCode !== null });
    expect(ready?.[1]).toBe(st.ip);
    let ssh = '';
    for (let i = 0; i < 10; i++) {
      try {
        ssh = execFileSync('ip', ['netns', 'exec', NS, 'ssh', '-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
          '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR', `fleet@${st.ip}`, 'echo hello-$(id -un)'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
        break;
      } catch (e) {
        if (i === 9) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    console.log(`[qemu-vm] boot-to-SSH: ${Date.now() - t0} ms from host process spawn`);
    expect(ssh.trim()).toBe('hello-fleet');

    // Pause / resume through QMP (stop / cont).
    expect((await controlRequest(sock, 'pause')).status).toMatchObject({ state: 'running', paused: true });
    expect((await controlRequest(sock, 'resume')).status).toMatchObject({ state: 'running', paused: false });

    const after = await controlRequest(sock, 'status');
    const c = after.status!.counters as { filter: { fromVm: Record<string, number>; fromHost: Record<string, number>; snoop: Record<string, number> }; pump: { vmToHost: { passed: number }; hostToVm: { passed: number } } };
    expect(c.filter.fromVm.pass).toBeGreaterThan(10);
    expect(c.filter.fromHost.pass).toBeGreaterThan(10);
    expect(c.filter.snoop.learned).toBeGreaterThanOrEqual(1);
    expect(c.pump.vmToHost.passed).toBe(c.filter.fromVm.pass);
    expect(c.pump.hostToVm.passed).toBe(c.filter.fromHost.pass);

    // Graceful stop: QMP system_powerdown, the guest powers off, QEMU and the host process exit.
    const tStop = Date.now();
    const r = await controlRequest(sock, 'stop');
    expect(r.ok).toBe(true);
    const code = await Promise.race([hostExit, new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), 20_000))]);
    expect(code).toBe(0);
    console.log(`[qemu-vm] stop: ${Date.now() - tStop} ms`);
    const lines = readFileSync(path.join(runDir, 'status.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { state: string; message?: string });
    expect(lines.at(-1)!.state).toBe('stopped');
    expect(lines.at(-1)!.message).toBe('stopped');
    expect(readFileSync(path.join(runDir, SERIAL_LOG), 'utf8')).toMatch(MARKERS.shutdown);
    expect(existsSync(sock)).toBe(false);
  });
  it('QemuDriver: create/start/list, a new driver object re-attaches, stop/remove; a dead host is failed', async () => {
    const key = path.join(tmp, 'drv_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'fleet-drv', '-f', key]);
    const pub = readFileSync(`${key}.pub`, 'utf8').trim();
    // The veth uplink (--vm-link veth); the default TAP is what every fleet-worker e2e suite runs.
    const opts = { dataDir: path.join(tmp, 'drv'), nat: nat!, netns: NS, authorizedKeys: [pub], stopTimeoutMs: 15_000, vmLink: 'veth' as const, ...(FRAMING ? { vmFraming: FRAMING } : {}) };
    const spec = { image: 'fleet-guest', os: 'linux', cpus: 1, memoryMib: 256, diskGib: 1, labels: {}, username: 'fleet' };
    const ref = { vmId: 'vm-drv', attempt: 3 };
    let d = new QemuDriver(opts);
    const seen: InstanceStatus[] = [];
    d.subscribe((s) => seen.push(s));
    const created = await d.create({ ...ref, name: 'drv-vm', generation: '1', spec });
    expect(created.state).toBe('stopped');
    expect(await d.create({ ...ref, name: 'drv-vm', generation: '1', spec })).toEqual(created); // idempotent
    const t0 = Date.now();
    const started = await d.start(ref);
    expect(started.state).toBe('running');
    expect(started.mac).toBe(created.mac);
    for (let i = 0; !seen.some((s) => s.ip); i++) {
      if (i > 1200) throw new Error(`no IP via subscribe; seen ${JSON.stringify(seen)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const ip = seen.find((s) => s.ip)!.ip!;
    console.log(`[qemu-vm] driver start → IP via subscribe: ${Date.now() - t0} ms (${ip})`);
    expect(ipToNum(ip)).toBeGreaterThanOrEqual(ipToNum(RANGE[0]));
    expect(await d.start(ref)).toMatchObject({ state: 'running' }); // idempotent

    // Issue 20: the uplink is a veth pair. Its bridge-side end is the bridge port (where the TAP
    // was); the VM's end is alone in the VM's own namespace; offloads are off on both ends.
    const port = tapNameFor(ref);
    const vmNs = vmNetnsFor(port);
    const links = (ns: string, ...dev: string[]): Array<{ ifname: string; master?: string; linkinfo?: { info_kind?: string } }> =>
      JSON.parse(execFileSync('ip', ['-j', '-d', '-n', ns, 'link', 'show', ...dev], { encoding: 'utf8' })) as Array<{ ifname: string; master?: string; linkinfo?: { info_kind?: string } }>;
    expect(links(vmNs).map((l) => l.ifname).sort()).toEqual([VM_UPLINK_IF, 'lo'].sort());
    expect(links(NS, port)[0]).toMatchObject({ master: BRIDGE, linkinfo: { info_kind: 'veth' } });
    const off = { txChecksum: false, sg: false, tso: false, gso: false, gro: false };
    expect(linkOffloads(port, { netns: NS })).toEqual(off);
    expect(linkOffloads(VM_UPLINK_IF, { netns: vmNs })).toEqual(off);

    // A large TCP transfer each way through the real path (host stack → bridge → veth → AF_PACKET
    // → pump + filter → QEMU, and back): with offloads on, the host's segments would reach the
    // guest as GSO super-frames or with checksums left undone: refused and counted (rxTruncated,
    // rxCsumPartial), and the transfer would stall.
    const sshArgs = ['netns', 'exec', NS, 'ssh', '-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR', `fleet@${ip}`];
    for (let i = 0; ; i++) {
      const r = spawnSync('ip', [...sshArgs, 'true'], { stdio: 'ignore', timeout: 20_000 });
      if (r.status === 0) break;
      if (i === 20) throw new Error('no SSH into the driver\'s VM');
      await new Promise((r2) => setTimeout(r2, 500));
    }
    const blob = randomBytes(4 << 20);
    const tBig = Date.now();
    const sum = execFileSync('ip', [...sshArgs, 'md5sum'], { input: blob, encoding: 'utf8', timeout: 120_000 }).split(/\s/)[0];
    expect(sum).toBe(createHash('md5').update(blob).digest('hex'));
    const back = execFileSync('ip', [...sshArgs, 'head -c 4194304 /dev/urandom > /tmp/b && md5sum /tmp/b && cat /tmp/b && rm /tmp/b'], { maxBuffer: 8 << 20, timeout: 120_000 });
    const nl = back.indexOf(10);
    expect(back.subarray(nl + 1)).toHaveLength(4 << 20);
    expect(createHash('md5').update(back.subarray(nl + 1)).digest('hex')).toBe(back.subarray(0, nl).toString().split(/\s/)[0]);
    console.log(`[qemu-vm] 4 MiB host → VM and 4 MiB VM → host over SSH: ${Date.now() - tBig} ms`);
    const hostStatus = (await controlRequest(path.join(tmp, 'drv', 'instances', 'vm-drv.3', CONTROL_SOCKET), 'status')).status!;
    const pumpStats = (hostStatus.counters as { pump?: { tap: Record<string, number>; vm: Record<string, number> } } | undefined)?.pump;
    expect(pumpStats?.tap).toMatchObject({ rxTruncated: 0, rxCsumPartial: 0, rxVlanStripped: 0, rxQueueDrops: 0 });
    // Issue 20: the driver's default NIC framing is QEMU's -netdev stream; nothing refused or cut on it.
    const framing = FRAMING ?? 'stream';
    expect(readFileSync(`/proc/${hostStatus.qemuPid}/cmdline`, 'utf8')).toContain(framing === 'stream' ? 'stream,id=n0,server=off,addr.type=fd,addr.str=3' : 'dgram,id=n0');
    expect(pumpStats?.vm).toMatchObject({ rxTruncated: 0, rxBadLength: 0, rxEof: 0, txDrops: 0, txErrors: 0 });

    // The worker goes away (driver object dropped) and comes back: list() re-attaches. Meanwhile an
    // instance was removed behind its back: its uplink (no socket held in its namespace) is deleted
    // at start; the running VM's (its host holds the socket) is kept.
    await d.close();
    const leftover = 'fv0123456789';
    await createVethUplink(leftover, NS);
    d = new QemuDriver(opts);
    const seen2: InstanceStatus[] = [];
    d.subscribe((s) => seen2.push(s));
    const listed = await d.list();
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ ...ref, name: 'drv-vm', state: 'running', ip, mac: created.mac, generation: '1' });
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(vmNetnsFor(leftover));
    expect(spawnSync('ip', ['-n', NS, 'link', 'show', leftover], { stdio: 'ignore' }).status).not.toBe(0);
    expect(links(vmNs).map((l) => l.ifname).sort()).toEqual([VM_UPLINK_IF, 'lo'].sort());

    const tStop = Date.now();
    const stopped = await d.stop(ref);
    console.log(`[qemu-vm] driver stop: ${Date.now() - tStop} ms`);
    const drvStatus = readFileSync(path.join(tmp, 'drv', 'instances', 'vm-drv.3', 'status.jsonl'), 'utf8').trim().split('\n');
    expect(JSON.parse(drvStatus.at(-1)!)).toMatchObject({ state: 'stopped', message: 'stopped' }); // powered off, not killed
    expect(stopped.state).toBe('stopped');
    expect(stopped.ip).toBeUndefined();
    expect(seen2.at(-1)?.state).toBe('stopped');
    expect(await d.stop(ref)).toMatchObject({ state: 'stopped' }); // idempotent
    expect((await d.update({ ...ref, generation: '2', spec: { ...spec, memoryMib: 300 } })).generation).toBe('2');

    // A VM host process killed under the driver: the instance is reported failed.
    const tRestart = Date.now();
    await d.start(ref);
    console.log(`[qemu-vm] driver start → running: ${Date.now() - tRestart} ms`);
    const live = await controlRequest(path.join(tmp, 'drv', 'instances', 'vm-drv.3', CONTROL_SOCKET), 'status');
    const before = seen2.length;
    const qemuPid = live.status!.qemuPid!;
    process.kill(live.status!.pid, 'SIGKILL'); // QEMU is left behind with a dead NIC…
    for (let i = 0; !seen2.slice(before).some((s) => s.state === 'failed'); i++) {
      if (i > 200) throw new Error(`no failed status; seen ${JSON.stringify(seen2.slice(before))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((await d.list())[0]).toMatchObject({ state: 'failed', message: expect.stringMatching(/died/) });
    // …and the driver killed it (no zombie VM holding a slot).
    for (let i = 0; existsSync(`/proc/${qemuPid}`) && i < 100; i++) await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(`/proc/${qemuPid}`)).toBe(false);
    // …and so is it for a fresh driver (worker restart after the host died).
    expect((await new QemuDriver(opts).list())[0]).toMatchObject({ state: 'failed' });

    const tRemove = Date.now();
    await d.remove(ref);
    console.log(`[qemu-vm] driver remove: ${Date.now() - tRemove} ms`);
    await d.remove(ref); // idempotent
    expect(await d.list()).toEqual([]);
    // The veth pair and the VM's namespace went with it.
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(vmNs);
    expect(spawnSync('ip', ['-n', NS, 'link', 'show', port], { stdio: 'ignore' }).status).not.toBe(0);
    expect(existsSync(path.join(tmp, 'drv', 'instances', 'vm-drv.3'))).toBe(false);
    await d.close();
  });
  it('the offload path (the default with a TAP uplink): QEMU on a virtio-net TAP alone in the VM namespace, super-frames through the filter, nothing left behind', async () => {
    const key = path.join(tmp, 'vnet_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'fleet-vnet', '-f', key]);
    const pub = readFileSync(`${key}.pub`, 'utf8').trim();
    const d = new QemuDriver({ dataDir: path.join(tmp, 'vnet'), nat: nat!, netns: NS, authorizedKeys: [pub], stopTimeoutMs: 15_000 });
    const spec = { image: 'fleet-guest', os: 'linux', cpus: 1, memoryMib: 256, diskGib: 1, labels: {}, username: 'fleet' };
    const ref = { vmId: 'vm-vnet', attempt: 1 };
    const seen: InstanceStatus[] = [];
    d.subscribe((s) => seen.push(s));
    await d.create({ ...ref, name: 'vnet-vm', generation: '1', spec });
    expect((await d.start(ref)).state).toBe('running');
    for (let i = 0; !seen.some((s) => s.ip); i++) {
      if (i > 1200) throw new Error(`no IP via subscribe; seen ${JSON.stringify(seen)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const ip = seen.find((s) => s.ip)!.ip!;
    const port = tapNameFor(ref);
    const vmNs = vmNetnsFor(port);
    const control = path.join(tmp, 'vnet', 'instances', 'vm-vnet.1', CONTROL_SOCKET);
    const st = (await controlRequest(control, 'status')).status!;

    // QEMU's NIC is a TAP with a virtio-net header, the only link of the VM's namespace, where the
    // kernel neither forwards nor speaks IPv6; the bridge port is the uplink TAP, with the header too.
    const details = (ns: string, dev: string): { ifname: string; master?: string; linkinfo?: { info_kind?: string; info_data?: { type?: string; vnet_hdr?: boolean } } } =>
      (JSON.parse(execFileSync('ip', ['-j', '-d', '-n', ns, 'link', 'show', dev], { encoding: 'utf8' })) as Array<ReturnType<typeof details>>)[0]!;
    expect((JSON.parse(execFileSync('ip', ['-j', '-n', vmNs, 'link', 'show'], { encoding: 'utf8' })) as Array<{ ifname: string }>).map((l) => l.ifname).sort()).toEqual([VM_UPLINK_IF, 'lo'].sort());
    expect(details(vmNs, VM_UPLINK_IF).linkinfo).toMatchObject({ info_kind: 'tun', info_data: { type: 'tap', vnet_hdr: true } });
    expect(details(NS, port)).toMatchObject({ master: BRIDGE, linkinfo: { info_kind: 'tun', info_data: { type: 'tap', vnet_hdr: true } } });
    const sysctl = (k: string): string => execFileSync('ip', ['netns', 'exec', vmNs, 'sysctl', '-n', k], { encoding: 'utf8' }).trim();
    expect([sysctl('net.ipv4.conf.all.forwarding'), sysctl('net.ipv6.conf.all.disable_ipv6')]).toEqual(['0', '1']);
    expect(readFileSync(`/proc/${st.qemuPid}/cmdline`, 'utf8')).toContain('tap,id=n0,fd=3');
    // QEMU holds its TAP and never the packet socket behind it (the one fd that reaches the bridge
    // past the filter is the uplink TAP's, held by the VM host process alone).
    const socketInodes = (pid: number): string[] =>
      readdirSync(`/proc/${pid}/fd`).map((fd) => { try { return (readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/) ?? [])[1] ?? ''; } catch { return ''; } }).filter(Boolean);
    const packetInodes = execFileSync('ip', ['netns', 'exec', vmNs, 'cat', '/proc/net/packet'], { encoding: 'utf8' }).trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/).at(-1)!);
    expect(packetInodes).toHaveLength(1);
    expect(socketInodes(st.pid)).toContain(packetInodes[0]);
    expect(socketInodes(st.qemuPid!)).not.toContain(packetInodes[0]);

    // 4 MiB each way over SSH, checked: the guest hands over TSO super-frames, which the filter
    // judges by their headers and the kernel segments after the pump.
    const sshArgs = ['netns', 'exec', NS, 'ssh', '-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR', `fleet@${ip}`];
    for (let i = 0; ; i++) {
      if (spawnSync('ip', [...sshArgs, 'true'], { stdio: 'ignore', timeout: 20_000 }).status === 0) break;
      if (i === 20) throw new Error('no SSH into the offload path VM');
      await new Promise((r) => setTimeout(r, 500));
    }
    const blob = randomBytes(4 << 20);
    expect(execFileSync('ip', [...sshArgs, 'md5sum'], { input: blob, encoding: 'utf8', timeout: 120_000 }).split(/\s/)[0]).toBe(createHash('md5').update(blob).digest('hex'));
    const back = execFileSync('ip', [...sshArgs, 'head -c 4194304 /dev/urandom > /tmp/b && md5sum /tmp/b && cat /tmp/b && rm /tmp/b'], { maxBuffer: 8 << 20, timeout: 120_000 });
    const nl = back.indexOf(10);
    expect(back.subarray(nl + 1)).toHaveLength(4 << 20);
    expect(createHash('md5').update(back.subarray(nl + 1)).digest('hex')).toBe(back.subarray(0, nl).toString().split(/\s/)[0]);
    const c = (await controlRequest(control, 'status')).status!.counters as { filter: { fromVm: Record<string, number> }; pump: { vm: Record<string, number>; tap: Record<string, number>; vmToHost: { passed: number; superFrames: number }; hostToVm: { superFrames: number } } };
    expect(c.pump.vmToHost.superFrames).toBeGreaterThan(0);
    expect(c.pump.vmToHost.passed).toBe(c.filter.fromVm.pass);
    // 4 MiB in far fewer frames than 1,448-byte segments would take.
    expect(c.pump.vm.rxBytes! / c.pump.vm.rxFrames!).toBeGreaterThan(3000);
    for (const side of [c.pump.vm, c.pump.tap]) expect(side).toMatchObject({ rxTruncated: 0, rxQueueDrops: 0, txDrops: 0, txErrors: 0 });
    // Issue 20: the VM host process moves the uplink TAP's frames through io_uring.
    expect(c.pump.tap).toMatchObject({ tapIoUring: TAP_IO_URING_BUILT ? 1 : 0, ioUringFallbacks: 0 });
    // ... and the 4 MiB each way went through the ring's calls, not past them.
    if (TAP_IO_URING_BUILT) {
      expect(c.pump.tap.ioUringRxCalls).toBeGreaterThan(0);
      expect(c.pump.tap.ioUringTxCalls).toBeGreaterThan(0);
    }
    const counted = await d.networkCounters(ref);
    expect(counted?.fromVm.pass).toBeGreaterThan(0);
    expect(counted?.fromHost.vm_queue_full).toBeUndefined(); // nothing refused so far

    // A paused guest reads nothing: frames for it pass the filter and are dropped at QEMU's TAP
    // queue in the kernel. The worker's counters (what the API shows) count them.
    expect((await controlRequest(control, 'pause')).ok).toBe(true);
    const flood = ['import socket', `s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)`, `s.bind((${JSON.stringify(BRIDGE)}, 0))`,
      `f = bytes.fromhex('ffffffffffff' + open('/sys/class/net/${BRIDGE}/address').read().strip().replace(':', '') + '0806' + '0001080006040001') + bytes(20)`,
      'for i in range(3000): s.send(f)'].join('\n');
    execFileSync('ip', ['netns', 'exec', NS, 'python3', '-c', flood]);
    let dropped: number | undefined;
    for (let i = 0; i < 50 && !dropped; i++) {
      dropped = (await d.networkCounters(ref))?.fromHost.vm_queue_full;
      if (!dropped) await new Promise((r) => setTimeout(r, 100));
    }
    expect(dropped).toBeGreaterThan(0);
    expect((await controlRequest(control, 'resume')).ok).toBe(true);

    // Removed: the VM's namespace, its TAP and the bridge port go with it.
    await d.remove(ref);
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(vmNs);
    expect(spawnSync('ip', ['-n', NS, 'link', 'show', port], { stdio: 'ignore' }).status).not.toBe(0);
    await d.close();
  });
  it('a worker killed with SIGKILL leaves its VM running; a new driver adopts it', async () => {
    const dataDir = path.join(tmp, 'k9');
    const script = path.join(tmp, 'worker-k9.mts');
    const driverUrl = pathToFileURL(path.join(REPO_ROOT, 'apps/worker/src/drivers/qemu.ts')).href;
    const natUrl = pathToFileURL(path.join(REPO_ROOT, 'apps/worker/src/uplink/nat-network.ts')).href;
    // A stand-in worker process: its own QemuDriver; its NAT handle attaches TAPs with the same
    // `ip` commands as NatNetwork.addTap (the NatNetwork object lives in this test process).
    await writeFile(script, `
      import { execFileSync } from 'node:child_process';
      import { QemuDriver } from ${JSON.stringify(driverUrl)};
      import { createVethUplink, deleteVethUplink } from ${JSON.stringify(natUrl)};
      const p = JSON.parse(process.env.FLEET_K9 ?? '{}');
      const ipn = (...a) => execFileSync('ip', ['-n', p.netns, ...a]);
      const nat = { ...p.nat, async addTap(t) { ipn('link', 'set', 'dev', t, 'master', p.bridge); ipn('link', 'set', 'dev', t, 'type', 'bridge_slave', 'isolated', 'on'); ipn('link', 'set', 'dev', t, 'up'); }, async removeTap() {},
        createUplink: (port) => createVethUplink(port, p.netns), deleteUplink: (port) => deleteVethUplink(port, p.netns),
        // The reservation was made by the test process, on the real network (the one dnsmasq serves).
        async reserve() { return p.reservation; }, async release() {}, async releaseAllBut() { return []; }, async hostAddresses() { return []; } };
      const d = new QemuDriver({ dataDir: p.dataDir, nat, netns: p.netns, vmLink: 'veth' });
      await d.create({ vmId: 'vm-k9', attempt: 1, name: 'k9', generation: '4', spec: { image: 'fleet-guest', os: 'linux', cpus: 1, memoryMib: 256, diskGib: 1, labels: {}, username: 'fleet' } });
      const s = await d.start({ vmId: 'vm-k9', attempt: 1 });
      process.stdout.write(JSON.stringify(s) + '\\n');
      setInterval(() => {}, 1 << 30);
    `);
    const reservation = await nat!.reserve({ key: 'vm-k9#1', vmId: 'vm-k9', mac: macFromSeed('vm-k9#1'), name: 'k9', hostAccess: false });
    const params = { netns: NS, bridge: BRIDGE, dataDir, reservation, nat: { gatewayIp: nat!.gatewayIp, gatewayMac: nat!.gatewayMac, subnet: nat!.subnet, dhcpServerIp: nat!.dhcpServerIp, addresses: nat!.addresses } };
    const worker = spawn(process.execPath, ['--import', 'tsx', script], { cwd: path.join(REPO_ROOT, 'apps/worker'), env: { ...process.env, FLEET_K9: JSON.stringify(params) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    worker.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const first = await new Promise<InstanceStatus>((resolve, reject) => {
      let b = '';
      worker.stdout!.on('data', (d: Buffer) => {
        b += d.toString();
        if (b.includes('\n')) resolve(JSON.parse(b.split('\n')[0]!) as InstanceStatus);
      });
      worker.once('exit', (c) => reject(new Error(`stand-in worker exited ${c}: ${out}`)));
      setTimeout(() => reject(new Error(`stand-in worker did not start the VM: ${out}`)), 60_000);
    });
    expect(first.state).toBe('running');
    const exited = new Promise((r) => worker.once('exit', r));
    worker.kill('SIGKILL');
    await exited;

    const d = new QemuDriver({ dataDir, nat: nat!, netns: NS, vmLink: 'veth' });
    const seen: InstanceStatus[] = [];
    d.subscribe((s) => seen.push(s));
    const [adopted] = await d.list();
    expect(adopted).toMatchObject({ vmId: 'vm-k9', attempt: 1, state: 'running', generation: '4', mac: first.mac });
    let ip = adopted!.ip;
    for (let i = 0; !ip && i < 1200; i++) {
      await new Promise((r) => setTimeout(r, 50));
      ip = seen.find((s) => s.ip)?.ip;
    }
    expect(ip).toMatch(/^192\.168\.64\.1[0-5]\d$/);
    console.log(`[qemu-vm] adopted after worker SIGKILL: ${ip}`);
    // The adopted VM's host still holds the uplink socket: its veth port is back on the bridge and the VM answers.
    const k9Port = tapNameFor({ vmId: 'vm-k9', attempt: 1 });
    expect(JSON.parse(execFileSync('ip', ['-j', '-n', NS, 'link', 'show', k9Port], { encoding: 'utf8' }))[0]).toMatchObject({ master: BRIDGE });
    let banner = '';
    for (let i = 0; !banner.startsWith('SSH-2.0') && i < 40; i++) {
      banner = spawnSync('ip', ['netns', 'exec', NS, 'timeout', '3', 'bash', '-c', `exec 3<>/dev/tcp/${ip}/22; head -c 7 <&3`], { encoding: 'utf8' }).stdout ?? '';
      if (!banner.startsWith('SSH-2.0')) await new Promise((r) => setTimeout(r, 250));
    }
    expect(banner).toBe('SSH-2.0');
    await d.remove({ vmId: 'vm-k9', attempt: 1 });
    expect(await d.list()).toEqual([]);
    await d.close();
  });
});
