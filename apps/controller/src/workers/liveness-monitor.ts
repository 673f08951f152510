// Worker liveness, judged by the leader only (issue 13). Any controller may hold a worker's stream
// and records its heartbeats in `Worker.lastSeenAt` (heartbeat-recorder.ts); the leader reads those
// rows every tick and notes, on its own clock, when each one last changed. Silence is measured from
// there, so clocks of different controllers never enter into it, and seeing a heartbeat late only
// makes the leader later (safer) to declare a worker lost. Heartbeats on streams the leader holds
// itself count at once.
//
// The timeline of a silent worker (suspect → fenced by itself → lost) is in failure-timing.ts.
// Every transition is a fenced transaction: a deposed leader changes nothing. A new leader (and a
// controller starting) gives every online worker `startupGraceMs` more: it cannot know how long the
// previous leader had already watched them, and their reconnect backoff may have grown.
import type { FleetDb } from '@fleet/db';
import type { Logger } from 'pino';
import type { EventLog } from '../events/event-log.ts';
import type { FleetBus } from '../fleet-bus.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { VmService } from '../vms/vm-service.ts';
import type { Fence } from '../cluster/leadership.ts';
import type { FailureTimings } from './failure-timing.ts';
import { LIVENESS_TICK_MS } from './failure-timing.ts';

interface Tracked {
  name: string;
  /** lastSeenAt as last read from the database (ms since epoch), or null; undefined = not read yet. */
  lastSeenAt: number | null | undefined;
  /** When (this controller's clock) the worker was last known alive; may lie ahead (grace). */
  aliveAtMs: number;
  connected: boolean;
  /** Its live VMs have been marked `unknown`; cleared by any sign of life. */
  suspect: boolean;
}

export interface LivenessMonitorOptions {
  timings: FailureTimings;
  startupGraceMs: number;
  fence: Fence;
  /** Close the worker's stream here, if this controller holds it. */
  disconnect: (workerId: string, reason: string) => void;
  /** Ids of controllers seen alive lately (connected flags of the others are cleared). */
  aliveControllers?: () => string[] | undefined;
  onError?: (err: unknown) => void;
  tickMs?: number;
}

export class LivenessMonitor {
  private readonly tracked = new Map<string, Tracked>();
  private timer: NodeJS.Timeout | undefined;
  private firstLoad = true;
  private active = false;
  private startedAtMs = 0;

  constructor(
    private readonly db: FleetDb,
    private readonly vms: VmService,
    private readonly events: EventLog,
    private readonly bus: FleetBus,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly opts: LivenessMonitorOptions,
  ) {}

  readonly name = 'worker liveness';

  /** On gaining leadership. `timer: false` leaves the ticks to the caller (tests). */
  start(opts: { timer?: boolean } = {}): void {
    this.tracked.clear();
    this.firstLoad = true;
    this.active = true;
    this.startedAtMs = Date.now();
    clearInterval(this.timer);
    if (opts.timer === false) return;
    this.timer = setInterval(() => void this.tick().catch((err: unknown) => this.failed(err)), this.opts.tickMs ?? LIVENESS_TICK_MS);
    this.timer.unref();
  }

  stop(): void {
    this.active = false;
    clearInterval(this.timer);
    this.timer = undefined;
    this.tracked.clear();
  }

  /** A heartbeat (or, with its name, a Hello) on a stream this controller holds. */
  heardFrom(workerId: string, name?: string): void {
    if (!this.active) return;
    const t = this.tracked.get(workerId);
    if (!t) {
      if (name !== undefined) this.tracked.set(workerId, { name, lastSeenAt: undefined, aliveAtMs: Date.now(), connected: true, suspect: false });
      return;
    }
    t.aliveAtMs = Math.max(t.aliveAtMs, Date.now());
    t.suspect = false;
  }

  /** The worker was deleted. */
  forget(workerId: string): void {
    this.tracked.delete(workerId);
  }

  private failed(err: unknown): void {
    this.opts.onError?.(err);
    this.log.error({ err }, 'liveness tick failed');
  }

  /** Reads the workers' rows, then suspect / lost transitions. Exposed for tests. */
  async tick(now = Date.now()): Promise<void> {
    if (!this.active) return;
    const rows = await this.db.worker.findMany({ where: { status: 'online' }, select: { id: true, name: true, lastSeenAt: true, connected: true } });
    // Workers first seen in the first read after gaining leadership get the grace, counted from then.
    const first = this.firstLoad;
    this.firstLoad = false;
    const online = new Set<string>();
    for (const r of rows) {
      online.add(r.id);
      const seen = r.lastSeenAt ? r.lastSeenAt.getTime() : null;
      const t = this.tracked.get(r.id);
      if (!t) {
        this.tracked.set(r.id, { name: r.name, lastSeenAt: seen, aliveAtMs: first ? Math.max(now, this.startedAtMs + this.opts.startupGraceMs) : now, connected: r.connected, suspect: false });
        continue;
      }
      t.connected = r.connected;
      if (t.lastSeenAt === undefined) {
        t.lastSeenAt = seen; // the write of the Hello we already counted
      } else if (seen !== t.lastSeenAt) {
        t.lastSeenAt = seen;
        t.aliveAtMs = Math.max(t.aliveAtMs, now);
        t.suspect = false;
      }
    }
    for (const id of [...this.tracked.keys()]) if (!online.has(id)) this.tracked.delete(id);

    const timings = this.opts.timings;
    for (const [id, t] of this.tracked) {
      if (!this.active) return;
      const silentMs = now - t.aliveAtMs;
      // One worker's failing write must not hold up the others; it is retried next tick.
      try {
        if (!t.suspect && silentMs > timings.suspectAfterMs) {
          const why = t.connected ? `no heartbeat for ${Math.round(silentMs / 1000)}s` : 'its connection is lost';
          await this.vms.markWorkerUnreachable(id, `worker ${t.name} unreachable (${why}); the VM may still be running there`, this.opts.fence);
          t.suspect = true;
        }
        if (silentMs > timings.lostAfterMs) await this.markLost(id, t, silentMs);
      } catch (err) {
        this.opts.onError?.(err);
        this.log.error({ err, worker: t.name }, 'worker liveness transition failed; retrying');
      }
    }
    await this.clearDeadControllersStreams();
    this.metrics.workersByStatus.set({ status: 'online' }, this.tracked.size);
  }

  /** lostAfter passed: offline, and its "reschedule" VMs fail (the worker has fenced them by now). */
  private async markLost(id: string, t: Tracked, silentMs: number): Promise<void> {
    const silentS = Math.round(silentMs / 1000);
    if (t.lastSeenAt === undefined) return; // not read yet: next tick
    const seenAt = t.lastSeenAt === null ? null : new Date(t.lastSeenAt);
    let marked = false;
    const failed = await this.vms.handleLostWorker(id, t.name, silentS, async (tx) => {
      await this.opts.fence(tx);
      // Only if nobody recorded a heartbeat since we read the row: then it is alive after all.
      const res = await tx.worker.updateMany({ where: { id, status: 'online', lastSeenAt: seenAt }, data: { status: 'offline', connected: false } });
      marked = res.count === 1;
      return marked;
    });
    if (!marked) return;
    this.log.warn({ worker: t.name, silentS }, 'worker lost');
    this.opts.disconnect(id, 'no heartbeat within the offline timeout');
    await this.events.append([{ kind: 'worker.offline', level: 'warn', message: `worker ${t.name} is offline (no heartbeat for ${silentS}s)`, workerId: id }]);
    this.tracked.delete(id);
    if (failed > 0) this.bus.scheduleRequested();
  }

  /** Streams held by controllers that are gone are gone too (for the API's `connected`). */
  private async clearDeadControllersStreams(): Promise<void> {
    const alive = this.opts.aliveControllers?.();
    if (!alive || alive.length === 0) return;
    await this.db.worker.updateMany({ where: { connected: true, OR: [{ controllerId: null }, { controllerId: { notIn: alive } }] }, data: { connected: false } });
  }
}
