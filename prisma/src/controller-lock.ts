// SQLite: one controller per database, enforced for the life of the process (issue 13, point 1).
//
// A SQLite file cannot be shared by controllers on several hosts, and the leader lease
// (leader-lease.ts) is only built for PostgreSQL; so on SQLite a second controller refuses to
// start and says why and what to use instead. The lock is an exclusive lock on
// `<database file>.controller-lock`, a small SQLite database held in an open write transaction by
// this process. The operating system drops it when the process exits, however it exits, so there
// is no stale lock to clean up after kill -9.
//
// PostgreSQL: several controllers share one database (leader-lease.ts); there is nothing to lock.
import Database from 'better-sqlite3';
import { readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { providerOf, sqlitePath } from './providers.ts';

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
export async function acquireControllerLock(url: string): Promise<ControllerLock> {
  if (providerOf(url) === 'sqlite') return sqliteLock(url);
  return { description: 'none (PostgreSQL: several controllers share the database under a leader lease)', release: async () => undefined };
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
