import { describe, expect, it } from 'vitest';
import { TokenBucket } from './rate-limit.ts';

function bucket(perSecond: number, burst: number): { take(now: number): boolean; readonly tokens: number } {
  const clock = new Float64Array(1);
  const b = new TokenBucket(perSecond, burst, clock);
  return {
    take(now: number) {
      clock[0] = now;
      return b.take();
    },
    get tokens() {
      return b.tokens;
    },
  };
}

describe('TokenBucket', () => {
  it('allows a burst, then refills at the configured rate', () => {
    const b = bucket(10, 5);
    for (let i = 0; i < 5; i++) expect(b.take(0)).toBe(true);
    expect(b.take(0)).toBe(false);
    expect(b.take(99)).toBe(false); // 0.99 tokens
    expect(b.take(100)).toBe(true);
    expect(b.take(100)).toBe(false);
    expect(b.take(10_000)).toBe(true); // refill is capped at the burst...
    let n = 0;
    while (b.take(10_000)) n++;
    expect(n).toBe(4); // ...so 5 in total
  });

  it('never refills on time going backwards or a non-finite now', () => {
    const b = bucket(10, 1);
    expect(b.take(1000)).toBe(true);
    expect(b.take(500)).toBe(false);
    expect(b.take(Number.NaN)).toBe(false);
    expect(b.take(Number.POSITIVE_INFINITY)).toBe(false);
    expect(b.take(Number.NEGATIVE_INFINITY)).toBe(false);
    expect(Number.isNaN(b.tokens)).toBe(false);
    // The clock did not move: a normal time later refills as usual.
    expect(b.take(1100)).toBe(true);
  });
});
