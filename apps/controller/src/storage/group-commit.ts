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
//
// Plain SQL (issue 20): a group whose writes are all plain SQL (`run`) is one transaction of
// @fleet/db's directTransaction: on SQLite BEGIN … COMMIT on the connection itself, without
// Prisma's interactive-transaction machinery, which cost about as much as the writes themselves.
// A write that needs Prisma's models (`runWithPrisma`, the rare paths) makes its whole group a
// Prisma interactive transaction, in which the plain-SQL writes run as before (directSqlIn).
// Either way a group is one transaction and one COMMIT.
import { directSqlIn, directTransaction, type DirectTx, type FleetDb, type Prisma } from '@fleet/db';

type Tx = Prisma.TransactionClient;

/** What a write of a group is given: the group's transaction, and Prisma's client for it when the group runs as one. */
interface GroupTx {
  sql: DirectTx;
  prisma: Tx | undefined;
}

interface Queued<V> {
  work: (tx: GroupTx) => Promise<V>;
  /** This write uses Prisma's models: its group runs as a Prisma interactive transaction. */
  prisma: boolean;
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
  afterWrites?: (tx: DirectTx, values: V[]) => Promise<void>;
  /** Most writes in one transaction (bounds the transaction's duration and the lock it holds). */
  maxGroup?: number;
  /** Timeout of a whole group's transaction, ms (PostgreSQL, and groups that run as a Prisma transaction). */
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
  readonly stats = { groups: 0, writes: 0, retried: 0, prismaGroups: 0 };

  constructor(
    private readonly db: FleetDb,
    private readonly opts: GroupCommitOptions<V> = {},
  ) {
    this.maxGroup = opts.maxGroup ?? 256;
    this.timeoutMs = opts.timeoutMs ?? 15_000;
  }

  /**
   * Runs `work` in the next group's transaction and resolves with its result once that
   * transaction committed. `work` must only use `tx` (other writes share the transaction) and
   * must not wait for other database calls (on SQLite they would wait for this transaction). It
   * may run twice: first with the whole group without savepoints; if any write of the group
   * failed, that attempt is rolled back and every write runs again in its own savepoint. Its
   * effects outside the database must therefore wait for the promise (as they must anyway:
   * nothing is durable before COMMIT).
   */
  run(work: (tx: DirectTx) => Promise<V>): Promise<V> {
    return this.enqueue({ work: (tx) => work(tx.sql), prisma: false });
  }

  /** As run(), for a write that needs Prisma's models too (`tx`; `sql` is the same transaction in plain SQL). */
  runWithPrisma(work: (tx: Tx, sql: DirectTx) => Promise<V>): Promise<V> {
    return this.enqueue({ work: (tx) => work(tx.prisma!, tx.sql), prisma: true });
  }

  private enqueue(item: Pick<Queued<V>, 'work' | 'prisma'>): Promise<V> {
    return new Promise<V>((resolve, reject) => {
      this.queue.push({ ...item, resolve, reject });
      if (!this.flushing) {
        this.flushing = true;
        void this.drain();
      }
    });
  }

  /** Writes waiting for the next group (for tests and metrics). */
  get waiting(): number {
    return this.queue.length;
  }

  /**
   * One group at a time. A plain-SQL group is taken from the queue only when its transaction
   * runs: on SQLite in the commit cycle after this turn's I/O callbacks (sqlite-commit-cycle.ts),
   * so the requests parsed in the same turn join it (one macrotask of gathering, as before) and
   * it shares that cycle's COMMIT with the other committers' groups, the heartbeats and the
   * scheduler's pass. A group with a write that needs Prisma gathers for one macrotask, then runs
   * as a Prisma transaction.
   */
  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        if (this.queue.some((item) => item.prisma)) {
          await new Promise<void>((resolve) => setImmediate(resolve));
          const group = this.queue.splice(0, this.maxGroup);
          await this.commitGroup(() => group, true);
        } else {
          await this.commitGroup(() => this.takeDirect(), false);
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  /** The plain-SQL writes queued now, oldest first (a write that needs Prisma waits for a group of its own). */
  private takeDirect(): Queued<V>[] {
    const group: Queued<V>[] = [];
    const rest: Queued<V>[] = [];
    for (const item of this.queue) {
      if (!item.prisma && group.length < this.maxGroup) group.push(item);
      else rest.push(item);
    }
    this.queue = rest;
    return group;
  }

  private async commitGroup(take: () => Queued<V>[], prisma: boolean): Promise<void> {
    let group: Queued<V>[] | undefined;
    const taken = (): Queued<V>[] => {
      group = take();
      this.stats.groups += 1;
      this.stats.writes += group.length;
      return group;
    };
    let outcomes: Outcome<V>[];
    try {
      outcomes = await this.optimistic(taken, prisma);
    } catch (err) {
      // The transaction failed before the group was taken (it could not begin): these writes fail.
      group ??= taken();
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
        outcomes = await this.isolated(group, prisma);
      } catch (err2) {
        for (const item of group) item.reject(err2);
        return;
      }
    }
    group ??= [];
    for (let i = 0; i < group.length; i++) {
      const o = outcomes[i];
      if (o?.ok) group[i]!.resolve(o.value);
      else group[i]!.reject(o ? o.error : new Error('group commit: the transaction returned no outcome for this write'));
    }
  }

  /** One transaction for a group: plain SQL, or Prisma's when a write of the group needs its models. */
  private transaction<T>(prisma: boolean, body: (tx: GroupTx) => Promise<T>, urgent: boolean): Promise<T> {
    if (!prisma) return directTransaction(this.db, (sql) => body({ sql, prisma: undefined }), { timeoutMs: this.timeoutMs, urgent });
    this.stats.prismaGroups += 1;
    return this.db.$transaction((tx) => body({ sql: { ...directSqlIn(this.db, tx), raw: tx }, prisma: tx }), { timeout: this.timeoutMs, maxWait: this.timeoutMs });
  }

  /**
   * Every write of the group in one transaction, without savepoints: two statements fewer per
   * write (SAVEPOINT, RELEASE), which is most of a small write's cost. The first failing write
   * aborts it (rolled back, nothing of it is kept) and the group runs again isolated().
   */
  private optimistic(take: () => Queued<V>[], prisma: boolean): Promise<Outcome<V>[]> {
    return this.transaction(prisma, async (tx) => {
      const group = take();
      const out: Outcome<V>[] = [];
      for (const item of group) {
        try {
          out.push({ ok: true, value: await item.work(tx) });
        } catch (error) {
          throw new WriteFailed(error);
        }
      }
      await this.afterWrites(tx.sql, out);
      return out;
    }, false);
  }

  private async afterWrites(tx: DirectTx, out: Outcome<V>[]): Promise<void> {
    if (!this.opts.afterWrites) return;
    const values: V[] = [];
    for (const o of out) if (o.ok) values.push(o.value);
    if (values.length > 0) await this.opts.afterWrites(tx, values);
  }

  /** Every write of the group in one transaction, each in its own savepoint (a failing one is undone alone). */
  private isolated(group: Queued<V>[], prisma: boolean): Promise<Outcome<V>[]> {
    // Urgent: these writes waited for a cycle already.
    return this.transaction(prisma, async (tx) => {
      const out: Outcome<V>[] = [];
      for (const item of group) {
        await tx.sql.execute(`SAVEPOINT ${SAVEPOINT}`);
        try {
          const value = await item.work(tx);
          await tx.sql.execute(`RELEASE SAVEPOINT ${SAVEPOINT}`);
          out.push({ ok: true, value });
        } catch (error) {
          // Undo this write only; the transaction (and the writes before it) go on. If the
          // rollback itself fails the connection is gone: the whole group fails.
          await tx.sql.execute(`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`);
          await tx.sql.execute(`RELEASE SAVEPOINT ${SAVEPOINT}`);
          out.push({ ok: false, error });
        }
      }
      await this.afterWrites(tx.sql, out);
      return out;
    }, true);
  }
}

/** A write of the optimistic attempt failed (its own error in `cause`): the attempt is rolled back. */
class WriteFailed extends Error {
  constructor(override readonly cause: unknown) {
    super('a write of the group failed');
    this.name = 'WriteFailed';
  }
}
