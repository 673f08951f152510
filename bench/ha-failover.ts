/**
 * Several controllers on one PostgreSQL database (issue 13): how long the fleet is without a
 * working scheduler when the leader dies, and what the second and third controller cost or give
 * for creates. Real processes in network namespaces (test/support/ha-lab.ts): three controllers,
 * each in its own namespace, on one PostgreSQL (a scratch server: fsync off, so the figures are
 * the controllers', not the disk's); two synthetic workers (speed 0.05: create 10 ms, boot 50–150 ms).
 *
 *   pnpm exec tsx bench/ha-failover.ts [--kills 20] [--lease 3s] [--creates 200] [--concurrency 16] [--rounds 2]
 *                                      [--heartbeat 5s] [--offline 30s]
 *
 * Needs root (ip netns, nftables) and PostgreSQL's binaries (Debian's postgresql package, or
 * FLEET_PG_BIN). Takes about 5 minutes with the defaults on 2 cores.
 *
 *  1. Creates through 1 controller (the other two stopped) vs 3 (round-robin over all three), in
 *     alternating rounds (1, 3, 1, 3, …): `--creates` VMs at `--concurrency` requests in flight.
 *     creates/s = creates / (first request sent → last 201). Placement latency per VM: the create
 *     request's send time → its `→ scheduled` event and its `→ running` event (the controllers'
 *     own timestamps; one host, one clock). The VMs are deleted between rounds.
 *  2. Failover, `--kills` times: the leader is killed with SIGKILL at a random point of its
 *     renewal period; right after, a VM is created through a survivor (Idempotency-Key, retried on
 *     another controller on connection errors and 5xx). Measured from the kill: a survivor's
 *     /v1/health says leader (polled every 25 ms), the VM is scheduled (its event), the VM is
 *     running (its event). Then the killed controller is restarted and must rejoin as a follower
 *     before the next kill. Baseline from the same run: the same probe VM with no kill, and the
 *     configured lease (the takeover floor when the dead leader's database session is not seen to end).
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { waitUntil } from '../test/support/fleet-processes.ts';
import { createWithFailover, haLabMissing, HaLab, type HaController } from '../test/support/ha-lab.ts';

const { values } = parseArgs({
  options: {
    kills: { type: 'string', default: '20' },
    lease: { type: 'string', default: '3s' },
    creates: { type: 'string', default: '200' },
    concurrency: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '2' },
    heartbeat: { type: 'string', default: '5s' },
    offline: { type: 'string', default: '30s' },
  },
});
const KILLS = Number(values.kills);
const CREATES = Number(values.creates);
const CONCURRENCY = Number(values.concurrency);
const ROUNDS = Number(values.rounds);
const leaseMatch = /^(\d+)(ms|s)$/.exec(values.lease);
if (!(KILLS >= 0) || !(CREATES >= 1) || !(CONCURRENCY >= 1) || !(ROUNDS >= 1) || !leaseMatch || CREATES > 450) {
  console.error('usage: pnpm exec tsx bench/ha-failover.ts [--kills N] [--lease 3s|2500ms] [--creates N<=450] [--concurrency N] [--rounds N] [--heartbeat 5s] [--offline 30s]');
  process.exit(2);
}
const LEASE_MS = Number(leaseMatch[1]) * (leaseMatch[2] === 's' ? 1000 : 1);

const why = haLabMissing();
if (why) {
  console.error(`bench/ha-failover.ts cannot run here: ${why}`);
  process.exit(2);
}

// ------------------------------------------------------------------ stats and output (as bench/failover.ts)

function pct(xs: number[], p: number): number {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '–');
function table(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const w = head.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) => '| ' + r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join(' | ') + ' |';
  return [line(head), '| ' + w.map((n, i) => (i === 0 ? '-'.repeat(n) : '-'.repeat(n - 1) + ':')).join(' | ') + ' |', ...cells.slice(1).map(line)].join('\n');
}
const log = (s: string) => console.log(`[${new Date().toISOString().slice(11, 23)}] ${s}`);
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
}

async function createRound(r: number, n: number): Promise<CreateRound> {
  const l = lab!;
  const via = await useControllers(n);
  const prefix = `r${r}c${n}-`;
  const names = Array.from({ length: CREATES }, (_, i) => `${prefix}${String(i).padStart(3, '0')}`);
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
  const perSec = (CREATES * 1000) / (tLast - t0);
  const reader = via[0]!;
  await waitUntil(async () => (await reader.api.vms()).filter((v) => v.name.startsWith(prefix) && v.state === 'running').length === CREATES, 120_000, `round ${r}: all ${CREATES} running`, 250);
  const scheduled: number[] = [];
  const running: number[] = [];
  for (const name of names) {
    const t = await eventTimes(via[names.indexOf(name) % via.length]!, name);
    if (t.placements !== 1) anomalies.push(`round ${r} (${n} controllers): ${name} placed ${t.placements} times`);
    scheduled.push(t.scheduled - sentAt.get(name)!);
    running.push(t.running - sentAt.get(name)!);
  }
  log(`round ${r}, ${n} controller(s): ${perSec.toFixed(0)} creates/s; create → scheduled p50 ${ms(pct(scheduled, 50))} ms, → running p50 ${ms(pct(running, 50))} ms`);
  // Clean slate for the next round (the workers confirm each removal).
  let di = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (di < names.length) {
      const name = names[di++]!;
      const res = await via[di % via.length]!.api.request('DELETE', `/v1/vms/${name}`);
      if (res.status !== 202 && res.status !== 204) anomalies.push(`delete ${name}: ${res.status}`);
    }
  }));
  await waitUntil(async () => (await reader.api.vms()).every((v) => !v.name.startsWith(prefix)), 120_000, `round ${r}: VMs deleted`, 250);
  return { controllers: n, perSec, scheduled, running, retried };
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
  console.log(`\n## 1. creates through 1 controller vs 3 (round-robin), ${CREATES} per round at concurrency ${CONCURRENCY}\n`);
  console.log(table(['round', 'controllers', 'creates/s', 'create → scheduled p50 ms', 'p99 ms', 'create → running p50 ms', 'p99 ms', 'retried'], creates.map((c, i) => [
    String(i + 1), c.controllers, c.perSec.toFixed(0), ms(pct(c.scheduled, 50)), ms(pct(c.scheduled, 99)), ms(pct(c.running, 50)), ms(pct(c.running, 99)), c.retried,
  ])));
  const by = (n: number) => creates.filter((c) => c.controllers === n);
  const sum = (n: number) => {
    const rs = by(n);
    return { perSec: pct(rs.map((c) => c.perSec), 50), sched: rs.flatMap((c) => c.scheduled), run: rs.flatMap((c) => c.running) };
  };
  const one = sum(1);
  const three = sum(3);
  console.log('\nall rounds:\n');
  console.log(table(['controllers', 'creates/s (median round)', 'create → scheduled p50 ms', 'p99 ms', 'create → running p50 ms', 'p99 ms'], [
    ['1 (baseline)', one.perSec.toFixed(0), ms(pct(one.sched, 50)), ms(pct(one.sched, 99)), ms(pct(one.run, 50)), ms(pct(one.run, 99))],
    ['3', three.perSec.toFixed(0), ms(pct(three.sched, 50)), ms(pct(three.sched, 99)), ms(pct(three.run, 50)), ms(pct(three.run, 99))],
  ]));

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
  console.log(`SUMMARY creates: 1 controller ${one.perSec.toFixed(0)}/s, 3 controllers ${three.perSec.toFixed(0)}/s (${(((three.perSec - one.perSec) / one.perSec) * 100).toFixed(1)} %); create → running p50 ${ms(pct(one.run, 50))} vs ${ms(pct(three.run, 50))} ms`);
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
