/**
 * Token bucket for VM DHCP client messages (libvirt's snooper uses 10/s, burst 50).
 * State lives in a Float64Array so updating it never allocates. Time is injected: the current time
 * (ms) is read from `clock[0]`, a cell the filter writes once per frame — passing an epoch-scale
 * time down as an argument would make V8 box a heap number per call. Time going backwards or a
 * non-finite time refills nothing and does not move the bucket's clock.
 */
export class TokenBucket {
  readonly #state = new Float64Array(2); // [tokens, lastMs]
  readonly #clock: Float64Array;
  readonly #perMs: number;
  readonly #burst: number;

  constructor(perSecond: number, burst: number, clock: Float64Array) {
    this.#perMs = perSecond / 1000;
    this.#burst = burst;
    this.#clock = clock;
    this.#state[0] = burst;
    this.#state[1] = Number.NaN; // no refill before the first take
  }

  /** Takes one token if available, at time `clock[0]`. */
  take(): boolean {
    const now = this.#clock[0]!;
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
