// Applying the checked-in migrations offline with Prisma's schema engine
// (WebAssembly build), plus the operator commands behind src/migrate-cli.ts.
// Everything is recorded in `_prisma_migrations` exactly as `prisma migrate
// deploy` / `prisma migrate resolve` would, so Prisma's own CLI agrees.
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import type {
  DiagnoseMigrationHistoryOutput,
  MigrationList,
  SchemaEngine,
} from '@prisma/schema-engine-wasm/schema_engine_bg';
import { adapterFactoryFor } from './adapters.ts';
import { engineErrorMessage, NO_FILTER, readMigrationsDir, startSchemaEngine } from './engine.ts';
import { LAYOUT, providerOf, readSchema, redactUrl, sqlitePath, type Provider } from './providers.ts';

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
  /**
   * migrateDatabase only: migrate in a short-lived child process (migrate-process.ts), so that
   * this process never loads Prisma's schema engine, which stays once loaded (the controller:
   * issue 20, memory). Same result, errors and log lines as in this process.
   */
  inChildProcess?: MigrateChildOptions;
}

export interface MigrateChildOptions {
  /**
   * The file node runs as the child (prisma/src/migrate-child.ts or a launcher of its bundled
   * build, apps/controller/bin/migrate-database.cjs). Default: migrate-child.ts through tsx.
   */
  entry?: string | URL;
  /** The child's node flags. Default: none (with the default entry: tsx's loader). */
  execArgv?: string[];
  /** Told the child's pid once it runs. */
  onSpawn?: (pid: number) => void;
}

const REPAIR_HINT = 'see prisma/README.md, "When a migration fails"';

interface Session {
  provider: Provider;
  /** "sqlite database file:..." with any password redacted, for messages. */
  where: string;
  engine: SchemaEngine;
  migrationsList: MigrationList;
  /** Names of the checked-in migrations, in order. */
  known: string[];
}

/**
 * Sessions run one at a time in a process: the engine takes SQLite's exclusive
 * lock, and better-sqlite3 would block the event loop if a second session
 * waited for it.
 */
let queue: Promise<unknown> = Promise.resolve();

/** Start the engine on the database at `url` with the migrations folder loaded; always cleans up. */
function withSession<T>(
  url: string,
  opts: MigrateOptions & { create?: boolean },
  fn: (s: Session) => Promise<T>,
): Promise<T> {
  const run = queue.then(() => runSession(url, opts, fn));
  queue = run.catch(() => {});
  return run;
}

async function runSession<T>(
  url: string,
  opts: MigrateOptions & { create?: boolean },
  fn: (s: Session) => Promise<T>,
): Promise<T> {
  const provider = providerOf(url);
  const where = `${provider} database ${redactUrl(url)}`;
  const migrationsDir = opts.migrationsDir ?? LAYOUT[provider].migrationsDir;
  const migrationsList = await readMigrationsDir(migrationsDir);
  const known = migrationsList.migrationDirectories.map((d) => d.path);
  if (known.length === 0) {
    throw new MigrationError('SETUP_FAILED', [], `no migrations found in ${migrationsDir}`);
  }
  if (provider === 'sqlite') {
    const file = sqlitePath(url);
    if (opts.create) mkdirSync(path.dirname(file), { recursive: true });
    else if (!existsSync(file)) throw new MigrationError('SETUP_FAILED', [], `there is no database at ${file}`);
  }

  const factory = adapterFactoryFor(url, { forSchemaEngine: true });
  let engine: SchemaEngine | undefined;
  try {
    try {
      engine = await startSchemaEngine({
        schema: { path: path.basename(LAYOUT[provider].schemaPath), content: readSchema(provider) },
        adapterFactory: factory,
        log: (line) => forwardEngineLog(line, opts.logger),
      });
    } catch (err) {
      throw new MigrationError('SETUP_FAILED', [], `cannot open ${where} for migration: ${engineErrorMessage(err)}`, {
        cause: err,
      });
    }
    return await fn({ provider, where, engine, migrationsList, known });
  } finally {
    engine?.free();
    await factory.disposeAll();
  }
}

/** The engine's view of the history; undefined for a database that was never migrated. */
async function diagnose(s: Session): Promise<DiagnoseMigrationHistoryOutput | undefined> {
  try {
    return await s.engine.diagnoseMigrationHistory({
      migrationsList: s.migrationsList,
      optInToShadowDatabase: false,
      filters: NO_FILTER,
    });
  } catch (err) {
    // The wasm engine reports a missing _prisma_migrations table as P1014 instead of hasMigrationsTable=false.
    if (isMissingMigrationsTable(err)) return undefined;
    throw new MigrationError(
      'SETUP_FAILED',
      [],
      `cannot read the migration history of ${s.where}: ${engineErrorMessage(err, s.engine)}`,
      { cause: err },
    );
  }
}

function isMissingMigrationsTable(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const { code, message } = err as { code?: unknown; message?: unknown };
  return code === 'P1014' && typeof message === 'string' && message.includes('_prisma_migrations');
}

function pendingOf(diag: DiagnoseMigrationHistoryOutput | undefined, known: string[]): string[] {
  if (!diag || !diag.hasMigrationsTable) return known;
  return diag.history?.diagnostic === 'databaseIsBehind' || diag.history?.diagnostic === 'historiesDiverge'
    ? diag.history.unappliedMigrationNames
    : [];
}

function unknownOf(diag: DiagnoseMigrationHistoryOutput | undefined): string[] {
  const h = diag?.history;
  return h && (h.diagnostic === 'migrationsDirectoryIsBehind' || h.diagnostic === 'historiesDiverge')
    ? h.unpersistedMigrationNames
    : [];
}

function checkHistory(diag: DiagnoseMigrationHistoryOutput | undefined, s: Session): void {
  if (!diag) return;
  const { where, known } = s;
  if (diag.failedMigrationNames.length > 0) {
    const names = diag.failedMigrationNames;
    throw new MigrationError(
      'FAILED_MIGRATION',
      names,
      `${where} has failed migration(s) ${names.join(', ')} recorded in _prisma_migrations: the schema may be ` +
        `half-applied. Repair it by hand (or restore a backup), then mark the migration rolled back or applied ` +
        `(${REPAIR_HINT}).`,
    );
  }
  const unknown = unknownOf(diag);
  if (unknown.length > 0) {
    throw new MigrationError(
      'UNKNOWN_MIGRATION',
      unknown,
      `${where} has migration(s) ${unknown.join(', ')} applied that this build of Fleet does not know ` +
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
  if (opts.inChildProcess) {
    const { inChildProcess, ...inChild } = opts;
    // Imported here: the child's module is needed only by the processes that use it.
    const { migrateDatabaseInChild } = await import('./migrate-process.ts');
    return migrateDatabaseInChild(url, { ...inChild, ...inChildProcess });
  }
  const log = opts.logger;
  return withSession(url, { ...opts, create: true }, async (s) => {
    const diag = await diagnose(s);
    checkHistory(diag, s);
    const pending = pendingOf(diag, s.known);
    if (pending.length > 0) log?.debug?.(`@fleet/db: applying ${pending.length} migration(s) to ${s.where}: ${pending.join(', ')}`);

    let applied: string[];
    try {
      applied = (await s.engine.applyMigrations({ migrationsList: s.migrationsList, filters: NO_FILTER }))
        .appliedMigrationNames;
    } catch (err) {
      const cause = engineErrorMessage(err, s.engine);
      // Which one failed: the engine records it in _prisma_migrations as unfinished.
      const failed = await diagnose(s).then(
        (d) => d?.failedMigrationNames ?? [],
        () => [],
      );
      const culprit = failed.length ? `migration ${failed.join(', ')}` : `one of ${pending.join(', ') || '(none)'}`;
      throw new MigrationError(
        'APPLY_FAILED',
        failed.length ? failed : pending,
        `migrating ${s.where} failed in ${culprit}: ${cause}\n` +
          `The migration may be partly applied. It is recorded as failed in _prisma_migrations, and Fleet ` +
          `refuses to start until an operator repairs the database (${REPAIR_HINT}).`,
        { cause: err },
      );
    }
    for (const name of applied) log?.info(`@fleet/db: applied migration ${name} to ${s.where}`);
    if (applied.length === 0) log?.debug?.(`@fleet/db: ${s.where} is up to date (${s.known.length} migrations)`);
    return { applied };
  });
}

export interface MigrationStatus {
  /** Checked-in migrations, in order. */
  known: string[];
  /** Checked-in migrations not yet applied. */
  pending: string[];
  /** Applied migrations that are not checked in. */
  unknown: string[];
  /** Migrations recorded as failed (not rolled back). */
  failed: string[];
  /** Applied migrations whose checked-in file has changed since. */
  edited: string[];
}

/** What `migrateDatabase` would find, without changing anything. */
export async function migrationStatus(url: string, opts: MigrateOptions = {}): Promise<MigrationStatus> {
  return withSession(url, opts, async (s) => {
    const diag = await diagnose(s);
    return {
      known: s.known,
      pending: pendingOf(diag, s.known),
      unknown: unknownOf(diag),
      failed: diag?.failedMigrationNames ?? [],
      edited: diag?.editedMigrationNames ?? [],
    };
  });
}

/**
 * Operator repair after a failed migration, like `prisma migrate resolve`:
 * 'rolled-back' marks the failed attempt rolled back (it is retried at the next
 * start); 'applied' records the migration as applied (you finished it by hand).
 */
export async function resolveMigration(
  url: string,
  name: string,
  as: 'rolled-back' | 'applied',
  opts: MigrateOptions = {},
): Promise<void> {
  await withSession(url, opts, async (s) => {
    if (!s.known.includes(name)) {
      throw new MigrationError('SETUP_FAILED', [name], `${name} is not a checked-in migration (known: ${s.known.join(', ')})`);
    }
    try {
      if (as === 'rolled-back') await s.engine.markMigrationRolledBack({ migrationName: name });
      else await s.engine.markMigrationApplied({ migrationName: name, migrationsList: s.migrationsList });
    } catch (err) {
      throw new MigrationError('SETUP_FAILED', [name], `marking ${name} ${as} in ${s.where} failed: ${engineErrorMessage(err, s.engine)}`, {
        cause: err,
      });
    }
  });
}

/** The engine reports JSON lines: {"level":"INFO","fields":{"message":...},"target":...}. */
function forwardEngineLog(line: string, log: DbLogger | undefined): void {
  if (!log) return;
  let level = 'DEBUG';
  let message = line;
  try {
    const parsed = JSON.parse(line) as { level?: unknown; fields?: Record<string, unknown> };
    if (typeof parsed.level === 'string') level = parsed.level;
    const fields = parsed.fields ?? {};
    message = typeof fields['message'] === 'string' ? fields['message'] : JSON.stringify(fields);
  } catch {
    // not JSON: pass it on as is
  }
  if (level === 'WARN' || level === 'ERROR') log.warn(`@fleet/db: schema engine: ${message}`);
  else log.debug?.(`@fleet/db: schema engine: ${message}`);
}
