// What durable commits cost: VM creates per second through the real controller API
// (POST /v1/vms against a controller process on SQLite) with synchronous=NORMAL and with
// synchronous=FULL (Fleet's default since issue 12), measured in the same run on the same
// disk, alternating the order each round. Also, in this process, VmService.create one at a
// time (one transaction: the VM row and its event), which isolates the commit from HTTP and
// from the other writes a create causes. Baseline in the same run: appending 4 KiB +
// fdatasync on the same file system (about what FULL adds per commit).
//
//   pnpm exec tsx bench/db-durability.ts [--rounds 3] [--creates 1500] [--concurrency 32] [--serial 300] [--service 500] [--dir DIR]
//
// A swarm of 20 synthetic workers (one child process, real gRPC/TLS) is connected, so every
// VM is placed and reported running: the controller's whole write path (create, placement,
// status reports, events) runs as in production, in both modes alike. --dir must be on the
// disk you care about (default: the OS temp dir; a tmpfs would make fsync free).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fdatasyncSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { migrateDatabase, openDatabase } from '@fleet/db';
import { VmService } from '../apps/controller/src/vms/vm-service.ts';
import { EventLog } from '../apps/controller/src/events/event-log.ts';
import { FleetBus } from '../apps/controller/src/fleet-bus.ts';
import { Metrics } from '../apps/controller/src/observability/metrics.ts';
import { VmSecrets } from '../apps/controller/src/secrets/vm-secrets.ts';
import { pool } from './support/request-load.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    creates: { type: 'string', default: '1500' },
    concurrency: { type: 'string', default: '32' },
    serial: { type: 'string', default: '300' },
    service: { type: 'string', default: '500' },
    dir: { type: 'string', default: os.tmpdir() },
  },
});
const rounds = Number(values.rounds);
const creates = Number(values.creates);
const concurrency = Number(values.concurrency);
const serial = Number(values.serial);
const serviceCreates = Number(values.service);
type Mode = 'NORMAL' | 'FULL';

/** VmService.create one at a time on a fresh database (no HTTP, no scheduler, no workers). */
async function serviceCreatesPerSecond(dir: string, mode: Mode, n: number): Promise<number> {
  const url = `file:${path.join(dir, 'service.db')}`;
  await migrateDatabase(url);
  const db = openDatabase({ url, sqliteSynchronous: mode });
  try {
    const metrics = new Metrics({ defaultMetrics: false });
    const vms = new VmService(db, new EventLog(db), new FleetBus(), metrics, VmSecrets.ephemeral());
    for (let i = 0; i < 50; i++) await vms.create({ name: `warm-${i}`, image: 'img', cpus: 1, memoryMib: 512 }, 'bench');
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await vms.create({ name: `svc-${i}`, image: 'img', cpus: 1, memoryMib: 512 }, 'bench');
    return n / ((performance.now() - t0) / 1000);
  } finally {
    await db.$disconnect();
  }
}

function run(script: string, args: string[], ready: RegExp): Promise<{ child: ChildProcess; match: RegExpMatchArray; out: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { cwd: ROOT, env: { ...process.env, FLEET_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const check = () => {
      const match = ready.exec(out);
      if (match) resolve({ child, match, out: () => out });
    };
    child.stdout!.on('data', (d) => ((out += d), check()));
    child.stderr!.on('data', (d) => (out += d));
    child.once('exit', (code) => reject(new Error(`${script} exited ${code}:\n${out}`)));
  });
}

async function startController(dataDir: string, mode: Mode): Promise<{ child: ChildProcess; base: string; token: string; grpc: string }> {
  const { child, match } = await run('bench/support/controller-sync.ts', [dataDir, mode], /API: (\S+)\s+GRPC: (\S+)\s+TOKEN: (\S+)/);
  return { child, base: match[1]!, grpc: match[2]!, token: match[3]! };
}

const WORKERS = 20;
async function startWorkers(base: string, grpc: string, token: string, vms: number): Promise<ChildProcess> {
  const res = await fetch(`${base}/v1/bootstrap-tokens`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
  const boot = ((await res.json()) as { token: string }).token;
  const slots = Math.ceil((vms * 1.2) / WORKERS);
  const { child } = await run('bench/support/worker-swarm.ts', [grpc, boot, 'w', String(WORKERS), String(slots)], /ready \d+/);
  return child;
}

async function allRunning(base: string, token: string, n: number): Promise<void> {
  const deadline = Date.now() + 300_000;
  for (;;) {
    const { vms } = (await (await fetch(`${base}/v1/vms?state=running`, { headers: { authorization: `Bearer ${token}` } })).json()) as { vms: unknown[] };
    if (vms.length >= n) return;
    if (Date.now() > deadline) throw new Error(`only ${vms.length} of ${n} VMs running after 300 s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

async function createsPerSecond(base: string, token: string, n: number, width: number, prefix: string): Promise<number> {
  const t0 = performance.now();
  await pool(n, width, async (i) => {
    const res = await fetch(`${base}/v1/vms`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: `${prefix}-${i}`, image: 'synthetic:ok', cpus: 1, memoryMib: 512 }),
    });
    const text = await res.text();
    if (res.status !== 201) throw new Error(`create → ${res.status} ${text}`);
  });
  return n / ((performance.now() - t0) / 1000);
}

/** Median latency of appending 4 KiB + fdatasync on the benchmark's file system (what a WAL commit under FULL does). */
function fsyncMedianMs(dir: string, n = 200): number {
  const file = path.join(dir, 'fsync-probe');
  const fd = openSync(file, 'w');
  const buf = Buffer.alloc(4096, 1);
  const ms: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      writeSync(fd, buf, 0, buf.length, i * 4096);
      fdatasyncSync(fd);
      ms.push(performance.now() - t);
    }
  } finally {
    closeSync(fd);
    unlinkSync(file);
  }
  ms.sort((a, b) => a - b);
  return ms[Math.floor(ms.length / 2)]!;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
let fsType = '?';
try {
  fsType = execFileSync('findmnt', ['-n', '-o', 'FSTYPE,SOURCE', '-T', values.dir], { encoding: 'utf8' }).trim();
} catch {
  /* not Linux */
}
console.log(`db-durability: ${rounds} rounds × {NORMAL, FULL}; ${creates} creates at concurrency ${concurrency}, ${serial} at concurrency 1; dir ${values.dir} (${fsType}); ${os.cpus().length} CPUs, Node ${process.version}`);

const results: Record<Mode, { parallel: number[]; serial: number[]; service: number[] }> = { NORMAL: { parallel: [], serial: [], service: [] }, FULL: { parallel: [], serial: [], service: [] } };
const fsyncs: number[] = [];
for (let r = 0; r < rounds; r++) {
  const order: Mode[] = r % 2 === 0 ? ['NORMAL', 'FULL'] : ['FULL', 'NORMAL'];
  fsyncs.push(fsyncMedianMs(values.dir));
  for (const mode of order) {
    const svcDir = await mkdtemp(path.join(values.dir, `fleet-bench-durability-svc-`));
    try {
      const v = await serviceCreatesPerSecond(svcDir, mode, serviceCreates);
      results[mode].service.push(v);
      console.log(`round ${r + 1} ${mode.padEnd(6)}: VmService.create ${v.toFixed(0)}/s one at a time (${(1000 / v).toFixed(2)} ms each)`);
    } finally {
      await rm(svcDir, { recursive: true, force: true });
    }
  }
  for (const mode of order) {
    const dataDir = await mkdtemp(path.join(values.dir, `fleet-bench-durability-${mode.toLowerCase()}-`));
    const ctl = await startController(dataDir, mode);
    let swarm: ChildProcess | undefined;
    try {
      swarm = await startWorkers(ctl.base, ctl.grpc, ctl.token, 100 + creates + serial);
      // Warm-up (JIT, first connections), not counted.
      await createsPerSecond(ctl.base, ctl.token, 100, concurrency, 'warm');
      await allRunning(ctl.base, ctl.token, 100);
      const p = await createsPerSecond(ctl.base, ctl.token, creates, concurrency, 'par');
      await allRunning(ctl.base, ctl.token, 100 + creates);
      const s = await createsPerSecond(ctl.base, ctl.token, serial, 1, 'ser');
      await allRunning(ctl.base, ctl.token, 100 + creates + serial);
      results[mode].parallel.push(p);
      results[mode].serial.push(s);
      console.log(`round ${r + 1} ${mode.padEnd(6)}: ${p.toFixed(0)} creates/s at concurrency ${concurrency}, ${s.toFixed(0)} creates/s one at a time (${(1000 / s).toFixed(2)} ms each)`);
    } finally {
      if (swarm) await stop(swarm);
      await stop(ctl.child);
      await rm(dataDir, { recursive: true, force: true });
    }
  }
}

const row = (mode: Mode) => ({ p: median(results[mode].parallel), s: median(results[mode].serial), v: median(results[mode].service) });
const n = row('NORMAL');
const f = row('FULL');
const list = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(', ');
const pct = (a: number, b: number) => `${a >= b ? '+' : ''}${(((a - b) / b) * 100).toFixed(1)} %`;
const ms = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(2)} ms`;
console.log(`\nbaseline: append 4 KiB + fdatasync, median ${median(fsyncs).toFixed(2)} ms (per round: ${fsyncs.map((x) => x.toFixed(2)).join(', ')})`);
console.log(`\n| synchronous | API creates/s, concurrency ${concurrency} | API creates/s, one at a time | VmService.create/s, one at a time | ms per VmService.create |`);
console.log('| --- | ---: | ---: | ---: | ---: |');
for (const [mode, v] of [['NORMAL', n], ['FULL', f]] as const) {
  console.log(`| ${mode} | ${v.p.toFixed(0)} (${list(results[mode].parallel)}) | ${v.s.toFixed(0)} (${list(results[mode].serial)}) | ${v.v.toFixed(0)} (${list(results[mode].service)}) | ${(1000 / v.v).toFixed(2)} |`);
}
console.log('(medians; per round in parentheses)');
console.log(`\nFULL vs NORMAL: API ${pct(f.p, n.p)} at concurrency ${concurrency}, ${pct(f.s, n.s)} one at a time; VmService.create ${pct(f.v, n.v)} (${ms(1000 / f.v - 1000 / n.v)} per create)`);
