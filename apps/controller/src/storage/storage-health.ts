// Whether the controller's database can take writes right now. Fed by every error the
// API and the background loops see (through classifyStorageError); once a storage fault
// is seen, a cheap write probe runs every second until one succeeds, so recovery (space
// freed, the server back) is noticed without any traffic. GET /v1/health reports it.
import type { Logger } from 'pino';
import { classifyStorageError, describeStorageFault, type FleetDb, type StorageFault } from '@fleet/db';

export interface StorageStatus {
  ok: boolean;
  /** While failing: what the last failure said, e.g. "the disk is full (SQLITE_FULL: database or disk is full)". */
  error?: string;
  /** While failing: the code of the last failure (SQLITE_FULL, 53100, P1001, ...). */
  code?: string;
  /** While failing: when the storage was first seen failing (ISO 8601). */
  since?: string;
  /** While failing: when the probe last ran (ISO 8601). */
  checkedAt?: string;
}

export interface StorageHealthOptions {
  /** A cheap write that succeeds only when the storage takes writes again. */
  probe: () => Promise<unknown>;
  log: Logger;
  /** Probe period while failing (default 1 s). */
  probeIntervalMs?: number;
  /** What 503 answers tell clients in Retry-After (default 5 s). */
  retryAfterS?: number;
  /** Told on every transition (metrics). */
  onChange?: (ok: boolean, fault: StorageFault | null) => void;
  /** Told about every storage fault observed (metrics). */
  onFault?: (fault: StorageFault) => void;
  now?: () => number;
}

/** The probe: rewrite one settings row (no schema change). On SQLite it must append to the WAL, so a full disk fails it. */
export const STORAGE_PROBE_KEY = 'storage.probe';
export function settingsRowProbe(db: FleetDb): () => Promise<unknown> {
  return () => {
    const value = JSON.stringify(new Date().toISOString());
    return db.setting.upsert({ where: { key: STORAGE_PROBE_KEY }, create: { key: STORAGE_PROBE_KEY, value }, update: { value } });
  };
}

export class StorageHealth {
  private fault: StorageFault | null = null;
  private sinceMs = 0;
  private checkedAtMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private probing = false;
  private stopped = false;
  private readonly failingListeners = new Set<() => void>();
  private readonly recoveredListeners = new Set<() => void>();
  private readonly now: () => number;

  constructor(private readonly opts: StorageHealthOptions) {
    this.now = opts.now ?? Date.now;
  }

  get ok(): boolean {
    return this.fault === null;
  }

  /** Seconds a client should wait before retrying a request that failed on storage. */
  get retryAfterS(): number {
    return this.opts.retryAfterS ?? 5;
  }

  /**
   * Looks at an error. A storage fault marks the storage failing (and starts the probe);
   * anything else is ignored. Returns the fault, or null.
   */
  observe(err: unknown): StorageFault | null {
    const fault = classifyStorageError(err);
    if (fault) {
      this.opts.onFault?.(fault);
      this.failing(fault);
    }
    return fault;
  }

  failing(fault: StorageFault): void {
    if (this.stopped) return;
    const first = this.fault === null;
    this.fault = fault;
    if (!first) return;
    this.sinceMs = this.now();
    this.opts.log.error({ storage: fault }, `storage unavailable: ${describeStorageFault(fault)}; probing every ${this.interval()} ms until it takes writes again`);
    this.opts.onChange?.(false, fault);
    for (const l of [...this.failingListeners]) {
      try {
        l();
      } catch (err) {
        this.opts.log.error({ err }, 'a storage-failing listener threw');
      }
    }
    this.scheduleProbe();
  }

  /** Called once each time the storage starts failing. Returns an unsubscribe function. */
  onFailing(listener: () => void): () => void {
    this.failingListeners.add(listener);
    return () => this.failingListeners.delete(listener);
  }

  status(): StorageStatus {
    if (!this.fault) return { ok: true };
    return {
      ok: false,
      error: describeStorageFault(this.fault),
      code: this.fault.code,
      since: new Date(this.sinceMs).toISOString(),
      ...(this.checkedAtMs ? { checkedAt: new Date(this.checkedAtMs).toISOString() } : {}),
    };
  }

  /** Called once each time the storage comes back. Returns an unsubscribe function. */
  onRecovered(listener: () => void): () => void {
    this.recoveredListeners.add(listener);
    return () => this.recoveredListeners.delete(listener);
  }

  /** Runs the probe now (tests; also what the timer does). Resolves true when the storage is ok afterwards. */
  async probeNow(): Promise<boolean> {
    if (!this.fault) return true;
    if (this.probing) return false;
    this.probing = true;
    try {
      await this.opts.probe();
      this.recovered();
      return true;
    } catch (err) {
      this.checkedAtMs = this.now();
      const fault = classifyStorageError(err);
      if (fault) this.fault = fault;
      else this.opts.log.warn({ err }, 'storage probe failed with an error that is not a storage fault; still reporting the storage as failing');
      return false;
    } finally {
      this.probing = false;
      if (this.fault) this.scheduleProbe();
    }
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private interval(): number {
    return this.opts.probeIntervalMs ?? 1000;
  }

  private scheduleProbe(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.probeNow();
    }, this.interval());
    this.timer.unref();
  }

  private recovered(): void {
    const fault = this.fault;
    if (!fault) return;
    const downMs = this.now() - this.sinceMs;
    this.fault = null;
    this.checkedAtMs = 0;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.opts.log.info({ downMs, lastFault: fault }, `storage available again after ${Math.round(downMs / 100) / 10} s`);
    this.opts.onChange?.(true, null);
    for (const l of [...this.recoveredListeners]) {
      try {
        l();
      } catch (err) {
        this.opts.log.error({ err }, 'a storage-recovered listener failed');
      }
    }
  }
}
