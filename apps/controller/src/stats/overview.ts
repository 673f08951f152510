// The fleet at a glance, computed from the database and the workers' liveness:
// what the dashboard's overview page shows and its live stream pushes.
import type { FleetDb } from '@fleet/db';
import type { WorkerObject, FleetOverview } from '../api/schemas.ts';
import { toEventObject } from '../api/routes/event-routes.ts';

export interface OverviewSources {
  db: FleetDb;
  listWorkers(): Promise<WorkerObject[]>;
  now?: () => Date;
}

const RECENT_FAILURES = 8;

export function summarizeWorkers(workers: readonly WorkerObject[]): Pick<FleetOverview, 'workers' | 'slots'> {
  const counts = { total: workers.length, online: 0, offline: 0, draining: 0 };
  const vm = { used: 0, total: 0, schedulable: 0 };
  const macos = { used: 0, total: 0, schedulable: 0 };
  for (const w of workers) {
    if (w.status === 'online') counts.online++;
    else counts.offline++;
    if (w.paused) counts.draining++;
    if (w.status !== 'online') continue;
    vm.used += w.used.vms;
    vm.total += w.capacity.vmSlots;
    macos.used += w.used.macosVms;
    macos.total += w.capacity.macosSlots;
    if (!w.paused) {
      // A worker with a finite pool of VM addresses takes no more VMs than it has addresses.
      const limit = w.capacity.natAddresses > 0 ? Math.min(w.capacity.vmSlots, w.capacity.natAddresses) : w.capacity.vmSlots;
      vm.schedulable += Math.max(0, limit - w.used.vms);
      macos.schedulable += Math.max(0, w.capacity.macosSlots - w.used.macosVms);
    }
  }
  return { workers: counts, slots: { vm, macos } };
}

export async function computeOverview(src: OverviewSources): Promise<FleetOverview> {
  const now = (src.now ?? (() => new Date()))();
  const [workers, byState, oldest, pendingCount, failures] = await Promise.all([
    src.listWorkers(),
    src.db.vm.groupBy({ by: ['state'], _count: { _all: true } }),
    src.db.vm.findFirst({ where: { state: 'pending' }, orderBy: { createdAt: 'asc' }, select: { name: true, createdAt: true, reason: true } }),
    src.db.vm.count({ where: { state: 'pending' } }),
    src.db.event.findMany({ where: { level: 'error' }, orderBy: { id: 'desc' }, take: RECENT_FAILURES }),
  ]);
  // Events a worker reported about a VM carry its id only: name them for the reader.
  const unnamed = [...new Set(failures.filter((e) => !e.vmName && e.vmId).map((e) => e.vmId!))];
  const names = new Map(unnamed.length ? (await src.db.vm.findMany({ where: { id: { in: unnamed } }, select: { id: true, name: true } })).map((v) => [v.id, v.name]) : []);
  const recentFailures = failures.map((e) => toEventObject(e.vmName || !e.vmId ? e : { ...e, vmName: names.get(e.vmId) ?? null }));
  const vmsByState: Record<string, number> = {};
  for (const row of byState) vmsByState[row.state] = row._count._all;
  return {
    at: now.toISOString(),
    ...summarizeWorkers(workers),
    vmsByState,
    pending: {
      count: pendingCount,
      oldestName: oldest?.name ?? null,
      oldestWaitSeconds: oldest ? Math.max(0, (now.getTime() - oldest.createdAt.getTime()) / 1000) : null,
      oldestReason: oldest?.reason ?? null,
    },
    recentFailures,
  };
}
