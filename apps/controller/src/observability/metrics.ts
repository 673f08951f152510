// Prometheus metrics (prom-client), served at GET /metrics. One registry per
// controller instance so tests can run several controllers in one process.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Vm } from '@fleet/db';

export class Metrics {
  readonly registry = new Registry();
  readonly vmsCreated = new Counter({ name: 'fleet_vms_created_total', help: 'VMs created through the API', registers: [this.registry] });
  readonly vmFailures = new Counter({ name: 'fleet_vm_failures_total', help: 'VM transitions to failed', registers: [this.registry] });
  readonly placements = new Counter({ name: 'fleet_vm_placements_total', help: 'VMs placed on a worker by the scheduler', registers: [this.registry] });
  readonly schedulingLatency = new Histogram({
    name: 'fleet_scheduling_latency_seconds',
    help: 'Time from creating a VM to its first placement on a worker',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly startLatency = new Histogram({
    name: 'fleet_vm_start_latency_seconds',
    help: 'Time from placement to the worker reporting the VM running',
    buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
    registers: [this.registry],
  });
  readonly schedulerPass = new Histogram({
    name: 'fleet_scheduler_pass_seconds',
    help: 'Duration of one scheduler pass (load, plan, commit)',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [this.registry],
  });
  readonly vmsByState = new Gauge({ name: 'fleet_vms', help: 'VMs by state', labelNames: ['state'] as const, registers: [this.registry] });
  readonly workersByStatus = new Gauge({ name: 'fleet_workers', help: 'Workers by status', labelNames: ['status'] as const, registers: [this.registry] });
  readonly connectedWorkers = new Gauge({ name: 'fleet_worker_streams', help: 'Open worker Connect streams', registers: [this.registry] });
  readonly pendingVms = new Gauge({ name: 'fleet_pending_vms', help: 'VMs waiting for placement', registers: [this.registry] });
  readonly storageAvailable = new Gauge({ name: 'fleet_storage_available', help: '1 while the database takes writes, 0 while it fails (disk full, I/O error, unreachable, ...)', registers: [this.registry] });
  readonly controllerLeader = new Gauge({ name: 'fleet_controller_leader', help: '1 while this controller holds the leader lease (runs the scheduler and liveness), 0 otherwise', registers: [this.registry] });
  readonly leadershipChanges = new Counter({ name: 'fleet_leadership_changes_total', help: 'Times this controller became leader (to="leader") or stopped being one (to="follower")', labelNames: ['to'] as const, registers: [this.registry] });
  readonly clusterNotifications = new Counter({ name: 'fleet_cluster_notifications_total', help: 'Change notifications between controllers (PostgreSQL NOTIFY), by direction', labelNames: ['direction'] as const, registers: [this.registry] });
  readonly forwardedSessions = new Counter({ name: 'fleet_forwarded_sessions_total', help: 'Sessions relayed to the controller holding the worker stream', registers: [this.registry] });
  readonly storageErrors = new Counter({ name: 'fleet_storage_errors_total', help: 'Storage faults seen (by kind: disk-full, io-error, locked, read-only, unreachable, ...)', labelNames: ['kind'] as const, registers: [this.registry] });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  observeStart(vm: Pick<Vm, 'scheduledAt'>, now: Date): void {
    if (vm.scheduledAt) this.startLatency.observe((now.getTime() - vm.scheduledAt.getTime()) / 1000);
  }
}
