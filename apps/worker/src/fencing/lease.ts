// The worker's lease from the controller (client-side fencing, issue 12).
//
// The controller re-places a lost worker's "reschedule" VMs only after its lost-after timeout,
// which is longer than fence-after by a margin; the worker guarantees those VMs are dead by then.
// The link (link/link.ts) turns every LeaseRenewal into "valid until the send time of the
// heartbeat it echoes + fence_after_ms"; this keeper holds that expiry on the monotonic clock,
// writes its wall-clock equivalent to <data dir>/lease.json (atomically, 0600) for the VM host
// processes and for the next worker process, and tells listeners when the lease runs out
// (`expired`, by timer) and when it comes back (`renewed`).
//
// States: no lease (a worker that never got one: expired), a timed lease (valid or expired), and
// unlimited (Welcome.fence_after_ms = 0: an older controller, no fencing at all).
import { leaseFilePath, parseLeaseFile, readLeaseFileContent, seconds, writeLeaseFile, type LeaseFile } from './lease-file.ts';

export interface LeaseLog {
  info(o: object, m?: string): void;
  warn(o: object, m?: string): void;
  error(o: object, m?: string): void;
}

export interface LeaseKeeperOptions {
  /** lease.json to keep (and start from); absent = in memory only (tests, workers without a data dir). */
  file?: string;
  /** Monotonic clock in ms (default performance.now). */
  now?: () => number;
  /** Wall clock in ms (default Date.now). */
  wallNow?: () => number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
  log?: LeaseLog;
  /** Owner of the lease file (a root worker whose VM host processes run as the data dir's owner). */
  owner?: { uid: number; gid: number };
}

/** What the reconciler needs to know (LeaseKeeper implements it). */
export interface LeaseView {
  /** True when the worker holds no valid lease (never true while unlimited). */
  readonly expired: boolean;
  /** How long since the heartbeat behind the last lease was sent (since start without one). */
  noLeaseForMs(): number;
}

export class LeaseKeeper implements LeaseView {
  readonly #file: string | undefined;
  readonly #now: () => number;
  readonly #wallNow: () => number;
  readonly #setTimer: (fn: () => void, ms: number) => unknown;
  readonly #clearTimer: (handle: unknown) => void;
  readonly #log: LeaseLog | undefined;
  readonly #owner: { uid: number; gid: number } | undefined;
  /** Monotonic expiry; null = unlimited. */
  #validUntil: number | null;
  #validUntilUnix: number | null;
  #fenceAfterMs = 0;
  /** Monotonic time the lease is counted from (the renewed heartbeat's send time). */
  #basis: number;
  #timer: unknown;
  /** The state listeners last heard (transitions are reported once). */
  #reportedExpired: boolean;
  #closed = false;
  readonly #onExpired = new Set<() => void>();
  readonly #onRenewed = new Set<() => void>();

  constructor(options: LeaseKeeperOptions = {}) {
    this.#file = options.file;
    this.#now = options.now ?? (() => performance.now());
    this.#wallNow = options.wallNow ?? Date.now;
    this.#setTimer = options.setTimer ?? ((fn, ms) => {
      const t = setTimeout(fn, ms);
      t.unref();
      return t;
    });
    this.#clearTimer = options.clearTimer ?? ((h) => clearTimeout(h as NodeJS.Timeout));
    this.#log = options.log;
    this.#owner = options.owner;
    // No lease yet: expired (a reschedule VM must not start before the controller renews).
    const now = this.#now();
    this.#validUntil = now;
    this.#validUntilUnix = this.#wallNow();
    this.#basis = now;
    const stored = this.#file ? parseLeaseFile(readLeaseFileContent(this.#file)) : undefined;
    if (stored) this.#inherit(stored);
    this.#reportedExpired = this.expired;
    this.#arm();
  }

  /** A keeper for `<dataDir>/lease.json`, started from the file if present. */
  static forDataDir(dataDir: string, options: Omit<LeaseKeeperOptions, 'file'> = {}): LeaseKeeper {
    return new LeaseKeeper({ ...options, file: leaseFilePath(dataDir) });
  }

  get file(): string | undefined {
    return this.#file;
  }

  get expired(): boolean {
    return this.#validUntil !== null && this.#now() >= this.#validUntil;
  }

  /** False while unlimited (no fencing). */
  get fencing(): boolean {
    return this.#validUntil !== null;
  }

  /** Monotonic expiry (performance.now() ms); null = unlimited. */
  get validUntilMonoMs(): number | null {
    return this.#validUntil;
  }

  /** How long the lease still runs on the keeper's clock; null when unlimited or already expired. */
  remainingMs(): number | null {
    if (this.#validUntil === null || this.expired) return null;
    return Math.max(0, this.#validUntil - this.#now());
  }

  /** The same expiry on the wall clock; null = unlimited. */
  get validUntilUnixMs(): number | null {
    return this.#validUntilUnix;
  }

  get fenceAfterMs(): number {
    return this.#fenceAfterMs;
  }

  noLeaseForMs(): number {
    return Math.max(0, this.#now() - this.#basis);
  }

  /** Called when the lease runs out; returns an unsubscribe function. */
  onExpired(listener: () => void): () => void {
    this.#onExpired.add(listener);
    return () => this.#onExpired.delete(listener);
  }

  /** Called when an expired lease is valid again (renewal, or unlimited); returns an unsubscribe function. */
  onRenewed(listener: () => void): () => void {
    this.#onRenewed.add(listener);
    return () => this.#onRenewed.delete(listener);
  }

  /**
   * A LeaseRenewal: valid until `validUntilMonoMs` (heartbeat send time + fence_after_ms, monotonic)
   * and `validUntilUnixMs` (the same on the wall clock). A renewal never shortens a timed lease.
   */
  renew(validUntilMonoMs: number, validUntilUnixMs: number, fenceAfterMs: number): void {
    if (this.#closed) return;
    this.#fenceAfterMs = fenceAfterMs;
    if (this.#validUntil !== null && validUntilMonoMs <= this.#validUntil) return;
    this.#validUntil = validUntilMonoMs;
    this.#validUntilUnix = validUntilUnixMs;
    this.#basis = validUntilMonoMs - fenceAfterMs;
    this.#persist();
    this.#arm();
    this.#report();
  }

  /** No fencing (Welcome.fence_after_ms = 0: an older controller). */
  unlimited(): void {
    if (this.#closed) return;
    const was = this.#validUntil;
    this.#validUntil = null;
    this.#validUntilUnix = null;
    this.#fenceAfterMs = 0;
    this.#basis = this.#now();
    if (was !== null) this.#log?.warn({}, 'the controller sends no leases (fence_after_ms 0): VMs are never fenced');
    this.#persist();
    this.#arm();
    this.#report();
  }

  /**
   * Welcome.fence_after_ms. 0: unlimited. Otherwise the lease stays as it is (only renewals renew
   * it), except that an unlimited lease becomes a timed one counted from the Hello the controller
   * answered (sent at `helloSentAtMonoMs` / `helloSentAtUnixMs`), so that a worker cut off before
   * its first renewal still fences.
   */
  welcome(fenceAfterMs: number, helloSentAtMonoMs: number, helloSentAtUnixMs: number): void {
    if (this.#closed) return;
    if (fenceAfterMs <= 0) return this.unlimited();
    this.#fenceAfterMs = fenceAfterMs;
    if (this.#validUntil === null) this.renew(helloSentAtMonoMs + fenceAfterMs, helloSentAtUnixMs + fenceAfterMs, fenceAfterMs);
  }

  /** Stops the timer (the lease file stays: VM host processes keep reading it). */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) this.#clearTimer(this.#timer);
    this.#timer = undefined;
    this.#onExpired.clear();
    this.#onRenewed.clear();
  }

  /** Takes over the lease a previous worker process left in the file (its remaining validity). */
  #inherit(stored: LeaseFile): void {
    this.#fenceAfterMs = stored.fenceAfterMs;
    if (stored.validUntilUnixMs === null) {
      this.#validUntil = null;
      this.#validUntilUnix = null;
      return;
    }
    // Never more than one fenceAfter from now, whatever the wall clock did meanwhile.
    const remaining = Math.min(stored.validUntilUnixMs - this.#wallNow(), stored.fenceAfterMs);
    this.#validUntil = this.#now() + remaining;
    this.#validUntilUnix = stored.validUntilUnixMs;
    this.#basis = this.#validUntil - stored.fenceAfterMs;
    this.#log?.info(
      { validUntilUnixMs: stored.validUntilUnixMs, remainingMs: Math.round(remaining) },
      remaining > 0 ? 'inherited the lease of the previous worker process' : `the previous worker's lease ran out ${seconds(-remaining)}s ago`,
    );
  }

  #persist(): void {
    if (!this.#file) return;
    const lease: LeaseFile = { validUntilUnixMs: this.#validUntilUnix, fenceAfterMs: this.#fenceAfterMs, renewedAtUnixMs: this.#wallNow() };
    try {
      writeLeaseFile(this.#file, lease, this.#owner);
    } catch (error) {
      // The VM host processes then fence on the old lease: safe, and loud.
      this.#log?.error({ err: error, file: this.#file }, 'cannot write the lease file: VM host processes will fence on the old lease');
    }
  }

  #arm(): void {
    if (this.#timer !== undefined) this.#clearTimer(this.#timer);
    this.#timer = undefined;
    if (this.#closed || this.#validUntil === null) return;
    const left = this.#validUntil - this.#now();
    if (left <= 0) return;
    // Timers may fire a little early: #fire re-arms until the lease really ran out.
    this.#timer = this.#setTimer(() => this.#fire(), Math.ceil(left));
  }

  #fire(): void {
    this.#timer = undefined;
    if (this.#closed) return;
    if (!this.expired) return this.#arm();
    this.#report();
  }

  #report(): void {
    const expired = this.expired;
    if (expired === this.#reportedExpired) return;
    this.#reportedExpired = expired;
    if (expired) {
      this.#log?.warn({ noLeaseForMs: Math.round(this.noLeaseForMs()), fenceAfterMs: this.#fenceAfterMs }, 'lease from the controller expired: fencing reschedule VMs');
    } else {
      this.#log?.info({ validUntilUnixMs: this.#validUntilUnix }, 'lease from the controller renewed');
    }
    for (const listener of [...(expired ? this.#onExpired : this.#onRenewed)]) {
      try {
        listener();
      } catch (error) {
        this.#log?.error({ err: error }, 'lease listener threw');
      }
    }
  }
}
