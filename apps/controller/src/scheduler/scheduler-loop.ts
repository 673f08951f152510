// Runs the placement planner against the database: loads pending VMs and the
// workers' free capacity, plans, then commits each placement with a conditional
// update (only a VM still pending is placed) and its Allocation in one
// transaction. Passes never overlap; a request during a pass runs one more pass.
// A failed pass (the database is unavailable) is retried after a capped, jittered
// backoff; requests meanwhile wait for that retry instead of hammering the database.
//
// Incremental (issue 20): the pending queue and the workers' views (capacity and use) stay in
// memory between passes. Committed creates arrive as hints (FleetBus.scheduleRequested with
// `created`) and are added to the queue; this pass's own placements are applied to the views.
// Everything else that can change what the planner sees (capacity freed, a worker's Hello, a
// restart, an update of a pending VM, a request relayed from another controller, a safety-net
// timer every reloadEveryMs, leadership regained, a failed pass, a placement that found its VM
// changed)
// is a request without a hint, and the next pass reloads both from the database: the in-memory
// state is only ever a shortcut, never the source of truth. Exactly-once placement does not
// depend on it: each placement is still a conditional update (state pending, same attempt), in a
// transaction that also checks the target workers are online and not drained.
import { directTransaction, insertRows, providerOfDb, type FenceClient, type FleetDb, type Provider, type Vm } from '@fleet/db';
import type { Logger } from 'pino';
import { planPlacements, type PendingVmView, type SchedulerProfile, type WorkerView } from './placement.ts';
import type { EventLog, NewEvent } from '../events/event-log.ts';
import type { FleetBus, ScheduleHint } from '../fleet-bus.ts';
import type { Metrics } from '../observability/metrics.ts';
import { vmEvent } from '../vms/vm-service.ts';
import { networkModeOf, parseLabels } from '../vms/vm-view.ts';
import { loadWorkerViews } from '../workers/worker-views.ts';
import { loadImageHoldings } from '../images/worker-image-service.ts';
import { backoffDelayMs, errorFields, type BackoffOptions, type ErrorSink } from '../storage/backoff.ts';
import { updateVmIf } from '../storage/vm-rows.ts';
import { lockWorkerNetworks, macsHeldOn } from '../storage/allocation-rows.ts';
import { usableWorkers } from '../storage/worker-rows.ts';
import { newRowId } from '../storage/row-ids.ts';

/** Retries of a failed pass: 500 ms, 1 s, 2 s, ... at most 15 s apart (jittered). */
export const SCHEDULER_RETRY_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 15_000 };

export interface SchedulerLoopOptions {
  /** Told about every failed pass (the storage-health tracker). */
  sink?: ErrorSink;
  backoff?: Partial<BackoffOptions>;
  /** The leader's fence, checked in every placement transaction (several controllers, issue 13). */
  fence?: (tx: FenceClient) => Promise<void>;
  /** false: wait for start() (the controller starts it when it becomes the leader). */
  startNow?: boolean;
  /**
   * Safety net: a pass reloads everything from the database at least this often even when every
   * change was announced (default 15 × intervalMs). Not every tick: at 1,000 workers a reload is
   * the costliest part of a pass, and VMs created meanwhile wait for it.
   */
  reloadEveryMs?: number;
  /** A pass failed because this controller is no longer the leader: returns true (not retried). */
  deposed?: (err: unknown) => boolean;
}

export class SchedulerLoop {
  private running = false;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private unsubscribe: () => void = () => undefined;
  /** Consecutive failed passes, and the timer of the retry after the last one. */
  failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly backoff: BackoffOptions;
  /** The pending queue as of the last reload plus the hinted creates, by VM id. */
  private pending = new Map<string, Vm>();
  /** Workers as of the last reload with this loop's placements since applied; undefined: load. */
  private workers: WorkerView[] | undefined;
  /** VMs created (committed) since the last pass, from hints. */
  private incoming: Vm[] = [];
  /** The next pass reloads the pending queue and the workers from the database. */
  private reloadNeeded = true;
  private lastReload = 0;
  /** Full reloads and incremental passes so far (tests, logs). */
  readonly stats = { reloads: 0, incremental: 0 };
  private readonly provider: Provider;

  constructor(
    private readonly db: FleetDb,
    private readonly events: EventLog,
    private readonly bus: FleetBus,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly profile: () => Promise<SchedulerProfile>,
    private readonly intervalMs: number,
    private readonly opts: SchedulerLoopOptions = {},
  ) {
    this.backoff = { ...SCHEDULER_RETRY_BACKOFF, ...opts.backoff };
    this.provider = providerOfDb(db);
    if (opts.startNow !== false) this.start();
    else this.stopped = true;
  }

  readonly name = 'scheduler';

  /** Runs passes on every request and every intervalMs (again after stop(): leadership regained). */
  start(): void {
    this.unsubscribe();
    clearInterval(this.timer);
    this.stopped = false;
    this.failures = 0;
    // Leadership (re)gained: whatever is in memory may be stale.
    this.forget();
    this.unsubscribe = this.bus.onScheduleRequest((hint) => this.request(hint));
    // The periodic pass; every reloadEveryMs it reloads from the database (a missed hint, a change nobody announced).
    const reloadEveryMs = this.opts.reloadEveryMs ?? 15 * this.intervalMs;
    this.timer = setInterval(() => {
      if (Date.now() - this.lastReload >= reloadEveryMs) this.reloadNeeded = true;
      this.trigger();
    }, this.intervalMs);
    this.timer.unref();
    this.trigger();
  }

  stop(): void {
    this.stopped = true;
    this.forget();
    this.unsubscribe();
    this.unsubscribe = () => undefined;
    clearInterval(this.timer);
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** A schedule request: with only created VMs, they join the queue; otherwise reload everything. */
  request(hint?: ScheduleHint): void {
    if (this.stopped) return;
    if (hint?.created && !hint.created.some((vm) => vm.state !== 'pending')) this.incoming.push(...hint.created);
    else this.reloadNeeded = true;
    this.trigger();
  }

  /** Drop the in-memory queue and views: the next pass reads them from the database. */
  private forget(): void {
    this.pending = new Map();
    this.workers = undefined;
    this.incoming = [];
    this.reloadNeeded = true;
  }

  /** No pass running or waiting (tests). */
  get idle(): boolean {
    return !this.running && !this.retryTimer;
  }

  /** Ask for a pass soon; bursts of requests (e.g. 1,000 creates) coalesce into few passes. */
  trigger(): void {
    if (this.stopped) return;
    if (this.retryTimer) return; // after a failure: the retry runs the pass
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    this.loop();
  }

  /** Run now even while backing off (the storage is back). */
  retryNow(): void {
    if (!this.retryTimer) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.trigger();
  }

  /** Resolves once no pass is running (after stop(): before the database is closed). */
  async settled(): Promise<void> {
    while (this.current) await this.current;
  }

  private current: Promise<void> | undefined;

  /**
   * Starts the passes once the current callback and the promise jobs already queued have run
   * (process.nextTick), so the hints of one committed group of creates coalesce into one pass;
   * settled() waits for them. Not setImmediate: under load, the rest of the event loop's turn
   * (every HTTP request and worker message read in its poll phase) ran first, and that wait was
   * most of the scheduling latency (31 of 36 ms at p50 with 1,000 workers, issue 20).
   */
  private loop(): void {
    const run: Promise<void> = new Promise<void>((resolve) => process.nextTick(resolve))
      .then(() => this.loopOnce())
      .finally(() => {
        if (this.current === run) this.current = undefined;
      });
    this.current = run;
  }

  private async loopOnce(): Promise<void> {
    try {
      if (this.stopped) return; // stopped before the passes began
      do {
        this.again = false;
        await this.passOnce();
      } while (this.again && !this.stopped);
      if (this.failures > 0) this.log.info({ failures: this.failures }, 'scheduler passes work again');
      this.failures = 0;
    } catch (err) {
      // Whatever the failed pass did to the in-memory state is not trusted.
      this.reloadNeeded = true;
      if (this.opts.deposed?.(err)) return;
      this.failures += 1;
      this.opts.sink?.observe(err);
      const retryInMs = backoffDelayMs(this.failures, this.backoff);
      this.log[this.failures === 1 ? 'error' : 'warn']({ ...errorFields(err), failures: this.failures, retryInMs }, 'scheduler pass failed; retrying');
      if (!this.stopped) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.trigger();
        }, retryInMs);
        this.retryTimer.unref();
      }
    } finally {
      this.running = false;
    }
  }

  /** Reload the pending queue (and, lazily, the workers) from the database, or apply the hints. */
  private async refresh(): Promise<void> {
    // Not started (a follower, or a test driving passes itself): no hints arrive, so every pass reads the database.
    if (this.reloadNeeded || this.stopped) {
      this.reloadNeeded = false;
      // Every hint so far was sent after its create committed: the query below sees those VMs.
      // Hints that arrive while it runs are applied after it (duplicates are skipped).
      this.incoming = [];
      this.workers = undefined;
      const rows = await this.db.vm.findMany({ where: { state: 'pending' } });
      this.pending = new Map(rows.map((v) => [v.id, v]));
      this.stats.reloads += 1;
      this.lastReload = Date.now();
    } else {
      this.stats.incremental += 1;
    }
    if (this.incoming.length > 0) {
      for (const vm of this.incoming) if (!this.pending.has(vm.id)) this.pending.set(vm.id, vm);
      this.incoming = [];
    }
    if (this.pending.size > 0 && !this.workers) this.workers = await loadWorkerViews(this.db);
  }

  /** One pass; exported for tests. Returns the number of placements. */
  async passOnce(): Promise<number> {
    const started = process.hrtime.bigint();
    await this.refresh();
    const pendingRows = [...this.pending.values()];
    this.metrics.pendingVms.set(pendingRows.length);
    if (pendingRows.length === 0) return 0;
    // The cached views; this pass may replace entries of its copy (MACs) but not the cache's.
    const cached = this.workers!;
    const workers = [...cached];
    // Image locality (issue 15): the workers holding the pending VMs' images, one query per pass.
    const digests = new Set<string>();
    for (const v of pendingRows) if (v.imageDigest) digests.add(v.imageDigest);
    const images = digests.size > 0 ? await loadImageHoldings(this.db, digests) : undefined;
    // Issue 18: where the pending VMs' custom MACs are already held (one query, only when asked).
    const macs = new Set<string>();
    for (const v of pendingRows) {
      const mac = instanceMac(v);
      if (mac) macs.add(mac);
    }
    if (macs.size > 0) await attachMacHolders(this.db, workers, macs);
    const plan = planPlacements(pendingRows.map(toPendingView), workers, await this.profile(), images);
    const byId = this.pending;
    const workerById = new Map(cached.map((w) => [w.id, w]));
    const now = new Date();
    const events: NewEvent[] = [];
    const placedVms: Vm[] = [];
    const dirty = new Set<string>();
    let doubt = false;

    // One transaction in plain SQL, without Prisma's machinery, sharing its COMMIT with the other
    // plain-SQL transactions ready at the same moment (issue 20).
    await directTransaction(this.db, async (sql) => {
      await this.opts.fence?.(sql.raw);
      // The views may be older than this pass: place only on workers still online and not
      // drained (a drain or a worker going offline does not announce itself to the scheduler),
      // and whose address pools and their use are still those the plan counted: a stopped VM's
      // network change (or a Hello) committed since moved the worker's networkVersion. Read under
      // the workers' network lock, which those changes take too, so none commits in between.
      const targets = [...new Set(plan.placements.map((p) => p.workerId))];
      await lockWorkerNetworks(sql, targets);
      const versions = await usableWorkers(sql, targets);
      const usable = new Set(targets.filter((id) => versions.get(id) === (workerById.get(id)!.networkVersion ?? 0)));
      // Custom MACs (issue 18): the holders this plan saw were read before this transaction. A
      // MAC change through the API moves the version above; the holders are read again here all
      // the same (one query, only for placements with a custom MAC), whoever wrote them.
      const withMac = plan.placements.filter((p) => instanceMac(byId.get(p.vmId)!));
      let held = new Set<string>();
      if (withMac.length > 0) {
        const macWorkers = [...new Set(withMac.map((p) => p.workerId))];
        held = await macsHeldOn(sql, macWorkers, [...new Set(withMac.map((p) => instanceMac(byId.get(p.vmId)!)))]);
      }
      const allocations: { id: string; vmId: string; attempt: number; workerId: string; cpus: number; memoryMib: number; macos: boolean; networkMode: string; mac: string; createdAt: Date }[] = [];
      for (const p of plan.placements) {
        const vm = byId.get(p.vmId)!;
        const worker = workerById.get(p.workerId)!;
        if (!usable.has(worker.id)) {
          doubt = true; // the views are stale: the next pass reloads them and places the VM where there is room
          continue;
        }
        const mac = instanceMac(vm);
        if (mac && held.has(`${worker.id}/${mac}`)) {
          doubt = true; // taken meanwhile: the next pass reads the holders again
          continue;
        }
        const attempt = vm.attempt + 1;
        const reason = `placed on ${worker.name}; waiting for the worker to start it`;
        // Plain SQL (storage/vm-rows.ts): one of the per-VM statements of issue 20.
        const change = { state: 'scheduled', workerId: worker.id, attempt, scheduledAt: now, runningAt: null, reason, ip: null, updatedAt: now };
        if (!(await updateVmIf(sql, { id: vm.id, state: 'pending', attempt: vm.attempt }, change))) {
          doubt = true; // deleted or changed since we loaded it
          continue;
        }
        const networkMode = networkModeOf(vm.networkMode);
        // The instance holds an address of its mode's network and its custom MAC (none without a NIC).
        allocations.push({ id: newRowId(), vmId: vm.id, attempt, workerId: worker.id, cpus: vm.cpus, memoryMib: vm.memoryMib, macos: vm.os === 'macos', networkMode, mac, createdAt: now });
        const placed: Vm = { ...vm, ...change };
        placedVms.push(placed);
        events.push(vmEvent(placed, 'vm.state', `pending → scheduled on ${worker.name} (attempt ${attempt})`, 'scheduler', { from: 'pending', to: 'scheduled', worker: worker.name }));
        dirty.add(worker.id);
      }
      // Raw multi-row INSERT: createMany would run Prisma's query compiler at every pass.
      await insertRows(sql.raw, this.provider, 'Allocation', allocations);
      await this.events.append(events, sql.raw);
      // Urgent: the pass commits right after planning, not after the rest of the event loop's turn
      // (the VMs waiting for the next pass wait for this one).
    }, { urgent: true });

    // Committed: the queue and the views follow (what a reload would now read).
    for (const vm of placedVms) {
      this.pending.delete(vm.id);
      const w = workerById.get(vm.workerId!);
      if (w) w.used = addUse(w.used, vm);
    }
    if (doubt) {
      // Changed under us: drop what we cannot trust and reload before the next plan.
      const placedIds = new Set(placedVms.map((v) => v.id));
      for (const p of plan.placements) if (!placedIds.has(p.vmId)) this.pending.delete(p.vmId);
      this.reloadNeeded = true;
      this.again = true;
    }

    // The placements are committed: announce them (watchers, desired-state pushes) before
    // anything else can fail, so a failure below never leaves a placement no worker hears of.
    this.events.publish(events);
    for (const vm of placedVms) {
      // First placements only: a restarted VM's creation time says nothing about the scheduler.
      if (vm.attempt === 1) this.metrics.schedulingLatency.observe((now.getTime() - vm.createdAt.getTime()) / 1000);
      this.bus.vmChanged({ type: 'MODIFIED', vm });
    }
    this.metrics.placements.inc(placedVms.length);
    for (const w of dirty) this.bus.desiredStateChanged(w);

    // Pending reasons are written only when they change (a 10,000-VM queue would otherwise rewrite every row per pass).
    // A failure here is retried by the next pass, which compares against the rows again.
    const reasonUpdates = [...plan.pending].filter(([id, reason]) => byId.get(id)?.reason !== reason);
    if (reasonUpdates.length > 0) {
      await this.db.$transaction(async (tx) => {
        for (const [id, reason] of reasonUpdates) await tx.vm.updateMany({ where: { id, state: 'pending' }, data: { reason } });
      });
    }
    for (const [id, reason] of reasonUpdates) {
      const vm = byId.get(id);
      if (!vm) continue;
      const updated = { ...vm, reason };
      this.pending.set(id, updated);
      if (this.bus.vmWatchers > 0) this.bus.vmChanged({ type: 'MODIFIED', vm: updated });
    }
    this.metrics.schedulerPass.observe(Number(process.hrtime.bigint() - started) / 1e9);
    if (placedVms.length > 0) this.log.debug({ placed: placedVms.length, pending: plan.pending.size }, 'scheduler pass');
    return placedVms.length;
  }
}

/** The operator's MAC the VM's instance holds on its worker; '' if none (no custom MAC, or no NIC). */
function instanceMac(vm: Pick<Vm, 'customMac' | 'networkMode'>): string {
  return networkModeOf(vm.networkMode) === 'none' ? '' : vm.customMac;
}

/** A worker's use with one more instance of `vm` (what its new Allocation adds; see loadWorkerUse). */
function addUse(used: WorkerView['used'], vm: Vm): WorkerView['used'] {
  const mode = networkModeOf(vm.networkMode);
  return {
    cpus: used.cpus + vm.cpus,
    memoryMib: used.memoryMib + vm.memoryMib,
    vms: used.vms + 1,
    macosVms: used.macosVms + (vm.os === 'macos' ? 1 : 0),
    natAddresses: (used.natAddresses ?? 0) + (mode === 'nat' ? 1 : 0),
    hostOnlyAddresses: (used.hostOnlyAddresses ?? 0) + (mode === 'host-only' ? 1 : 0),
  };
}

function toPendingView(vm: Vm): PendingVmView {
  const mac = instanceMac(vm);
  return {
    id: vm.id,
    name: vm.name,
    priority: vm.priority,
    createdAtMs: vm.createdAt.getTime(),
    cpus: vm.cpus,
    memoryMib: vm.memoryMib,
    os: vm.os === 'macos' ? 'macos' : 'linux',
    selector: parseLabels(vm.selector),
    driver: vm.driver,
    imageDigest: vm.imageDigest,
    networkMode: networkModeOf(vm.networkMode),
    ...(mac ? { mac } : {}),
  };
}

/**
 * Sets `macs` on the workers where an instance holds one of `wanted`: every allocation (any
 * power state, failed and deleting VMs included until the worker confirms the instance gone).
 */
async function attachMacHolders(db: FleetDb, workers: WorkerView[], wanted: ReadonlySet<string>): Promise<void> {
  const held = await db.allocation.findMany({ where: { mac: { in: [...wanted] } }, select: { workerId: true, mac: true, vmId: true } });
  if (held.length === 0) return;
  const names = new Map((await db.vm.findMany({ where: { id: { in: [...new Set(held.map((h) => h.vmId))] } }, select: { id: true, name: true } })).map((v) => [v.id, v.name]));
  const byWorker = new Map<string, Map<string, string>>();
  for (const h of held) {
    let m = byWorker.get(h.workerId);
    if (!m) byWorker.set(h.workerId, (m = new Map()));
    m.set(h.mac, names.get(h.vmId) ?? h.vmId);
  }
  for (let i = 0; i < workers.length; i++) {
    const m = byWorker.get(workers[i]!.id);
    if (m) workers[i] = { ...workers[i]!, macs: m };
  }
}

export type { WorkerView };
