/**
 * End-to-end VM networking benchmark (Linux, root, QEMU TCG): the guest image through the real
 * fleet path versus the same guest on plain QEMU networking, all in one run.
 *
 *   pnpm exec tsx bench/vm-network.ts                     (from the repo root, as root)
 *   VM_BENCH_RUNS=5 VM_BENCH_MIB=32 pnpm exec tsx bench/vm-network.ts
 *
 * Paths (each booted VM_BENCH_RUNS times, one VM at a time; 1 vCPU, 256 MiB, TCG, a blank 2 GiB
 * qcow2 data disk that the guest formats on boot, before DHCP — on every path, as a fleet VM has):
 *   fleet   controller (root namespace) + `fleet-worker run --driver qemu` in a network namespace
 *           this run creates: VM host process (socketpair -> FramePump + netfilter -> TAP, or with
 *           VM_BENCH_VM_LINK=veth AF_PACKET on a veth; VM_BENCH_VM_FRAMING=stream|dgram|vnet sets
 *           fleet-worker run --vm-framing: QEMU's -netdev stream or dgram to the pump, or vnet:
 *           QEMU on a TAP with virtio-net headers, read by the pump through AF_PACKET) on the
 *           worker's NAT bridge fleet0 with dnsmasq, like test/fleet-network.test.ts. VMs are
 *           created and deleted through the REST API.
 *   tap     baseline: QEMU `-netdev tap` on a plain kernel TAP (192.168.77.1/24) in a namespace
 *           this run creates, dnsmasq on it; no pump, no filter, no bridge. QEMU's default vnet
 *           header: the guest NIC gets checksum/TSO offloads and hands over up to 64 KiB segments.
 *   tapnv   the same with `vnet_hdr=off`: no offloads, ≤ 1514-byte frames, as on the fleet path
 *           (a `-netdev dgram` socketpair carries plain frames) — the fair baseline for the pump.
 *   user    baseline: QEMU user-mode networking (slirp) with host forwards on 127.0.0.1.
 * Figures:
 *   boot→IP      fleet: QEMU spawn -> the filter learns the DHCP lease (status.jsonl `bootToIpMs`);
 *                baselines: QEMU spawn -> the guest prints `FLEET-GUEST ip=` on its serial console
 *                (the udhcpc script, right after the lease), read by polling the log every 20 ms.
 *   guest uptime at IP  the guest kernel's own uptime when its DHCP script ran (serial console):
 *                the part of boot→IP spent inside the guest; the rest is QEMU start-up and loading.
 *                dnsmasq runs with no-ping on every path (the worker's default).
 *   boot→SSH     QEMU spawn -> the first `ssh root@vm true` that succeeds has exited (retried
 *                every 100 ms after the IP; one ssh client run each, from the path's namespace).
 *   lease→API    fleet only: the status.jsonl lease line's timestamp -> the controller's
 *                GET /v1/vms/:name first shows that IP (polled every 50 ms).
 *   create→API IP fleet only: POST /v1/vms -> the API shows the IP (scheduling + host process +
 *                boot + lease report).
 *   TCP host→VM  a Node client in the path's namespace writes VM_BENCH_MIB MiB to `nc -l | wc -c`
 *                in the guest; timed from connect to the guest closing the connection; the guest's
 *                byte count is checked.
 *   TCP VM→host  the client GETs a VM_BENCH_MIB MiB file (tmpfs) from busybox httpd in the guest;
 *                timed from connect to the last byte; the body length is checked.
 *   Each direction: one warm-up transfer (TCG translates the code paths on first use), then
 *   VM_BENCH_REPS measured ones, one VM busy at a time, interleaved across the paths (round 1 of
 *   every path, then round 2, ...) so that load from other jobs spreads over all of them.
 * Under TCG the guest's CPU (emulated virtio-net, TCP stack, nc/httpd) dominates the transfers;
 * the baselines are what the same guest does without our pump, so the difference is the pump's share.
 */
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureGuestImage, guestCmdline, macFromSeed, qemuArgs, type GuestImage } from '../guest-image/src/index.ts';
import { controlRequest } from '../apps/worker/src/host-process/control-client.ts';
import { ApiClient, REPO_ROOT, removeDir, tempDir, waitUntil } from '../test/support/fleet-processes.ts';

const run = promisify(execFile);
const RUNS = Number(process.env.VM_BENCH_RUNS ?? 3);
const MIB = Number(process.env.VM_BENCH_MIB ?? 32);
const DISK_GIB = 2;
const REPS = Number(process.env.VM_BENCH_REPS ?? 3); // measured transfers per direction per path, after one warm-up each
/** How the fleet VM's frames reach the bridge (fleet-worker run --vm-link): tap (the default) or veth. */
const VM_LINK = process.env.VM_BENCH_VM_LINK === 'veth' ? 'veth' : 'tap';
/** How frames travel between the fleet VM's QEMU and its VM host process (fleet-worker run --vm-framing): dgram, stream or vnet (issue 20). */
const VM_FRAMING = (['stream', 'dgram', 'vnet'] as const).find((f) => f === process.env.VM_BENCH_VM_FRAMING);
const ID = process.pid % 1000;
const NS_W = `fvnw${ID}`;
const NS_B = `fvnb${ID}`;
const ROOT_VETH = `fvnr${ID}`;
const ROOT_IP = '10.97.0.1';
const WORKER_IP = '10.97.0.2';
const API_PORT = 18180 + (ID % 50);
const GRPC_PORT = 17580 + (ID % 50);
const ADMIN = 'fleet_benchvmnet001_' + 'B'.repeat(43);
const TAP_B = `fvnbt${ID}`;
const TAP_B2 = `fvnbu${ID}`;

function why(): string {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'not root';
  for (const b of ['ip', 'qemu-system-x86_64', 'ssh', 'ssh-keygen', 'dnsmasq', 'nft']) {
    if (spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0) return `${b} not installed`;
  }
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun missing';
  return '';
}
const skip = why();
if (skip) {
  console.warn(`vm-network benchmark SKIPPED: ${skip} (needs root, ip, qemu-system-x86_64, ssh, dnsmasq, nft on Linux)`);
  process.exit(0);
}

const ip = (...args: string[]): void => void execFileSync('ip', args, { stdio: 'pipe' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const load = (): string => os.loadavg().map((l) => l.toFixed(2)).join(', ');

let tmp = '';
let key = '';
const children: ChildProcess[] = [];

// ------------------------------------------------------------------ transfer probe (a Node process in a namespace)

const PROBE = `
import net from 'node:net';
const [mode, host, port, arg] = process.argv.slice(2);
const t0 = process.hrtime.bigint();
const done = (bytes) => { console.log(JSON.stringify({ bytes, ms: Number(process.hrtime.bigint() - t0) / 1e6 })); process.exit(0); };
setTimeout(() => { console.log(JSON.stringify({ error: 'timeout' })); process.exit(1); }, 120000).unref();
const s = net.connect(Number(port), host);
s.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); process.exit(1); });
if (mode === 'get') {
  let n = 0, body = -1;
  s.on('connect', () => s.write('GET ' + arg + ' HTTP/1.0\\r\\nHost: vm\\r\\n\\r\\n'));
  let head = Buffer.alloc(0);
  s.on('data', (d) => {
    if (body < 0) { head = Buffer.concat([head, d]); const i = head.indexOf('\\r\\n\\r\\n'); if (i >= 0) { body = head.length - i - 4; } }
    else body += d.length;
  });
  s.on('close', () => done(Math.max(0, body)));
} else {
  const total = Number(arg), chunk = Buffer.alloc(65536);
  let sent = 0;
  s.on('connect', () => {
    const w = () => { while (sent < total) { sent += chunk.length; if (!s.write(chunk)) return void s.once('drain', w); } s.end(); };
    w();
  });
  s.on('data', () => {});
  s.on('close', () => done(sent));
}
`;

interface Transfer {
  bytes: number;
  ms: number;
}

async function probe(ns: string | null, mode: 'get' | 'put', host: string, port: number, arg: string): Promise<Transfer> {
  const file = path.join(tmp, 'probe.mjs');
  const cmd = ns ? ['ip', ['netns', 'exec', ns, process.execPath, file, mode, host, String(port), arg]] as const : [process.execPath, [file, mode, host, String(port), arg]] as const;
  const stdout = await run(cmd[0], [...cmd[1]], { timeout: 200_000 }).then(
    (r) => r.stdout,
    (e: { stdout?: string; message: string }) => e.stdout || JSON.stringify({ error: e.message }),
  );
  const r = JSON.parse(stdout.trim()) as Transfer & { error?: string };
  if (r.error) throw new Error(`${mode} ${host}:${port}: ${r.error}`);
  return r;
}

// ------------------------------------------------------------------ one path = how to reach its VM

interface Path {
  name: string;
  /** Namespace the client runs in (null: root). */
  ns: string | null;
  /** Address and ports the client uses for the VM's SSH, httpd and nc listener. */
  host: string;
  ports: { ssh: number; http: number; nc: number };
  /** fleet only: the VM host process's control socket (pump counters). */
  controlSock?: string;
}

async function ssh(p: Path, cmd: string, timeoutMs = 30_000): Promise<{ ok: boolean; out: string }> {
  const args = [
    '-i', key, '-p', String(p.ports.ssh), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
    '-o', 'ConnectTimeout=3', '-o', 'BatchMode=yes', `root@${p.host}`, cmd,
  ];
  const [bin, argv] = p.ns ? ['ip', ['netns', 'exec', p.ns, 'ssh', ...args]] : ['ssh', args];
  try {
    const { stdout, stderr } = await run(bin, argv, { timeout: timeoutMs });
    return { ok: true, out: stdout + stderr };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string };
    return { ok: false, out: (err.stdout ?? '') + (err.stderr ?? '') };
  }
}

/** Time (Date.now ms) at which the first `ssh … true` has finished successfully. */
async function firstSsh(p: Path, deadlineMs = 120_000): Promise<number> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    if ((await ssh(p, 'true', 10_000)).ok) return Date.now();
    if (Date.now() > end) throw new Error(`ssh to ${p.name} ${p.host} never succeeded`);
    await sleep(100);
  }
}

async function transferSetup(p: Path): Promise<void> {
  const setup = await ssh(p, `mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/blob bs=64k count=${MIB * 16} 2>/dev/null && httpd -p 8080 -h /tmp/www && echo setup-ok`);
  if (!setup.out.includes('setup-ok')) throw new Error(`${p.name}: guest setup failed: ${setup.out}`);
}

/** Transfers i .. i + n - 1 of a path (0 is the warm-up); the guest was set up by transferSetup. */
async function transfers(p: Path, from = 0, n = REPS + 1): Promise<{ toVm: Transfer[]; fromVm: Transfer[] }> {
  const bytes = MIB * 1024 * 1024;
  const toVm: Transfer[] = [];
  const fromVm: Transfer[] = [];
  for (let i = from; i < from + n; i++) {
    // The guest counts what it received: a transfer counts only if every byte arrived. busybox nc
    // gives up on the connection when its stdin ends, so its stdin is a `sleep` that never writes.
    const l = await ssh(p, 'rm -f /tmp/rx.count; (sleep 300 | nc -l -p 5002 | wc -c >/tmp/rx.count) >/dev/null 2>&1 & sleep 0.3; echo listening');
    if (!l.out.includes('listening')) throw new Error(`${p.name}: nc listener: ${l.out}`);
    const put = await probe(p.ns, 'put', p.host, p.ports.nc, String(bytes));
    let got = '';
    await waitUntil(async () => /^\d+$/.test((got = (await ssh(p, 'cat /tmp/rx.count 2>/dev/null')).out.trim())), 30_000, `${p.name}: guest byte count`, 200);
    await ssh(p, 'killall sleep 2>/dev/null; true'); // the never-ending stdin of that nc
    if (Number(got) !== bytes) throw new Error(`${p.name}: the guest received ${got} bytes, expected ${bytes}`);
    const cpuBefore = cpuByProcess();
    const get = await probe(p.ns, 'get', p.host, p.ports.http, '/blob');
    if (i > 0) addCpu(p.name, cpuBefore, cpuByProcess(), get.ms);
    if (i === 0) continue; // warm-up: TCG translates nc/httpd/TCP code paths on first use
    toVm.push(put);
    fromVm.push(get);
  }
  for (const t of fromVm) if (t.bytes !== bytes) throw new Error(`${p.name}: GET returned ${t.bytes} bytes, expected ${bytes}`);
  return { toVm, fromVm };
}

// ------------------------------------------------------------------ CPU per process during VM→host

/** utime+stime (clock ticks) of every process, keyed by pid, labelled by what it is. */
function cpuByProcess(): Map<number, { label: string; ticks: number }> {
  const out = new Map<number, { label: string; ticks: number }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const f = stat.slice(close + 2).split(' ');
      const ticks = Number(f[11]) + Number(f[12]);
      let label = comm;
      if (comm === 'node' || comm.startsWith('node')) {
        const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8');
        label = cmd.includes('vm-host') ? 'VM host process (pump)' : cmd.includes('fleet-worker') ? 'worker' : cmd.includes('fleet-controller') ? 'controller' : cmd.includes('probe.mjs') ? 'client (probe)' : 'node (other)';
      } else if (comm.startsWith('qemu-system')) label = 'qemu';
      else if (comm.startsWith('ksoftirqd')) label = 'ksoftirqd';
      out.set(Number(d), { label, ticks });
    } catch {
      /* exited */
    }
  }
  // Kernel time not charged to any process (softirq: bridge, netfilter, TCP receive work).
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  out.set(-1, { label: 'softirq+irq (no process)', ticks: (cpu[5] ?? 0) + (cpu[6] ?? 0) });
  return out;
}
/** CPU ms per label over the measured VM→host transfers of each path, and the transfers' wall ms. */
const cpuUse: Record<string, { wallMs: number; byLabel: Map<string, number> }> = {};
const TICK_MS = 1000 / 100; // USER_HZ is 100 on Linux
function addCpu(pathName: string, a: Map<number, { label: string; ticks: number }>, b: Map<number, { label: string; ticks: number }>, wallMs: number): void {
  const acc = (cpuUse[pathName] ??= { wallMs: 0, byLabel: new Map() });
  acc.wallMs += wallMs;
  for (const [pid, v] of b) {
    const d = v.ticks - (a.get(pid)?.ticks ?? 0);
    if (d > 0) acc.byLabel.set(v.label, (acc.byLabel.get(v.label) ?? 0) + d * TICK_MS);
  }
}

// ------------------------------------------------------------------ results

interface BootSample {
  bootToIpMs: number;
  bootToSshMs: number;
  leaseToApiMs?: number;
  createToApiMs?: number;
  /** The guest's own uptime when its DHCP script ran (`FLEET-GUEST ip=… uptime=`), ms. */
  guestUptimeAtIpMs: number;
}

function guestUptimeAtIp(serialLog: string): number {
  let text = '';
  try {
    text = readFileSync(serialLog, 'utf8');
  } catch {
    /* none */
  }
  const m = text.match(/^FLEET-GUEST ip=\S+ uptime=([\d.]+)/m);
  return m ? Number(m[1]) * 1000 : NaN;
}
const results: Record<string, { boots: BootSample[]; toVm: Transfer[]; fromVm: Transfer[] }> = {};

// ------------------------------------------------------------------ baselines: QEMU alone

function waitSerialIp(serialLog: string, timeoutMs = 120_000): Promise<{ ip: string; at: number }> {
  return new Promise((resolve, reject) => {
    const end = Date.now() + timeoutMs;
    const t = setInterval(() => {
      let text = '';
      try {
        text = readFileSync(serialLog, 'utf8');
      } catch {
        /* not yet */
      }
      const m = text.match(/^FLEET-GUEST ip=(\d+\.\d+\.\d+\.\d+)/m);
      if (m) {
        clearInterval(t);
        resolve({ ip: m[1]!, at: Date.now() });
      } else if (Date.now() > end) {
        clearInterval(t);
        reject(new Error(`no FLEET-GUEST ip= in ${serialLog}`));
      }
    }, 20);
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function killChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGKILL');
  await Promise.race([exited, sleep(5000)]);
}

type Baseline = 'tap' | 'tapnv' | 'user';
const BASELINES: Baseline[] = ['tap', 'tapnv', 'user'];
const KINDS = ['fleet', ...BASELINES] as const;

async function bootBaseline(kind: Baseline, image: GuestImage, i: number, keepForTransfers: boolean): Promise<{ path: Path; qemu: ChildProcess } | undefined> {
  const name = `bench-${kind}-${i}`;
  const serialLog = path.join(tmp, `${name}.serial.log`);
  const mac = macFromSeed(`vm-network-bench/${name}`);
  const cmdline = guestCmdline(image.cmdlineBase, { authorizedKeys: [readFileSync(`${key}.pub`, 'utf8')], hostname: name });
  // The same blank data disk the worker gives a fleet VM (the guest formats it before DHCP).
  const disk = { file: path.join(tmp, `${name}.qcow2`), format: 'qcow2' as const };
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk.file, String(DISK_GIB * 1024 ** 3)]);
  let p: Path;
  let args: string[];
  if (kind === 'user') {
    const ports = { ssh: await freePort(), http: await freePort(), nc: await freePort() };
    p = { name, ns: null, host: '127.0.0.1', ports };
    args = qemuArgs({
      kernel: image.kernel, initrd: image.initrd, cmdline, disk, cpus: 1, memoryMib: 256, mac, serialLog, accel: 'tcg', name,
      userNet: { hostForwards: [{ hostPort: ports.ssh, guestPort: 22 }, { hostPort: ports.http, guestPort: 8080 }, { hostPort: ports.nc, guestPort: 5002 }] },
    });
  } else {
    p = { name, ns: NS_B, host: '', ports: { ssh: 22, http: 8080, nc: 5002 } };
    args = qemuArgs({
      kernel: image.kernel, initrd: image.initrd, cmdline, disk, cpus: 1, memoryMib: 256, mac, serialLog, accel: 'tcg', name,
      // tapnv: vnet_hdr=off, so the guest's NIC has no checksum/TSO offloads and sends ≤ 1514-byte
      // frames, like on the socketpair of the fleet path (-netdev dgram has no vnet header).
      extraArgs: ['-netdev', kind === 'tap' ? `tap,id=n0,ifname=${TAP_B},script=no,downscript=no` : `tap,id=n0,ifname=${TAP_B2},script=no,downscript=no,vnet_hdr=off`,
        '-device', `virtio-net-pci,netdev=n0,mac=${mac}`],
    });
  }
  const bin = 'qemu-system-x86_64';
  const t0 = Date.now();
  const qemu = kind !== 'user' ? spawn('ip', ['netns', 'exec', NS_B, bin, ...args], { stdio: ['ignore', 'ignore', 'pipe'] }) : spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(qemu);
  let stderr = '';
  qemu.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  qemu.once('exit', (code) => {
    if (code) console.warn(`${name}: qemu exited ${code}: ${stderr.trim()}`);
  });
  const lease = await waitSerialIp(serialLog);
  if (kind !== 'user') p.host = lease.ip;
  const sshAt = await firstSsh(p);
  (results[kind] ??= { boots: [], toVm: [], fromVm: [] }).boots.push({ bootToIpMs: lease.at - t0, bootToSshMs: sshAt - t0, guestUptimeAtIpMs: guestUptimeAtIp(serialLog) });
  if (keepForTransfers) return { path: p, qemu };
  await killChild(qemu);
  return undefined;
}

// ------------------------------------------------------------------ the fleet path

interface VmView {
  id: string;
  name: string;
  state: string;
  ip: string | null;
  attempt: number;
}

function instanceDir(vm: VmView): string {
  return path.join(tmp, 'w', 'qemu', 'instances', `${encodeURIComponent(vm.id).replace(/\./g, '%2E')}.${vm.attempt}`);
}

/** Where the VM host process keeps status.jsonl, control.sock, serial.log: run/ with VM users (issue 14). */
function hostDir(vm: VmView): string {
  const dir = instanceDir(vm);
  return existsSync(path.join(dir, 'run')) ? path.join(dir, 'run') : dir;
}

function statusLines(vm: VmView): Array<{ at: number; state: string; ip: string | null; bootToIpMs?: number }> {
  try {
    return readFileSync(path.join(hostDir(vm), 'status.jsonl'), 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as never);
  } catch {
    return [];
  }
}

async function bootFleet(api: ApiClient, i: number, keepForTransfers: boolean): Promise<Path | undefined> {
  const name = `bench-fleet-${i}`;
  const t0 = Date.now();
  await api.createVm({ name, image: 'fleet-guest', cpus: 1, memoryMib: 256, diskGib: DISK_GIB });
  let vm: VmView | null = null;
  let apiAt = 0;
  await waitUntil(async () => {
    vm = (await api.vm(name)) as VmView | null;
    apiAt = Date.now();
    return !!vm?.ip;
  }, 180_000, `${name} to show an IP`, 50);
  const v = vm! as VmView;
  const lease = statusLines(v).find((l) => l.ip);
  if (!lease?.bootToIpMs) throw new Error(`${name}: no lease line in status.jsonl`);
  const spawnAt = lease.at - lease.bootToIpMs;
  const p: Path = { name, ns: NS_W, host: v.ip!, ports: { ssh: 22, http: 8080, nc: 5002 }, controlSock: path.join(hostDir(v), 'control.sock') };
  const sshAt = await firstSsh(p);
  (results.fleet ??= { boots: [], toVm: [], fromVm: [] }).boots.push({
    bootToIpMs: lease.bootToIpMs,
    bootToSshMs: sshAt - spawnAt,
    leaseToApiMs: apiAt - lease.at,
    createToApiMs: apiAt - t0,
    guestUptimeAtIpMs: guestUptimeAtIp(path.join(hostDir(v), 'serial.log')),
  });
  if (keepForTransfers) return p;
  await deleteFleetVm(api, v);
  return undefined;
}

async function deleteFleetVm(api: ApiClient, vm: VmView): Promise<void> {
  await api.ok('DELETE', `/v1/vms/${vm.name}`);
  // Stopped once its host process has recorded the end, or the worker has removed its run dir.
  await waitUntil(() => !existsSync(instanceDir(vm)) || ['stopped', 'failed'].includes(statusLines(vm).at(-1)?.state ?? ''), 60_000, `${vm.name} to stop`, 200);
}

// ------------------------------------------------------------------ lab

async function setUpLab(): Promise<ApiClient> {
  ip('netns', 'add', NS_W);
  ip('link', 'add', ROOT_VETH, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS_W);
  ip('addr', 'add', `${ROOT_IP}/24`, 'dev', ROOT_VETH);
  ip('link', 'set', ROOT_VETH, 'up');
  ip('-n', NS_W, 'link', 'set', 'lo', 'up');
  ip('-n', NS_W, 'addr', 'add', `${WORKER_IP}/24`, 'dev', 'eth0');
  ip('-n', NS_W, 'link', 'set', 'eth0', 'up');
  ip('-n', NS_W, 'route', 'add', 'default', 'via', ROOT_IP);
  // Baseline namespace: a persistent TAP QEMU attaches to, with dnsmasq answering DHCP on it.
  ip('netns', 'add', NS_B);
  ip('-n', NS_B, 'link', 'set', 'lo', 'up');
  for (const [tap, net] of [[TAP_B, '77'], [TAP_B2, '78']] as const) {
    ip('-n', NS_B, 'tuntap', 'add', 'dev', tap, 'mode', 'tap');
    ip('-n', NS_B, 'addr', 'add', `192.168.${net}.1/24`, 'dev', tap);
    ip('-n', NS_B, 'link', 'set', tap, 'up');
  }
  const dns = spawn('ip', ['netns', 'exec', NS_B, 'dnsmasq', '-k', '--conf-file=/dev/null', '--port=0', '--no-ping', `--interface=${TAP_B}`, `--interface=${TAP_B2}`, '--bind-dynamic',
    '--dhcp-range=192.168.77.10,192.168.77.99,255.255.255.0,1h', '--dhcp-range=192.168.78.10,192.168.78.99,255.255.255.0,1h', `--dhcp-leasefile=${path.join(tmp, 'b.leases')}`, `--pid-file=${path.join(tmp, 'b.pid')}`],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(dns);

  const env = { ...process.env, FLEET_LOG_LEVEL: 'warn' };
  const controller = spawn(process.execPath, [path.join(REPO_ROOT, 'apps/controller/bin/fleet-controller.js'), 'run', '--data-dir', path.join(tmp, 'controller'),
    // Plain HTTP: the bench's own API calls do not pin the controller CA.
    '--listen', `${ROOT_IP}:${API_PORT}`, '--grpc-listen', `${ROOT_IP}:${GRPC_PORT}`, '--api-tls', 'off', '--heartbeat-interval', '500ms', '--worker-offline-timeout', '5s'],
    { cwd: REPO_ROOT, env: { ...env, FLEET_BOOTSTRAP_ADMIN_TOKEN: ADMIN }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(controller);
  let cout = '';
  controller.stdout!.on('data', (d: Buffer) => (cout += d.toString()));
  controller.stderr!.on('data', (d: Buffer) => (cout += d.toString()));
  const api = new ApiClient(`http://${ROOT_IP}:${API_PORT}`, ADMIN);
  await waitUntil(async () => {
    if (controller.exitCode !== null) throw new Error(`controller exited:\n${cout}`);
    return (await api.request('GET', '/v1/health').catch(() => ({ status: 0 }))).status === 200;
  }, 60_000, 'controller up', 200);
  const { token } = await api.createBootstrapToken();
  await run('ip', ['netns', 'exec', NS_W, process.execPath, path.join(REPO_ROOT, 'apps/worker/bin/fleet-worker.js'), 'enroll', '--controller', `${ROOT_IP}:${GRPC_PORT}`,
    '--token', token, '--name', 'w', '--data-dir', path.join(tmp, 'w')], { cwd: REPO_ROOT, env });
  const worker = spawn('ip', ['netns', 'exec', NS_W, process.execPath, path.join(REPO_ROOT, 'apps/worker/bin/fleet-worker.js'), 'run', '--data-dir', path.join(tmp, 'w'),
    '--driver', 'qemu', '--accel', 'tcg', '--uplink', 'eth0', '--vm-link', VM_LINK, ...(VM_FRAMING ? ['--vm-framing', VM_FRAMING] : []), '--authorized-keys', `${key}.pub`, '--cpus', '2', '--memory-mib', '1024', '--vm-slots', '2'],
    { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(worker);
  let wout = '';
  worker.stdout!.on('data', (d: Buffer) => (wout += d.toString()));
  worker.stderr!.on('data', (d: Buffer) => (wout += d.toString()));
  await waitUntil(async () => {
    if (worker.exitCode !== null) throw new Error(`worker exited:\n${wout}`);
    return (await api.worker('w'))?.status === 'online';
  }, 90_000, 'worker online', 200);
  return api;
}

async function tearDown(): Promise<void> {
  for (const c of children) await killChild(c);
  // VM host processes and QEMU run detached, with our temp dir in their command lines.
  if (tmp) {
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        if (Number(pid) !== process.pid && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(tmp)) process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  for (const ns of [NS_W, NS_B]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  spawnSync('ip', ['link', 'del', ROOT_VETH], { stdio: 'ignore' });
  if (tmp) await removeDir(tmp);
}

// ------------------------------------------------------------------ main

const stats = (xs: number[]): string => {
  if (xs.length === 0) return '-';
  const s = [...xs].sort((a, b) => a - b);
  const med = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return `${Math.round(med)} (${Math.round(s[0]!)}–${Math.round(s.at(-1)!)})`;
};
const mbit = (t: Transfer): number => (t.bytes * 8) / (t.ms / 1000) / 1e6;
const rate = (ts: Transfer[]): string => {
  if (ts.length === 0) return '-';
  const r = ts.map(mbit).sort((a, b) => a - b);
  return `${r.map((x) => x.toFixed(0)).join(' / ')} (best ${r.at(-1)!.toFixed(0)})`;
};

type Counters = Record<string, Record<string, number>>;
async function pumpCounters(sock: string): Promise<Counters> {
  const r = await controlRequest(sock, 'status');
  const c = (r.status?.counters as { pump?: Record<string, Record<string, unknown>> } | undefined)?.pump ?? {};
  const out: Counters = {};
  for (const [k, v] of Object.entries(c)) {
    out[k] = {};
    for (const [f, n] of Object.entries(v)) if (typeof n === 'number') out[k]![f] = n;
  }
  return out;
}
function diffCounters(a: Counters, b: Counters): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(b)) {
    for (const f of ['rxFrames', 'rxWakeups', 'txFrames', 'txDrops', 'eagain', 'enobufs', 'txErrors', 'passed', 'dropped', 'superFrames', 'ioUringFallbacks', 'ioUringRxCalls', 'ioUringTxCalls']) {
      if (v[f] === undefined) continue;
      parts.push(`${k}.${f} ${v[f]! - (a[k]?.[f] ?? 0)}`);
    }
    // A state, not a count: whether the TAP port batched through io_uring at the end.
    if (v.tapIoUring !== undefined && k === 'tap') parts.push(`${k}.tapIoUring ${v.tapIoUring}`);
  }
  return parts.join(', ');
}
let pumpDelta = '';
let hostMemory = '';

/** The fleet VM host process's VmRSS / VmHWM (MiB), from its pid in the control socket's status. */
async function hostProcessMemory(sock: string): Promise<string> {
  const pid = (await controlRequest(sock, 'status')).status?.pid;
  if (pid === undefined) return 'unknown';
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? NaN);
  return `RSS ${(kib('VmRSS') / 1024).toFixed(1)} MiB, peak ${(kib('VmHWM') / 1024).toFixed(1)} MiB`;
}

const loadStart = load();
let failed: Error | undefined;
try {
  tmp = await tempDir('vmb');
  key = path.join(tmp, 'id_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'fleet-vm-bench', '-f', key]);
  writeFileSync(path.join(tmp, 'probe.mjs'), PROBE);
  const image = await ensureGuestImage();
  const api = await setUpLab();
  console.log(`vm-network: ${RUNS} boots per path, ${MIB} MiB × ${REPS} transfers per direction (+1 warm-up); guest 1 vCPU, 256 MiB, TCG`);
  console.log(`${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, Node ${process.version}, ${os.platform()} ${os.release()}; load average at start: ${loadStart}\n`);

  // Interleaved, so that load from other jobs on the machine spreads over all paths.
  const kept: Partial<Record<(typeof KINDS)[number], Path>> = {};
  const keptQemu: ChildProcess[] = [];
  for (let i = 0; i < RUNS; i++) {
    const last = i === RUNS - 1;
    const f = await bootFleet(api, i, last);
    if (f) kept.fleet = f;
    for (const kind of BASELINES) {
      const b = await bootBaseline(kind, image, i, last);
      if (b) {
        kept[kind] = b.path;
        keptQemu.push(b.qemu);
      }
    }
    process.stderr.write(`boot round ${i + 1}/${RUNS} done (load ${load()})\n`);
  }
  // Transfers, one VM busy at a time; the other VMs idle (they were booted last). Interleaved by
  // repetition (warm-up of every path, then measured transfer 1 of every path, ...), so that a
  // burst of load from other jobs falls on all paths rather than on one.
  for (const kind of KINDS) await transferSetup(kept[kind]!);
  const before = kept.fleet?.controlSock ? await pumpCounters(kept.fleet.controlSock) : undefined;
  for (let rep = 0; rep <= REPS; rep++) {
    for (const kind of KINDS) {
      const t = await transfers(kept[kind]!, rep, 1);
      results[kind]!.toVm.push(...t.toVm);
      results[kind]!.fromVm.push(...t.fromVm);
    }
    process.stderr.write(`transfer round ${rep}/${REPS} done (load ${load()})\n`);
  }
  if (kept.fleet?.controlSock && before) pumpDelta = diffCounters(before, await pumpCounters(kept.fleet.controlSock));
  if (kept.fleet?.controlSock) hostMemory = await hostProcessMemory(kept.fleet.controlSock).catch((e: Error) => `unknown (${e.message})`);
  for (const q of keptQemu) await killChild(q);

  const pad = (s: string, n: number) => s.padEnd(n);
  console.log(`${pad('path', 48)} ${pad('boot→IP ms', 20)} ${pad('guest uptime at IP', 20)} ${pad('boot→SSH ms', 20)} ${pad('lease→API ms', 16)} ${pad('create→API IP ms', 20)}`);
  const label = {
    fleet: `fleet: QEMU${VM_FRAMING ? ` (${VM_FRAMING})` : ''} -> pump+netfilter -> ${VM_LINK} -> bridge`,
    tap: 'baseline: QEMU -netdev tap (vnet_hdr offloads)',
    tapnv: 'baseline: QEMU -netdev tap,vnet_hdr=off',
    user: 'baseline: QEMU user networking (slirp)',
  };
  for (const kind of KINDS) {
    const b = results[kind]!.boots;
    console.log(`${pad(label[kind], 48)} ${pad(stats(b.map((x) => x.bootToIpMs)), 20)} ${pad(stats(b.map((x) => x.guestUptimeAtIpMs).filter((x) => !Number.isNaN(x))), 20)} ${pad(stats(b.map((x) => x.bootToSshMs)), 20)} ${pad(kind === 'fleet' ? stats(b.map((x) => x.leaseToApiMs!)) : '-', 16)} ${pad(kind === 'fleet' ? stats(b.map((x) => x.createToApiMs!)) : '-', 20)}`);
  }
  console.log('(median (min–max) over the boots)\n');
  console.log(`${pad('path', 48)} ${pad('TCP host→VM Mbit/s', 32)} TCP VM→host Mbit/s`);
  for (const kind of KINDS) {
    console.log(`${pad(label[kind], 48)} ${pad(rate(results[kind]!.toVm), 32)} ${rate(results[kind]!.fromVm)}`);
  }
  console.log('\nCPU during the measured VM→host transfers (% of one core, utime+stime per process; the rest of 200 % is idle or other):');
  for (const [name, u] of Object.entries(cpuUse)) {
    const parts = [...u.byLabel].filter(([, ms]) => ms / u.wallMs >= 0.02).sort((x, y) => y[1] - x[1]).map(([l, ms]) => `${l} ${((100 * ms) / u.wallMs).toFixed(0)} %`);
    console.log(`  ${name}: ${parts.join(', ')}`);
  }
  console.log(`\nfleet pump counters over the fleet transfers (incl. warm-up): ${pumpDelta}`);
  console.log('(vm = QEMU\'s side: the socketpair, or the packet socket on its TAP (vnet); tap = the bridge port: a TAP, or AF_PACKET on the VM veth; txDrops/eagain = frames the other side refused, dropped like a NIC)');
  console.log(`fleet VM host process after the transfers: ${hostMemory}`);
  console.log(`\nload average at end: ${load()}`);
} catch (e) {
  failed = e as Error;
} finally {
  await tearDown();
}
if (failed) {
  console.error(`vm-network benchmark failed: ${failed.stack ?? failed.message}`);
  process.exit(1);
}
