// @fleet/db: Fleet's database. Migrations are applied offline with Prisma's
// schema engine compiled to WebAssembly; queries go through the generated
// Prisma client on a driver adapter (better-sqlite3 for file: URLs, pg for
// postgresql:// URLs). Other packages import database types only from here.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { PrismaClient } from '../generated/client/client.ts';
import { PrismaClient as PgPrismaClient } from '../generated/postgresql/client/client.ts';
import type * as PgClient from '../generated/postgresql/client/client.ts';
import type * as SqliteClient from '../generated/client/client.ts';
import { adapterFactoryFor } from './adapters.ts';
import { engineErrorMessage, NO_FILTER, readMigrationsDir, startSchemaEngine } from './engine.ts';
import { LAYOUT, providerOf, readSchema, redactUrl, sqlitePath, type Provider } from './providers.ts';

// Model types (Worker, Vm, ...), the PrismaClient type, and the Prisma namespace
// (types, plus values such as Prisma.PrismaClientKnownRequestError).
export type * from '../generated/client/client.ts';
export { Prisma } from '../generated/client/client.ts';
export { providerOf, redactUrl, type Provider } from './providers.ts';

/** The database client handed to the rest of Fleet. Call `$disconnect()` when done. */
export type FleetDb = PrismaClient;

/** Minimal logger (console, pino and fastify's logger all fit). */
export interface DbLogger {
  info(msg: string): void;
  warn(msg: string): void;
  debug?(msg: string): void;
}

export type MigrationErrorCode =
  /** The database records a migration that failed part-way; it needs an operator. */
  | 'FAILED_MIGRATION'
  /** The database has migrations this build does not know (it was migrated by a newer Fleet?). */
  | 'UNKNOWN_MIGRATION'
  /** A migration applied to the database differs from the checked-in file of the same name. */
  | 'EDITED_MIGRATION'
  /** Applying a pending migration failed. */
  | 'APPLY_FAILED'
  /** The database could not be reached or read, or the migrations folder is missing. */
  | 'SETUP_FAILED';

export class MigrationError extends Error {
  override readonly name = 'MigrationError';
  constructor(
    readonly code: MigrationErrorCode,
    /** The migrations concerned (may be empty for SETUP_FAILED). */
    readonly migrations: readonly string[],
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface MigrateOptions {
  logger?: DbLogger;
  /** Override the checked-in migrations folder (tests). */
  migrationsDir?: string;
}

/**
 * Bring the database at `url` up to date with the checked-in migrations
 * (prisma/migrations for SQLite, prisma/postgresql/migrations for PostgreSQL),
 * recording them in `_prisma_migrations` exactly like `prisma migrate deploy`.
 * Idempotent; creates the SQLite file (and its directory) if missing.
 *
 * Refuses, with a MigrationError, a database that has a failed migration, a
 * migration this build does not know, or an applied migration whose file changed.
 */
export async function migrateDatabase(url: string, opts: MigrateOptions = {}): Promise<{ applied: string[] }> {
  const provider = providerOf(url);
  const where = `${provider} database ${redactUrl(url)}`;
  const log = opts.logger;
  const debug = (msg: string): void => log?.debug?.(msg);
  const migrationsDir = opts.migrationsDir ?? LAYOUT[provider].migrationsDir;

  const migrationsList = await readMigrationsDir(migrationsDir);
  const known = migrationsList.migrationDirectories.map((d) => d.path);
  if (known.length === 0) {
    throw new MigrationError('SETUP_FAILED', [], `no migrations found in ${migrationsDir}`);
  }
  if (provider === 'sqlite') mkdirSync(path.dirname(sqlitePath(url)), { recursive: true });

  const factory = adapterFactoryFor(url);
  let engine: Awaited<ReturnType<typeof startSchemaEngine>> | undefined;
  try {
    try {
      engine = await startSchemaEngine({
        schema: { path: path.basename(LAYOUT[provider].schemaPath), content: readSchema(provider) },
        adapterFactory: factory,
        log: (line) => forwardEngineLog(line, log),
      });
    } catch (err) {
      throw new MigrationError('SETUP_FAILED', [], `cannot start the schema engine for ${where}: ${engineErrorMessage(err)}`, { cause: err });
    }

    let diag: Awaited<ReturnType<typeof engine.diagnoseMigrationHistory>>;
    try {
      diag = await engine.diagnoseMigrationHistory({ migrationsList, optInToShadowDatabase: false, filters: NO_FILTER });
    } catch (err) {
      throw new MigrationError('SETUP_FAILED', [], `cannot read the migration history of ${where}: ${engineErrorMessage(err)}`, { cause: err });
    }
    checkHistory(diag, where, known);

    const pending =
      diag.history?.diagnostic === 'databaseIsBehind' ? diag.history.unappliedMigrationNames : diag.hasMigrationsTable ? [] : known;
    if (pending.length > 0) debug(`@fleet/db: applying ${pending.length} migration(s) to ${where}: ${pending.join(', ')}`);

    let applied: string[];
    try {
      applied = (await engine.applyMigrations({ migrationsList, filters: NO_FILTER })).appliedMigrationNames;
    } catch (err) {
      throw new MigrationError(
        'APPLY_FAILED',
        pending,
        `migrating ${where} failed: ${engineErrorMessage(err)}\n` +
          `Pending migrations were: ${pending.join(', ') || '(none)'}. A migration that failed part-way is ` +
          `recorded as failed in _prisma_migrations; the controller will refuse to start until an operator ` +
          `repairs the database (see prisma/README.md, "When a migration fails").`,
        { cause: err },
      );
    }
    for (const name of applied) log?.info(`@fleet/db: applied migration ${name} to ${where}`);
    if (applied.length === 0) debug(`@fleet/db: ${where} is up to date (${known.length} migrations)`);
    return { applied };
  } finally {
    engine?.free();
    await factory.disposeAll();
  }
}

function checkHistory(
  diag: Awaited<ReturnType<Awaited<ReturnType<typeof startSchemaEngine>>['diagnoseMigrationHistory']>>,
  where: string,
  known: readonly string[],
): void {
  if (diag.failedMigrationNames.length > 0) {
    const names = diag.failedMigrationNames;
    throw new MigrationError(
      'FAILED_MIGRATION',
      names,
      `${where} has failed migration(s) ${names.join(', ')} recorded in _prisma_migrations: ` +
        `the schema may be half-applied. Repair it by hand (or restore a backup), then mark the migration ` +
        `rolled back or applied (see prisma/README.md, "When a migration fails").`,
    );
  }
  const h = diag.history;
  if (h && (h.diagnostic === 'migrationsDirectoryIsBehind' || h.diagnostic === 'historiesDiverge') && h.unpersistedMigrationNames.length > 0) {
    const names = h.unpersistedMigrationNames;
    throw new MigrationError(
      'UNKNOWN_MIGRATION',
      names,
      `${where} has migration(s) ${names.join(', ')} applied that this build of Fleet does not know ` +
        `(it knows ${known.length}: ${known[0]} .. ${known[known.length - 1]}). The database was probably ` +
        `migrated by a newer Fleet; run that version, or restore a backup taken before the upgrade.`,
    );
  }
  if (diag.editedMigrationNames.length > 0) {
    const names = diag.editedMigrationNames;
    throw new MigrationError(
      'EDITED_MIGRATION',
      names,
      `${where}: migration(s) ${names.join(', ')} were applied from a different migration.sql than the one ` +
        `checked in now (checksum mismatch). Checked-in migrations must never be edited; add a new migration instead.`,
    );
  }
}

/** The engine reports JSON lines: {"level":"INFO","fields":{"message":...},"target":...}. */
function forwardEngineLog(line: string, log: DbLogger | undefined): void {
  if (!log) return;
  let level = 'DEBUG';
  let message = line;
  try {
    const parsed = JSON.parse(line) as { level?: unknown; fields?: { message?: unknown } };
    if (typeof parsed.level === 'string') level = parsed.level;
    if (typeof parsed.fields?.message === 'string') message = parsed.fields.message;
  } catch {
    // not JSON: pass it on as is
  }
  if (level === 'WARN' || level === 'ERROR') log.warn(`@fleet/db: schema engine: ${message}`);
  else log.debug?.(`@fleet/db: schema engine: ${message}`);
}

export interface OpenDatabaseOptions {
  /** `file:<path>` (SQLite, relative to the working directory) or `postgresql://user:pass@host:port/db`. */
  url: string;
  /** SQLite: how long to wait for a lock held by another connection (default 10 000 ms). */
  busyTimeoutMs?: number;
  /** PostgreSQL: connection pool size (default 10). */
  poolSize?: number;
  /** PostgreSQL: told when an idle pooled connection fails (the pool replaces it). */
  onPoolError?: (err: Error) => void;
}

/**
 * A Prisma client for the database at `url`. It connects lazily on the first
 * query. Run `migrateDatabase(url)` first.
 *
 * SQLite connections use WAL, synchronous=NORMAL, foreign keys on and a busy
 * timeout. Prisma uses one SQLite connection per client and serialises
 * transactions on it, so a single controller never competes with itself.
 */
export function openDatabase(opts: OpenDatabaseOptions): FleetDb {
  const provider: Provider = providerOf(opts.url);
  const adapter = adapterFactoryFor(opts.url, {
    ...(opts.busyTimeoutMs !== undefined && { busyTimeoutMs: opts.busyTimeoutMs }),
    ...(opts.poolSize !== undefined && { poolSize: opts.poolSize }),
    ...(opts.onPoolError !== undefined && { onPoolError: opts.onPoolError }),
  });
  if (provider === 'sqlite') return new PrismaClient({ adapter });
  // The PostgreSQL client is generated from the same models (see providers.ts);
  // its model and result types are identical (checked below at compile time),
  // and its input types accept everything the SQLite client's do.
  return new PgPrismaClient({ adapter }) as unknown as FleetDb;
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
