// Records that workers are alive, in the database, for whichever controller judges liveness (the
// leader, maybe another process). Heartbeats arriving together are written in one transaction.
// `record` resolves only once the write committed: a controller that is not the leader renews a
// worker's lease only then, so the leader can never see a worker as silent that this controller
// is still keeping alive (which would let a VM run twice).
//
// A worker whose row is no longer `online` (the leader found it lost, or an operator deleted it)
// is not renewed; `onNotOnline` is told so its stream is closed and the worker reconnects with a
// Hello, which reconciles it.
import { directTransaction, type FleetDb } from '@fleet/db';
import { renewWorkerLease } from '../storage/worker-rows.ts';
import type { Logger } from 'pino';
import type { ErrorSink } from '../storage/backoff.ts';

/** The worker's row says it is not online: no renewal. */
export class WorkerNotOnlineError extends Error {
  constructor(readonly workerId: string) {
    super(`worker ${workerId} is not online in the database`);
    this.name = 'WorkerNotOnlineError';
  }
}

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * How long heartbeats gather before they are written together: a twentieth of the heartbeat
 * interval, at most 50 ms. Without a window an idle fleet committed (and fsynced) almost every
 * heartbeat on its own: ~120 COMMITs a second with 1,000 workers (BENCHMARKS.md, issue 20, ninth
 * pass). A heartbeat's renewal goes back that much later; nothing about liveness moves: the row
 * records when the heartbeat was heard, and the lease it renews runs from the heartbeat's send time
 * (failure-timing.ts).
 */
export function heartbeatBatchWindowMs(heartbeatIntervalMs: number): number {
  return Math.max(0, Math.min(50, Math.floor(heartbeatIntervalMs / 20)));
}

export interface HeartbeatRecorderOptions {
  sink?: ErrorSink;
  onNotOnline?: (workerId: string) => void;
  /** Heartbeats heard within this many ms share one write (heartbeatBatchWindowMs); 0: those of one event-loop turn. */
  batchWindowMs?: number;
}

export class HeartbeatRecorder {
  private batch = new Map<string, { at: Date; waiters: Waiter[] }>();
  private flushing = false;
  private scheduled = false;

  constructor(
    private readonly db: FleetDb,
    private readonly controllerId: string,
    private readonly log: Logger,
    private readonly opts: HeartbeatRecorderOptions = {},
  ) {}

  /** The worker was heard from now. Resolves when that is committed; rejects when it could not be. */
  record(workerId: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const entry = this.batch.get(workerId);
      if (entry) {
        entry.at = new Date();
        entry.waiters.push({ resolve, reject });
      } else {
        this.batch.set(workerId, { at: new Date(), waiters: [{ resolve, reject }] });
      }
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.flushing) return;
    this.scheduled = true;
    const windowMs = this.opts.batchWindowMs ?? 0;
    if (windowMs > 0) setTimeout(() => void this.flush(), windowMs);
    else setImmediate(() => void this.flush());
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    if (this.batch.size === 0) return;
    this.flushing = true;
    const batch = this.batch;
    this.batch = new Map();
    const notOnline: string[] = [];
    try {
      // Plain SQL in a transaction without Prisma's machinery (issue 20: at 1,000 workers these
      // are a good part of the controller's transactions).
      await directTransaction(this.db, async (sql) => {
        const now = new Date(); // the rows' version (Prisma's @updatedAt would set it)
        for (const [id, e] of batch) if (!(await renewWorkerLease(sql, id, e.at, this.controllerId, now))) notOnline.push(id);
      });
      for (const [id, e] of batch) {
        if (notOnline.includes(id)) for (const w of e.waiters) w.reject(new WorkerNotOnlineError(id));
        else for (const w of e.waiters) w.resolve();
      }
      for (const id of notOnline) this.opts.onNotOnline?.(id);
    } catch (err) {
      this.opts.sink?.observe(err);
      this.log.warn({ err, workers: batch.size }, 'could not record worker heartbeats; their leases are not renewed by this controller');
      for (const e of batch.values()) for (const w of e.waiters) w.reject(err);
    } finally {
      this.flushing = false;
      if (this.batch.size > 0) this.schedule();
    }
  }
}
