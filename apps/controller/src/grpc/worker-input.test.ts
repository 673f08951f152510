import { describe, expect, it } from 'vitest';
import type { Capacity__Output, Hello__Output } from '@fleet/proto';
import { capacityInfo, helloInfo } from './worker-input.ts';

const cap = (over: Partial<Capacity__Output> = {}): Capacity__Output => ({ cpus: 8, memoryMib: '16384', vmSlots: 8, macosSlots: 2, natAddresses: 0, ...over });

describe('capacityInfo', () => {
  it('takes the VM address pool; 0 (or a worker that predates the field) = not limited', () => {
    expect(capacityInfo(cap({ natAddresses: 253 }))).toEqual({ cpus: 8, memoryMib: 16384, vmSlots: 8, macosSlots: 2, natAddresses: 253 });
    expect(capacityInfo(cap()).natAddresses).toBe(0);
    const { natAddresses: _, ...older } = cap();
    expect(capacityInfo(older as Capacity__Output).natAddresses).toBe(0);
    expect(capacityInfo(null)).toEqual({ cpus: 0, memoryMib: 0, vmSlots: 0, macosSlots: 0, natAddresses: 0 });
  });

  it('bounds what a worker claims', () => {
    expect(capacityInfo(cap({ natAddresses: 4_000_000_000 })).natAddresses).toBe(1 << 24);
    expect(capacityInfo(cap({ natAddresses: -1 })).natAddresses).toBe(0);
  });
});

describe('helloInfo labels', () => {
  it('keeps valid labels and drops invalid ones with a reason (never clipped into another key)', () => {
    const rejected: string[] = [];
    const long = 'k'.repeat(500);
    const hello = { protocolVersion: 1, labels: { pool: 'ci', 'example.com/arch': 'arm64', empty: '', 'a b': 'x', [long]: 'v', '<script>': 'x', k2: 'bad value' } } as unknown as Hello__Output;
    const info = helloInfo(hello, (key, reason) => rejected.push(`${key}: ${reason}`));
    expect(info.labels).toEqual({ pool: 'ci', 'example.com/arch': 'arm64', empty: '' });
    expect(rejected).toHaveLength(4);
    expect(rejected.join('\n')).toMatch(/label key "a b"/);
    expect(rejected.join('\n')).toMatch(/label value "bad value"/);
  });
  it('keeps at most 64', () => {
    const labels = Object.fromEntries(Array.from({ length: 70 }, (_, i) => [`k${i}`, 'v']));
    let dropped = 0;
    expect(Object.keys(helloInfo({ protocolVersion: 1, labels } as unknown as Hello__Output, () => dropped++).labels)).toHaveLength(64);
    expect(dropped).toBe(6);
  });
});
