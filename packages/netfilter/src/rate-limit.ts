/**
 * Token bucket for VM DHCP client messages (libvirt's snooper uses 10/s, burst 50).
 * State lives in a Float64Array so updating it never allocates. Time is injected (ms); time going
 * backwards or a non-finite `now` refills nothing and does not move the bucket's clock.
 */
export class TokenBucket {
  readonly #state = new Float64Array(2); // [tokens, lastMs]
  readonly #perMs: number;
  readonly #burst: number;

  constructor(perSecond: number, burst: number) {
    this.#perMs = perSecond / 1000;
    this.#burst = burst;
    this.#state[0] = burst;
    this.#state[1] = Number.NaN; // no refill before the first take
  }

  /** Takes one token if available. */
  take(now: number): boolean {
    const s = this.#state;
    let tokens = s[0]!;
    if (now - now === 0) {
      // finite now (NaN and ±Infinity fail the test above and are ignored)
      const last = s[1]!;
      if (last !== last) {
        s[1] = now;
      } else if (now > last) {
        tokens += (now - last) * this.#perMs;
        if (tokens > this.#burst) tokens = this.#burst;
        s[1] = now;
      }
    }
    if (tokens >= 1) {
      s[0] = tokens - 1;
      return true;
    }
    s[0] = tokens;
    return false;
  }

  get tokens(): number {
    return this.#state[0]!;
  }
}
