import { describe, expect, it } from 'vitest';
import { randomBytesPooled } from './random-bytes.ts';

describe('randomBytesPooled', () => {
  it('gives each caller bytes of its own, never the same bytes twice, across pool refills', () => {
    const seen = new Set<string>();
    const outs: Buffer[] = [];
    // 16-byte draws over ~5 pools (4 KiB each): a repeat would mean a pool served twice.
    for (let i = 0; i < 1300; i++) {
      const b = randomBytesPooled(16);
      expect(b).toHaveLength(16);
      const hex = b.toString('hex');
      expect(seen.has(hex)).toBe(false);
      seen.add(hex);
      outs.push(b);
    }
    // Own buffers: later draws (and the pool's wiping) do not change what a caller holds.
    const first = Buffer.from(outs[0]!);
    for (let i = 0; i < 600; i++) randomBytesPooled(32);
    expect(outs[0]).toEqual(first);
  });

  it('looks random: every byte value turns up, no long runs of zeros (the wiped pool is never handed out)', () => {
    const all = Buffer.concat(Array.from({ length: 2000 }, () => randomBytesPooled(12)));
    const counts = new Array<number>(256).fill(0);
    for (const x of all) counts[x]! += 1;
    expect(Math.min(...counts)).toBeGreaterThan(0);
    // 24,000 bytes: ~94 of each value expected; a handed-out wiped region would pile up zeros.
    expect(counts[0]).toBeLessThan(200);
  });

  it('serves large and zero-length requests, and refuses bad lengths', () => {
    expect(randomBytesPooled(0)).toHaveLength(0);
    const big = randomBytesPooled(8192);
    expect(big).toHaveLength(8192);
    expect(big.equals(Buffer.alloc(8192))).toBe(false);
    expect(() => randomBytesPooled(-1)).toThrow(RangeError);
    expect(() => randomBytesPooled(1.5)).toThrow(RangeError);
  });
});
