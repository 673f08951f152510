// Several controllers on one PostgreSQL database (issue 13): three controller processes, each in a
// network namespace of its own, share one database and elect a leader with a lease; two synthetic
// workers in their own namespaces. What an operator relies on:
//   - killing the leader (kill -9) in the middle of a stream of creates loses nothing, doubles
//     nothing and fails nothing; a VM created right after the kill runs within 5 s;
//   - a controller cut off from the database stops leading, a new leader takes over within 5 s, its
//     workers go elsewhere before their lease runs out, no VM runs twice or stops; healed, it comes
//     back as a follower;
//   - a change made through any controller reaches a worker whose stream another controller holds;
//   - a VM deleted right after its create, through another controller, goes away and frees its capacity;
//   - on SQLite a second controller on the same data dir refuses to start.
//
//   hub bridge ── c1 10.96.0.11 ── c2 .12 ── c3 .13   (REST :8080 plain HTTP, gRPC :7443)
//        │     └─ w1 10.96.0.21 ── w2 .22            (synthetic driver)
//        └── root namespace 10.96.0.2: this process and PostgreSQL (trust for 10.96.0.0/24 only)
//
// Timings: heartbeat 1 s, lostAfter 8 s → fenceAfter 6 s; leader lease 2 s (renewed every ~667 ms).
// Needs root, ip, nft and PostgreSQL's binaries; otherwise the PostgreSQL part is skipped loudly.
// FLEET_HA_LOGS=<dir> keeps every process's whole output (FLEET_LOG_LEVEL=info for more).
//
//   pnpm exec vitest run --project e2e test/ha-controllers.test.ts
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { REPO_ROOT, removeDir, startControllerProcess, startProcess, tempDir, waitUntil, type ControllerProcess } from './support/fleet-processes.ts';
// create(): POST /v1/vms with an Idempotency-Key, retried on another controller on connection errors and 5xx.
import { createWithFailover as create, haLabMissing, HaLab, LiveInstanceSampler, metricValue, type ControllerRow, type CreateOutcome, type HaController } from './support/ha-lab.ts';

const why = haLabMissing();
if (why) {
  console.warn(
    `\n!!!!!!!! SKIPPING the PostgreSQL part of test/ha-controllers.test.ts: ${why}. Several controllers on one database (leader failover, partitions, cross-controller pushes) are NOT tested on this machine; run the e2e suite as root on Linux with the postgresql package. !!!!!!!!\n`,
  );
}

const LEASE_MS = 2_000;
const FAILOVER_BUDGET_MS = 5_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let lab: HaLab;
const sampler = { current: undefined as LiveInstanceSampler | undefined };

const vmSpec = (name: string, extra: Record<string, unknown> = {}) => ({ name, image: 'synthetic:ok', cpus: 1, memoryMib: 128, ...extra });

/** Samples every running controller's own role every 100 ms and records moments when two claimed leadership. */
class LeaderSampler {
  readonly overlaps: string[] = [];
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();
  start(): this {
    this.loop = (async () => {
      while (!this.stopped) {
        const views = await lab.views();
        const leaders = Object.entries(views).filter(([, v]) => v?.role === 'leader').map(([n]) => n);
        if (leaders.length > 1) this.overlaps.push(`${new Date().toISOString()} ${leaders.join(' and ')} (${JSON.stringify(views)})`);
        await sleep(100);
      }
    })();
    return this;
  }
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

/**
 * All three controllers running (a test that failed may have left one killed), one leader, the
 * others following it: each test starts from a whole fleet.
 */
async function wholeFleet(): Promise<HaController> {
  for (const c of lab.controllers) {
    if (c.partitioned) lab.heal(c);
    if (!lab.running().includes(c)) await lab.restart(c);
  }
  const { leader } = await lab.waitForLeader({ timeoutMs: 20_000 });
  await waitUntil(async () => {
    const views = await lab.views();
    return lab.controllers.every((c) => views[c.name]?.status === 'ok' && views[c.name]?.leader === leader.name);
  }, 20_000, `every controller following ${leader.name}`, 100);
  return leader;
}

/**
 * /v1/controllers once both worker streams are counted and the counts read the same twice, 2 s
 * apart (each controller refreshes its row every few seconds): who holds which streams right now.
 */
async function steadyStreams(via: HaController): Promise<ControllerRow[]> {
  const counts = (rs: ControllerRow[]) => rs.map((r) => `${r.name}=${r.connectedWorkers}`).sort().join(' ');
  let rows: ControllerRow[] = [];
  await waitUntil(async () => {
    const a = await via.api.liveControllers();
    if (!lab.running().every((c) => a.some((r) => r.name === c.name))) return false;
    if (a.reduce((n, r) => n + r.connectedWorkers, 0) !== lab.workers.length) return false;
    await sleep(2_000);
    rows = await via.api.liveControllers();
    return counts(a) === counts(rows);
  }, 30_000, 'both worker streams counted, steady', 250);
  return rows;
}

/** The placements of a VM in its event log ("pending → scheduled on wN (attempt k)"). */
function placements(events: any[]): any[] {
  return events.filter((e) => e.kind === 'vm.state' && /→ scheduled/.test(String(e.message)));
}

describe.skipIf(why !== '')('several controllers on one PostgreSQL database', () => {
  beforeAll(async () => {
    lab = await HaLab.start({ id: String(process.pid % 1000), subnet: '10.96.0', leaderLease: `${LEASE_MS}ms`, heartbeatInterval: '1s', workerOfflineTimeout: '8s' });
    if (!lab.haFlags) console.warn('[ha] fleet-controller run has no --leader-lease/--controller-name/--advertise-api-url yet: controllers started without them');
    sampler.current = new LiveInstanceSampler(lab).start();
  }, 180_000);

  afterAll(async () => {
    sampler.current?.stop();
    await lab?.cleanup();
  }, 60_000);

  beforeEach((ctx) => {
    ctx.onTestFailed(() => console.log(`[ha] process output after the failure:\n${lab?.dump()}`));
  });

  it('three controllers, one leader they all name; /v1/controllers lists each with its addresses and role; metrics agree', async () => {
    const { leader } = await lab.waitForLeader({ timeoutMs: 20_000 });
    const views = await lab.views();
    for (const c of lab.controllers) {
      expect(views[c.name], c.name).toMatchObject({ status: 'ok', role: c === leader ? 'leader' : 'follower', leader: leader.name });
    }
    // Every controller's list: all three, with the addresses they were started with.
    for (const c of lab.controllers) {
      await waitUntil(async () => (await c.api.controllers()).length === 3, 15_000, `${c.name} listing three controllers`);
      const rows = await c.api.controllers();
      expect(rows.map((r) => r.name).sort()).toEqual(['c1', 'c2', 'c3']);
      for (const r of rows) {
        const self = lab.byName(r.name);
        expect(r).toMatchObject({ apiUrl: self.apiUrl, grpcAddress: self.grpcAddress, role: self === leader ? 'leader' : 'follower' });
        expect(typeof r.version).toBe('string');
      }
    }
    // Both workers are connected (each to some controller), each once.
    await waitUntil(async () => (await leader.api.controllers()).reduce((n, r) => n + r.connectedWorkers, 0) === 2, 15_000, 'two worker streams counted');
    // Each worker enrolled through c1 alone, and was handed every controller (worker.json, kept up to date by Welcome).
    const known = (dataDir: string): string[] => {
      try {
        return [...(JSON.parse(readFileSync(path.join(dataDir, 'worker.json'), 'utf8')) as { controllers?: string[] }).controllers ?? []].sort();
      } catch {
        return [];
      }
    };
    for (const w of lab.workers) {
      await waitUntil(() => JSON.stringify(known(w.dataDir)) === JSON.stringify(lab.controllers.map((c) => c.grpcAddress).sort()), 15_000, `${w.name} knowing all three controllers (has ${known(w.dataDir).join(', ')})`);
    }
    // Prometheus: 1 on the leader only.
    for (const c of lab.controllers) expect(metricValue(await c.api.metrics(), 'fleet_controller_leader'), c.name).toBe(c === leader ? 1 : 0);
    // The counter of leadership changes is exposed by every controller (its values: the kill test).
    for (const c of lab.controllers) expect(await c.api.metrics(), c.name).toMatch(/^# TYPE fleet_leadership_changes_total counter$/m);
  });

  it('kill -9 of the leader during a stream of creates to all three: every VM exactly once, placed once, none failed; a VM created after the kill runs within 5 s', async () => {
    const old = await wholeFleet();
    const survivors = lab.controllers.filter((c) => c !== old);
    const leaders = new LeaderSampler().start();
    onTestFinished(() => leaders.stop());
    const outcomes: Promise<CreateOutcome>[] = [];
    let stop = false;
    // Three clients, each sending round-robin to all three controllers, 150 ms apart.
    const clients = [0, 1, 2].map(async (k) => {
      for (let j = 0; !stop; j++) {
        outcomes.push(create(lab, vmSpec(`kill-${k}-${j}`), k + j));
        await sleep(150);
      }
    });
    await sleep(1_500);
    const streamsBefore = (await old.api.liveControllers()).map((r) => `${r.name}=${r.connectedWorkers}`).sort().join(' ');
    const killedAt = await lab.kill9(old);

    // Right after the kill: a VM through a survivor, and how long until the fleet places and runs it.
    const probe = create(lab, vmSpec('after-kill'), lab.controllers.indexOf(survivors[0]!));
    const newLeader = lab.waitForLeader({ among: () => survivors, timeoutMs: 15_000, pollMs: 25 });
    let scheduledAt = 0;
    let runningAt = 0;
    await waitUntil(async () => {
      const v = await survivors[Date.now() % 2]!.api.vm('after-kill').catch(() => null);
      if (v && v.state !== 'pending' && !scheduledAt) scheduledAt = Date.now();
      if (v?.state === 'running') runningAt = Date.now();
      return runningAt > 0;
    }, 30_000, 'the VM created after the kill running', 25);
    const { leader: next, at: leaderAt } = await newLeader;
    await sleep(3_000); // the stream goes on for a while under the new leader
    stop = true;
    await Promise.all(clients);
    const results = await Promise.all(outcomes);
    const probeResult = await probe;
    await leaders.stop();
    const probeVm = await next.api.vm('after-kill');
    console.log(
      `[ha] kill -9 ${old.name} (worker streams before: ${streamsBefore}): new leader ${next.name} after ${leaderAt - killedAt} ms; ` +
        `the VM created after the kill answered after ${probeResult.answeredAt - killedAt} ms (${probeResult.tries.join(',')}), scheduled after ${scheduledAt - killedAt} ms, ` +
        `running on ${probeVm?.worker} after ${runningAt - killedAt} ms (lease ${LEASE_MS} ms); ${results.length} creates, ${results.filter((r) => r.attempts > 1).length} retried on another controller, ${results.filter((r) => r.replayed).length} answered as replays`,
    );

    expect(next).not.toBe(old);
    expect(probeResult.ok, JSON.stringify(probeResult)).toBe(true);
    // The time budgets are soft: a miss is reported along with whatever else went wrong.
    expect.soft(leaderAt - killedAt, 'kill → new leader in /v1/health (ms)').toBeLessThanOrEqual(FAILOVER_BUDGET_MS);
    expect.soft(runningAt - killedAt, 'kill → the VM created after it running (ms)').toBeLessThanOrEqual(FAILOVER_BUDGET_MS);
    expect(leaders.overlaps).toEqual([]);

    // Every create was accepted: none failed because of the failover.
    const failed = results.filter((r) => !r.ok);
    expect(failed.map((r) => `${r.name}: ${r.status} ${JSON.stringify(r.body)} via ${r.tries.join(',')}`)).toEqual([]);
    // The kill landed in the middle of the stream: creates before and after it, some retried.
    expect(results.some((r) => r.answeredAt < killedAt)).toBe(true);
    expect(results.some((r) => r.answeredAt > killedAt + 1_000)).toBe(true);

    const reader = next;
    const names = [...results.map((r) => r.name), 'after-kill'];
    await waitUntil(async () => {
      const vms = (await reader.api.vms()).filter((v) => names.includes(v.name));
      return vms.length === names.length && vms.every((v) => v.state === 'running');
    }, 30_000, 'every accepted VM running', 250);
    const vms = (await reader.api.vms()).filter((v) => v.name.startsWith('kill-') || v.name === 'after-kill');
    // Exactly once: one VM per accepted name (and nothing else), each the one its create answered with.
    expect(vms.map((v) => v.name).sort()).toEqual([...names].sort());
    for (const r of [...results, probeResult]) expect(vms.find((v) => v.name === r.name)?.id, r.name).toBe(r.body.id);
    // Placed once: attempt 1, never restarted, one placement in its events, no failure.
    for (const v of vms) expect({ name: v.name, attempt: v.attempt, restartCount: v.restartCount }).toEqual({ name: v.name, attempt: 1, restartCount: 0 });
    let firstPlacementAfterKill = Infinity;
    let unknownDuringFailover = 0;
    for (const v of vms) {
      const events = await reader.api.events(v.name);
      expect(placements(events).length, `${v.name}: ${placements(events).map((e) => e.message).join(' | ')}`).toBe(1);
      // Neither failed nor stopped: a worker whose controller died must get its lease renewed by another
      // before fenceAfter, or it stops (fences) its VMs — an outage the failover was meant to avoid.
      expect(events.filter((e) => /→ (failed|stopped|stopping)/.test(String(e.message))).map((e) => e.message), v.name).toEqual([]);
      // `unknown` (a worker not heard for 2 heartbeats + 1 s while its stream moves) is allowed, but counted.
      if (events.some((e) => /→ unknown/.test(String(e.message)))) unknownDuringFailover++;
      const at = Date.parse(placements(events)[0].at);
      if (at >= killedAt) firstPlacementAfterKill = Math.min(firstPlacementAfterKill, at);
    }
    console.log(`[ha] first placement after the kill: ${firstPlacementAfterKill - killedAt} ms after it; ${unknownDuringFailover} of ${vms.length} VMs showed unknown meanwhile`);
    expect.soft(firstPlacementAfterKill - killedAt, 'kill → first placement (ms)').toBeLessThanOrEqual(FAILOVER_BUDGET_MS);
    // The workers' own view: each VM one instance, attempt 1; never two live at once.
    const held = lab.workers.flatMap((w) => lab.instances(w).filter((i) => names.includes(i.name)).map((i) => ({ ...i, worker: w.name })));
    expect(held.length).toBe(names.length);
    expect(new Set(held.map((i) => i.vmId)).size).toBe(names.length);
    expect(held.every((i) => i.attempt === 1)).toBe(true);
    expect(sampler.current!.violations).toEqual([]);

    // The killed controller comes back as a follower of the new leader.
    await lab.restart(old);
    await waitUntil(async () => {
      const h = await lab.health(old);
      return h?.status === 'ok' && h.controller?.role === 'follower' && h.controller.leader === next.name;
    }, 20_000, `${old.name} back as a follower of ${next.name}`, 100);
    // The controller that took over counted it; the metric says so on it alone.
    expect(metricValue(await next.api.metrics(), 'fleet_leadership_changes_total', { to: 'leader' })).toBeGreaterThanOrEqual(1);
    for (const c of lab.controllers) expect(metricValue(await c.api.metrics(), 'fleet_controller_leader'), c.name).toBe(c === next ? 1 : 0);
  });

  it('a controller cut off from the database: a new leader within 5 s, it stops leading, its workers go elsewhere, nothing runs twice; healed, it rejoins as a follower', async () => {
    const leader = await wholeFleet();
    const rows = await steadyStreams(leader);
    const streams = (c: HaController) => rows.find((r) => r.name === c.name)?.connectedWorkers ?? 0;
    // The leader, and when it holds no worker stream also the follower holding the most: the cut-off
    // side then covers both "the leader" and "a controller holding workers".
    const cut = [leader];
    if (streams(leader) === 0) {
      const holder = lab.controllers.filter((c) => c !== leader).sort((a, b) => streams(b) - streams(a))[0]!;
      cut.push(holder);
    }
    const rest = lab.controllers.filter((c) => !cut.includes(c));
    const cutStreams = cut.reduce((n, c) => n + streams(c), 0);
    expect(cutStreams).toBeGreaterThan(0);

    // VMs on both workers before the cut.
    const before = await Promise.all(['w1', 'w2'].map((w) => create(lab, vmSpec(`part-${w}`, { selector: { host: w } }), 0)));
    for (const r of before) expect(r.ok, JSON.stringify(r)).toBe(true);
    await waitUntil(async () => (await Promise.all(before.map((r) => leader.api.vm(r.name)))).every((v) => v?.state === 'running'), 20_000, 'part-w1 and part-w2 running');
    const snapshot = (await leader.api.vms()).filter((v) => v.state === 'running');
    const leaders = new LeaderSampler().start();

    const cutAt = Date.now();
    for (const c of cut) lab.partitionFromDatabase(c);
    // Whatever fails below, the tests after this one get a whole fleet back.
    onTestFinished(async () => {
      await leaders.stop();
      for (const c of cut) if (c.partitioned) lab.heal(c);
    });
    const { leader: next, at } = await lab.waitForLeader({ among: () => rest, timeoutMs: 20_000, pollMs: 25 });
    console.log(`[ha] ${cut.map((c) => c.name).join('+')} cut off from the database at ${cutAt} (holding ${cutStreams} worker stream(s)): ${next.name} leader after ${at - cutAt} ms`);
    expect.soft(at - cutAt, 'cut → new leader (ms)').toBeLessThanOrEqual(FAILOVER_BUDGET_MS);
    // The cut-off controllers no longer say they lead (follower, or degraded).
    for (const c of cut) {
      await waitUntil(async () => {
        const h = await lab.health(c);
        return h !== null && (h.controller?.role !== 'leader' || h.status === 'degraded');
      }, 5_000, `${c.name} not claiming leadership`, 100);
    }
    // Its workers reconnect to the others: every stream on a controller that reaches the database.
    await waitUntil(async () => {
      const now = await next.api.liveControllers();
      return now.filter((r) => rest.some((c) => c.name === r.name)).reduce((n, r) => n + r.connectedWorkers, 0) === 2;
    }, 20_000, 'both workers connected to controllers that reach the database', 250);
    await waitUntil(async () => (await next.api.workers()).filter((w) => w.status === 'online' && w.connected).length === 2, 10_000, 'both workers online');
    const movedAt = Date.now();
    // The scheduler works under the new leader.
    const during = await create(lab, vmSpec('part-during'), lab.controllers.indexOf(rest[0]!));
    expect(during.ok, JSON.stringify(during)).toBe(true);
    await waitUntil(async () => (await next.api.vm('part-during'))?.state === 'running', 10_000, 'a VM created during the partition running');
    // Nothing ran twice, nothing moved: every VM running before runs on the same worker, same attempt.
    const after = await next.api.vms();
    for (const v of snapshot) expect(after.find((x) => x.id === v.id), v.name).toMatchObject({ state: 'running', worker: v.worker, attempt: v.attempt });
    const held = lab.workers.flatMap((w) => lab.instances(w).map((i) => ({ ...i, worker: w.name })));
    for (const v of snapshot) expect(held.filter((i) => i.vmId === v.id).map((i) => `${i.worker}#${i.attempt}`), v.name).toEqual([`${v.worker}#${v.attempt}`]);
    const workersNow = await next.api.workers();
    expect(workersNow.reduce((n, w) => n + w.used.vms, 0)).toBe(after.length);
    console.log(`[ha] workers reconnected elsewhere ${movedAt - cutAt} ms after the cut`);

    // Healed: back as followers of the leader that took over.
    const healedAt = Date.now();
    for (const c of cut) lab.heal(c);
    for (const c of cut) {
      await waitUntil(async () => {
        const h = await lab.health(c);
        return h?.status === 'ok' && h.controller?.role === 'follower' && h.controller.leader === next.name;
      }, 20_000, `${c.name} rejoining as a follower of ${next.name}`, 100);
    }
    await waitUntil(async () => {
      const list = await next.api.controllers();
      return cut.every((c) => list.find((r) => r.name === c.name)?.role === 'follower');
    }, 15_000, 'the healed controllers listed as followers');
    console.log(`[ha] healed: rejoined as followers after ${Date.now() - healedAt} ms`);
    await leaders.stop();
    expect(leaders.overlaps).toEqual([]);
    expect((await lab.leader())?.name).toBe(next.name);
    const final = await next.api.vms();
    for (const v of snapshot) expect(final.find((x) => x.id === v.id), v.name).toMatchObject({ state: 'running', attempt: v.attempt });
    expect(sampler.current!.violations).toEqual([]);
    // Nor were they stopped meanwhile: a worker whose controller lost the database moves on before
    // its lease runs out (fenceAfter 6 s), or it fences (stops) its VMs — an outage for them.
    const stops: string[] = [];
    for (let i = 0; i < snapshot.length; i += 10) {
      await Promise.all(snapshot.slice(i, i + 10).map(async (v) => {
        for (const e of await next.api.events(v.name)) if (Date.parse(e.at) >= cutAt && /→ (stopped|stopping|failed)/.test(String(e.message))) stops.push(`${v.name}: ${e.message}`);
      }));
    }
    expect.soft(stops, `VMs stopped during the partition (${stops.length} of ${snapshot.length})`).toEqual([]);
  });

  it('a change made through one controller reaches a worker whose stream another controller holds', async () => {
    const leader = await wholeFleet();
    // Two workers, three controllers: at least one controller holds no stream. Changes go through it.
    const rows = await steadyStreams(leader);
    const idle = lab.controllers.filter((c) => rows.find((r) => r.name === c.name)?.connectedWorkers === 0);
    expect(idle.length).toBeGreaterThan(0);
    // A follower if possible: the API that takes the change, the scheduler and the stream then all differ.
    const via = idle.find((c) => c !== leader) ?? idle[0]!;
    console.log(`[ha] changes through ${via.name} (${via === leader ? 'leader' : 'follower'}, no worker stream); streams: ${rows.map((r) => `${r.name}=${r.connectedWorkers}`).join(' ')}`);
    const names = ['cross-w1', 'cross-w2'];
    for (const [i, n] of names.entries()) await via.api.ok('POST', '/v1/vms', vmSpec(n, { selector: { host: `w${i + 1}` } }));
    await waitUntil(async () => (await Promise.all(names.map((n) => via.api.vm(n)))).every((v) => v?.state === 'running'), 15_000, 'both VMs created through it running');

    const onWorker = (n: string) => lab.workers.flatMap((w) => lab.instances(w).filter((i) => i.name === n).map((i) => ({ worker: w.name, state: i.state })));
    let t = Date.now();
    for (const n of names) await via.api.ok('PATCH', `/v1/vms/${n}`, { powerState: 'stopped' });
    await waitUntil(async () => (await Promise.all(names.map((n) => via.api.vm(n)))).every((v) => v?.state === 'stopped'), 10_000, 'both VMs stopped');
    console.log(`[ha] stop through ${via.name}: both stopped after ${Date.now() - t} ms`);
    // The workers themselves stopped them (their driver's view).
    await waitUntil(() => JSON.stringify(names.map(onWorker)) === JSON.stringify([[{ worker: 'w1', state: 'stopped' }], [{ worker: 'w2', state: 'stopped' }]]), 3_000, 'w1 and w2 holding their VM stopped');

    t = Date.now();
    for (const n of names) await via.api.ok('PATCH', `/v1/vms/${n}`, { powerState: 'running' });
    await waitUntil(async () => (await Promise.all(names.map((n) => via.api.vm(n)))).every((v) => v?.state === 'running'), 10_000, 'both VMs running again');
    console.log(`[ha] start through ${via.name}: both running after ${Date.now() - t} ms`);

    t = Date.now();
    for (const n of names) expect([202, 204]).toContain((await via.api.request('DELETE', `/v1/vms/${n}`)).status);
    await waitUntil(async () => (await Promise.all(names.map((n) => via.api.vm(n)))).every((v) => v === null), 10_000, 'both VMs deleted (confirmed by their workers)');
    await waitUntil(() => names.every((n) => onWorker(n).length === 0), 5_000, 'the workers removed both instances');
    console.log(`[ha] delete through ${via.name}: gone after ${Date.now() - t} ms`);
    expect(sampler.current!.violations).toEqual([]);
  });

  it('a VM deleted right after its create, through another controller, disappears and frees its capacity', async () => {
    const leader = await wholeFleet();
    const used = async () => (await leader.api.workers()).reduce((n, w) => n + w.used.vms, 0);
    const usedBefore = await used();
    // Created round-robin, each deleted at once through the next controller: the delete races the
    // placement, the push and the worker's first report, on different controllers.
    const names = Array.from({ length: 30 }, (_, i) => `quick-${i}`);
    const created = await Promise.all(names.map((n, i) => create(lab, vmSpec(n), i)));
    for (const r of created) expect(r.ok, JSON.stringify(r)).toBe(true);
    const deleted = await Promise.all(names.map((n, i) => lab.controllers[(i + 1) % 3]!.api.request('DELETE', `/v1/vms/${n}`)));
    expect(deleted.map((r) => r.status).filter((st) => st !== 202 && st !== 204)).toEqual([]);
    const left = async () => (await leader.api.vms()).filter((v) => names.includes(v.name));
    // Deletes win (docs/architecture.md): a deleted VM is never left behind, failed or otherwise.
    await waitUntil(async () => (await left()).length === 0, 20_000, 'every quickly deleted VM gone', 250).catch(() => undefined);
    expect.soft((await left()).map((v) => `${v.name}: ${v.state} (${v.reason})`), 'deleted VMs still listed').toEqual([]);
    await waitUntil(() => lab.workers.every((w) => lab.instances(w).every((i) => !names.includes(i.name))), 10_000, 'the workers holding none of them');
    // No capacity held for them: the workers' used VMs are back where they were.
    await waitUntil(async () => (await used()) === usedBefore, 15_000, 'capacity freed').catch(() => undefined);
    expect(await used(), `the workers' used.vms (before: ${usedBefore})`).toBe(usedBefore);
  });
});

describe('SQLite: one controller per data dir', () => {
  let first: ControllerProcess | undefined;
  let dir = '';
  afterAll(async () => {
    await first?.kill();
    if (dir) await removeDir(dir);
  });

  it('a second controller started on a data dir in use refuses, saying another controller runs; the first goes on', async () => {
    dir = await tempDir('ha-sqlite');
    first = await startControllerProcess({ dataDir: dir });
    const second = startProcess([`${REPO_ROOT}/apps/controller/bin/fleet-controller.js`, 'run', '--data-dir', dir, '--listen', '127.0.0.1:0', '--grpc-listen', '127.0.0.1:0']);
    const code = await second.exited;
    expect(code).not.toBe(0);
    expect(second.output()).toMatch(/another Fleet controller is running/);
    expect((await first.api.ok('GET', '/v1/health')).status).toBe('ok');
  });
});
