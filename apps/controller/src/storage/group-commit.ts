// Group commit (issue 20): writes that arrive while another group is being committed are queued
// and committed together, in one transaction, so a burst of N requests costs one BEGIN/COMMIT
// (and, on SQLite with synchronous=FULL, one WAL fsync) instead of N. Durability is unchanged:
// every write is acknowledged (its promise settles) only after the COMMIT of its group returned;
// a failed COMMIT (or any failure of the transaction itself) fails every write of the group.
//
// Each write runs inside its own SAVEPOINT, so a write that fails (a duplicate name, an
// idempotency-key conflict, ...) is rolled back alone and rejected with its own error while the
// others of the group commit. SAVEPOINT / ROLLBACK TO / RELEASE are standard SQL: the same code
// path runs on SQLite and on PostgreSQL (where a failed statement would otherwise abort the
// whole transaction).
import type { FleetDb, Prisma } from '@fleet/db';

type Tx = Prisma.TransactionClient;

interface Queued<R> {
  work: (tx: Tx) => Promise<R>;
  resolve: (value: R) => void;
  reject: (err: unknown) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

export interface GroupCommitOptions {
  /** Most writes in one transaction (bounds the transaction's duration and the lock it holds). */
  maxGroup?: number;
  /** Prisma interactive-transaction timeout for a whole group, ms. */
  timeoutMs?: number;
}

/** The savepoint each write runs in; reused (released) before the next write of the group. */
const SAVEPOINT = 'fleet_group_write';

export class GroupCommitter {
  private queue: Queued<unknown>[] = [];
  private flushing = false;
  private readonly maxGroup: number;
  private readonly timeoutMs: number;
  /** Transactions run and writes submitted so far (how well writes are grouped: logs, tests). */
  readonly stats = { groups: 0, writes: 0 };

  constructor(
    private readonly db: FleetDb,
    private readonly opts: GroupCommitOptions = {},
  ) {
    this.maxGroup = opts.maxGroup ?? 256;
    this.timeoutMs = opts.timeoutMs ?? 15_000;
  }

  /**
   * Runs `work` in the next group's transaction and resolves with its result once that
   * transaction committed. `work` must only use `tx` (it runs between other writes' savepoints);
   * it runs at most once (a failed group is not retried: its writes are rejected).
   */
  run<R>(work: (tx: Tx) => Promise<R>): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ work, resolve, reject } as Queued<unknown>);
      if (!this.flushing) {
        this.flushing = true;
        // One macrotask of gathering: requests parsed in the same I/O turn join the first group.
        setImmediate(() => void this.drain());
      }
    });
  }

  /** Writes waiting for the next group (for tests and metrics). */
  get waiting(): number {
    return this.queue.length;
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const group = this.queue.splice(0, this.maxGroup);
        await this.commitGroup(group);
      }
    } finally {
      this.flushing = false;
    }
  }

  private async commitGroup(group: Queued<unknown>[]): Promise<void> {
    this.stats.groups += 1;
    this.stats.writes += group.length;
    let outcomes: Outcome[];
    try {
      outcomes = await this.db.$transaction(
        async (tx) => {
          const out: Outcome[] = [];
          for (const item of group) {
            await tx.$executeRawUnsafe(`SAVEPOINT ${SAVEPOINT}`);
            try {
              const value = await item.work(tx);
              await tx.$executeRawUnsafe(`RELEASE SAVEPOINT ${SAVEPOINT}`);
              out.push({ ok: true, value });
            } catch (error) {
              // Undo this write only; the transaction (and the writes before it) go on. If the
              // rollback itself fails the connection is gone: the whole group fails below.
              await tx.$executeRawUnsafe(`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`);
              await tx.$executeRawUnsafe(`RELEASE SAVEPOINT ${SAVEPOINT}`);
              out.push({ ok: false, error });
            }
          }
          return out;
        },
        { timeout: this.timeoutMs, maxWait: this.timeoutMs },
      );
    } catch (err) {
      // Nothing of this group is durable (COMMIT failed, or the transaction could not run):
      // every write fails, with the group's error as its cause.
      for (const item of group) item.reject(err);
      return;
    }
    for (let i = 0; i < group.length; i++) {
      const o = outcomes[i];
      if (o?.ok) group[i]!.resolve(o.value);
      else group[i]!.reject(o ? o.error : new Error('group commit: the transaction returned no outcome for this write'));
    }
  }
}
