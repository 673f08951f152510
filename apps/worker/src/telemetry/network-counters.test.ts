import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import type { VmNetworkReport, VmStatus } from '@fleet/proto';
import type { Driver, InstanceRef } from '../drivers/driver.ts';
import { NetworkCounterSampler } from './network-counters.ts';

const status = (vmId: string, phase: VmStatus['phase'], attempt = 1): VmStatus => ({ vmId, attempt, phase });

describe('NetworkCounterSampler', () => {
  it('reports the counters of running instances only, as strings, and skips instances the driver cannot read', async () => {
    const asked: InstanceRef[] = [];
    const driver = {
      networkCounters: async (ref: InstanceRef) => {
        asked.push(ref);
        if (ref.vmId === 'broken') throw new Error('control socket gone');
        return { fromVm: { pass: 10, ip_spoof: 2 }, fromHost: { pass: 7 } };
      },
    } as unknown as Driver;
    const sent: VmNetworkReport[] = [];
    const sampler = new NetworkCounterSampler({
      driver,
      instances: () => [status('a', 'VM_PHASE_RUNNING', 3), status('b', 'VM_PHASE_STARTING'), status('broken', 'VM_PHASE_RUNNING')],
      send: (r) => sent.push(r),
      log: pino({ level: 'silent' }),
    });
    expect(await sampler.sampleOnce()).toBe(1);
    expect(asked.map((r) => r.vmId)).toEqual(['a', 'broken']);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.vms![0]).toMatchObject({ vmId: 'a', attempt: 3, fromVm: { pass: '10', ip_spoof: '2' }, fromHost: { pass: '7' } });
  });

  it('does nothing for a runtime without a packet filter', async () => {
    const sent: VmNetworkReport[] = [];
    vi.useFakeTimers();
    try {
      const sampler = new NetworkCounterSampler({ driver: {} as Driver, instances: () => [status('a', 'VM_PHASE_RUNNING')], send: (r) => sent.push(r), log: pino({ level: 'silent' }) });
      sampler.start();
      expect(vi.getTimerCount()).toBe(0); // no timer ticking for nothing
      expect(await sampler.sampleOnce()).toBe(0);
      sampler.stop();
      expect(sent).toHaveLength(0);
    } finally {
      vi.useRealTimers();
    }
  });
});
