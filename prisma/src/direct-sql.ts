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
  if (stmt.reader) return stmt.all(args);
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

function pgSql(client: RawClient): DirectSql {
  return {
    provider: 'postgresql',
    query: <R>(sql: string, values: readonly SqlValue[] = []) => client.$queryRawUnsafe<R[]>(numberedPlaceholders(sql), ...values),
    execute: (sql: string, values: readonly SqlValue[] = []) => client.$executeRawUnsafe(numberedPlaceholders(sql), ...values),
  };
}
