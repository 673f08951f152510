// What Fleet adds to @prisma/adapter-better-sqlite3's one connection per SQLite file:
//
// 1. Queries outside a transaction wait for the open transaction to end.
//    The adapter serialises transactions among themselves, but a query outside any
//    transaction runs at once on the same connection: while another flow's interactive
//    transaction is open (awaiting between its statements) that query runs *inside* it. Its
//    caller is told it succeeded, and the write is lost if the transaction then rolls back
//    (a failing create in a group commit, a conflict, a timeout), or becomes durable only
//    at that transaction's COMMIT; a read sees rows that may never be committed. On one
//    connection the only correct order is: one transaction at a time, and nothing else
//    while it is open. (PostgreSQL is unaffected: a transaction has its own pooled
//    connection.)
//
// 2. Prepared statements are reused. The adapter prepares every statement it runs, each
//    time (6 % of the controller's CPU while creating VMs, more in its argument binding),
//    because a better-sqlite3 Statement can be bound only once. Here `prepare` hands out a
//    cached statement behind a small object with the same shape the adapter uses
//    (`bind(args)` then `run()`, `reader`, `columns()`, `raw().all()`), passing the
//    arguments at each call instead of binding them. Statements are per connection and
//    SQLite re-prepares one itself after a schema change.
import type { SqlDriverAdapter, SqlQuery, Transaction } from '@prisma/driver-adapter-utils';
import type BetterSqlite3 from 'better-sqlite3';

/** A first-in first-out lock: transactions hold it from BEGIN to COMMIT or ROLLBACK. */
export class ConnectionGate {
  #held = false;
  /** Which acquisition holds the gate (0 = free): lets direct-sql.ts check its transaction is still the open one. */
  #holder = 0;
  #acquisitions = 0;
  readonly #waiting: Array<() => void> = [];

  get held(): boolean {
    return this.#held;
  }

  get holder(): number {
    return this.#holder;
  }

  /** Resolves with the release function once the caller holds the gate. */
  acquire(): Promise<() => void> {
    if (!this.#held) {
      this.#held = true;
      return Promise.resolve(this.#releaseOnce());
    }
    return new Promise((resolve) => this.#waiting.push(() => resolve(this.#releaseOnce())));
  }

  #releaseOnce(): () => void {
    let released = false;
    const holder = (this.#holder = ++this.#acquisitions);
    return () => {
      if (released) return;
      released = true;
      if (this.#holder === holder) this.#holder = 0;
      const next = this.#waiting.shift();
      if (next) next();
      else this.#held = false;
    };
  }
}

/**
 * Makes queries outside a transaction wait while one is open, and transactions hold the gate
 * from their start to their commit or rollback. A query that finds the gate free runs at once
 * (better-sqlite3 runs it synchronously, so nothing can start in between).
 */
export function gateTransactions(adapter: SqlDriverAdapter, gate = new ConnectionGate()): ConnectionGate {
  const queryRaw = adapter.queryRaw.bind(adapter);
  const executeRaw = adapter.executeRaw.bind(adapter);
  const executeScript = adapter.executeScript.bind(adapter);
  const startTransaction = adapter.startTransaction.bind(adapter);

  const outside = async <T>(run: () => Promise<T>): Promise<T> => {
    if (!gate.held) return run();
    const release = await gate.acquire();
    try {
      return await run();
    } finally {
      release();
    }
  };
  adapter.queryRaw = (query: SqlQuery) => outside(() => queryRaw(query));
  adapter.executeRaw = (query: SqlQuery) => outside(() => executeRaw(query));
  adapter.executeScript = (script: string) => outside(() => executeScript(script));

  adapter.startTransaction = async (isolationLevel) => {
    const release = await gate.acquire();
    let tx: Transaction;
    try {
      tx = await startTransaction(isolationLevel);
    } catch (err) {
      release();
      throw err;
    }
    const commit = tx.commit.bind(tx);
    const rollback = tx.rollback.bind(tx);
    tx.commit = async () => {
      try {
        await commit();
      } finally {
        release();
      }
    };
    tx.rollback = async () => {
      try {
        await rollback();
      } finally {
        release();
      }
    };
    return tx;
  };
  return gate;
}

/** Prisma's one connection to a SQLite file, as direct-sql.ts uses it. */
export interface SqliteConnection {
  client: BetterSqlite3.Database;
  gate: ConnectionGate;
  /** The prepared statements Prisma's adapter shares (cacheStatements). */
  statements: Map<string, BetterSqlite3.Statement<unknown[]>>;
}

/** How many distinct statements a connection keeps prepared (least recently used go first). */
export const STATEMENT_CACHE_SIZE = 500;

type Statement = BetterSqlite3.Statement<unknown[]>;

const columnsOf = new WeakMap<Statement, BetterSqlite3.ColumnDefinition[]>();

/** What the adapter does with `prepare(sql)`: bind once, then run or read. */
class CachedStatement {
  #args: unknown[] = [];
  constructor(private readonly stmt: Statement) {}

  bind(args: unknown[]): this {
    this.#args = args;
    return this;
  }
  get reader(): boolean {
    return this.stmt.reader;
  }
  columns(): BetterSqlite3.ColumnDefinition[] {
    // Fixed for a prepared statement (the schema only changes in migrations, before any query).
    let cols = columnsOf.get(this.stmt);
    if (!cols) columnsOf.set(this.stmt, (cols = this.stmt.columns()));
    return cols;
  }
  run(): BetterSqlite3.RunResult {
    return this.stmt.run(this.#args);
  }
  raw(): { all: () => unknown[] } {
    const stmt = this.stmt;
    const args = this.#args;
    return { all: () => stmt.raw(true).all(args) };
  }
}

/** The better-sqlite3 connection a Prisma better-sqlite3 adapter (or its transaction) runs on. */
export function betterSqliteClientOf(adapter: object): BetterSqlite3.Database | undefined {
  const client = (adapter as { client?: unknown }).client;
  return typeof client === 'object' && client !== null && typeof (client as { prepare?: unknown }).prepare === 'function'
    ? (client as BetterSqlite3.Database)
    : undefined;
}

/** Reuses prepared statements on `db` (see the top of this file). Returns the cache, for tests. */
export function cacheStatements(db: BetterSqlite3.Database, size = STATEMENT_CACHE_SIZE): Map<string, Statement> {
  const prepare = db.prepare.bind(db) as (sql: string) => Statement;
  const cache = new Map<string, Statement>();
  const cached = (sql: string): Statement => {
    let stmt = cache.get(sql);
    if (stmt) {
      cache.delete(sql); // re-insert: Map order is the recency order
    } else {
      stmt = prepare(sql);
      if (cache.size >= size) cache.delete(cache.keys().next().value as string);
    }
    cache.set(sql, stmt);
    return stmt;
  };
  (db as { prepare: unknown }).prepare = (sql: string) => new CachedStatement(cached(sql));
  cachedPrepare.set(db, cached);
  return cache;
}

const cachedPrepare = new WeakMap<BetterSqlite3.Database, (sql: string) => Statement>();

/** A prepared statement from the connection's cache (the one Prisma's adapter uses too). */
export function preparedStatement(db: BetterSqlite3.Database, sql: string): Statement {
  const cached = cachedPrepare.get(db);
  if (!cached) throw new Error('preparedStatement: the connection has no statement cache (cacheStatements)');
  return cached(sql);
}
