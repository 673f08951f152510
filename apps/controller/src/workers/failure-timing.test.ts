import { describe, expect, it } from 'vitest';
import { failureTimings } from './failure-timing.ts';

describe('failure timings', () => {
  it('derives fenceAfter from lostAfter with a margin that covers a forced stop, a renewal in flight and the tick', () => {
    expect(failureTimings({ heartbeatIntervalMs: 5_000, lostAfterMs: 30_000 })).toEqual({ heartbeatIntervalMs: 5_000, suspectAfterMs: 11_000, fenceAfterMs: 20_000, lostAfterMs: 30_000 });
    expect(failureTimings({ heartbeatIntervalMs: 500, lostAfterMs: 5_000 })).toEqual({ heartbeatIntervalMs: 500, suspectAfterMs: 2_000, fenceAfterMs: 3_000, lostAfterMs: 5_000 });
    expect(failureTimings({ heartbeatIntervalMs: 5_000, lostAfterMs: 120_000 }).fenceAfterMs).toBe(90_000);
  });

  it('accepts an explicit fenceAfter that leaves the margin, and refuses one that does not, saying why', () => {
    expect(failureTimings({ heartbeatIntervalMs: 1_000, lostAfterMs: 30_000, fenceAfterMs: 25_000 }).fenceAfterMs).toBe(25_000);
    expect(() => failureTimings({ heartbeatIntervalMs: 1_000, lostAfterMs: 30_000, fenceAfterMs: 29_000 })).toThrow(/must end at least 2000 ms before --worker-offline-timeout/);
    expect(() => failureTimings({ heartbeatIntervalMs: 5_000, lostAfterMs: 30_000, fenceAfterMs: 6_000 })).toThrow(/at least 2 heartbeat intervals/);
    expect(() => failureTimings({ heartbeatIntervalMs: 5_000, lostAfterMs: 10_000 })).toThrow(/at least 3 heartbeat intervals/);
  });
});
