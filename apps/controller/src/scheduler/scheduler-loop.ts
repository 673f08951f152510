// Runs the placement planner against the database: loads pending VMs and the
// workers' free capacity, plans, then commits each placement with a conditional
// update (only a VM still pending is placed) and its Allocation in one
// transaction. Passes never overlap; a request during a pass runs one more pass.
import { randomUUID } from 'node:crypto';
import type { FleetDb, Vm } from '@fleet/db';
import type { Logger } from 'pino';
import { planPlacements, type PendingVmView, type SchedulerProfile, type WorkerView } from './placement.ts';
import type { EventLog, NewEvent } from '../events/event-log.ts';
import type { FleetBus } from '../fleet-bus.ts';
import type { Metrics } from '../observability/metrics.ts';
import { vmEvent } from '../vms/vm-service.ts';
import { parseLabels } from '../vms/vm-view.ts';
import { loadWorkerViews } from '../workers/worker-views.ts';

export class SchedulerLoop {
  private running = false;
  private again = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly db: FleetDb,
    private readonly events: EventLog,
    private readonly bus: FleetBus,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly profile: () => Promise<SchedulerProfile>,
    private readonly isOnline: (workerId: string) => boolean,
    intervalMs: number,
  ) {
    this.unsubscribe = bus.onScheduleRequest(() => this.trigger());
    this.timer = setInterval(() => this.trigger(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe();
    clearInterval(this.timer);
  }

  /** Ask for a pass soon; bursts of requests (e.g. 1,000 creates) coalesce into few passes. */
  trigger(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    setImmediate(() => void this.loop());
  }

  private async loop(): Promise<void> {
    try {
      do {
        this.again = false;
        await this.passOnce();
      } while (this.again && !this.stopped);
    } catch (err) {
      this.log.error({ err }, 'scheduler pass failed; retrying on the next tick');
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
    const workers = await loadWorkerViews(this.db, this.isOnline);
    const plan = planPlacements(pendingRows.map(toPendingView), workers, await this.profile());
    const byId = new Map(pendingRows.map((v) => [v.id, v]));
    const workerById = new Map(workers.map((w) => [w.id, w]));
    const now = new Date();
    const events: NewEvent[] = [];
    const placedVms: Vm[] = [];
    const dirty = new Set<string>();

    await this.db.$transaction(async (tx) => {
      const allocations: { id: string; vmId: string; attempt: number; workerId: string; cpus: number; memoryMib: number; macos: boolean }[] = [];
      for (const p of plan.placements) {
        const vm = byId.get(p.vmId)!;
        const worker = workerById.get(p.workerId)!;
        const attempt = vm.attempt + 1;
        const reason = `placed on ${worker.name}; waiting for the worker to start it`;
        const res = await tx.vm.updateMany({
          where: { id: vm.id, state: 'pending', attempt: vm.attempt },
          data: { state: 'scheduled', workerId: worker.id, attempt, scheduledAt: now, reason, ip: null },
        });
        if (res.count === 0) continue; // deleted or changed since we loaded it
        allocations.push({ id: randomUUID(), vmId: vm.id, attempt, workerId: worker.id, cpus: vm.cpus, memoryMib: vm.memoryMib, macos: vm.os === 'macos' });
        const placed = { ...vm, state: 'scheduled', workerId: worker.id, attempt, scheduledAt: now, reason, updatedAt: now };
        placedVms.push(placed);
        events.push(vmEvent(placed, 'vm.state', `pending → scheduled on ${worker.name} (attempt ${attempt})`, 'scheduler', { from: 'pending', to: 'scheduled', worker: worker.name }));
        dirty.add(worker.id);
      }
      if (allocations.length > 0) await tx.allocation.createMany({ data: allocations });
      await this.events.append(events, tx);
    });

    // Pending reasons are written only when they change (a 10,000-VM queue would otherwise rewrite every row per pass).
    const reasonUpdates = [...plan.pending].filter(([id, reason]) => byId.get(id)?.reason !== reason);
    if (reasonUpdates.length > 0) {
      await this.db.$transaction(async (tx) => {
        for (const [id, reason] of reasonUpdates) await tx.vm.updateMany({ where: { id, state: 'pending' }, data: { reason } });
      });
    }

    this.events.publish(events);
    for (const vm of placedVms) {
      // First placements only: a restarted VM's creation time says nothing about the scheduler.
      if (vm.attempt === 1) this.metrics.schedulingLatency.observe((now.getTime() - vm.createdAt.getTime()) / 1000);
      this.bus.vmChanged({ type: 'MODIFIED', vm });
    }
    if (this.bus.vmWatchers > 0) {
      for (const [id, reason] of reasonUpdates) {
        const vm = byId.get(id);
        if (vm) this.bus.vmChanged({ type: 'MODIFIED', vm: { ...vm, reason } });
      }
    }
    this.metrics.placements.inc(placedVms.length);
    for (const w of dirty) this.bus.desiredStateChanged(w);
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
  };
}

export type { WorkerView };
