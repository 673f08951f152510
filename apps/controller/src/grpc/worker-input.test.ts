import { describe, expect, it } from 'vitest';
import type { Capacity__Output } from '@fleet/proto';
import { capacityInfo } from './worker-input.ts';

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
