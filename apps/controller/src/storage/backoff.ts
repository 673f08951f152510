// Retrying background work after database errors: capped exponential backoff with
// jitter, and a periodic task that never dies, never overlaps itself and slows down
// (rather than hammering the database) while its work keeps failing.
import type { Logger } from 'pino';
import { classifyStorageError, type StorageFault } from '@fleet/db';

export interface BackoffOptions {
  /** Delay after the first failure (before jitter). */
  baseMs: number;
  /** Upper bound of any delay. */
  maxMs: number;
  /** [0, 1) source; tests pass a fixed one. */
  random?: () => number;
}

/**
 * The delay before retry number `failures` (1 = after the first failure): base·2^(n-1),
 * capped at max, with "equal jitter" (a uniform pick in [d/2, d]) so that retries of
 * many workers or tasks spread out instead of arriving together.
 */
export function backoffDelayMs(failures: number, opts: BackoffOptions): number {
  const n = Math.max(1, Math.floor(failures));
  const d = Math.min(opts.maxMs, opts.baseMs * 2 ** Math.min(n - 1, 30));
  const r = (opts.random ?? Math.random)();
  return Math.round(d / 2 + (d / 2) * r);
}

/** Structured log fields for a failed database operation. */
export function errorFields(err: unknown): { err: unknown; storage?: StorageFault } {
  const fault = classifyStorageError(err);
  return fault ? { err, storage: fault } : { err };
}

/** Something that wants to hear about every error of background work (the storage-health tracker). */
export interface ErrorSink {
  observe(err: unknown): unknown;
}

export interface PeriodicTaskOptions {
  /** For logs: "restart requeue", "vm gauges", ... */
  name: string;
  intervalMs: number;
  log: Logger;
  /** Backoff after failures (default: from intervalMs, doubling, capped at 30 s or intervalMs if larger). */
  backoff?: Partial<BackoffOptions>;
  sink?: ErrorSink;
  /** Run once right away (default false: first run after intervalMs). */
  runAtStart?: boolean;
}

/**
 * Runs `fn` every `intervalMs`, one run at a time (a slow run delays the next one instead of
 * overlapping it). A failing run is logged with its storage fault (if any), reported to the
 * sink, and retried after a capped, jittered backoff that grows while failures continue; the
 * first success logs the recovery and restores the normal interval. It never stops by itself.
 */
export class PeriodicTask {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private stopped = false;
  private rerun = false;
  /** Consecutive failed runs. */
  failures = 0;
  private readonly backoff: BackoffOptions;

  constructor(
    private readonly fn: () => Promise<unknown>,
    private readonly opts: PeriodicTaskOptions,
  ) {
    this.backoff = {
      baseMs: opts.backoff?.baseMs ?? opts.intervalMs,
      maxMs: opts.backoff?.maxMs ?? Math.max(30_000, opts.intervalMs),
      ...(opts.backoff?.random ? { random: opts.backoff.random } : {}),
    };
  }

  /** Starts (again, after stop()). */
  start(): this {
    this.stopped = false;
    this.schedule(this.opts.runAtStart ? 0 : this.opts.intervalMs);
    return this;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Run as soon as possible (e.g. the storage came back), whatever the backoff. */
  runNow(): void {
    if (this.stopped) return;
    if (this.running) {
      this.rerun = true;
      return;
    }
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.run(), ms);
    this.timer.unref();
  }

  /** One run; exposed for tests. Never throws. */
  async run(): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    this.timer = undefined;
    let next = this.opts.intervalMs;
    try {
      await this.fn();
      if (this.failures > 0) this.opts.log.info({ task: this.opts.name, failures: this.failures }, `${this.opts.name}: recovered`);
      this.failures = 0;
    } catch (err) {
      this.failures += 1;
      this.opts.sink?.observe(err);
      next = backoffDelayMs(this.failures, this.backoff);
      this.opts.log[this.failures === 1 ? 'error' : 'warn']({ ...errorFields(err), task: this.opts.name, failures: this.failures, retryInMs: next }, `${this.opts.name} failed; retrying`);
    } finally {
      this.running = false;
    }
    if (this.rerun) next = 0;
    this.rerun = false;
    this.schedule(next);
  }
}
