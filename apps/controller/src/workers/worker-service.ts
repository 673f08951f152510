// Workers: what they told us in their Hello, whether they are alive, and what
// operators do to them (drain, resume, delete). Liveness is tracked in memory
// (a heartbeat must not cost a database write); the database gets the
// online/offline transitions and a periodic lastSeenAt flush. The timeline of a
// silent worker (suspect → fenced by itself → lost) is in failure-timing.ts.
// Every transition is written to the database first and recorded in memory only
// once the write committed: a failed write (disk full) is simply retried by the
// next tick, so memory and database never disagree for long.
import type { FleetDb, Worker } from '@fleet/db';
import type { Logger } from 'pino';
import type { EventLog } from '../events/event-log.ts';
import type { FleetBus } from '../fleet-bus.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { VmService } from '../vms/vm-service.ts';
import { conflict, notFound } from '../errors.ts';
import { loadCertificateExpiry, loadWorkerUse, toWorkerObject } from './worker-views.ts';
import type { WorkerObject } from '../api/schemas.ts';
import type { FailureTimings } from './failure-timing.ts';

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
}

/** The capacity part of a Hello (and of a CapacityUpdate). */
export type WorkerCapacity = Pick<HelloInfo, 'cpus' | 'memoryMib' | 'vmSlots' | 'macosSlots' | 'natAddresses'>;

interface Liveness {
  name: string;
  lastSeenMs: number;
  online: boolean;
  connected: boolean;
  /** lastSeenMs not yet written to the database */
  dirty: boolean;
  /** Its live VMs have been marked `unknown` (silent past suspectAfter); cleared by a Hello. */
  suspect: boolean;
}

/** Workers retry with backoff capped at 30 s (apps/worker/src/link/backoff.ts). */
export const WORKER_MAX_RECONNECT_BACKOFF_MS = 30_000;

export interface WorkerServiceOptions {
  /** suspectAfter, fenceAfter (told to workers), lostAfter: failure-timing.ts. */
  timings: FailureTimings;
  /**
   * Extra time a worker that was online before a controller (re)start gets to
   * reconnect: while the controller was down its backoff grew, so it may take up
   * to the backoff cap to try again. Default: the workers' backoff cap.
   */
  startupGraceMs?: number;
  /** Called when a worker must be disconnected (deleted, or silent too long). */
  disconnect: (workerId: string, reason: string) => void;
}

export class WorkerService {
  private readonly liveness = new Map<string, Liveness>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: FleetDb,
    private readonly events: EventLog,
    private readonly bus: FleetBus,
    private readonly vms: VmService,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly opts: WorkerServiceOptions,
  ) {}

  /** Workers recorded online by a previous controller run are offline until they reconnect. */
  async start(tickMs = 1000): Promise<void> {
    const stale = await this.db.worker.findMany({ where: { OR: [{ status: 'online' }, { connected: true }] } });
    // Give every worker that was online the offline timeout plus its longest
    // reconnect backoff before its VMs fail: a controller restart must not fail VMs.
    const seenUntil = Date.now() + (this.opts.startupGraceMs ?? WORKER_MAX_RECONNECT_BACKOFF_MS);
    for (const w of stale) {
      this.liveness.set(w.id, { name: w.name, lastSeenMs: seenUntil, online: true, connected: false, dirty: false, suspect: false });
    }
    await this.db.worker.updateMany({ data: { connected: false } });
    this.timer = setInterval(() => void this.tick().catch((err) => this.log.error({ err }, 'liveness tick failed')), tickMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  isOnline = (workerId: string): boolean => this.liveness.get(workerId)?.online ?? false;
  isConnected = (workerId: string): boolean => this.liveness.get(workerId)?.connected ?? false;

  // ---------------------------------------------------------------- stream events

  async onHello(worker: Worker, hello: HelloInfo): Promise<void> {
    const wasOnline = this.isOnline(worker.id);
    await this.db.worker.update({
      where: { id: worker.id },
      data: {
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
        connected: true,
        status: 'online',
        lastSeenAt: new Date(),
      },
    });
    this.liveness.set(worker.id, { name: worker.name, lastSeenMs: Date.now(), online: true, connected: true, dirty: false, suspect: false });
    await this.events.append([
      {
        kind: wasOnline ? 'worker.connected' : 'worker.online',
        message: `worker ${worker.name} connected (${hello.os}/${hello.arch}, ${hello.cpus} CPUs, ${hello.memoryMib} MiB, ${hello.vmSlots} VM slots${hello.natAddresses > 0 ? `, ${hello.natAddresses} VM addresses` : ''}, version ${hello.version || 'unknown'})`,
        workerId: worker.id,
        actor: `worker:${worker.name}`,
      },
    ]);
    this.bus.scheduleRequested();
  }

  /** The worker offers a different capacity now (e.g. its macOS slots are taken by VMs outside Fleet). */
  async onCapacityUpdate(worker: Worker, capacity: WorkerCapacity, reason: string): Promise<void> {
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

  onHeartbeat(workerId: string): void {
    const l = this.liveness.get(workerId);
    if (l) {
      l.lastSeenMs = Date.now();
      l.dirty = true;
    }
  }

  async onDisconnect(workerId: string): Promise<void> {
    const l = this.liveness.get(workerId);
    if (!l || !l.connected) return;
    l.connected = false;
    // Stay "online" until the heartbeat timeout: a network blip must not fail every VM.
    await this.db.worker.updateMany({ where: { id: workerId }, data: { connected: false } });
    await this.events.append([{ kind: 'worker.disconnected', level: 'warn', message: `worker ${l.name} disconnected`, workerId, actor: 'controller' }]);
  }

  /** Suspect / lost detection and lastSeenAt flush. Exposed for tests. */
  async tick(now = Date.now()): Promise<void> {
    const seen: { id: string; at: Date; l: Liveness }[] = [];
    const t = this.opts.timings;
    for (const [id, l] of this.liveness) {
      if (l.dirty) seen.push({ id, at: new Date(l.lastSeenMs), l });
      const silentMs = now - l.lastSeenMs;
      // One worker's failing write must not hold up the others; it is retried next tick.
      try {
        if (l.online && !l.suspect && silentMs > t.suspectAfterMs) {
          const why = l.connected ? `no heartbeat for ${Math.round(silentMs / 1000)}s` : 'its connection is lost';
          await this.vms.markWorkerUnreachable(id, `worker ${l.name} unreachable (${why}); the VM may still be running there`);
          l.suspect = true;
        }
        if (l.online && silentMs > t.lostAfterMs) await this.markLost(id, l, silentMs);
      } catch (err) {
        this.log.error({ err, worker: l.name }, 'worker liveness transition failed; retrying');
      }
    }
    if (seen.length > 0) {
      try {
        await this.db.$transaction(async (tx) => {
          for (const s of seen) await tx.worker.updateMany({ where: { id: s.id }, data: { lastSeenAt: s.at } });
        });
        for (const s of seen) if (s.l.lastSeenMs === s.at.getTime()) s.l.dirty = false;
      } catch (err) {
        this.log.warn({ err }, 'could not record when workers were last seen; retrying');
      }
    }
    this.refreshGauges();
  }

  /** lostAfter passed: offline, and its "reschedule" VMs fail (the worker has fenced them by now). */
  private async markLost(id: string, l: Liveness, silentMs: number): Promise<void> {
    const silentS = Math.round(silentMs / 1000);
    this.log.warn({ worker: l.name, silentS }, 'worker lost');
    if (l.connected) this.opts.disconnect(id, 'no heartbeat within the offline timeout');
    await this.db.worker.updateMany({ where: { id }, data: { status: 'offline', connected: false } });
    const failed = await this.vms.handleLostWorker(id, l.name, silentS);
    await this.events.append([{ kind: 'worker.offline', level: 'warn', message: `worker ${l.name} is offline (no heartbeat for ${silentS}s)`, workerId: id }]);
    l.online = false;
    l.connected = false;
    if (failed > 0) this.bus.scheduleRequested();
  }

  private refreshGauges(): void {
    let online = 0;
    for (const l of this.liveness.values()) if (l.online) online++;
    this.metrics.workersByStatus.set({ status: 'online' }, online);
  }

  // ---------------------------------------------------------------- operator actions

  async getByName(name: string): Promise<Worker> {
    const w = await this.db.worker.findUnique({ where: { name } });
    if (!w) throw notFound('worker', name);
    return w;
  }

  async view(w: Worker): Promise<WorkerObject> {
    const [use, expiry] = await Promise.all([loadWorkerUse(this.db, w.id), loadCertificateExpiry(this.db, w.id)]);
    return toWorkerObject(w, use.get(w.id), this.isOnline(w.id), this.isConnected(w.id), expiry.get(w.id));
  }

  async list(): Promise<WorkerObject[]> {
    const [workers, use, expiry] = await Promise.all([this.db.worker.findMany({ orderBy: { name: 'asc' } }), loadWorkerUse(this.db), loadCertificateExpiry(this.db)]);
    return workers.map((w) => toWorkerObject(w, use.get(w.id), this.isOnline(w.id), this.isConnected(w.id), expiry.get(w.id)));
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
      if (this.isOnline(w.id)) {
        throw conflict(
          `worker ${name} is ${this.isConnected(w.id) ? 'connected' : 'not lost yet'}: its VMs may still be running there and would run twice if re-placed now. ` +
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
    this.liveness.delete(w.id);
    await this.vms.forgetWorker(w.id, w.name, actor);
    await this.db.worker.delete({ where: { id: w.id } });
    await this.events.append([{ kind: 'worker.deleted', level: 'warn', message: `worker ${name} deleted by ${actor}; its credential is revoked`, workerId: w.id, actor }]);
  }
}
