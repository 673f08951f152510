// Exponential backoff with "full jitter" (AWS Architecture Blog, "Exponential Backoff
// And Jitter"): the n-th delay is uniform in [0, min(cap, base · 2^n)). Full jitter
// spreads a thundering herd of reconnecting workers (say 1,000 after a controller restart)
// evenly over the window instead of in synchronized waves.

export interface BackoffOptions {
  /** First window, ms (default 500). */
  initialMs?: number;
  /** Largest window, ms (default 30 000). */
  maxMs?: number;
  /** A connection that stayed up longer than this resets the backoff (default 30 000). */
  resetAfterMs?: number;
  /** Uniform [0, 1) source; injectable for tests. */
  random?: () => number;
}

export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly resetAfterMs: number;
  readonly #random: () => number;
  #failures = 0;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? 500;
    this.maxMs = options.maxMs ?? 30_000;
    this.resetAfterMs = options.resetAfterMs ?? 30_000;
    this.#random = options.random ?? Math.random;
    if (!(this.initialMs > 0) || !(this.maxMs >= this.initialMs)) throw new Error('backoff needs 0 < initialMs <= maxMs');
  }

  /** Consecutive failures so far. */
  get failures(): number {
    return this.#failures;
  }

  /** The window for the next delay: min(max, initial · 2^failures). */
  window(): number {
    // Cap the exponent: 2^31 already dwarfs any sane cap and keeps the math finite.
    return Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.#failures, 31));
  }

  /** Returns the next delay (full jitter) and counts a failure. */
  next(): number {
    const delay = Math.floor(this.#random() * this.window());
    this.#failures++;
    return delay;
  }

  /**
   * A short delay that counts no failure: uniform in [0, initialMs). For trying another
   * controller after losing one — soon, but spread so that a fleet of workers that lost the same
   * controller does not reach the next one in the same instant.
   */
  jitter(): number {
    return Math.floor(this.#random() * this.initialMs);
  }

  reset(): void {
    this.#failures = 0;
  }

  /** Call when a connection ends; resets the backoff if it had stayed up long enough. */
  connectionEnded(upForMs: number): void {
    if (upForMs > this.resetAfterMs) this.reset();
  }
}
