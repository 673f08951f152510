// Driver adapter factories for the two providers, with Fleet's connection settings.
import { PrismaBetterSqlite3 } from '@prisma/adapter-better-sqlite3';
import { PrismaPg } from '@prisma/adapter-pg';
import type {
  SqlDriverAdapter,
  SqlMigrationAwareDriverAdapterFactory,
} from '@prisma/driver-adapter-utils';
import { providerOf, sqlitePath } from './providers.ts';

/** How long a SQLite statement waits for another connection's lock before SQLITE_BUSY. */
export const DEFAULT_BUSY_TIMEOUT_MS = 10_000;

/**
 * Applied to every SQLite connection Fleet opens.
 * - WAL: readers never block the writer and vice versa; persistent in the file.
 * - synchronous=NORMAL: the usual WAL pairing (durable except on power loss, never corrupt).
 * - foreign_keys: onDelete Cascade / SetNull in the schema rely on it.
 * - busy_timeout: wait for a competing writer (another process, a backup) instead of failing.
 */
export function sqlitePragmas(busyTimeoutMs: number): string {
  return [
    `PRAGMA busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))};`,
    'PRAGMA journal_mode = WAL;',
    'PRAGMA synchronous = NORMAL;',
    'PRAGMA foreign_keys = ON;',
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
    return this.#track(await this.#inner.connectToShadowDb());
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

export interface AdapterOptions {
  /** SQLite only: busy timeout in ms (default 10 s). */
  busyTimeoutMs?: number;
  /** PostgreSQL only: pool size (default 10). */
  poolSize?: number;
  /** PostgreSQL only: called when an idle pooled connection fails (it is dropped from the pool). */
  onPoolError?: (err: Error) => void;
}

/** A driver adapter factory for a `file:` (SQLite) or `postgresql://` URL. */
export function adapterFactoryFor(url: string, opts: AdapterOptions = {}): ManagedAdapterFactory {
  if (providerOf(url) === 'sqlite') {
    const busy = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
    return new ManagedAdapterFactory(
      new PrismaBetterSqlite3({ url: sqlitePath(url), timeout: busy }),
      sqlitePragmas(busy),
    );
  }
  return new ManagedAdapterFactory(
    new PrismaPg(
      { connectionString: url, max: opts.poolSize ?? 10 },
      opts.onPoolError ? { onPoolError: opts.onPoolError } : undefined,
    ),
  );
}
