// @fleet/db: Fleet's database. Migrations are applied offline with Prisma's
// schema engine compiled to WebAssembly; queries go through the generated
// Prisma client on a driver adapter (better-sqlite3 for file: URLs, pg for
// postgresql:// URLs). Other packages import database types only from here.
import { PrismaClient } from '../generated/client/client.ts';
import { PrismaClient as PgPrismaClient } from '../generated/postgresql/client/client.ts';
import type * as PgClient from '../generated/postgresql/client/client.ts';
import type * as SqliteClient from '../generated/client/client.ts';
import { adapterFactoryFor, SingleSqliteConnectionFactory, type SqliteSynchronous } from './adapters.ts';
import { registerDirectSql } from './direct-sql.ts';
import { providerOf, type Provider } from './providers.ts';

// Model types (Worker, Vm, ...), the PrismaClient type, and the Prisma namespace
// (types, plus values such as Prisma.PrismaClientKnownRequestError).
export type * from '../generated/client/client.ts';
export { Prisma } from '../generated/client/client.ts';
export { providerOf, redactUrl, sqlitePath, type Provider } from './providers.ts';
export { insertRows, insertStatements, type RawExecutor, type SqlValue } from './insert-rows.ts';
export { paddedLength, sqlText } from './sql-text.ts';
export { directSql, directSqlIn, directTransaction, directWrite, numberedPlaceholders, sqliteCommitCycle, type DirectSql, type DirectTransactionOptions, type DirectTx, type RawClient } from './direct-sql.ts';
export { ALLOCATION_COLUMNS, API_TOKEN_COLUMNS, VM_ACCESS_COLUMNS, VM_COLUMNS, columnList, quotedColumns, quotedIdentifier, rowsOf, type ColumnKind, type ColumnKinds } from './columns.ts';
export { DEFAULT_SQLITE_SYNCHRONOUS, type SqliteSynchronous } from './adapters.ts';
export { acquireControllerLock, ControllerLockError, type ControllerLock } from './controller-lock.ts';
export { withMigrationLock } from './migration-lock.ts';
export { openNotifyChannel, type NotifyChannel, type NotifyChannelOptions } from './notify-channel.ts';
export { startLeaderLease, NotLeaderError, isNotLeaderError, type LeaderLease, type LeaderLeaseOptions, type LeaderInfo, type FenceClient } from './leader-lease.ts';
export {
  classifyStorageError,
  describeStorageFault,
  isStorageUnavailable,
  type StorageFault,
  type StorageFaultKind,
} from './storage-errors.ts';
export {
  migrateDatabase,
  MigrationError,
  type DbLogger,
  type MigrateOptions,
  type MigrationErrorCode,
} from './migrate.ts';

/** The database client handed to the rest of Fleet. Call `$disconnect()` when done. */
export type FleetDb = PrismaClient;

export interface OpenDatabaseOptions {
  /** `file:<path>` (SQLite, relative to the working directory) or `postgresql://user:pass@host:port/db`. */
  url: string;
  /** SQLite: how long to wait for a lock held by another connection (default 10 000 ms). */
  busyTimeoutMs?: number;
  /**
   * SQLite: `synchronous` (default FULL: an acknowledged commit survives a power loss).
   * NORMAL is for benchmarks that measure what FULL costs.
   */
  sqliteSynchronous?: SqliteSynchronous;
  /** PostgreSQL: connection pool size (default 10). */
  poolSize?: number;
  /** PostgreSQL: told when an idle pooled connection fails (the pool replaces it). */
  onPoolError?: (err: Error) => void;
}

/**
 * A Prisma client for the database at `url`. It connects lazily on the first
 * query. Run `migrateDatabase(url)` first.
 *
 * SQLite connections use WAL, synchronous=FULL, foreign keys on and a busy
 * timeout. Prisma uses one SQLite connection per client; transactions on it run one at a
 * time and queries outside them wait while one is open (sqlite-connection.ts), so a single
 * controller never competes with itself.
 */
export function openDatabase(opts: OpenDatabaseOptions): FleetDb {
  const provider: Provider = providerOf(opts.url);
  const adapter = adapterFactoryFor(opts.url, {
    ...(opts.busyTimeoutMs !== undefined && { busyTimeoutMs: opts.busyTimeoutMs }),
    ...(opts.sqliteSynchronous !== undefined && { sqliteSynchronous: opts.sqliteSynchronous }),
    ...(opts.poolSize !== undefined && { poolSize: opts.poolSize }),
    ...(opts.onPoolError !== undefined && { onPoolError: opts.onPoolError }),
  });
  // The PostgreSQL client is generated from the same models (see providers.ts);
  // its model types are identical (checked below at compile time). Its query
  // API only adds PostgreSQL-only options, which Fleet code (typed against the
  // SQLite client) cannot use anyway.
  const db = provider === 'sqlite' ? new PrismaClient({ adapter }) : (new PgPrismaClient({ adapter }) as unknown as FleetDb);
  providers.set(db, provider);
  registerDirectSql(db, { provider, client: db, ...(adapter instanceof SingleSqliteConnectionFactory && { sqlite: adapter }) });
  return db;
}

const providers = new WeakMap<FleetDb, Provider>();

/** The database engine behind a client from openDatabase (for the few raw statements, see insert-rows.ts). */
export function providerOfDb(db: FleetDb): Provider {
  const provider = providers.get(db);
  if (!provider) throw new Error('not a client made by openDatabase: its database engine is unknown');
  return provider;
}

// Compile-time guard for the cast above: the model types of both clients must match.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Assert<T extends true> = T;
// eslint-disable-next-line @typescript-eslint/no-unused-vars
type _ModelTypesMatch = Assert<
  Same<
    [
      SqliteClient.Worker,
      SqliteClient.WorkerCredential,
      SqliteClient.Vm,
      SqliteClient.Allocation,
      SqliteClient.Event,
      SqliteClient.ApiToken,
      SqliteClient.BootstrapToken,
      SqliteClient.Setting,
    ],
    [
      PgClient.Worker,
      PgClient.WorkerCredential,
      PgClient.Vm,
      PgClient.Allocation,
      PgClient.Event,
      PgClient.ApiToken,
      PgClient.BootstrapToken,
      PgClient.Setting,
    ]
  >
>;
