/**
 * Several controllers on one PostgreSQL database (issue 13): how long the fleet is without a
 * working scheduler when the leader dies, and what the second and third controller cost or give
 * for creates. Real processes in network namespaces (test/support/ha-lab.ts): three controllers,
 * each in its own namespace, on one PostgreSQL (a scratch server: fsync off, so the figures are
 * the controllers', not the disk's); two synthetic workers (speed 0.05: create 10 ms, boot 50–150 ms).
 *
 *   pnpm exec tsx bench/ha-failover.ts [--kills 20] [--lease 3s] [--creates 200] [--warmup 60] [--concurrency 16]
 *                                      [--rounds 3] [--heartbeat 5s] [--offline 30s]
 *
 * Needs root (ip netns, nftables) and PostgreSQL's binaries (Debian's postgresql package, or
 * FLEET_PG_BIN). Takes about 5 minutes with the defaults on 2 cores.
 *
 *  1. Creates through 1 controller (the other two stopped) vs 3 (round-robin over all three), in
 *     alternating rounds (1, 3, 1, 3, …): `--creates` VMs at `--concurrency` requests in flight,
 *     after an unmeasured warm-up burst of `--warmup` creates (a controller started for the round
 *     has not compiled its hot paths yet).
 *     creates/s = creates / (first request sent → last 201). Placement latency per VM: the create
 *     request's send time → its `→ scheduled` event and its `→ running` event (the controllers'
 *     own timestamps; one host, one clock). CPU time per create of the controllers, PostgreSQL and
 *     the workers (/proc) from the first request until all run. The VMs are deleted between rounds.
 *  2. Failover, `--kills` times: the leader is killed with SIGKILL at a random point of its
 *     renewal period; right after, a VM is created through a survivor (Idempotency-Key, retried on
 *     another controller on connection errors and 5xx). Measured from the kill: a survivor's
 *     /v1/health says leader (polled every 25 ms), the VM is scheduled (its event), the VM is
 *     running (its event). Then the killed controller is restarted and must rejoin as a follower
 *     before the next kill. Baseline from the same run: the same probe VM with no kill, and the
 *     configured lease (the takeover floor when the dead leader's database session is not seen to end).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { waitUntil } from '../test/support/fleet-processes.ts';
import { createWithFailover, haLabMissing, HaLab, type HaController } from '../test/support/ha-lab.ts';
import { logLine, markdownTable, percentile } from './support/report.ts';

const { values } = parseArgs({
  options: {
    kills: { type: 'string', default: '20' },
    lease: { type: 'string', default: '3s' },
    creates: { type: 'string', default: '200' },
    concurrency: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '3' },
    warmup: { type: 'string', default: '60' },
    heartbeat: { type: 'string', default: '5s' },
    offline: { type: 'string', default: '30s' },
  },
});
const KILLS = Number(values.kills);
const CREATES = Number(values.creates);
const CONCURRENCY = Number(values.concurrency);
const ROUNDS = Number(values.rounds);
const WARMUP = Number(values.warmup);
const leaseMatch = /^(\d+)(ms|s)$/.exec(values.lease);
if (!(KILLS >= 0) || !(CREATES >= 1) || !(CONCURRENCY >= 1) || !(ROUNDS >= 1) || !(WARMUP >= 0) || !leaseMatch || CREATES + WARMUP > 450) {
  console.error('usage: pnpm exec tsx bench/ha-failover.ts [--kills N] [--lease 3s|2500ms] [--creates N] [--warmup N] (creates + warmup <= 450) [--concurrency N] [--rounds N] [--heartbeat 5s] [--offline 30s]');
  process.exit(2);
}
const LEASE_MS = Number(leaseMatch[1]) * (leaseMatch[2] === 's' ? 1000 : 1);

const why = haLabMissing();
if (why) {
  console.error(`bench/ha-failover.ts cannot run here: ${why}`);
  process.exit(2);
}

// ------------------------------------------------------------------ stats and output (bench/support/report.ts)

const pct = percentile;
const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '–');
const table = markdownTable;
const log = logLine;
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

// ------------------------------------------------------------------ the lab

let lab: HaLab | undefined;
const anomalies: string[] = [];
const spec = (name: string) => ({ name, image: 'synthetic:ok', cpus: 1, memoryMib: 128 });

/** When the VM's event log says it was scheduled and running (ms since the epoch; NaN if not). */
async function eventTimes(via: HaController, name: string): Promise<{ scheduled: number; running: number; placements: number }> {
  const events = await via.api.events(name);
  const placed = events.filter((e) => e.kind === 'vm.state' && /→ scheduled/.test(String(e.message)));
  const running = events.find((e) => e.kind === 'vm.state' && /→ running/.test(String(e.message)));
  return { scheduled: placed[0] ? Date.parse(placed[0].at) : NaN, running: running ? Date.parse(running.at) : NaN, placements: placed.length };
}

/** Runs exactly the wanted controllers (the others stopped with SIGTERM) and waits for one leader and both workers connected. */
async function useControllers(n: number): Promise<HaController[]> {
  const l = lab!;
  const want = l.controllers.slice(0, n);
  for (const c of l.controllers.slice(n)) await l.stop(c);
  for (const c of want) if (!l.running().includes(c)) await l.startController(c);
  const { leader } = await l.waitForLeader({ timeoutMs: 30_000 });
  await waitUntil(async () => {
    const views = await l.views();
    return want.every((c) => views[c.name]?.status === 'ok' && views[c.name]?.leader === leader.name);
  }, 30_000, `all ${n} controllers naming ${leader.name}`, 100);
  await waitUntil(async () => (await leader.api.workers()).filter((w) => w.status === 'online' && w.connected).length === l.workers.length, 60_000, 'both workers connected', 200);
  if (n > 1) {
    await waitUntil(async () => {
      const rows = await leader.api.controllers();
      return want.every((c) => rows.some((r) => r.name === c.name)) && rows.filter((r) => want.some((c) => c.name === r.name)).reduce((s, r) => s + r.connectedWorkers, 0) === l.workers.length;
    }, 30_000, 'the worker streams counted', 250);
  }
  return want;
}

// ------------------------------------------------------------------ 1. creates: 1 vs 3 controllers

interface CreateRound {
  controllers: number;
  perSec: number;
  scheduled: number[];
  running: number[];
  retried: number;
  /** CPU ms per create from the first request until all ran (creating, placing, starting, reporting). */
  cpuPerCreate: { controllers: number; postgres: number; workers: number };
}

/** Creates `names` at CONCURRENCY through `via` (round-robin); returns each one's send time and the burst's creates/s. */
async function burst(via: HaController[], names: string[]): Promise<{ sentAt: Map<string, number>; perSec: number; retried: number }> {
  const l = lab!;
  const sentAt = new Map<string, number>();
  let next = 0;
  let retried = 0;
  const t0 = Date.now();
  let tLast = t0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < names.length) {
      const i = next++;
      const name = names[i]!;
      sentAt.set(name, Date.now());
      const res = await createWithFailover(l, spec(name), l.controllers.indexOf(via[i % via.length]!));
      if (!res.ok) throw new Error(`create ${name} failed: ${res.status} ${JSON.stringify(res.body)} (${res.tries.join(',')})`);
      if (res.attempts > 1) retried++;
      tLast = Math.max(tLast, res.answeredAt);
    }
  }));
  return { sentAt, perSec: (names.length * 1000) / (tLast - t0), retried };
}

/**
 * Deletes every VM named with `prefix` and waits until the workers confirmed each removal. A VM
 * still listed after 20 s is an anomaly (its state is noted) and is deleted again; so is capacity
 * still held once they are gone (the workers' used.vms above the VMs listed).
 */
async function deleteAll(via: HaController[], prefix: string): Promise<void> {
  const left = async () => (await via[0]!.api.vms()).filter((v) => v.name.startsWith(prefix));
  for (let pass = 1; ; pass++) {
    const names = (await left()).map((v) => String(v.name));
    if (names.length === 0) break;
    if (pass > 4) throw new Error(`${names.length} ${prefix}* VMs not deleted after ${pass - 1} passes`);
    let di = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (di < names.length) {
        const i = di++;
        const res = await via[i % via.length]!.api.request('DELETE', `/v1/vms/${names[i]}`);
        if (res.status !== 202 && res.status !== 204) anomalies.push(`delete ${names[i]} (pass ${pass}): ${res.status} ${JSON.stringify(res.body)}`);
      }
    }));
    try {
      await waitUntil(async () => (await left()).length === 0, 20_000, `${prefix}* deleted`, 250);
    } catch {
      const stuck = await left();
      anomalies.push(`${stuck.length} of ${names.length} ${prefix}* VMs still listed 20 s after their delete (pass ${pass}): ${[...new Set(stuck.map((v) => `${v.state}: ${v.reason}`))].slice(0, 3).join(' | ')}`);
    }
  }
  const [vms, workers] = await Promise.all([via[0]!.api.vms(), via[0]!.api.workers()]);
  const used = workers.reduce((n, w) => n + w.used.vms, 0);
  if (used !== vms.length) anomalies.push(`after deleting ${prefix}*: the workers hold ${used} VMs' capacity (used.vms) for ${vms.length} VMs listed`);
}

// CPU time (user + system) of the lab's processes, from /proc, to show where a create's cost goes.
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
function cpuMsOf(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK; // utime, stime (fields 14 and 15)
  } catch {
    return 0;
  }
}
/** PostgreSQL's postmaster and its backends: the processes named postgres listening on the lab's port, and their children. */
function postgresPids(): number[] {
  const port = String(lab!.pg!.port);
  const all = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number);
  const info = new Map<number, { ppid: number; cmd: string; comm: string }>();
  for (const pid of all) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      info.set(pid, { ppid, comm, cmd: readFileSync(`/proc/${pid}/cmdline`, 'utf8') });
    } catch {
      /* gone */
    }
  }
  const master = [...info].find(([, i]) => i.comm === 'postgres' && i.cmd.split('\0').includes(port))?.[0];
  return master ? [master, ...[...info].filter(([, i]) => i.ppid === master).map(([p]) => p)] : [];
}
interface CpuSnapshot { controllers: number; postgres: Map<number, number>; workers: number }
function cpuNow(): CpuSnapshot {
  const l = lab!;
  return {
    controllers: l.controllers.reduce((s, c) => s + (l.running().includes(c) ? cpuMsOf(c.proc?.child.pid) : 0), 0),
    postgres: new Map(postgresPids().map((p) => [p, cpuMsOf(p)])),
    workers: l.workers.reduce((s, w) => s + cpuMsOf(w.proc?.child.pid), 0),
  };
}
/** CPU ms spent between two snapshots (backends that started in between count from 0). */
function cpuSpent(a: CpuSnapshot, b: CpuSnapshot): { controllers: number; postgres: number; workers: number } {
  let pg = 0;
  for (const [pid, t] of b.postgres) pg += t - (a.postgres.get(pid) ?? 0);
  return { controllers: b.controllers - a.controllers, postgres: pg, workers: b.workers - a.workers };
}

async function createRound(r: number, n: number): Promise<CreateRound> {
  const via = await useControllers(n);
  // Warm-up: a controller started for this round has not compiled its hot paths yet; the same
  // unmeasured burst for both configurations, then deleted.
  const warm = `w${r}c${n}-`;
  await burst(via, Array.from({ length: WARMUP }, (_, i) => `${warm}${String(i).padStart(3, '0')}`));
  await waitUntil(async () => (await via[0]!.api.vms()).filter((v) => v.name.startsWith(warm) && v.state === 'running').length === WARMUP, 120_000, `warm-up ${warm}* running`, 250);
  await deleteAll(via, warm);

  const prefix = `r${r}c${n}-`;
  const names = Array.from({ length: CREATES }, (_, i) => `${prefix}${String(i).padStart(3, '0')}`);
  const cpu0 = cpuNow();
  const { sentAt, perSec, retried } = await burst(via, names);
  const reader = via[0]!;
  await waitUntil(async () => (await reader.api.vms()).filter((v) => v.name.startsWith(prefix) && v.state === 'running').length === CREATES, 120_000, `round ${r}: all ${CREATES} running`, 250);
  const cpu = cpuSpent(cpu0, cpuNow());
  const scheduled: number[] = [];
  const running: number[] = [];
  for (const [i, name] of names.entries()) {
    const t = await eventTimes(via[i % via.length]!, name);
    if (t.placements !== 1) anomalies.push(`round ${r} (${n} controllers): ${name} placed ${t.placements} times`);
    scheduled.push(t.scheduled - sentAt.get(name)!);
    running.push(t.running - sentAt.get(name)!);
  }
  log(`round ${r}, ${n} controller(s): ${perSec.toFixed(0)} creates/s; create → scheduled p50 ${ms(pct(scheduled, 50))} ms, → running p50 ${ms(pct(running, 50))} ms; CPU per create: controllers ${(cpu.controllers / CREATES).toFixed(1)} ms, PostgreSQL ${(cpu.postgres / CREATES).toFixed(1)} ms, workers ${(cpu.workers / CREATES).toFixed(1)} ms`);
  // Clean slate for the next round (the workers confirm each removal).
  await deleteAll(via, prefix);
  return { controllers: n, perSec, scheduled, running, retried, cpuPerCreate: { controllers: cpu.controllers / CREATES, postgres: cpu.postgres / CREATES, workers: cpu.workers / CREATES } };
}

// ------------------------------------------------------------------ 2. failover: kill -9 the leader

interface KillRound {
  killed: string;
  wasHoldingStreams: number;
  leaderMs: number;
  newLeader: string;
  scheduledMs: number;
  runningMs: number;
  rejoinMs: number;
  probeTries: number;
}

/** A VM created and followed the way the kill rounds do it, with no kill: the baseline. */
async function probeWithoutKill(i: number): Promise<{ scheduledMs: number; runningMs: number }> {
  const l = lab!;
  const name = `base-${i}`;
  const t0 = Date.now();
  const res = await createWithFailover(l, spec(name), i % 3);
  if (!res.ok) throw new Error(`baseline create failed: ${JSON.stringify(res)}`);
  const c = l.controllers[i % 3]!;
  await waitUntil(async () => (await c.api.vm(name))?.state === 'running', 30_000, `${name} running`, 25);
  const t = await eventTimes(c, name);
  return { scheduledMs: t.scheduled - t0, runningMs: t.running - t0 };
}

async function killRound(k: number): Promise<KillRound> {
  const l = lab!;
  const { leader: old } = await l.waitForLeader({ timeoutMs: 30_000 });
  const survivors = l.controllers.filter((c) => c !== old);
  const rows = await old.api.controllers().catch(() => []);
  const wasHoldingStreams = rows.find((r) => r.name === old.name)?.connectedWorkers ?? NaN;
  // Anywhere in the renewal period (a third of the lease), so the figures cover its phases.
  await sleep(Math.random() * (LEASE_MS / 3));
  const killedAt = await l.kill9(old);
  const name = `kill-${k}`;
  const probe = createWithFailover(l, spec(name), l.controllers.indexOf(survivors[k % 2]!));
  const leaderSeen = l.waitForLeader({ among: () => survivors, timeoutMs: 60_000, pollMs: 25 });
  const res = await probe;
  if (!res.ok) throw new Error(`kill ${k}: the create after the kill failed: ${JSON.stringify(res)}`);
  const reader = survivors[0]!;
  await waitUntil(async () => (await reader.api.vm(name))?.state === 'running', 60_000, `${name} running`, 25);
  const { leader: next, at } = await leaderSeen;
  const t = await eventTimes(reader, name);
  if (t.placements !== 1) anomalies.push(`kill ${k}: ${name} placed ${t.placements} times`);
  const restartAt = Date.now();
  await l.restart(old);
  await waitUntil(async () => {
    const h = await l.health(old);
    return h?.status === 'ok' && h.controller?.role === 'follower' && h.controller.leader !== null;
  }, 60_000, `${old.name} back as a follower`, 50);
  const rejoinMs = Date.now() - restartAt;
  const round: KillRound = {
    killed: old.name, wasHoldingStreams, leaderMs: at - killedAt, newLeader: next.name,
    scheduledMs: t.scheduled - killedAt, runningMs: t.running - killedAt, rejoinMs, probeTries: res.attempts,
  };
  log(`kill ${k}: ${old.name} (${wasHoldingStreams} worker streams) → ${next.name} leader after ${round.leaderMs} ms; VM scheduled after ${ms(round.scheduledMs)} ms, running after ${ms(round.runningMs)} ms; ${old.name} rejoined ${rejoinMs} ms after its restart`);
  return round;
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const started = Date.now();
  console.log(`ha-failover benchmark (issue 13): ${KILLS} leader kills, lease ${LEASE_MS} ms; ${ROUNDS}×(1 vs 3 controllers) × ${CREATES} creates at concurrency ${CONCURRENCY}; heartbeat ${values.heartbeat}, offline ${values.offline}; ${os.cpus().length} CPUs, Node ${process.version}, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  lab = await HaLab.start({
    id: String(900 + (process.pid % 100)), subnet: '10.95.0', leaderLease: values.lease, heartbeatInterval: values.heartbeat, workerOfflineTimeout: values.offline,
    workerArgs: ['--cpus', '512', '--memory-mib', '524288', '--vm-slots', '250'],
  });
  if (!lab.haFlags) throw new Error('fleet-controller run has no --leader-lease/--controller-name/--advertise-api-url: several controllers are not built yet');
  log(`lab up: ${lab.controllers.map((c) => `${c.name} ${c.apiUrl}`).join(', ')}; PostgreSQL ${lab.databaseUrl}`);

  const creates: CreateRound[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    creates.push(await createRound(2 * r - 1, 1));
    creates.push(await createRound(2 * r, 3));
  }

  await useControllers(3);
  const baseline: { scheduledMs: number; runningMs: number }[] = [];
  for (let i = 0; i < 5; i++) baseline.push(await probeWithoutKill(i));
  const kills: KillRound[] = [];
  for (let k = 1; k <= KILLS; k++) kills.push(await killRound(k));

  // -------------------------------------------------------------- report
  console.log(`\n## 1. creates through 1 controller vs 3 (round-robin), ${CREATES} per round at concurrency ${CONCURRENCY} (after ${WARMUP} unmeasured)\n`);
  console.log(table(['round', 'controllers', 'creates/s', 'create → scheduled p50 ms', 'p99 ms', 'create → running p50 ms', 'p99 ms', 'CPU ms/create: controllers', 'PostgreSQL', 'workers', 'retried'], creates.map((c, i) => [
    String(i + 1), c.controllers, c.perSec.toFixed(0), ms(pct(c.scheduled, 50)), ms(pct(c.scheduled, 99)), ms(pct(c.running, 50)), ms(pct(c.running, 99)),
    c.cpuPerCreate.controllers.toFixed(1), c.cpuPerCreate.postgres.toFixed(1), c.cpuPerCreate.workers.toFixed(1), c.retried,
  ])));
  const mean = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
  const sum = (n: number) => {
    const rs = creates.filter((c) => c.controllers === n);
    const rates = rs.map((c) => c.perSec);
    return {
      perSec: mean(rates), range: `${Math.min(...rates).toFixed(0)}–${Math.max(...rates).toFixed(0)}`,
      sched: rs.flatMap((c) => c.scheduled), run: rs.flatMap((c) => c.running),
      cpu: mean(rs.map((c) => c.cpuPerCreate.controllers)), pg: mean(rs.map((c) => c.cpuPerCreate.postgres)),
    };
  };
  const one = sum(1);
  const three = sum(3);
  console.log('\nall rounds:\n');
  console.log(table(['controllers', 'creates/s (mean of rounds)', 'range', 'create → scheduled p50 ms', 'p99 ms', 'create → running p50 ms', 'p99 ms', 'CPU ms/create: controllers', 'PostgreSQL'], [
    ['1 (baseline)', one.perSec.toFixed(0), one.range, ms(pct(one.sched, 50)), ms(pct(one.sched, 99)), ms(pct(one.run, 50)), ms(pct(one.run, 99)), one.cpu.toFixed(1), one.pg.toFixed(1)],
    ['3', three.perSec.toFixed(0), three.range, ms(pct(three.sched, 50)), ms(pct(three.sched, 99)), ms(pct(three.run, 50)), ms(pct(three.run, 99)), three.cpu.toFixed(1), three.pg.toFixed(1)],
  ]));
  console.log(`\nnote: everything shares ${os.cpus().length} CPUs here (three controllers, PostgreSQL, two workers, this client): creates/s is bounded by total CPU, so what a second and third controller add in CPU per create shows up directly as fewer creates/s.`);

  if (kills.length) {
    const row = (label: string, xs: number[]) => [label, ms(pct(xs, 50)), ms(pct(xs, 99)), ms(Math.max(...xs)), ms(Math.min(...xs))];
    console.log(`\n## 2. leader killed (-9), ${kills.length} times → a working scheduler (lease ${LEASE_MS} ms, renewed every ${Math.round(LEASE_MS / 3)} ms)\n`);
    console.log(table(['from the kill to …', 'p50 ms', 'p99 ms', 'max ms', 'min ms'], [
      row('a survivor says leader (/v1/health)', kills.map((k) => k.leaderMs)),
      row('**the VM created after the kill scheduled**', kills.map((k) => k.scheduledMs)),
      row('the VM created after the kill running', kills.map((k) => k.runningMs)),
      row('… of those, killed leader held worker streams', kills.filter((k) => k.wasHoldingStreams > 0).map((k) => k.runningMs)),
      row('… of those, it held none', kills.filter((k) => k.wasHoldingStreams === 0).map((k) => k.runningMs)),
      row('baseline, no kill: create → scheduled', baseline.map((b) => b.scheduledMs)),
      row('baseline, no kill: create → running', baseline.map((b) => b.runningMs)),
      row('restarted controller back as follower (from its restart)', kills.map((k) => k.rejoinMs)),
    ]));
    console.log('\nper kill:\n');
    console.log(table(['kill', 'killed', 'its worker streams', 'new leader', 'leader ms', 'scheduled ms', 'running ms', 'create tries'], kills.map((k, i) => [
      String(i + 1), k.killed, ms(k.wasHoldingStreams), k.newLeader, ms(k.leaderMs), ms(k.scheduledMs), ms(k.runningMs), k.probeTries,
    ])));
    const sched = kills.map((k) => k.scheduledMs);
    console.log(`\nSUMMARY failover: kill -9 → scheduler working (VM scheduled) p50 ${ms(pct(sched, 50))} ms / p99 ${ms(pct(sched, 99))} ms; → running p50 ${ms(pct(kills.map((k) => k.runningMs), 50))} ms / p99 ${ms(pct(kills.map((k) => k.runningMs), 99))} ms; lease ${LEASE_MS} ms; baseline create → scheduled ${ms(pct(baseline.map((b) => b.scheduledMs), 50))} ms`);
  }
  console.log(`SUMMARY creates: 1 controller ${one.perSec.toFixed(0)}/s, 3 controllers ${three.perSec.toFixed(0)}/s (${(((three.perSec - one.perSec) / one.perSec) * 100).toFixed(1)} %); create → scheduled p50 ${ms(pct(one.sched, 50))} vs ${ms(pct(three.sched, 50))} ms, → running p50 ${ms(pct(one.run, 50))} vs ${ms(pct(three.run, 50))} ms; controller CPU per create ${one.cpu.toFixed(1)} vs ${three.cpu.toFixed(1)} ms`);
  console.log(`\nanomalies: ${anomalies.length === 0 ? 'none' : ''}`);
  for (const a of anomalies) console.log(`  - ${a}`);
  console.log(`\ntotal ${((Date.now() - started) / 1000).toFixed(0)} s, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
}

let failed = false;
let cleaning = false;
const onSignal = () => {
  if (cleaning) return;
  cleaning = true;
  void (lab?.cleanup() ?? Promise.resolve()).finally(() => process.exit(130));
};
process.once('SIGINT', onSignal);
process.once('SIGTERM', onSignal);
try {
  await main();
} catch (err) {
  failed = true;
  console.error('\nbenchmark failed:', err);
  if (lab) console.error(lab.dump(3_000));
} finally {
  if (!cleaning) {
    cleaning = true;
    await lab?.cleanup();
  }
}
process.exit(failed ? 1 : 0);
