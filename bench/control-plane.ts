// Control-plane benchmark: one controller process on SQLite, N synthetic workers
// (spread over a few child processes, real gRPC/TLS, one HTTP/2 connection each)
// and 10,000 VM creates through the REST API. Prints creates/s, time until all
// VMs run, p50/p99 scheduling latency, controller RSS and the controller's CPU per VM. Baseline measured in
// the same run: GET /v1/health at the same client concurrency (the API's floor).
//
//   pnpm exec tsx bench/control-plane.ts [--workers 100,1000] [--vms 10000] [--concurrency 32]
//     [--launch bundle|tsx]  bundle (default): the production launch, apps/controller/bin/fleet-controller.js
//                            running the esbuild bundle (rebuilt first by scripts/build.mjs when stale);
//                            tsx: src/main.ts through tsx
//     [--node-flags="--max-semi-space-size=8"]  node flags for the controller (bundle launch)
//     [--cpu-prof DIR]       write a V8 CPU profile of the controller process into DIR (with the bin's
//                            launcher, its profile too: the controller's is the larger file)
//     [--warmup N]           before the measured phases, N creates (waited for until running) and N
//                            health requests, so both are measured on a warmed-up JIT: a controller that
//                            has run a while, not its first seconds (default 0: cold, as before). The N VMs
//                            stay: the database holds N + --vms VMs at the end; latencies count --vms only.
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { controllerPids } from './support/controller-pid.ts';
import { startNode, type BenchChild } from './support/child-processes.ts';
import { pool, processCpuMs } from './support/request-load.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: {
    workers: { type: 'string', default: '100,1000' },
    vms: { type: 'string', default: '10000' },
    concurrency: { type: 'string', default: '32' },
    launch: { type: 'string', default: 'bundle' },
    'cpu-prof': { type: 'string' },
    'node-flags': { type: 'string', default: '' },
    warmup: { type: 'string', default: '0' },
  },
});
const workerCounts = values.workers.split(',').map(Number);
const vmCount = Number(values.vms);
const concurrency = Number(values.concurrency);
const warmup = Number(values.warmup);
if (!Number.isInteger(warmup) || warmup < 0) throw new Error(`--warmup must be a whole number of VMs, not ${values.warmup}`);
const launch = values.launch;
if (launch !== 'bundle' && launch !== 'tsx') throw new Error(`--launch must be bundle or tsx, not ${launch}`);
const cpuProfDir = values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined;
/** Node flags for the controller (bundle launch), e.g. --max-semi-space-size=8: an operator's flags win over the launcher's. */
const nodeFlags = values['node-flags'].split(/\s+/).filter(Boolean);

/** A child started with the test tsx loader unless other node arguments are given. */
function start(script: string, args: string[], env: Record<string, string> = {}, nodeArgs: string[] = ['--import', 'tsx']): BenchChild {
  return startNode([...nodeArgs, script, ...args], { cwd: ROOT, env });
}

async function api(base: string, token: string, method: string, p: string, body?: unknown): Promise<any> {
  const res = await fetch(base + p, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`${method} ${p} → ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function rssOf(pid: number): Promise<{ rssMib: number; peakMib: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { rssMib: Math.round(kb('VmRSS') / 1024), peakMib: Math.round(kb('VmHWM') / 1024) };
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

async function runOnce(workerCount: number): Promise<Record<string, string | number>> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'fleet-bench-ctl-'));
  const profArgs = [...nodeFlags, ...(cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir] : [])];
  // FLEET_DEV=0: the bundle built above runs even if a source file was touched since (others edit the tree).
  const ctl = launch === 'bundle'
    ? start('apps/controller/bin/fleet-controller.js', ['run', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', '--log-level', 'warn'], { FLEET_DEV: '0' }, profArgs)
    : start('apps/controller/src/main.ts', ['run', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', '--log-level', 'warn'], {}, ['--import', 'tsx', ...profArgs]);
  const swarms: BenchChild[] = [];
  try {
    const base = (await ctl.waitFor(/API:\s+(http:\/\/\S+)/, 60_000))[1]!;
    const grpc = (await ctl.waitFor(/worker gRPC:\s+(\S+)/, 60_000))[1]!;
    const token = (await readFile(path.join(dataDir, 'admin.token'), 'utf8')).trim();
    const boot = (await api(base, token, 'POST', '/v1/bootstrap-tokens', { name: 'bench' })).token as string;

    // Workers: at most 250 per child process.
    const t0 = Date.now();
    const perProc = Math.min(250, workerCount);
    for (let i = 0, k = 0; i < workerCount; i += perProc, k++) {
      // Room for every VM plus 20% headroom, spread over the workers.
      const slots = Math.ceil(((vmCount + warmup) * 1.2) / workerCount);
      swarms.push(start('bench/support/worker-swarm.ts', [grpc, boot, `w${k}`, String(Math.min(perProc, workerCount - i)), String(slots)]));
    }
    await Promise.all(swarms.map((s) => s.waitFor(/ready (\d+)/, 300_000)));
    const enrollS = (Date.now() - t0) / 1000;
    const online = (await api(base, token, 'GET', '/v1/workers')).workers.filter((w: any) => w.status === 'online').length;

    // CPU the controller process used (user + system), ms: what a VM costs it, whatever else runs on the machine.
    const ctlPid = (await controllerPids(ctl.child.pid!)).controller;
    const cpuMs = () => processCpuMs(ctlPid);

    const allRunning = async (what: string): Promise<any[]> => {
      const from = performance.now();
      for (;;) {
        const vms = (await api(base, token, 'GET', '/v1/vms')).vms as any[];
        if (vms.every((v) => v.state === 'running')) return vms;
        if ((performance.now() - from) / 1000 > 600) throw new Error(`${what}: not all running after 600 s: ${vms.filter((v) => v.state !== 'running').length} left`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    };
    if (warmup > 0) {
      // The same requests as measured below, not counted: the JIT compiles the hot paths here.
      await pool(warmup, concurrency, async (i) => {
        await api(base, token, 'POST', '/v1/vms', { name: `warmup-${i}`, image: 'synthetic:ok', cpus: 1, memoryMib: 1024, priority: i % 3 });
      });
      await allRunning('warm-up');
      await pool(warmup, concurrency, async () => void (await fetch(`${base}/v1/health`).then((r) => r.text())));
    }

    // Baseline: the API's own request rate at the same concurrency.
    const baseN = 5000;
    const hCpu0 = await cpuMs();
    const b0 = performance.now();
    await pool(baseN, concurrency, async () => void (await fetch(`${base}/v1/health`).then((r) => r.text())));
    const healthPerS = baseN / ((performance.now() - b0) / 1000);
    const healthCpuUs = ((await cpuMs()) - hCpu0) * 1000 / baseN;

    // 10,000 creates.
    const cCpu0 = await cpuMs();
    const c0 = performance.now();
    await pool(vmCount, concurrency, async (i) => {
      await api(base, token, 'POST', '/v1/vms', { name: `vm-${i}`, image: 'synthetic:ok', cpus: 1, memoryMib: 1024, priority: i % 3 });
    });
    const createS = (performance.now() - c0) / 1000;

    const vms = (await allRunning('measured creates')).filter((v) => !String(v.name).startsWith('warmup-'));
    const allRunningS = (performance.now() - c0) / 1000;
    // Up to every VM running: creating, placing, pushing and the workers' reports (and the polls above, a few ms).
    const vmCpuUs = ((await cpuMs()) - cCpu0) * 1000 / vmCount;
    const lat = vms.map((v) => Date.parse(v.scheduledAt) - Date.parse(v.createdAt)).sort((a, b) => a - b);
    const startLat = vms.map((v) => Date.parse(v.runningAt) - Date.parse(v.createdAt)).sort((a, b) => a - b);
    // The controller itself, not the bin's launcher (relaunch.cjs) when it started one.
    const mem = await rssOf((await controllerPids(ctl.child.pid!)).controller);
    return {
      workers: `${online}/${workerCount}`,
      'enroll+connect s': enrollS.toFixed(1),
      'baseline GET /health req/s': Math.round(healthPerS),
      'creates/s': Math.round(vmCount / createS),
      'creates / health': `${Math.round((100 * vmCount) / createS / healthPerS)} %`,
      'all running after s': allRunningS.toFixed(1),
      'sched p50 ms': pct(lat, 50),
      'sched p99 ms': pct(lat, 99),
      'create→running p50 ms': pct(startLat, 50),
      'create→running p99 ms': pct(startLat, 99),
      'controller CPU µs per health req': Math.round(healthCpuUs),
      'controller CPU µs per VM (create → running)': Math.round(vmCpuUs),
      'controller RSS MiB': mem.rssMib,
      'controller peak RSS MiB': mem.peakMib,
    };
  } finally {
    await Promise.all(swarms.map((s) => s.stop()));
    await ctl.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

const loadavg = async () => (await readFile('/proc/loadavg', 'utf8')).trim();
if (launch === 'bundle') {
  const built = spawnSync(process.execPath, ['scripts/build.mjs'], { cwd: ROOT, stdio: 'inherit' });
  if (built.status !== 0) throw new Error('scripts/build.mjs failed');
}
console.log(`control-plane benchmark: ${vmCount} VMs${warmup > 0 ? ` after a warm-up of ${warmup} creates and ${warmup} health requests` : ' (cold: no warm-up)'}, client concurrency ${concurrency}, ${os.cpus().length} CPUs, Node ${process.version}, controller launch: ${launch === 'bundle' ? 'bundle (bin/fleet-controller.js, FLEET_DEV=0)' : 'tsx src/main.ts'}`);
console.log(`${new Date().toISOString()} /proc/loadavg at start: ${await loadavg()}`);
const rows: Record<string, string | number>[] = [];
for (const n of workerCounts) {
  console.log(`\n--- ${n} workers ---`);
  const r = await runOnce(n);
  console.log(r);
  rows.push(r);
}
console.log('\n| ' + Object.keys(rows[0]!).join(' | ') + ' |');
console.log('|' + Object.keys(rows[0]!).map(() => ' --- |').join(''));
for (const r of rows) console.log('| ' + Object.values(r).join(' | ') + ' |');
console.log(`\n${new Date().toISOString()} /proc/loadavg at end: ${await loadavg()}`);
