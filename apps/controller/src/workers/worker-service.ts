// Workers: what they told us in their Hello, whether they are alive, and what
// operators do to them (drain, resume, delete). Every controller records the
// workers whose streams it holds (Hello, heartbeats, disconnects) in the
// database; only the leader judges liveness from those rows (liveness-monitor.ts),
// so leadership changes and controllers on several hosts never disagree about
// which workers are alive (issue 13).
import { directSqlIn, type FleetDb, type Worker } from '@fleet/db';
import type { Logger } from 'pino';
import type { EventLog } from '../events/event-log.ts';
import type { FleetBus } from '../fleet-bus.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { VmService } from '../vms/vm-service.ts';
import { conflict, notFound } from '../errors.ts';
import { loadCertificateExpiry, loadWorkerUse, toWorkerObject } from './worker-views.ts';
import type { WorkerObject } from '../api/schemas.ts';
import type { FailureTimings } from './failure-timing.ts';
import type { ErrorSink } from '../storage/backoff.ts';
import type { Fence } from '../cluster/leadership.ts';
import { HeartbeatRecorder, heartbeatBatchWindowMs } from './heartbeat-recorder.ts';
import { lockWorkerNetworks } from '../storage/allocation-rows.ts';
import type { WorkerNetwork } from './worker-networks.ts';
import { LivenessMonitor } from './liveness-monitor.ts';
export interface HelloInfo {
  protocolVersion: number;
  version: string;
  hostname: string;
  machineId: string;
  os: string;
  arch: string;
  cpus: number;
  memoryMib: number;
  vmSlots: number;
  macosSlots: number;
  /** VM addresses the worker's NAT network can hand out (one per instance it holds); 0 = not limited. */
  natAddresses: number;
  labels: Record<string, string>;
  drivers: string[];
  /** The VM networks the worker offers (issue 18), validated (grpc/worker-input.ts); [] = NAT only. */
  networks: WorkerNetwork[];
}

/** The capacity part of a Hello (and of a CapacityUpdate). */
export type WorkerCapacity = Pick<HelloInfo, 'cpus' | 'memoryMib' | 'vmSlots' | 'macosSlots' | 'natAddresses'>;

/** Workers retry with backoff capped at 30 s (apps/worker/src/link/backoff.ts). */
export const WORKER_MAX_RECONNECT_BACKOFF_MS = 30_000;

export interface WorkerServiceOptions {
  /** suspectAfter, fenceAfter (told to workers), lostAfter: failure-timing.ts. */
  timings: FailureTimings;
  /** This controller (Worker.controllerId of the streams it holds). */
  controllerId: string;
  /**
   * Extra time every online worker gets when a controller becomes the leader (at start, or after
   * a failover): it cannot know how long they were silent before, and while no controller answered
   * their reconnect backoff grew up to its cap. Default: the workers' backoff cap.
   */
  startupGraceMs?: number;
  /** Called when a worker must be disconnected (deleted, or silent too long). */
  disconnect: (workerId: string, reason: string) => void;
  /** The leader's fence for liveness transitions (default: none, a single controller). */
  fence?: Fence;
  /** Ids of controllers alive now (several controllers); streams of the others are gone. */
  aliveControllers?: () => string[] | undefined;
  sink?: ErrorSink;
  /** A liveness transition failed (told to the leadership: a fenced write means step down). */
  onLivenessError?: (err: unknown) => void;
}

export class WorkerService {
  readonly heartbeats: HeartbeatRecorder;
  /** The leader's liveness loop (started and stopped with leadership). */
  readonly liveness: LivenessMonitor;

  constructor(
    private readonly db: FleetDb,
    private readonly events: EventLog,
    private readonly bus: FleetBus,
    private readonly vms: VmService,
    metrics: Metrics,
    log: Logger,
    private readonly opts: WorkerServiceOptions,
  ) {
    this.heartbeats = new HeartbeatRecorder(db, opts.controllerId, log.child({ component: 'heartbeats' }), {
      ...(opts.sink ? { sink: opts.sink } : {}),
      batchWindowMs: heartbeatBatchWindowMs(opts.timings.heartbeatIntervalMs),
      // Found lost (or deleted) while this controller still held its stream: make it reconnect (its Hello reconciles it).
      onNotOnline: (id) => opts.disconnect(id, 'the worker was marked offline; reconnect to be reconciled'),
    });
    this.liveness = new LivenessMonitor(db, vms, events, bus, metrics, log.child({ component: 'liveness' }), {
      timings: opts.timings,
      startupGraceMs: opts.startupGraceMs ?? WORKER_MAX_RECONNECT_BACKOFF_MS,
      fence: opts.fence ?? (async () => undefined),
      disconnect: opts.disconnect,
      ...(opts.aliveControllers ? { aliveControllers: opts.aliveControllers } : {}),
      onError: (err) => {
        opts.sink?.observe(err);
        opts.onLivenessError?.(err);
      },
    });
  }

  // ---------------------------------------------------------------- stream events

  async onHello(worker: Worker, hello: HelloInfo): Promise<void> {
    const before = await this.db.worker.findUnique({ where: { id: worker.id }, select: { status: true } });
    const wasOnline = before?.status === 'online';
    // Under the worker's network lock, moving its networkVersion: the Hello may bring other
    // address pools, and a scheduler pass planned with the old ones places nothing here.
    await this.db.$transaction(async (tx) => {
      await lockWorkerNetworks(directSqlIn(this.db, tx), [worker.id]);
      await tx.worker.update({
        where: { id: worker.id },
        data: {
          networkVersion: { increment: 1 },
          protocolVersion: hello.protocolVersion,
          version: hello.version,
          hostname: hello.hostname,
          os: hello.os,
          arch: hello.arch,
          cpus: hello.cpus,
          memoryMib: hello.memoryMib,
          vmSlots: hello.vmSlots,
          macosSlots: hello.macosSlots,
          natAddresses: hello.natAddresses,
          labels: JSON.stringify(hello.labels),
          drivers: JSON.stringify(hello.drivers),
          networks: JSON.stringify(hello.networks),
          connected: true,
          controllerId: this.opts.controllerId,
          status: 'online',
          lastSeenAt: new Date(),
        },
      });
    });
    this.liveness.heardFrom(worker.id, worker.name);
    await this.events.append([
      {
        kind: wasOnline ? 'worker.connected' : 'worker.online',
        message: `worker ${worker.name} connected (${hello.os}/${hello.arch}, ${hello.cpus} CPUs, ${hello.memoryMib} MiB, ${hello.vmSlots} VM slots${hello.natAddresses > 0 ? `, ${hello.natAddresses} VM addresses` : ''}${hello.networks.length > 0 ? `, networks ${hello.networks.map((n) => `${n.mode} ${n.subnet}`).join(', ')}` : ''}, version ${hello.version || 'unknown'})`,
        workerId: worker.id,
        actor: `worker:${worker.name}`,
      },
    ]);
    this.bus.scheduleRequested();
  }

  /** The worker offers a different capacity now (e.g. its macOS slots are taken by VMs outside Fleet). */
  async onCapacityUpdate(worker: Pick<Worker, 'id' | 'name'>, capacity: WorkerCapacity, reason: string): Promise<void> {
    await this.db.worker.update({ where: { id: worker.id }, data: capacity });
    await this.events.append([
      {
        kind: 'worker.capacity',
        level: 'warn',
        message: `worker ${worker.name} now offers ${capacity.cpus} CPUs, ${capacity.memoryMib} MiB, ${capacity.vmSlots} VM slots${capacity.natAddresses > 0 ? `, ${capacity.natAddresses} VM addresses` : ''}, ${capacity.macosSlots} macOS slots${reason ? `: ${reason}` : ''}`,
        workerId: worker.id,
        actor: `worker:${worker.name}`,
      },
    ]);
    this.bus.scheduleRequested();
  }

  /**
   * A message from the worker on a stream this controller holds. Resolves once that is recorded
   * in the database (rejects when it could not be, or the worker is not online there).
   */
  onHeartbeat(workerId: string): Promise<void> {
    this.liveness.heardFrom(workerId);
    return this.heartbeats.record(workerId);
  }

  /** This controller's stream of the worker ended (a newer stream, here or elsewhere, is left alone). */
  async onDisconnect(worker: { id: string; name: string }): Promise<void> {
    const res = await this.db.worker.updateMany({ where: { id: worker.id, controllerId: this.opts.controllerId, connected: true }, data: { connected: false } });
    if (res.count === 0) return;
    // Stays "online" until the heartbeat timeout: a network blip must not fail every VM.
    await this.events.append([{ kind: 'worker.disconnected', level: 'warn', message: `worker ${worker.name} disconnected`, workerId: worker.id, actor: 'controller' }]);
  }

  /** The controller holding the worker's stream, as recorded (null: none). */
  async streamHolder(workerId: string): Promise<string | null> {
    const w = await this.db.worker.findUnique({ where: { id: workerId }, select: { connected: true, controllerId: true } });
    return w?.connected ? w.controllerId : null;
  }

  // ---------------------------------------------------------------- operator actions

  async getByName(name: string): Promise<Worker> {
    const w = await this.db.worker.findUnique({ where: { name } });
    if (!w) throw notFound('worker', name);
    return w;
  }

  async view(w: Worker): Promise<WorkerObject> {
    const [use, expiry] = await Promise.all([loadWorkerUse(this.db, w.id), loadCertificateExpiry(this.db, w.id)]);
    return toWorkerObject(w, use.get(w.id), expiry.get(w.id));
  }

  async list(): Promise<WorkerObject[]> {
    const [workers, use, expiry] = await Promise.all([this.db.worker.findMany({ orderBy: { name: 'asc' } }), loadWorkerUse(this.db), loadCertificateExpiry(this.db)]);
    return workers.map((w) => toWorkerObject(w, use.get(w.id), expiry.get(w.id)));
  }

  async setPaused(name: string, paused: boolean, actor: string): Promise<Worker> {
    const w = await this.getByName(name);
    const updated = await this.db.worker.update({ where: { id: w.id }, data: { paused } });
    if (w.paused !== paused) {
      await this.events.append([
        {
          kind: paused ? 'worker.drained' : 'worker.resumed',
          message: paused ? `worker ${name} drained by ${actor}: keeps its VMs, gets no new ones` : `worker ${name} resumed by ${actor}`,
          workerId: w.id,
          actor,
        },
      ]);
      if (!paused) this.bus.scheduleRequested();
    }
    return updated;
  }

  /**
   * Remove a worker for good: revoke its credential, drop its stream, fail (and reschedule) its
   * VMs. Re-placing VMs that may still run on the host would run them twice, so without `force`
   * this is refused while the worker is not yet lost (it may be running them, and a cut-off worker
   * only fences them at fenceAfter) or while it holds `unknown` VMs (disconnect policy wait).
   */
  async delete(name: string, actor: string, opts: { force?: boolean } = {}): Promise<void> {
    const w = await this.getByName(name);
    if (!opts.force) {
      if (w.status === 'online') {
        throw conflict(
          `worker ${name} is ${w.connected ? 'connected' : 'not lost yet'}: its VMs may still be running there and would run twice if re-placed now. ` +
            'Drain it and delete its VMs first, wait until it is offline, or delete with force=true if the host is gone for good',
          { worker: name },
        );
      }
      const unknown = await this.vms.countUnknownOn(w.id);
      if (unknown > 0) {
        throw conflict(
          `worker ${name} holds ${unknown} VM${unknown === 1 ? '' : 's'} in state unknown (disconnect policy wait): they may still be running on that host. ` +
            'Delete with force=true only if the host is gone for good',
          { worker: name, unknownVms: unknown },
        );
      }
    }
    this.opts.disconnect(w.id, `worker deleted by ${actor}`);
    this.liveness.forget(w.id);
    await this.vms.forgetWorker(w.id, w.name, actor);
    await this.db.worker.delete({ where: { id: w.id } });
    await this.events.append([{ kind: 'worker.deleted', level: 'warn', message: `worker ${name} deleted by ${actor}; its credential is revoked`, workerId: w.id, actor }]);
  }
}
