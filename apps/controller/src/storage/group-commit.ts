// Group commit (issue 20): writes that arrive while another group is being committed are queued
// and committed together, in one transaction, so a burst of N requests costs one BEGIN/COMMIT
// (and, on SQLite with synchronous=FULL, one WAL fsync) instead of N. Durability is unchanged:
// every write is acknowledged (its promise settles) only after the COMMIT of its group returned;
// a failed COMMIT (or any failure of the transaction itself) fails every write of the group.
//
// A write that fails (a duplicate name, an idempotency-key conflict, ...) fails alone: the group
// first runs optimistically without savepoints (the common case: nothing fails, two statements
// fewer per write); if a write fails, that attempt is rolled back and the group runs again with
// each write inside its own SAVEPOINT, so the failing ones are rolled back alone and rejected with
// their own error while the others commit. SAVEPOINT / ROLLBACK TO / RELEASE are standard SQL:
// the same code path runs on SQLite and on PostgreSQL (where a failed statement aborts the whole
// transaction until rolled back to a savepoint).
import type { FleetDb, Prisma } from '@fleet/db';

type Tx = Prisma.TransactionClient;

interface Queued<V> {
  work: (tx: Tx) => Promise<V>;
  resolve: (value: V) => void;
  reject: (err: unknown) => void;
}

type Outcome<V> = { ok: true; value: V } | { ok: false; error: unknown };

export interface GroupCommitOptions<V> {
  /**
   * Runs once per group, in its transaction, after every write, with the values of the writes
   * that succeeded (in order): what they share goes in one statement (e.g. their events in one
   * multi-row insert). Its failure fails the whole group.
   */
  afterWrites?: (tx: Tx, values: V[]) => Promise<void>;
  /** Most writes in one transaction (bounds the transaction's duration and the lock it holds). */
  maxGroup?: number;
  /** Prisma interactive-transaction timeout for a whole group, ms. */
  timeoutMs?: number;
}

/** The savepoint each write runs in; reused (released) before the next write of the group. */
const SAVEPOINT = 'fleet_group_write';

export class GroupCommitter<V> {
  private queue: Queued<V>[] = [];
  private flushing = false;
  private readonly maxGroup: number;
  private readonly timeoutMs: number;
  /** Transactions run and writes submitted so far (how well writes are grouped: logs, tests). */
  readonly stats = { groups: 0, writes: 0, retried: 0 };

  constructor(
    private readonly db: FleetDb,
    private readonly opts: GroupCommitOptions<V> = {},
  ) {
    this.maxGroup = opts.maxGroup ?? 256;
    this.timeoutMs = opts.timeoutMs ?? 15_000;
  }

  /**
   * Runs `work` in the next group's transaction and resolves with its result once that
   * transaction committed. `work` must only use `tx` (other writes share the transaction). It
   * may run twice: first with the whole group without savepoints; if any write of the group
   * failed, that attempt is rolled back and every write runs again in its own savepoint. Its
   * effects outside the database must therefore wait for the promise (as they must anyway:
   * nothing is durable before COMMIT).
   */
  run(work: (tx: Tx) => Promise<V>): Promise<V> {
    return new Promise<V>((resolve, reject) => {
      this.queue.push({ work, resolve, reject });
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

  private async commitGroup(group: Queued<V>[]): Promise<void> {
    this.stats.groups += 1;
    this.stats.writes += group.length;
    let outcomes: Outcome<V>[];
    try {
      outcomes = await this.optimistic(group);
    } catch (err) {
      if (!(err instanceof WriteFailed) || group.length === 1) {
        // Nothing of this group is durable (COMMIT failed, the transaction could not run, or the
        // group's only write failed): every write fails, with its error.
        const cause = err instanceof WriteFailed ? err.cause : err;
        for (const item of group) item.reject(cause);
        return;
      }
      // One write failed and took the optimistic attempt down with it (rolled back): again, each
      // write in its own savepoint, so that only the failing ones fail.
      this.stats.retried += 1;
      try {
        outcomes = await this.isolated(group);
      } catch (err2) {
        for (const item of group) item.reject(err2);
        return;
      }
    }
    for (let i = 0; i < group.length; i++) {
      const o = outcomes[i];
      if (o?.ok) group[i]!.resolve(o.value);
      else group[i]!.reject(o ? o.error : new Error('group commit: the transaction returned no outcome for this write'));
    }
  }

  /**
   * Every write of the group in one transaction, without savepoints: two statements fewer per
   * write (SAVEPOINT, RELEASE), which is most of a small write's cost. The first failing write
   * aborts it (rolled back, nothing of it is kept) and the group runs again isolated().
   */
  private optimistic(group: Queued<V>[]): Promise<Outcome<V>[]> {
    return this.db.$transaction(
      async (tx) => {
        const out: Outcome<V>[] = [];
        for (const item of group) {
          try {
            out.push({ ok: true, value: await item.work(tx) });
          } catch (error) {
            throw new WriteFailed(error);
          }
        }
        await this.afterWrites(tx, out);
        return out;
      },
      { timeout: this.timeoutMs, maxWait: this.timeoutMs },
    );
  }

  private async afterWrites(tx: Tx, out: Outcome<V>[]): Promise<void> {
    if (!this.opts.afterWrites) return;
    const values: V[] = [];
    for (const o of out) if (o.ok) values.push(o.value);
    if (values.length > 0) await this.opts.afterWrites(tx, values);
  }

  /** Every write of the group in one transaction, each in its own savepoint (a failing one is undone alone). */
  private isolated(group: Queued<V>[]): Promise<Outcome<V>[]> {
    return this.db.$transaction(
      async (tx) => {
        const out: Outcome<V>[] = [];
        for (const item of group) {
          await tx.$executeRawUnsafe(`SAVEPOINT ${SAVEPOINT}`);
          try {
            const value = await item.work(tx);
            await tx.$executeRawUnsafe(`RELEASE SAVEPOINT ${SAVEPOINT}`);
            out.push({ ok: true, value });
          } catch (error) {
            // Undo this write only; the transaction (and the writes before it) go on. If the
            // rollback itself fails the connection is gone: the whole group fails.
            await tx.$executeRawUnsafe(`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`);
            await tx.$executeRawUnsafe(`RELEASE SAVEPOINT ${SAVEPOINT}`);
            out.push({ ok: false, error });
          }
        }
        await this.afterWrites(tx, out);
        return out;
      },
      { timeout: this.timeoutMs, maxWait: this.timeoutMs },
    );
  }
}

/** A write of the optimistic attempt failed (its own error in `cause`): the attempt is rolled back. */
class WriteFailed extends Error {
  constructor(override readonly cause: unknown) {
    super('a write of the group failed');
    this.name = 'WriteFailed';
  }
}
