import { describe, expect, it } from 'vitest';
import { NetworkCounterStore } from './network-counters.ts';

const report = (over: Record<string, unknown> = {}) => ({
  vmId: 'vm-1',
  attempt: 2,
  fromVm: { pass: '120', ip_spoof: '3', local_dst: '0' },
  fromHost: { pass: '98' },
  sampledAtUnixMs: '1700000000000',
  ...over,
});

describe('NetworkCounterStore', () => {
  it('keeps the latest counters of the current attempt, without zero counts', () => {
    const s = new NetworkCounterStore();
    expect(s.record('w1', [report()], 1000)).toEqual({ accepted: 1, rejected: 0 });
    expect(s.get('vm-1', 2, 'w1', 2000)).toEqual({ attempt: 2, fromVm: { pass: 120, ip_spoof: 3 }, fromHost: { pass: 98 }, sampledAt: '2023-11-14T22:13:20.000Z' });
    expect(s.get('vm-1', 3, 'w1', 2000)).toBeNull(); // another attempt: not this instance's counters
    expect(s.get('vm-1', 2, 'w1', 1000 + 6 * 60_000)).toBeNull(); // stale
    expect(s.get('vm-1', 2, 'w2', 2000)).toBeNull(); // reported by a worker the VM is not placed on
  });

  it('skips malformed entries from a worker and keeps the good ones', () => {
    const s = new NetworkCounterStore();
    const bad = [
      report({ vmId: '' }),
      report({ vmId: 'x'.repeat(65) }),
      report({ vmId: 'vm-2', fromVm: { 'Not A Verdict': '1' } }),
      report({ vmId: 'vm-3', fromVm: { pass: '-1' } }),
      report({ vmId: 'vm-4', fromHost: { pass: 'lots' } }),
      report({ vmId: 'vm-5', fromVm: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`v${i}`, '1'])) }),
    ];
    expect(s.record('w1', [...bad, report({ vmId: 'ok' })] as never)).toEqual({ accepted: 1, rejected: 6 });
    expect(s.get('ok', 2, 'w1')).not.toBeNull();
    expect(s.get('vm-2', 2, 'w1')).toBeNull();
  });

  it('takes a sample time beyond what a Date can hold as "now" instead of throwing (which would end the worker stream)', () => {
    const s = new NetworkCounterStore();
    expect(s.record('w1', [report({ sampledAtUnixMs: '18446744073709551615' })], 1000)).toEqual({ accepted: 1, rejected: 0 });
    expect(s.get('vm-1', 2, 'w1', 1000)?.sampledAt).toBe(new Date(1000).toISOString());
  });
});
