// Database writes nobody waits for (audit events of sessions, removing a deleted VM's
// access keys, forgetting a stopped VM's host key). Each runs at once; one that fails is
// kept, in order, and retried with a capped, jittered backoff until it succeeds, instead
// of being lost with a log line. Only storage faults are retried for ever; another error
// (a bug, a constraint) is retried a few times, then dropped with an error log.
import type { Logger } from 'pino';
import { classifyStorageError } from '@fleet/db';
import { backoffDelayMs, errorFields, type BackoffOptions, type ErrorSink } from './backoff.ts';

interface Job {
  what: string;
  fn: () => Promise<unknown>;
  fields: Record<string, unknown>;
  failures: number;
}

export interface BackgroundWritesOptions {
  log: Logger;
  sink?: ErrorSink;
  backoff?: Partial<BackoffOptions>;
  /** Kept at most; beyond it the oldest is dropped (with an error log). Default 10 000. */
  maxQueued?: number;
  /** Attempts for an error that is not a storage fault. Default 3. */
  maxOtherFailures?: number;
}

export const BACKGROUND_WRITE_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 30_000 };

export class BackgroundWrites {
  private readonly queue: Job[] = [];
  private timer: NodeJS.Timeout | undefined;
  private draining = false;
  private stopped = false;
  private dropped = 0;
  private readonly backoff: BackoffOptions;

  constructor(private readonly opts: BackgroundWritesOptions) {
    this.backoff = { ...BACKGROUND_WRITE_BACKOFF, ...opts.backoff };
  }

  /** Writes waiting for a retry. */
  get size(): number {
    return this.queue.length;
  }

  /** Run `fn` now, or after the writes that are already waiting (order is kept). */
  run(what: string, fn: () => Promise<unknown>, fields: Record<string, unknown> = {}): void {
    if (this.stopped) return;
    const max = this.opts.maxQueued ?? 10_000;
    if (this.queue.length >= max) {
      const old = this.queue.shift()!;
      this.dropped += 1;
      this.opts.log.error({ ...old.fields, what: old.what, dropped: this.dropped, queued: this.queue.length }, `background write dropped (more than ${max} waiting): ${old.what}`);
    }
    this.queue.push({ what, fn, fields, failures: 0 });
    if (!this.timer && !this.draining) void this.drain();
  }

  /** Retry the waiting writes now (the storage is back). */
  retryNow(): void {
    if (!this.timer) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    void this.drain();
  }

  /** Resolves when nothing is waiting (tests). */
  async idle(): Promise<void> {
    while ((this.queue.length > 0 || this.draining) && !this.stopped) await new Promise((r) => setTimeout(r, 5));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.queue.length > 0) this.opts.log.warn({ queued: this.queue.length, writes: [...new Set(this.queue.map((j) => j.what))] }, 'background writes not done at shutdown');
  }

  /** By identity: the bound may have dropped the job while it ran. */
  private remove(job: Job): void {
    const i = this.queue.indexOf(job);
    if (i >= 0) this.queue.splice(i, 1);
  }

  private async drain(): Promise<void> {
    if (this.draining || this.stopped) return;
    this.draining = true;
    try {
      while (this.queue.length > 0 && !this.stopped) {
        const job = this.queue[0]!;
        try {
          await job.fn();
          this.remove(job);
          if (job.failures > 0) this.opts.log.info({ ...job.fields, what: job.what, failures: job.failures }, `background write done after ${job.failures} failed attempts: ${job.what}`);
        } catch (err) {
          job.failures += 1;
          this.opts.sink?.observe(err);
          const storage = classifyStorageError(err) !== null;
          if (!storage && job.failures >= (this.opts.maxOtherFailures ?? 3)) {
            this.remove(job);
            this.opts.log.error({ ...errorFields(err), ...job.fields, what: job.what, failures: job.failures }, `background write failed; giving up: ${job.what}`);
            continue;
          }
          const retryInMs = backoffDelayMs(job.failures, this.backoff);
          this.opts.log[job.failures === 1 ? 'error' : 'warn'](
            { ...errorFields(err), ...job.fields, what: job.what, failures: job.failures, queued: this.queue.length, retryInMs },
            `background write failed; retrying: ${job.what}`,
          );
          this.timer = setTimeout(() => {
            this.timer = undefined;
            void this.drain();
          }, retryInMs);
          this.timer.unref();
          return;
        }
      }
    } finally {
      this.draining = false;
    }
  }
}
