// Controller memory benchmark (issue 20): the controller started the production way
// (`node apps/controller/bin/fleet-controller.js run`, i.e. the esbuild bundle), its RSS and
// where it sits at each stage: idle, N synthetic workers connected (real gRPC/TLS, one
// HTTP/2 connection each, spawned like bench/control-plane.ts does), M VMs created, all
// running, and after full `GET /v1/vms` / `GET /v1/workers` lists. Baselines in the same
// run: a bare `node` process, and the controller's own idle stage. Goal: RSS < 256 MiB with
// 10,000 VMs and 1,000 workers.
//
//   pnpm exec tsx bench/controller-memory.ts [--workers 1000] [--vms 10000] [--concurrency 32]
//                                            [--node-flags="--max-semi-space-size=4"] [--snapshot [--keep-snapshot FILE]]
//                                            [--env MALLOC_ARENA_MAX=1 ...] [--hold SECONDS]
//
// `run` goes through the bin's launcher (apps/controller/bin/relaunch.cjs), which starts the
// controller as its child with start-up settings unless they are given: the stages then measure
// that child, and the launcher is reported beside it.
//
// The controller preloads bench/support/memory-probe.mjs, which answers SIGUSR2 with
// process.memoryUsage() and V8's heap statistics (and, with --snapshot, a heap snapshot of the
// last stage, summarised here by constructor).
import { spawn } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startNode, type BenchChild } from './support/child-processes.ts';
import { controllerPids } from './support/controller-pid.ts';
import { markdownTable } from './support/report.ts';
import { mib, probe, procPss, procStatus, smapsSummary, summariseHeapSnapshot, type ProbeReport } from './support/proc-memory.ts';
import { pool } from './support/request-load.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const GOAL_MIB = 256;
const { values } = parseArgs({
  options: {
    workers: { type: 'string', default: '1000' },
    vms: { type: 'string', default: '10000' },
    concurrency: { type: 'string', default: '32' },
    'node-flags': { type: 'string', default: '' },
    snapshot: { type: 'boolean', default: false },
    // With --snapshot: keep the heap snapshot at this path (the data dir is removed at the end).
    'keep-snapshot': { type: 'string', default: '' },
    // NAME=VALUE for the controller's environment (repeatable), e.g. --env MALLOC_ARENA_MAX=2.
    env: { type: 'string', multiple: true, default: [] },
    // Keep the controller and its workers up this many seconds after the last stage (its pid is
    // printed), to look at it from outside (gdb, /proc/<pid>/smaps).
    hold: { type: 'string', default: '0' },
  },
});
const workerCount = Number(values.workers);
const vmCount = Number(values.vms);
const concurrency = Number(values.concurrency);
const nodeFlags = values['node-flags'].split(/\s+/).filter(Boolean);
const extraEnv = Object.fromEntries(values.env.map((e) => {
  const i = e.indexOf('=');
  if (i < 1) throw new Error(`--env ${e}: NAME=VALUE`);
  return [e.slice(0, i), e.slice(i + 1)];
}));

function start(args: string[], env: Record<string, string> = {}): BenchChild {
  return startNode(args, { cwd: ROOT, env, keepOutput: 20_000 });
}

async function api<T>(base: string, token: string, method: string, p: string, body?: unknown): Promise<T> {
  const res = await fetch(base + p, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`${method} ${p} → ${res.status} ${text.slice(0, 500)}`);
  return (text ? JSON.parse(text) : null) as T;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const loadavg = async () => (await readFile('/proc/loadavg', 'utf8')).trim();

interface Stage {
  stage: string;
  rss: number;
  hwm: number;
  anon: number;
  file: number;
  heapUsed: number;
  heapTotal: number;
  newSpace: number;
  external: number;
  arrayBuffers: number;
  jsCode: number;
  anonExec: number;
  outsideHeap: number;
  gcMs: number;
  majorGcs: number;
  cpuS: number;
  /** PSS of the controller (shared pages divided among the processes that map them). */
  pss: number;
  /** The bin's launcher, when it started the controller as its child (apps/controller/bin/relaunch.cjs). */
  launcher?: { rss: number; anon: number; pss: number };
}

function stageRow(stage: string, st: Awaited<ReturnType<typeof procStatus>>, sm: Awaited<ReturnType<typeof smapsSummary>>, r: ProbeReport, pss: number, launcher?: Stage['launcher']): Stage {
  const newSpace = r.spaces.find((s) => s.space_name === 'new_space')?.physical_space_size ?? NaN;
  return {
    stage,
    rss: st.rss,
    hwm: st.hwm,
    anon: st.anon,
    file: st.file,
    heapUsed: r.memoryUsage.heapUsed,
    heapTotal: r.heap.total_physical_size,
    newSpace,
    external: r.memoryUsage.external,
    arrayBuffers: r.memoryUsage.arrayBuffers,
    jsCode: r.code.code_and_metadata_size + r.code.bytecode_and_metadata_size,
    anonExec: sm.anonExec,
    // Anonymous memory V8's heap does not account for: malloc (wasm compilation zones,
    // better-sqlite3, OpenSSL, nghttp2), wasm code and wasm memories.
    outsideHeap: st.anon - r.heap.total_physical_size,
    gcMs: r.gc.ms,
    majorGcs: r.gc.majorCount,
    cpuS: (r.cpu.user + r.cpu.system) / 1e6,
    pss,
    ...(launcher ? { launcher } : {}),
  };
}

/** RSS of a bare `node` process that only waits (the runtime's own floor on this machine). */
async function bareNodeRss(): Promise<number> {
  const p = start(['-e', 'setInterval(() => {}, 1e6); console.log("up")']);
  await p.waitFor(/up/, 10_000);
  await sleep(1000);
  const rss = (await procStatus(p.child.pid!)).rss;
  await p.stop();
  return rss;
}

// The production bundle: built when stale (only what changed), exactly what `bash scripts/setup.sh` does.
const build = spawn(process.execPath, ['scripts/build.mjs'], { cwd: ROOT, stdio: 'inherit' });
if ((await new Promise<number | null>((r) => build.once('exit', r))) !== 0) throw new Error('scripts/build.mjs failed');

console.log(`controller-memory benchmark: ${workerCount} workers, ${vmCount} VMs, ${os.cpus().length} CPUs, Node ${process.version}, ${new Date().toISOString()}`);
console.log(`/proc/loadavg at start: ${await loadavg()}`);
const bare = await bareNodeRss();
console.log(`baseline: bare node process RSS ${mib(bare)} MiB`);

const dataDir = await mkdtemp(path.join(os.tmpdir(), 'fleet-bench-mem-'));
const probeOut = path.join(dataDir, 'probe');
// FLEET_DEV=0: the bundle, without the launcher's freshness check (the build above just ran).
const ctl = start(
  [...nodeFlags, '--import', './bench/support/memory-probe.mjs', 'apps/controller/bin/fleet-controller.js', 'run', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0', '--log-level', 'warn'],
  { FLEET_DEV: '0', FLEET_MEMPROBE_OUT: probeOut, ...extraEnv },
);
const swarms: BenchChild[] = [];
const stages: Stage[] = [];
let seq = 0;
let pids: { controller: number; launcher?: number } | undefined;
/** The last stage's probe: its V8 heap spaces are printed at the end (where physical exceeds used). */
let lastReport: { stage: string; report: ProbeReport } | undefined;
const measure = async (name: string): Promise<Stage> => {
  const pid = pids!.controller;
  const report = await probe(pid, probeOut, seq++);
  const l = pids!.launcher;
  const launcher = l === undefined ? undefined : { ...(await procStatus(l)), pss: await procPss(l) };
  const row = stageRow(name, await procStatus(pid), await smapsSummary(pid), report, await procPss(pid), launcher);
  lastReport = { stage: name, report };
  stages.push(row);
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${name}: RSS ${mib(row.rss)} MiB (peak ${mib(row.hwm)}), heap ${mib(row.heapUsed)}/${mib(row.heapTotal)} MiB, external ${mib(row.external)} MiB, outside V8 heap ${mib(row.outsideHeap)} MiB${launcher ? `; launcher RSS ${mib(launcher.rss)} MiB (anon ${mib(launcher.anon)}, PSS ${mib(launcher.pss)})` : ''}`);
  return row;
};
let failed: unknown;
try {
  const base = (await ctl.waitFor(/API:\s+(http:\/\/\S+)/, 60_000))[1]!;
  const grpc = (await ctl.waitFor(/worker gRPC:\s+(\S+)/, 60_000))[1]!;
  const token = (await readFile(path.join(dataDir, 'admin.token'), 'utf8')).trim();
  pids = await controllerPids(ctl.child.pid!);
  console.log(pids.launcher === undefined ? `controller pid ${pids.controller} (no launcher process)` : `controller pid ${pids.controller}, started by the bin's launcher, pid ${pids.launcher}`);
  await sleep(3000); // start-up work (migrations, first scheduler pass) settles
  await measure('idle');

  const boot = (await api<{ token: string }>(base, token, 'POST', '/v1/bootstrap-tokens', { name: 'bench' })).token;
  const perProc = Math.min(250, workerCount);
  const slots = Math.ceil((vmCount * 1.2) / workerCount);
  for (let i = 0, k = 0; i < workerCount; i += perProc, k++) {
    swarms.push(start(['--import', 'tsx', 'bench/support/worker-swarm.ts', grpc, boot, `w${k}`, String(Math.min(perProc, workerCount - i)), String(slots)]));
  }
  await Promise.all(swarms.map((s) => s.waitFor(/ready (\d+)/, 600_000)));
  const online = (await api<{ workers: { status: string }[] }>(base, token, 'GET', '/v1/workers')).workers.filter((w) => w.status === 'online').length;
  console.log(`${online}/${workerCount} workers online`);
  await sleep(3000);
  await measure(`${workerCount} workers connected`);

  const c0 = performance.now();
  await pool(vmCount, concurrency, async (i) => {
    await api(base, token, 'POST', '/v1/vms', { name: `vm-${i}`, image: 'synthetic:ok', cpus: 1, memoryMib: 1024, priority: i % 3 });
  });
  const createS = (performance.now() - c0) / 1000;
  console.log(`${vmCount} creates in ${createS.toFixed(1)} s (${Math.round(vmCount / createS)}/s)`);
  await measure(`${vmCount} VMs created`);

  // Poll with the state filter: the poll itself should not be what is measured.
  for (;;) {
    const left = (await api<{ vms: unknown[] }>(base, token, 'GET', '/v1/vms?state=pending')).vms.length
      + (await api<{ vms: unknown[] }>(base, token, 'GET', '/v1/vms?state=scheduled')).vms.length
      + (await api<{ vms: unknown[] }>(base, token, 'GET', '/v1/vms?state=starting')).vms.length;
    const running = (await api<{ vms: unknown[] }>(base, token, 'GET', '/v1/vms?state=running')).vms.length;
    if (running === vmCount) break;
    if ((performance.now() - c0) / 1000 > 900) throw new Error(`not all running after 900 s: ${running} running, ${left} pending/scheduled/starting`);
    await sleep(2000);
  }
  console.log(`all ${vmCount} running after ${((performance.now() - c0) / 1000).toFixed(1)} s`);
  await sleep(5000);
  await measure('all running (+5 s)');

  // Full lists, as the CLI and the dashboard ask for them.
  const l0 = performance.now();
  for (let i = 0; i < 3; i++) {
    const vms = (await api<{ vms: unknown[] }>(base, token, 'GET', '/v1/vms')).vms.length;
    const workers = (await api<{ workers: unknown[] }>(base, token, 'GET', '/v1/workers')).workers.length;
    if (vms !== vmCount || workers !== workerCount) throw new Error(`lists returned ${vms} VMs and ${workers} workers`);
  }
  console.log(`3 × (GET /v1/vms + GET /v1/workers) in ${((performance.now() - l0) / 1000).toFixed(1)} s`);
  await measure('after 3 full lists');
  await sleep(10_000);
  await measure('settled (+10 s)');
  if (Number(values.hold) > 0) {
    console.log(`holding ${values.hold} s: controller pid ${pids.controller}`);
    await sleep(Number(values.hold) * 1000);
  }
  if (values.snapshot) {
    // Last: writing a snapshot costs the process memory of its own (it is not a stage).
    await writeFile(`${probeOut}.want-snapshot`, '');
    const report = await probe(pids.controller, probeOut, seq++, 300_000);
    console.log(`heap snapshot ${report.snapshot}, by constructor and node type:`);
    console.log(markdownTable(['what', 'count', 'MiB'], (await summariseHeapSnapshot(report.snapshot!, 25)).map((e) => [e.what.slice(0, 60), e.count, (e.bytes / 1048576).toFixed(1)])));
    if (values['keep-snapshot']) {
      await copyFile(report.snapshot!, values['keep-snapshot']);
      console.log(`heap snapshot kept as ${values['keep-snapshot']}`);
    }
  }
} catch (err) {
  failed = err;
} finally {
  await Promise.all(swarms.map((s) => s.stop()));
  await ctl.stop();
  await rm(dataDir, { recursive: true, force: true });
}
console.log(`/proc/loadavg at end: ${await loadavg()}`);

const M = (n: number) => String(mib(n));
console.log(`\nbaseline: bare node ${mib(bare)} MiB RSS${nodeFlags.length ? `; controller node flags: ${nodeFlags.join(' ')}` : ''}${values.env.length ? `; controller env: ${values.env.join(' ')}` : ''}\n`);
console.log(markdownTable(
  ['stage', 'RSS MiB', 'peak MiB', 'anon', 'file', 'PSS', 'heap used', 'heap (physical)', 'new space', 'external', 'arrayBuffers', 'JS code+bytecode', 'anon exec (JIT+wasm code)', 'anon outside V8 heap', 'GC ms (major GCs) so far', 'CPU s so far', 'launcher RSS (anon, PSS)'],
  stages.map((s) => [s.stage, M(s.rss), M(s.hwm), M(s.anon), M(s.file), M(s.pss), M(s.heapUsed), M(s.heapTotal), M(s.newSpace), M(s.external), M(s.arrayBuffers), M(s.jsCode), M(s.anonExec), M(s.outsideHeap), `${Math.round(s.gcMs)} (${s.majorGcs})`, s.cpuS.toFixed(1), s.launcher ? `${M(s.launcher.rss)} (${M(s.launcher.anon)}, ${M(s.launcher.pss)})` : '–']),
));
if (lastReport) {
  const spaces = lastReport.report.spaces.filter((sp) => sp.physical_space_size > 0).map((sp) => `${sp.space_name} ${M(sp.space_used_size)}/${M(sp.physical_space_size)}`);
  console.log(`\nV8 heap spaces at "${lastReport.stage}", used/physical MiB: ${spaces.join(', ')}`);
}
if (failed) throw failed;
const loaded = stages.filter((s) => s.stage !== 'idle');
const worst = Math.max(...loaded.map((s) => s.rss));
const peak = Math.max(...stages.map((s) => s.hwm));
const withLauncher = stages.filter((s) => s.stage !== 'idle' && s.launcher).map((s) => s.pss + s.launcher!.pss);
if (withLauncher.length) console.log(`\ncontroller + launcher PSS (both processes, shared pages counted once): highest ${mib(Math.max(...withLauncher))} MiB`);
console.log(`\ngoal: controller RSS < ${GOAL_MIB} MiB with ${vmCount} VMs and ${workerCount} workers: highest RSS at a measured stage ${mib(worst)} MiB → ${worst < GOAL_MIB * 1048576 ? 'met' : 'not met'}; peak (VmHWM) ${mib(peak)} MiB → ${peak < GOAL_MIB * 1048576 ? 'met' : 'not met'} for the peak too`);
