// One controller per database, enforced for the life of the process (issue 13, point 1).
//
// Two controllers on one database each believe they own every worker: the second holds none of
// the workers' streams, marks them all offline after the timeout and fails every VM. Until
// several controllers can share a database (leased leadership, issue 13), a second one refuses
// to start and says why.
//
// - SQLite: an exclusive lock on `<database file>.controller-lock`, a small SQLite database held
//   in an open write transaction by this process. The operating system drops the lock when the
//   process exits, however it exits, so there is no stale lock to clean up after kill -9.
// - PostgreSQL: a session-level advisory lock on a connection of its own. If that connection is
//   lost the lock is gone, so the holder tries to take it back at once; if another controller
//   took it meanwhile, `onLost` is told (the controller then stops: it is no longer the only one).
import Database from 'better-sqlite3';
import { readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { providerOf, sqlitePath } from './providers.ts';

/** Arbitrary, fixed: `pg_try_advisory_lock` key of "the Fleet controller of this database". */
const PG_LOCK_KEY = '7361001931001';

export class ControllerLockError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ControllerLockError';
  }
}

export interface ControllerLock {
  /** Where the lock lives (a file path, or "postgresql advisory lock …"). */
  readonly description: string;
  release(): Promise<void>;
}

export interface ControllerLockOptions {
  /** PostgreSQL: the lock could not be taken back after its connection was lost. */
  onLost?: (reason: string) => void;
  /** PostgreSQL: how often to try again while the lock connection is down (default 1 s). */
  retryMs?: number;
}

interface Holder {
  pid: number;
  host: string;
  startedAt: string;
}

function holderText(h: Holder | undefined): string {
  return h ? `pid ${h.pid} on ${h.host}, started ${h.startedAt}` : 'holder unknown';
}

const me = (): Holder => ({ pid: process.pid, host: hostname(), startedAt: new Date().toISOString() });

/** Takes the lock or throws ControllerLockError naming the other controller and what to do instead. */
export async function acquireControllerLock(url: string, opts: ControllerLockOptions = {}): Promise<ControllerLock> {
  return providerOf(url) === 'sqlite' ? sqliteLock(url) : postgresLock(url, opts);
}

function sqliteLock(url: string): ControllerLock {
  const dbFile = path.resolve(sqlitePath(url)); // the same path the database itself is opened at
  const lockFile = `${dbFile}.controller-lock`;
  const holderFile = `${lockFile}.json`;
  const db = new Database(lockFile, { timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('CREATE TABLE IF NOT EXISTS held (at TEXT)');
    db.exec('BEGIN EXCLUSIVE');
    db.prepare('INSERT INTO held (at) VALUES (?)').run(new Date().toISOString());
  } catch (err) {
    db.close();
    const code = (err as { code?: string }).code ?? '';
    if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
      let holder: Holder | undefined;
      try {
        holder = JSON.parse(readFileSync(holderFile, 'utf8')) as Holder;
      } catch {
        /* written a moment after the lock; absent on a very young holder */
      }
      throw new ControllerLockError(
        `another Fleet controller is running on the database ${dbFile} (${holderText(holder)}). ` +
          'One controller per SQLite database: stop that one first, or give this one its own --data-dir. ' +
          'Several controllers need a shared PostgreSQL database (--database-url).',
      );
    }
    throw err;
  }
  writeFileSync(holderFile, JSON.stringify(me()) + '\n', { mode: 0o600 });
  return {
    description: lockFile,
    async release() {
      try {
        db.exec('ROLLBACK');
      } catch {
        /* already closed */
      }
      db.close();
    },
  };
}

async function postgresLock(url: string, opts: ControllerLockOptions): Promise<ControllerLock> {
  let client: pg.Client | undefined;
  let released = false;
  let retry: NodeJS.Timeout | undefined;

  /** Who holds it (the application_name a controller connects with), for the refusal message. */
  let otherHolder = '';
  const take = async (): Promise<boolean> => {
    const c = new pg.Client({ connectionString: url, application_name: `fleet-controller ${hostname()} ${process.pid}` });
    c.on('error', () => undefined); // reported through 'end'
    await c.connect();
    const r = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [PG_LOCK_KEY]);
    if (!r.rows[0]?.ok) {
      const who = await c
        .query<{ application_name: string; client_addr: string | null }>(
          "SELECT a.application_name, host(a.client_addr) AS client_addr FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'fleet-controller %' LIMIT 1",
        )
        .catch(() => undefined);
      const row = who?.rows[0];
      otherHolder = row ? ` (${row.application_name}${row.client_addr ? ` from ${row.client_addr}` : ''})` : '';
      await c.end().catch(() => undefined);
      return false;
    }
    client = c;
    c.once('end', () => {
      if (released || client !== c) return;
      client = undefined;
      void regain();
    });
    return true;
  };

  // The lock went with its connection: take it back, or give up if another controller has it.
  const regain = async (): Promise<void> => {
    if (released) return;
    try {
      if (await take()) return;
      opts.onLost?.('another Fleet controller took the database lock while this one was cut off from PostgreSQL');
    } catch {
      retry = setTimeout(() => void regain(), opts.retryMs ?? 1_000);
      retry.unref();
    }
  };

  if (!(await take())) {
    throw new ControllerLockError(
      `another Fleet controller is running on this PostgreSQL database${otherHolder}: it holds the controller advisory lock. ` +
        'Running several controllers on one database (leased leadership) is not supported yet: stop the other one first.',
    );
  }
  return {
    description: `PostgreSQL advisory lock ${PG_LOCK_KEY}`,
    async release() {
      released = true;
      clearTimeout(retry);
      const c = client;
      client = undefined;
      if (c) await c.end().catch(() => undefined);
    },
  };
}
