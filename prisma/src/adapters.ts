// Driver adapter factories for the two providers, with Fleet's connection settings.
import { PrismaBetterSqlite3 } from '@prisma/adapter-better-sqlite3';
import type pg from 'pg';
import type {
  SqlDriverAdapter,
  SqlMigrationAwareDriverAdapterFactory,
} from '@prisma/driver-adapter-utils';
import { providerOf, sqlitePath } from './providers.ts';
import { betterSqliteClientOf, cacheStatements, gateTransactions, type SqliteConnection } from './sqlite-connection.ts';
import { LazyPgAdapterFactory, loadPg, loadPrismaPg } from './pg-driver.ts';

/** How long a SQLite statement waits for another connection's lock before SQLITE_BUSY. */
export const DEFAULT_BUSY_TIMEOUT_MS = 10_000;

/**
 * SQLite's `synchronous` setting. FULL (Fleet's default): every commit is fsynced to the
 * WAL before it returns, so an acknowledged write survives a power loss or kernel crash.
 * NORMAL: commits reach the OS but are fsynced only at checkpoints; a power loss can
 * drop the last commits (never corrupts). Only benchmarks and tests choose NORMAL.
 */
export type SqliteSynchronous = 'FULL' | 'NORMAL';
export const DEFAULT_SQLITE_SYNCHRONOUS: SqliteSynchronous = 'FULL';

/**
 * SQLite's page cache per connection, in KiB: SQLite's own default (2 MiB). better-sqlite3 builds
 * SQLite with 16 MiB instead, and the controller's connection filled it with pages that the
 * operating system's file cache holds anyway: −15 MiB of the controller's memory outside the V8
 * heap with 10,000 VMs (BENCHMARKS.md, "Memory (issue 20)", morning pass). Pages beyond it are
 * read again from that file cache.
 */
export const SQLITE_CACHE_KIB = 2000;

/**
 * Applied to every SQLite connection Fleet opens.
 * - WAL: readers never block the writer and vice versa; persistent in the file.
 * - synchronous=FULL: a commit is on disk (WAL fsynced) before it is acknowledged.
 * - foreign_keys: onDelete Cascade / SetNull in the schema rely on it.
 * - busy_timeout: wait for a competing writer (another process, a backup) instead of failing.
 * - cache_size: SQLITE_CACHE_KIB of page cache.
 * - temp_store=MEMORY: statement and savepoint journals (every transaction of a commit cycle runs
 *   in a savepoint) stay in memory; by default one past 64 KiB spills into a temporary file that
 *   SQLite creates, writes and deletes, which made the scheduler's placement UPDATE 60–80 µs
 *   instead of 22–25 (BENCHMARKS.md, control plane, seventh pass). They live only until their
 *   transaction ends.
 */
export function sqlitePragmas(busyTimeoutMs: number, synchronous: SqliteSynchronous = DEFAULT_SQLITE_SYNCHRONOUS): string {
  if (synchronous !== 'FULL' && synchronous !== 'NORMAL') throw new Error(`unsupported SQLite synchronous setting ${String(synchronous)}`);
  return [
    `PRAGMA busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))};`,
    'PRAGMA journal_mode = WAL;',
    `PRAGMA synchronous = ${synchronous};`,
    'PRAGMA foreign_keys = ON;',
    `PRAGMA cache_size = -${SQLITE_CACHE_KIB};`,
    'PRAGMA temp_store = MEMORY;',
  ].join('\n');
}

/**
 * A factory that wraps another and (1) runs `setup` on every new connection,
 * (2) remembers the connections it handed out so `disposeAll` can close them
 * (the schema engine does not close its connections when freed).
 */
export class ManagedAdapterFactory implements SqlMigrationAwareDriverAdapterFactory {
  readonly provider: SqlMigrationAwareDriverAdapterFactory['provider'];
  readonly adapterName: string;
  readonly #inner: SqlMigrationAwareDriverAdapterFactory;
  readonly #setup: string | undefined;
  readonly #open = new Set<SqlDriverAdapter>();

  constructor(inner: SqlMigrationAwareDriverAdapterFactory, setup?: string) {
    this.#inner = inner;
    this.#setup = setup;
    this.provider = inner.provider;
    this.adapterName = inner.adapterName;
  }

  async connect(): Promise<SqlDriverAdapter> {
    return this.#track(await this.#inner.connect());
  }

  async connectToShadowDb(): Promise<SqlDriverAdapter> {
    const adapter = await this.#inner.connectToShadowDb();
    if (this.provider === 'sqlite') runScriptsViaExecuteScript(adapter);
    return this.#track(adapter);
  }

  async #track(adapter: SqlDriverAdapter): Promise<SqlDriverAdapter> {
    if (this.#setup) {
      try {
        await adapter.executeScript(this.#setup);
      } catch (err) {
        await adapter.dispose().catch(() => {});
        throw err;
      }
    }
    this.#open.add(adapter);
    const dispose = adapter.dispose.bind(adapter);
    const open = this.#open;
    adapter.dispose = async () => {
      if (!open.delete(adapter)) return;
      await dispose();
    };
    return adapter;
  }

  /** Close every connection this factory handed out that is still open. */
  async disposeAll(): Promise<void> {
    await Promise.allSettled([...this.#open].map((a) => a.dispose()));
  }
}

/**
 * Workaround for Prisma 7.10's schema-engine-wasm: when it replays a migrations
 * folder into a SQLite shadow database it sends each whole migration.sql
 * through executeRaw, and better-sqlite3 refuses to prepare more than one
 * statement ("The supplied SQL string contains more than one statement").
 * Such a parameterless multi-statement call is run with executeScript instead.
 */
function runScriptsViaExecuteScript(adapter: SqlDriverAdapter): void {
  const executeRaw = adapter.executeRaw.bind(adapter);
  adapter.executeRaw = async (query) => {
    try {
      return await executeRaw(query);
    } catch (err) {
      if (query.args.length === 0 && err instanceof RangeError && /more than one statement/.test(err.message)) {
        await adapter.executeScript(query.sql);
        return 0;
      }
      throw err;
    }
  };
}

/** PostgreSQL's one-byte internal "char" type (pg_class.relkind, pg_constraint.contype, ...). */
const PG_CHAR_OID = 18;
const PG_TEXT_OID = 25;

/**
 * A pg pool for the schema engine. Workaround for @prisma/adapter-pg 7.10: it
 * has no column type for PostgreSQL's internal "char" (OID 18) and throws
 * "Column type 'char' could not be deserialized", which breaks the engine's
 * catalog queries (describing a schema, e.g. the shadow database in a diff).
 * Results are relabelled as text, which is what the values are. Prisma
 * clients never see these catalog columns and use plain pools.
 */
export async function schemaEnginePgPool(connectionString: string): Promise<pg.Pool> {
  const { Pool } = await loadPg();
  const pool = new Pool({ connectionString, max: 1 });
  const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<pg.QueryResult>;
  const relabelled = async (...args: unknown[]): Promise<pg.QueryResult> => {
    const result = await query(...args);
    for (const f of result.fields ?? []) if (f.dataTypeID === PG_CHAR_OID) f.dataTypeID = PG_TEXT_OID;
    return result;
  };
  (pool as { query: unknown }).query = relabelled;
  return pool;
}

export interface AdapterOptions {
  /** For the schema engine rather than a Prisma client (see schemaEnginePgPool). */
  forSchemaEngine?: boolean;
  /** SQLite only: busy timeout in ms (default 10 s). */
  busyTimeoutMs?: number;
  /** SQLite only: `synchronous` (default FULL). */
  sqliteSynchronous?: SqliteSynchronous;
  /** PostgreSQL only: pool size (default 10). */
  poolSize?: number;
  /** PostgreSQL only: called when an idle pooled connection fails (it is dropped from the pool). */
  onPoolError?: (err: Error) => void;
}

/**
 * SQLite files with an open Prisma-client connection in this process.
 *
 * better-sqlite3 is synchronous: while one connection waits for a lock (the
 * busy timeout), the whole event loop waits with it. Two clients on one file
 * in one process therefore deadlock until the timeout whenever one holds a
 * write transaction across an await. Across processes the busy timeout works
 * as intended. So: one client per SQLite file per process, enforced here.
 */
const openSqliteFiles = new Set<string>();

export class SingleSqliteConnectionFactory extends ManagedAdapterFactory {
  /** The open connection (direct-sql.ts runs the hot statements on it), once Prisma connected. */
  connection: SqliteConnection | undefined;

  constructor(
    inner: SqlMigrationAwareDriverAdapterFactory,
    setup: string,
    private readonly file: string,
  ) {
    super(inner, setup);
  }

  override async connect(): Promise<SqlDriverAdapter> {
    if (openSqliteFiles.has(this.file)) {
      throw new Error(
        `SQLite database ${this.file} is already open in this process through another client. ` +
          'Share one client per SQLite file per process: better-sqlite3 blocks the event loop while it ' +
          'waits for a lock, so two clients on one file can stall each other for the whole busy timeout.',
      );
    }
    openSqliteFiles.add(this.file);
    let adapter: SqlDriverAdapter;
    try {
      adapter = await super.connect();
    } catch (err) {
      openSqliteFiles.delete(this.file);
      throw err;
    }
    const dispose = adapter.dispose.bind(adapter);
    let disposed = false;
    adapter.dispose = async () => {
      if (!disposed) openSqliteFiles.delete(this.file);
      disposed = true;
      await dispose();
    };
    rollBackFailedCommits(adapter);
    // After rollBackFailedCommits: a transaction releases the gate only once its ROLLBACK ran.
    const gate = gateTransactions(adapter);
    const client = betterSqliteClientOf(adapter);
    if (!client) throw new Error('the better-sqlite3 adapter no longer exposes its connection: check sqlite-connection.ts against this Prisma version');
    const statements = cacheStatements(client);
    const connection: SqliteConnection = { client, gate, statements };
    this.connection = connection;
    const disposeGated = adapter.dispose.bind(adapter);
    adapter.dispose = async () => {
      if (this.connection === connection) this.connection = undefined;
      await disposeGated();
    };
    return adapter;
  }
}

/**
 * Workaround for Prisma 7.10 with @prisma/adapter-better-sqlite3: when COMMIT fails (a deferred
 * foreign-key violation, SQLITE_BUSY), SQLite keeps the transaction open, and Prisma then calls
 * the adapter's rollback(), which only releases its lock without sending ROLLBACK. The
 * connection stays inside the failed transaction: the next statements run in it and the next
 * COMMIT would make durable the writes whose callers were told they failed. So rollback() sends
 * ROLLBACK first; after Prisma's own ROLLBACK (the usual path) SQLite answers "no transaction is
 * active", which is ignored.
 */
function rollBackFailedCommits(adapter: SqlDriverAdapter): void {
  const startTransaction = adapter.startTransaction.bind(adapter);
  adapter.startTransaction = async (isolationLevel) => {
    const tx = await startTransaction(isolationLevel);
    const rollback = tx.rollback.bind(tx);
    tx.rollback = async () => {
      try {
        await tx.executeRaw({ sql: 'ROLLBACK', args: [], argTypes: [] });
      } catch {
        // No transaction active: Prisma rolled it back already.
      }
      await rollback();
    };
    return tx;
  };
}

/** Longest a single PostgreSQL statement of the application may take before it counts as a fault. */
export const PG_QUERY_TIMEOUT_MS = 10_000;

/** A driver adapter factory for a `file:` (SQLite) or `postgresql://` URL. */
export function adapterFactoryFor(url: string, opts: AdapterOptions = {}): ManagedAdapterFactory {
  if (providerOf(url) === 'sqlite') {
    const busy = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
    const file = sqlitePath(url);
    const inner = new PrismaBetterSqlite3({ url: file, timeout: busy });
    const pragmas = sqlitePragmas(busy, opts.sqliteSynchronous);
    return opts.forSchemaEngine
      ? new ManagedAdapterFactory(inner, pragmas)
      : new SingleSqliteConnectionFactory(inner, pragmas, file);
  }
  // pg and @prisma/adapter-pg load at the first connection (pg-driver.ts).
  if (opts.forSchemaEngine) {
    return new ManagedAdapterFactory(
      new LazyPgAdapterFactory(async () => {
        const PrismaPg = await loadPrismaPg();
        return new PrismaPg(await schemaEnginePgPool(url), { disposeExternalPool: true });
      }),
    );
  }
  return new ManagedAdapterFactory(
    new LazyPgAdapterFactory(async () => {
      const PrismaPg = await loadPrismaPg();
      return new PrismaPg(
        {
          connectionString: url,
          max: opts.poolSize ?? 10,
          // A server cut off by the network answers nothing and TCP would wait minutes: give up
          // sooner, so the controller reports the fault, closes its worker streams and the workers
          // move to a controller that can reach the database.
          query_timeout: PG_QUERY_TIMEOUT_MS,
          connectionTimeoutMillis: 5_000,
          keepAlive: true,
          keepAliveInitialDelayMillis: 5_000,
        },
        opts.onPoolError ? { onPoolError: opts.onPoolError } : undefined,
      );
    }),
  );
}
