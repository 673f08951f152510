import { describe, expect, it } from 'vitest';
import { Backoff } from './backoff.ts';

describe('Backoff (exponential, full jitter)', () => {
  it('doubles the window from 500 ms up to the 30 s cap', () => {
    const b = new Backoff({ random: () => 0.999999 });
    const delays = Array.from({ length: 10 }, () => b.next());
    expect(delays).toEqual([499, 999, 1999, 3999, 7999, 15999, 29999, 29999, 29999, 29999]);
  });

  it('draws every delay uniformly in [0, window): bounds hold for any random source', () => {
    for (const r of [0, 0.25, 0.5, 0.999999]) {
      const b = new Backoff({ initialMs: 100, maxMs: 1000, random: () => r });
      for (let n = 0; n < 8; n++) {
        const window = Math.min(1000, 100 * 2 ** n);
        expect(b.window()).toBe(window);
        const delay = b.next();
        expect(delay).toBeGreaterThanOrEqual(0);
        expect(delay).toBeLessThan(window);
        expect(delay).toBe(Math.floor(r * window));
      }
    }
  });

  it('spreads a herd: with Math.random, delays cover the window rather than clustering', () => {
    const delays = Array.from({ length: 2000 }, () => {
      const b = new Backoff();
      for (let i = 0; i < 6; i++) b.next();
      return b.next(); // 7th attempt: window = 30 s cap
    });
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...delays)).toBeLessThan(30_000);
    const quarters = [0, 0, 0, 0];
    for (const d of delays) quarters[Math.floor(d / 7500)]!++;
    for (const q of quarters) expect(q).toBeGreaterThan(350); // ~500 expected each
  });

  it('resets after a connection that stayed up longer than resetAfterMs, not before', () => {
    const b = new Backoff({ random: () => 0.999999 });
    for (let i = 0; i < 5; i++) b.next();
    b.connectionEnded(5_000);
    expect(b.failures).toBe(5);
    expect(b.window()).toBe(16_000);
    b.connectionEnded(30_001);
    expect(b.failures).toBe(0);
    expect(b.next()).toBe(499);
  });

  it('rejects nonsense settings', () => {
    expect(() => new Backoff({ initialMs: 0 })).toThrow();
    expect(() => new Backoff({ initialMs: 100, maxMs: 50 })).toThrow();
  });
});
