// Plain SQL for the statements run once per VM on the create-to-running path (issue 20).
//
// Why not the Prisma client there: measured on this machine (bench/db-statements.ts), a
// Prisma model update inside a transaction costs ≈ 100 µs of JavaScript, a raw statement
// through Prisma ≈ 65 µs, the same statement on the better-sqlite3 connection ≈ 4 µs. At
// five such statements per VM, Prisma was most of the controller's CPU per VM.
//
// - SQLite: the statement runs on Prisma's own connection (there is one per file), with the
//   same prepared-statement cache, synchronously. Inside a transaction it runs in it; outside,
//   it waits for any open transaction first, exactly like Prisma's own queries
//   (sqlite-connection.ts). A statement for a transaction that has ended (rolled back on a
//   timeout, say) is refused rather than run in whatever holds the connection next.
// - PostgreSQL: the statement goes through Prisma's raw API on the transaction's (or the
//   pool's) connection: correct and portable, ≈ 1.6× cheaper than a model query; the
//   connection of a Prisma transaction is not reachable from outside.
//
// SQL is written once for both engines: `?` placeholders (numbered for PostgreSQL here),
// double-quoted identifiers, no `?` inside literals. Values are converted as Prisma's SQLite
// adapter converts them (dates as ISO-8601 text with "+00:00", booleans as 0/1), so rows
// written here read back through Prisma unchanged, and the other way round.
import type { SqlDriverAdapterFactory } from '@prisma/driver-adapter-utils';
import type { Provider } from './providers.ts';
import type { SqlValue } from './insert-rows.ts';
import { preparedStatement, type SqliteConnection } from './sqlite-connection.ts';
import { CommitCycle } from './sqlite-commit-cycle.ts';

/** What a Prisma client or interactive-transaction client offers for raw statements. */
export interface RawClient {
  $queryRawUnsafe<T = unknown>(query: string, ...values: unknown[]): Promise<T>;
  $executeRawUnsafe(query: string, ...values: unknown[]): Promise<number>;
}

export interface DirectSql {
  readonly provider: Provider;
  /** Rows as the engine returns them: see `rowsOf` (columns.ts) to type them. */
  query<R = Record<string, unknown>>(sql: string, values?: readonly SqlValue[]): Promise<R[]>;
  /** The number of rows changed. */
  execute(sql: string, values?: readonly SqlValue[]): Promise<number>;
}

/** How openDatabase tells this module about a client (set once per client). */
export interface DirectSqlTarget {
  provider: Provider;
  client: RawClient & { $connect(): Promise<void> };
  /** SQLite: the factory whose open connection the statements run on. */
  sqlite?: { connection: SqliteConnection | undefined } & SqlDriverAdapterFactory;
}

const targets = new WeakMap<object, DirectSqlTarget>();

export function registerDirectSql(db: object, target: DirectSqlTarget): void {
  targets.set(db, target);
}

function targetOf(db: object): DirectSqlTarget {
  const t = targets.get(db);
  if (!t) throw new Error('not a client made by openDatabase: no direct SQL for it');
  return t;
}

/** `?` → `$1, $2, …` for PostgreSQL. */
export function numberedPlaceholders(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

/** A value as Prisma's SQLite adapter binds it. */
function sqliteValue(v: SqlValue): unknown {
  if (v instanceof Date) return v.toISOString().replace('Z', '+00:00');
  if (typeof v === 'boolean') return v ? 1 : 0;
  return v;
}

function runOnSqlite(conn: SqliteConnection, sql: string, values: readonly SqlValue[], reading: boolean): unknown[] | number {
  const stmt = preparedStatement(conn.client, sql);
  const args = values.map(sqliteValue);
  // As objects: Prisma's adapter leaves a statement it read with in array mode, and the cache shares it.
  if (stmt.reader) return stmt.raw(false).all(args);
  const { changes } = stmt.run(args);
  return reading ? [] : changes;
}

async function sqliteConnection(t: DirectSqlTarget): Promise<SqliteConnection> {
  if (!t.sqlite!.connection) await t.client.$connect();
  const conn = t.sqlite!.connection;
  if (!conn) throw new Error('the SQLite connection is not open');
  return conn;
}

/** Statements outside any transaction (each is its own, as with Prisma). */
export function directSql(db: object): DirectSql {
  const t = targetOf(db);
  if (t.provider === 'postgresql') return pgSql(t.client);
  const run = async (sql: string, values: readonly SqlValue[], reading: boolean): Promise<unknown[] | number> => {
    const conn = await sqliteConnection(t);
    if (!conn.gate.held) return runOnSqlite(conn, sql, values, reading);
    const release = await conn.gate.acquire();
    try {
      return runOnSqlite(conn, sql, values, reading);
    } finally {
      release();
    }
  };
  return {
    provider: 'sqlite',
    query: async <R>(sql: string, values: readonly SqlValue[] = []) => (await run(sql, values, true)) as R[],
    execute: async (sql: string, values: readonly SqlValue[] = []) => {
      const r = await run(sql, values, false);
      return typeof r === 'number' ? r : r.length;
    },
  };
}

/**
 * Statements inside `tx`, an interactive transaction of `db` whose callback is running now
 * (call it there, not before). On SQLite the transaction holds the connection from BEGIN to
 * COMMIT/ROLLBACK; a statement after it ended is refused.
 */
export function directSqlIn(db: object, tx: RawClient): DirectSql {
  const t = targetOf(db);
  if (t.provider === 'postgresql') return pgSql(tx);
  const conn = t.sqlite!.connection;
  if (!conn || !conn.gate.held) throw new Error('directSqlIn: no transaction is open on the SQLite connection');
  const holder = conn.gate.holder;
  const run = (sql: string, values: readonly SqlValue[], reading: boolean): unknown[] | number => {
    if (conn.gate.holder !== holder || t.sqlite!.connection !== conn) {
      throw new Error('the transaction has already ended (committed, rolled back or timed out): statement not run');
    }
    return runOnSqlite(conn, sql, values, reading);
  };
  return {
    provider: 'sqlite',
    // Async like every storage call, though the work is done before it returns.
    query: async <R>(sql: string, values: readonly SqlValue[] = []) => run(sql, values, true) as R[],
    execute: async (sql: string, values: readonly SqlValue[] = []) => {
      const r = run(sql, values, false);
      return typeof r === 'number' ? r : r.length;
    },
  };
}

/** A transaction of directTransaction: its statements, and the raw API for code written against Prisma's (fence, insertRows). */
export interface DirectTx extends DirectSql {
  readonly raw: RawClient;
}

/** Options of directTransaction. */
export interface DirectTransactionOptions {
  /**
   * PostgreSQL (a Prisma interactive transaction there): its timeout and maxWait, ms. SQLite: how
   * long `work` may wait for anything but its own statements before the transaction fails.
   */
  timeoutMs?: number;
  /**
   * SQLite: start the commit cycle right after the current job instead of after this turn's I/O
   * callbacks (sqlite-commit-cycle.ts), for a transaction whose delay others wait for.
   */
  urgent?: boolean;
}

/**
 * Runs `work` in a transaction and commits it; rolls back and rethrows if `work` or the COMMIT
 * fails. For the group commits of the create-to-running path (issue 20).
 *
 * SQLite: plain SQL on the connection itself, without Prisma's interactive-transaction machinery
 * (its transaction manager, the query interpreter running BEGIN and COMMIT, a timer per
 * transaction), and sharing one COMMIT (one WAL fsync) with every other directTransaction ready
 * at the same moment (sqlite-commit-cycle.ts: each in its own savepoint, so each stays atomic and
 * fails alone). It resolves only after that COMMIT returned. It holds the connection's gate, so
 * Prisma's queries outside a transaction and Prisma's own transactions wait for it, as for one of
 * Prisma's. `work` must only use the statements it is given and must not wait for anything else
 * that needs the connection (a Prisma query would wait for this transaction: a deadlock, which
 * the time limit, `timeoutMs`, 15 s by default, ends by failing the transaction). A
 * statement after the transaction ended is refused, as with directSqlIn.
 *
 * PostgreSQL: a Prisma interactive transaction (its connection is not reachable otherwise) with
 * the statements through its raw API, as directSqlIn does.
 */
export async function directTransaction<T>(db: object, work: (tx: DirectTx) => Promise<T>, opts: DirectTransactionOptions = {}): Promise<T> {
  const t = targetOf(db);
  if (t.provider === 'postgresql') {
    // The registered client is the PrismaClient itself (openDatabase), which has $transaction.
    const client = t.client as unknown as { $transaction<R>(fn: (tx: RawClient) => Promise<R>, o: { timeout: number; maxWait: number }): Promise<R> };
    const timeout = opts.timeoutMs ?? 15_000;
    return client.$transaction((tx) => work({ ...pgSql(tx), raw: tx }), { timeout, maxWait: timeout });
  }
  const conn = await sqliteConnection(t);
  return commitCycleOf(conn).run((live) => {
    const run = (sql: string, values: readonly SqlValue[], reading: boolean): unknown[] | number => {
      if (!live() || t.sqlite!.connection !== conn) throw new Error('the transaction has already ended (committed, rolled back or timed out): statement not run');
      return runOnSqlite(conn, sql, values, reading);
    };
    const query = async <R>(sql: string, values: readonly SqlValue[] = []) => run(sql, values, true) as R[];
    const execute = async (sql: string, values: readonly SqlValue[] = []) => {
      const r = run(sql, values, false);
      return typeof r === 'number' ? r : r.length;
    };
    const raw: RawClient = {
      $queryRawUnsafe: async <R>(sql: string, ...values: unknown[]) => run(sql, values as SqlValue[], true) as R,
      $executeRawUnsafe: (sql: string, ...values: unknown[]) => execute(sql, values as SqlValue[]),
    };
    return work({ provider: 'sqlite', query, execute, raw });
  }, opts.urgent ?? false, opts.timeoutMs);
}

/**
 * One write statement (or several that need not be atomic) outside any transaction of the
 * caller's. SQLite: in the commit cycle (it shares the next COMMIT, one WAL fsync, with the other
 * plain-SQL transactions ready at the same moment, instead of an fsync of its own). PostgreSQL:
 * on the pool, each statement its own transaction, as before.
 */
export async function directWrite<T>(db: object, work: (sql: DirectTx) => Promise<T>): Promise<T> {
  const t = targetOf(db);
  if (t.provider === 'postgresql') return work({ ...pgSql(t.client), raw: t.client });
  return directTransaction(db, work);
}

const cycles = new WeakMap<SqliteConnection, CommitCycle>();

/** The connection's commit cycle (one per connection: a reopened connection gets a new one). */
export function commitCycleOf(conn: SqliteConnection): CommitCycle {
  let cycle = cycles.get(conn);
  if (!cycle) {
    cycle = new CommitCycle({ gate: conn.gate, exec: (sql) => void runOnSqlite(conn, sql, [], false), inTransaction: () => conn.client.inTransaction });
    cycles.set(conn, cycle);
  }
  return cycle;
}

/** The commit cycle of a SQLite client made by openDatabase (tests, measurements); undefined before it connected, and on PostgreSQL. */
export function sqliteCommitCycle(db: object): CommitCycle | undefined {
  const conn = targetOf(db).sqlite?.connection;
  return conn ? commitCycleOf(conn) : undefined;
}

function pgSql(client: RawClient): DirectSql {
  return {
    provider: 'postgresql',
    query: <R>(sql: string, values: readonly SqlValue[] = []) => client.$queryRawUnsafe<R[]>(numberedPlaceholders(sql), ...values),
    execute: (sql: string, values: readonly SqlValue[] = []) => client.$executeRawUnsafe(numberedPlaceholders(sql), ...values),
  };
}
