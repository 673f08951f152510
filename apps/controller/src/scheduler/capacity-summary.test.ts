import { describe, expect, it } from 'vitest';
import type { FreeCapacity } from './capacity-index.ts';
import { CapacitySummary, type TotalCapacity } from './capacity-summary.ts';

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomSet(seed: number) {
  const rnd = prng(seed);
  const n = 1 + Math.floor(rnd() * 60);
  const caps: TotalCapacity[] = [];
  const free: FreeCapacity = {
    cpus: new Float64Array(n),
    memoryMib: new Float64Array(n),
    vmSlots: new Float64Array(n),
    macosSlots: new Float64Array(n),
    addresses: new Float64Array(n),
    rank: new Int32Array(n),
  };
  const order = Array.from({ length: n }, (_, i) => i).sort(() => rnd() - 0.5);
  for (let i = 0; i < n; i++) {
    // A third of the workers limit VM addresses (a small pool, so that some run out).
    const natAddresses = rnd() < 1 / 3 ? 1 + Math.floor(rnd() * 3) : 0;
    const cap = { cpus: [2, 4, 8][Math.floor(rnd() * 3)]!, memoryMib: [4096, 8192][Math.floor(rnd() * 2)]!, vmSlots: Math.floor(rnd() * 4), macosSlots: 2, natAddresses };
    caps.push(cap);
    free.addresses[i] = natAddresses > 0 ? Math.floor(rnd() * (natAddresses + 1)) : Number.POSITIVE_INFINITY;
    free.cpus[i] = Math.floor(rnd() * (cap.cpus + 1));
    free.memoryMib[i] = Math.floor(rnd() * 3) * 2048;
    free.vmSlots[i] = Math.floor(rnd() * (cap.vmSlots + 1));
    free.macosSlots[i] = Math.floor(rnd() * 3);
    free.rank[order[i]!] = i;
  }
  return { eligible: Array.from({ length: n }, (_, i) => i), free, caps };
}

describe('CapacitySummary', () => {
  it('answers the same whether it scans or uses its index', () => {
    const shapes = [0, 1, 2, 3, 4, 6, 8, 12].flatMap((c) => [0, 1024, 2048, 4096, 6000, 8192].map((m) => [c, m] as const));
    for (let seed = 1; seed <= 200; seed++) {
      const { eligible, free, caps } = randomSet(seed);
      for (const macos of [false, true]) {
        const scanning = () => new CapacitySummary(eligible, free, (w) => caps[w]!, macos);
        const indexed = scanning();
        for (let i = 0; i < 20; i++) indexed.everFits(1000 + i, 0); // past the scan threshold
        const name = (w: number) => `w${w}`;
        for (const [c, m] of shapes) {
          const s = scanning();
          expect(indexed.everFits(c, m), `seed ${seed} ${c}/${m}`).toBe(s.everFits(c, m));
          expect(indexed.shortfall(c, m)).toEqual(s.shortfall(c, m));
          expect(indexed.best(c, m, name), `seed ${seed} macos=${macos} ${c}/${m}`).toEqual(s.best(c, m, name));
        }
      }
    }
  });
});
