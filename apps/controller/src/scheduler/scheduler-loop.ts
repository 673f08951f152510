// Runs the placement planner against the database: loads pending VMs and the
// workers' free capacity, plans, then commits each placement with a conditional
// update (only a VM still pending is placed) and its Allocation in one
// transaction. Passes never overlap; a request during a pass runs one more pass.
// A failed pass (the database is unavailable) is retried after a capped, jittered
// backoff; requests meanwhile wait for that retry instead of hammering the database.
import { randomUUID } from 'node:crypto';
import type { FleetDb, Prisma, Vm } from '@fleet/db';
import type { Logger } from 'pino';
import { planPlacements, type PendingVmView, type SchedulerProfile, type WorkerView } from './placement.ts';
import type { EventLog, NewEvent } from '../events/event-log.ts';
import type { FleetBus } from '../fleet-bus.ts';
import type { Metrics } from '../observability/metrics.ts';
import { vmEvent } from '../vms/vm-service.ts';
import { networkModeOf, parseLabels } from '../vms/vm-view.ts';
import { loadWorkerViews } from '../workers/worker-views.ts';
import { loadImageHoldings } from '../images/worker-image-service.ts';
import { backoffDelayMs, errorFields, type BackoffOptions, type ErrorSink } from '../storage/backoff.ts';

/** Retries of a failed pass: 500 ms, 1 s, 2 s, ... at most 15 s apart (jittered). */
export const SCHEDULER_RETRY_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 15_000 };

export interface SchedulerLoopOptions {
  /** Told about every failed pass (the storage-health tracker). */
  sink?: ErrorSink;
  backoff?: Partial<BackoffOptions>;
  /** The leader's fence, checked in every placement transaction (several controllers, issue 13). */
  fence?: (tx: Prisma.TransactionClient) => Promise<void>;
  /** false: wait for start() (the controller starts it when it becomes the leader). */
  startNow?: boolean;
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
    this.unsubscribe = this.bus.onScheduleRequest(() => this.trigger());
    this.timer = setInterval(() => this.trigger(), this.intervalMs);
    this.timer.unref();
    this.trigger();
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe();
    this.unsubscribe = () => undefined;
    clearInterval(this.timer);
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
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
    setImmediate(() => void this.loop());
  }

  /** Run now even while backing off (the storage is back). */
  retryNow(): void {
    if (!this.retryTimer) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.trigger();
  }

  private async loop(): Promise<void> {
    try {
      do {
        this.again = false;
        await this.passOnce();
      } while (this.again && !this.stopped);
      if (this.failures > 0) this.log.info({ failures: this.failures }, 'scheduler passes work again');
      this.failures = 0;
    } catch (err) {
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

  /** One pass; exported for tests. Returns the number of placements. */
  async passOnce(): Promise<number> {
    const started = process.hrtime.bigint();
    const pendingRows = await this.db.vm.findMany({ where: { state: 'pending' } });
    this.metrics.pendingVms.set(pendingRows.length);
    if (pendingRows.length === 0) return 0;
    const workers = await loadWorkerViews(this.db);
    // Image locality (issue 15): the workers holding the pending VMs' images, one query per pass.
    const digests = new Set<string>();
    for (const v of pendingRows) if (v.imageDigest) digests.add(v.imageDigest);
    const images = digests.size > 0 ? await loadImageHoldings(this.db, digests) : undefined;
    // Issue 18: where the pending VMs' custom MACs are already held (one query, only when asked).
    const macs = new Set<string>();
    for (const v of pendingRows) if (v.customMac && v.networkMode !== 'none') macs.add(v.customMac);
    if (macs.size > 0) await attachMacHolders(this.db, workers, macs);
    const plan = planPlacements(pendingRows.map(toPendingView), workers, await this.profile(), images);
    const byId = new Map(pendingRows.map((v) => [v.id, v]));
    const workerById = new Map(workers.map((w) => [w.id, w]));
    const now = new Date();
    const events: NewEvent[] = [];
    const placedVms: Vm[] = [];
    const dirty = new Set<string>();

    await this.db.$transaction(async (tx) => {
      await this.opts.fence?.(tx);
      const allocations: { id: string; vmId: string; attempt: number; workerId: string; cpus: number; memoryMib: number; macos: boolean; networkMode: string; mac: string }[] = [];
      for (const p of plan.placements) {
        const vm = byId.get(p.vmId)!;
        const worker = workerById.get(p.workerId)!;
        const attempt = vm.attempt + 1;
        const reason = `placed on ${worker.name}; waiting for the worker to start it`;
        const res = await tx.vm.updateMany({
          where: { id: vm.id, state: 'pending', attempt: vm.attempt },
          data: { state: 'scheduled', workerId: worker.id, attempt, scheduledAt: now, runningAt: null, reason, ip: null },
        });
        if (res.count === 0) continue; // deleted or changed since we loaded it
        const networkMode = networkModeOf(vm.networkMode);
        // The instance holds an address of its mode's network and its custom MAC (none without a NIC).
        allocations.push({ id: randomUUID(), vmId: vm.id, attempt, workerId: worker.id, cpus: vm.cpus, memoryMib: vm.memoryMib, macos: vm.os === 'macos', networkMode, mac: networkMode === 'none' ? '' : vm.customMac });
        const placed = { ...vm, state: 'scheduled', workerId: worker.id, attempt, scheduledAt: now, reason, updatedAt: now };
        placedVms.push(placed);
        events.push(vmEvent(placed, 'vm.state', `pending → scheduled on ${worker.name} (attempt ${attempt})`, 'scheduler', { from: 'pending', to: 'scheduled', worker: worker.name }));
        dirty.add(worker.id);
      }
      if (allocations.length > 0) await tx.allocation.createMany({ data: allocations });
      await this.events.append(events, tx);
    });

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
    if (this.bus.vmWatchers > 0) {
      for (const [id, reason] of reasonUpdates) {
        const vm = byId.get(id);
        if (vm) this.bus.vmChanged({ type: 'MODIFIED', vm: { ...vm, reason } });
      }
    }
    this.metrics.schedulerPass.observe(Number(process.hrtime.bigint() - started) / 1e9);
    if (placedVms.length > 0) this.log.debug({ placed: placedVms.length, pending: plan.pending.size }, 'scheduler pass');
    return placedVms.length;
  }
}

function toPendingView(vm: Vm): PendingVmView {
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
    ...(vm.customMac && vm.networkMode !== 'none' ? { mac: vm.customMac } : {}),
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
