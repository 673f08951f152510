// Worker memory benchmark (issue 20): RSS of each VM host process and of its QEMU, for real VMs.
// A controller (production bin) and a `fleet-worker run --driver qemu` inside a network
// namespace, set up as the e2e tests do (test/support/qemu-worker.ts); N VMs of the guest image
// are created through the API and measured once running: VmRSS/VmHWM/RssAnon of every VM host
// process and of the QEMU it started, and of the worker itself. Baselines in the same run: a bare
// `node` process that only waits, and the VM host process's code loaded without a VM, once from
// the bundle (what vm-host/launch.mjs runs now) and once through tsx (what it ran before): the
// difference between those two is what tsx cost every VM host process. (FLEET_DEV cannot show it
// on real VMs: a VM user's host process gets a minimal environment, drivers/qemu.ts.)
//
//   pnpm exec tsx bench/worker-memory.ts [--vms 3] [--memory-mib 256]
//
// Needs root, `ip netns`, qemu-system-x86_64 (KVM when /dev/kvm is there, else TCG).
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { REPO_ROOT, removeDir, startControllerProcess, tempDir, waitUntil, type ControllerProcess, type RunningProcess } from '../test/support/fleet-processes.ts';
import { createQemuLab, qemuMissing, type QemuLab } from '../test/support/qemu-worker.ts';
import { markdownTable } from './support/report.ts';
import { mib, procPss, procStatus, type ProcStatus } from './support/proc-memory.ts';

const { values } = parseArgs({
  options: {
    vms: { type: 'string', default: '3' },
    'memory-mib': { type: 'string', default: '256' },
  },
});
const vmCount = Number(values.vms);
const memoryMib = Number(values['memory-mib']);
const why = qemuMissing();
if (why) {
  console.error(`worker-memory: cannot run real VMs here: ${why}`);
  process.exit(2);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const loadavg = async () => (await readFile('/proc/loadavg', 'utf8')).trim();

interface ProcInfo {
  pid: number;
  ppid: number;
  comm: string;
  cmdline: string;
}

function processes(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const p of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      // comm may contain spaces and parentheses: the fields after it start at the last ")".
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      out.push({ pid: Number(p), ppid, comm, cmdline: readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ') });
    } catch {
      /* gone */
    }
  }
  return out;
}

const build = spawn(process.execPath, ['scripts/build.mjs'], { cwd: REPO_ROOT, stdio: 'inherit' });
if ((await new Promise<number | null>((r) => build.once('exit', r))) !== 0) throw new Error('scripts/build.mjs failed');
const env = {};
console.log(`worker-memory benchmark: ${vmCount} VMs of ${memoryMib} MiB, ${os.cpus().length} CPUs, Node ${process.version}, ${new Date().toISOString()}`);
console.log(`/proc/loadavg at start: ${await loadavg()}`);

/** RSS of `node <args>` 2 s after it started (it must not exit by itself). */
async function idleRss(args: string[], childEnv: Record<string, string> = {}): Promise<ProcStatus> {
  const p = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: 'ignore', env: { ...process.env, ...childEnv } });
  await sleep(2000);
  if (p.exitCode !== null) throw new Error(`node ${args.join(' ')} exited ${p.exitCode}`);
  const st = await procStatus(p.pid!);
  p.kill('SIGKILL');
  return st;
}
const bareStatus = await idleRss(['-e', 'setInterval(() => {}, 1e6)']);
// The VM host's code loaded (launch.mjs → main.ts and everything it imports), no VM: without a
// config file main.ts prints its usage and exits, which the preload turns into waiting.
const stayAlive = 'data:text/javascript,process.exit = () => { setInterval(() => {}, 1e6); };';
const hostBundle = await idleRss(['--import', stayAlive, 'apps/worker/src/vm-host/launch.mjs'], { FLEET_DEV: '0' });
const hostTsx = await idleRss(['--import', stayAlive, 'apps/worker/src/vm-host/launch.mjs'], { FLEET_DEV: '1' });

const controllerDir = await tempDir('wmem-c');
const workerDir = await tempDir('wm'); // short: VM socket paths must fit in 107 bytes
let lab: QemuLab | undefined;
let controller: ControllerProcess | undefined;
let worker: RunningProcess | undefined;
const rows: (string | number)[][] = [];
let failed: unknown;
try {
  lab = createQemuLab();
  controller = await startControllerProcess({ dataDir: controllerDir, extraArgs: ['--grpc-listen', `${lab.controllerAddress}:0`, '--name', lab.controllerAddress] });
  const { token } = await controller.api.createBootstrapToken();
  const enroll = lab.run(lab.enrollArgs(controller.grpcAddress, token, 'wmem-1', workerDir), env);
  if ((await enroll.exited) !== 0) throw new Error(`enroll failed:\n${enroll.output()}`);
  worker = lab.run(lab.workerArgs(workerDir, ['--accel', 'auto', '--cpus', String(vmCount * 2), '--memory-mib', String(vmCount * memoryMib * 2), '--vm-slots', String(vmCount)]), env);
  const api = controller.api;
  await waitUntil(async () => (await api.worker('wmem-1'))?.status === 'online', 90_000, 'qemu worker online');
  const t0 = Date.now();
  for (let i = 0; i < vmCount; i++) await api.createVm({ name: `mem-${i}`, image: 'fleet-guest', cpus: 1, memoryMib, diskGib: 1 });
  await waitUntil(async () => {
    const vms = await Promise.all(Array.from({ length: vmCount }, (_, i) => api.vm(`mem-${i}`)));
    const failedVm = vms.find((v) => v?.state === 'failed');
    if (failedVm) throw new Error(`VM ${failedVm.name} failed: ${failedVm.reason ?? ''}\n${worker!.output().slice(-3000)}`);
    return vms.every((v) => v?.state === 'running');
  }, 600_000, `${vmCount} VMs running`, 1000);
  console.log(`${vmCount} VMs running after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await sleep(10_000); // the guests finish booting; the hosts' lease reports settle

  const procs = processes();
  const hosts = procs.filter((p) => p.cmdline.includes('vm-host/launch.mjs') && p.cmdline.includes(workerDir) && !p.cmdline.startsWith('ip ') && !p.cmdline.startsWith('setpriv'));
  if (hosts.length !== vmCount) throw new Error(`found ${hosts.length} VM host processes for ${vmCount} VMs:\n${hosts.map((h) => `${h.pid} ${h.cmdline}`).join('\n')}`);
  const descendants = (pid: number): ProcInfo[] => procs.filter((p) => p.ppid === pid).flatMap((c) => [c, ...descendants(c.pid)]);
  // PSS: the node binary's and QEMU's file pages are shared by every VM host process / QEMU.
  const line = (what: string, pid: number | string, s: ProcStatus, pss?: number) => [what, pid, mib(s.rss), mib(s.hwm), mib(s.anon), mib(s.file), pss === undefined ? '–' : mib(pss)];
  rows.push(line('baseline: bare node', '–', bareStatus));
  rows.push(line('VM host code, no VM: bundle (now)', '–', hostBundle));
  rows.push(line('VM host code, no VM: tsx (before)', '–', hostTsx));
  rows.push(line('worker (fleet-worker run)', worker.child.pid!, await procStatus(worker.child.pid!), await procPss(worker.child.pid!)));
  let hostSum = 0;
  let qemuSum = 0;
  for (const [i, h] of hosts.entries()) {
    const hs = await procStatus(h.pid);
    hostSum += hs.rss;
    rows.push(line(`VM host process ${i + 1}`, h.pid, hs, await procPss(h.pid)));
    const kids = descendants(h.pid);
    const qemu = kids.find((k) => k.comm.startsWith('qemu-system'));
    if (!qemu) throw new Error(`VM host process ${h.pid} has no QEMU child (children: ${kids.map((k) => k.comm).join(', ') || 'none'})`);
    const qs = await procStatus(qemu.pid);
    qemuSum += qs.rss;
    rows.push(line(`  its QEMU (${memoryMib} MiB guest)`, qemu.pid, qs, await procPss(qemu.pid)));
    for (const other of kids.filter((k) => k !== qemu)) rows.push(line(`  its ${other.comm}`, other.pid, await procStatus(other.pid)));
  }
  console.log(`/proc/loadavg at end: ${await loadavg()}\n`);
  console.log(markdownTable(['process', 'pid', 'RSS MiB', 'peak MiB', 'anon', 'file', 'PSS'], rows));
  console.log(`\nper VM: VM host process ${mib(hostSum / vmCount)} MiB RSS (bare node ${mib(bareStatus.rss)}; its code through tsx instead of the bundle: +${mib(hostTsx.rss - hostBundle.rss)} MiB), QEMU ${mib(qemuSum / vmCount)} MiB RSS (${memoryMib} MiB guest)`);
} catch (err) {
  failed = err;
} finally {
  for (let i = 0; i < vmCount && controller; i++) await controller.api.request('DELETE', `/v1/vms/mem-${i}`).catch(() => undefined);
  await worker?.kill('SIGTERM');
  await controller?.kill('SIGTERM');
  lab?.destroy(workerDir);
  await removeDir(workerDir);
  await removeDir(controllerDir);
}
if (failed) throw failed;
