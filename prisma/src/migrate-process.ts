// migrateDatabase in a short-lived child process (issue 20: controller memory).
//
// Prisma's schema engine is WebAssembly (5.4 MB of code, plus its memory and compiled code):
// once a process has instantiated it, the instance stays for the life of the process
// (wasm-bindgen's glue keeps views of its memory, so it cannot be dropped and made again
// safely). The controller migrates once, at start, and then runs for weeks: it migrates in a
// child (migrate-child.ts) that exits when done, and never loads the engine itself (~12 MiB of
// RSS measured in isolation; BENCHMARKS.md, "Memory (issue 20)").
//
// The caller sees what an in-process migrateDatabase would give: the applied migrations, or
// the same error (a MigrationError keeps its code, migrations and message; any other error its
// name and message), and the same log lines through its logger. Whatever lock the caller holds
// (withMigrationLock on PostgreSQL, the controller lock on SQLite) is held by the caller's
// process while the child runs; the child exits as soon as the caller's end of the pipe closes
// (the caller died), so it never migrates on without the lock.
//
// The database URL (it may carry a password) goes over the IPC channel, not the command line or
// the environment.
import { fork } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MigrationError, type DbLogger, type MigrateChildOptions, type MigrateOptions, type MigrationErrorCode } from './migrate.ts';
import { providerOf, redactUrl } from './providers.ts';

/** Parent → child: the one request. */
export interface MigrateRequest {
  kind: 'migrate';
  url: string;
  migrationsDir?: string;
}

/** An error as it crosses the pipe. */
export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  /** MigrationError only. */
  code?: MigrationErrorCode;
  migrations?: string[];
  cause?: SerializedError;
}

/** Child → parent. */
export type MigrateReply =
  | { kind: 'log'; level: 'info' | 'warn' | 'debug'; message: string }
  | { kind: 'done'; applied: string[] }
  | { kind: 'failed'; error: SerializedError };

const CODES: readonly MigrationErrorCode[] = ['FAILED_MIGRATION', 'UNKNOWN_MIGRATION', 'EDITED_MIGRATION', 'APPLY_FAILED', 'SETUP_FAILED'];

export function serializeError(err: unknown, depth = 0): SerializedError {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err) };
  const out: SerializedError = { name: err.name, message: err.message };
  if (err.stack !== undefined) out.stack = err.stack;
  if (err instanceof MigrationError) {
    out.code = err.code;
    out.migrations = [...err.migrations];
  }
  if (err.cause !== undefined && depth < 3) out.cause = serializeError(err.cause, depth + 1);
  return out;
}

/** The error the caller gets: a MigrationError again when it was one. */
export function deserializeError(e: SerializedError): Error {
  const cause = e.cause ? { cause: deserializeError(e.cause) } : undefined;
  let err: Error;
  if (e.name === 'MigrationError' && e.code !== undefined) err = new MigrationError(e.code, e.migrations ?? [], e.message, cause);
  else {
    err = new Error(e.message, cause);
    err.name = e.name;
  }
  if (e.stack !== undefined) err.stack = e.stack;
  return err;
}

function isStrings(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

function isSerializedError(v: unknown): v is SerializedError {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    typeof o['name'] === 'string' &&
    typeof o['message'] === 'string' &&
    (o['stack'] === undefined || typeof o['stack'] === 'string') &&
    (o['code'] === undefined || CODES.includes(o['code'] as MigrationErrorCode)) &&
    (o['migrations'] === undefined || isStrings(o['migrations'])) &&
    (o['cause'] === undefined || isSerializedError(o['cause']))
  );
}

/** Checks what arrives over the pipe (the other side is our own code, but a pipe is a boundary). */
export function isMigrateReply(v: unknown): v is MigrateReply {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  switch (o['kind']) {
    case 'log':
      return (o['level'] === 'info' || o['level'] === 'warn' || o['level'] === 'debug') && typeof o['message'] === 'string';
    case 'done':
      return isStrings(o['applied']);
    case 'failed':
      return isSerializedError(o['error']);
    default:
      return false;
  }
}

export function isMigrateRequest(v: unknown): v is MigrateRequest {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return o['kind'] === 'migrate' && typeof o['url'] === 'string' && (o['migrationsDir'] === undefined || typeof o['migrationsDir'] === 'string');
}

/**
 * The child's entry defaults to migrate-child.ts through tsx (tests, tools under tsx); the
 * controller passes its bin's launcher, which runs the bundled entry when the bundle is up to
 * date (apps/controller/bin/migrate-database.cjs). The child's node flags are never the caller's
 * (a preloaded probe or an inspector is not wanted there).
 */
export type ChildMigrateOptions = Omit<MigrateOptions, 'inChildProcess'> & MigrateChildOptions;

const require = createRequire(import.meta.url);

function defaultChild(): { entry: string; execArgv: string[] } {
  return {
    entry: fileURLToPath(new URL('./migrate-child.ts', import.meta.url)),
    // tsx's loader by its own path: `--import tsx` would resolve from the working directory.
    execArgv: ['--import', pathToFileURL(require.resolve('tsx')).href],
  };
}

/** What the child wrote to stdout/stderr, for the message when it dies: the last few KiB. */
const OUTPUT_TAIL = 4096;

/**
 * migrateDatabase(url, opts) run in a child process that exits when done (see the top of the
 * file). Resolves to what migrateDatabase resolved to; rejects with the error it threw (a
 * MigrationError with the same code, migrations and message), or with a MigrationError
 * SETUP_FAILED when the child could not be started or died before it answered.
 */
export function migrateDatabaseInChild(url: string, opts: ChildMigrateOptions = {}): Promise<{ applied: string[] }> {
  const log: DbLogger | undefined = opts.logger;
  const fallback = opts.entry === undefined ? defaultChild() : undefined;
  const entry = opts.entry === undefined ? fallback!.entry : typeof opts.entry === 'string' ? opts.entry : fileURLToPath(opts.entry);
  const execArgv = opts.execArgv ?? fallback?.execArgv ?? [];
  const request: MigrateRequest = { kind: 'migrate', url, ...(opts.migrationsDir !== undefined && { migrationsDir: opts.migrationsDir }) };
  return new Promise((resolve, reject) => {
    let output = '';
    let outcome: { ok: true; applied: string[] } | { ok: false; error: Error } | undefined;
    const child = fork(entry, [], { execArgv, stdio: ['ignore', 'pipe', 'pipe', 'ipc'], serialization: 'json' });
    const keep = (d: Buffer): void => {
      output = (output + d.toString('utf8')).slice(-OUTPUT_TAIL);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    child.on('message', (m: unknown) => {
      if (!isMigrateReply(m)) return;
      if (m.kind === 'log') {
        if (m.level === 'warn') log?.warn(m.message);
        else if (m.level === 'info') log?.info(m.message);
        else log?.debug?.(m.message);
      } else if (outcome === undefined) {
        outcome = m.kind === 'done' ? { ok: true, applied: m.applied } : { ok: false, error: deserializeError(m.error) };
      }
    });
    let spawnError: Error | undefined;
    child.once('error', (err) => {
      // fork failed (or sending failed): 'exit' may never come for a process that did not start.
      spawnError = err;
      if (child.pid === undefined) finish(null, null);
    });
    child.once('spawn', () => {
      if (child.pid !== undefined) opts.onSpawn?.(child.pid);
      child.send(request);
    });
    // 'close': the process has exited and its stdout/stderr are read to the end.
    child.once('close', (code, signal) => finish(code, signal));
    let finished = false;
    function finish(code: number | null, signal: NodeJS.Signals | null): void {
      if (finished) return;
      finished = true;
      if (outcome?.ok) return resolve({ applied: outcome.applied });
      if (outcome) return reject(outcome.error);
      let where: string;
      try {
        where = `${providerOf(url)} database ${redactUrl(url)}`;
      } catch {
        where = 'the database';
      }
      const how = spawnError ? `could not run (${spawnError.message})` : signal ? `was killed by ${signal}` : `exited with code ${code}`;
      const tail = output.trim() ? `:\n${output.trim()}` : '';
      reject(
        new MigrationError('SETUP_FAILED', [], `migrating ${where}: the migration process (${process.execPath} ${entry}) ${how} before it answered${tail}`, {
          ...(spawnError && { cause: spawnError }),
        }),
      );
    }
  });
}
