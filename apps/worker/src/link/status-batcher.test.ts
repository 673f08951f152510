import { VmPhase, type VmStatus } from '@fleet/proto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { StatusBatcher } from './status-batcher.ts';

const status = (vmId: string, phase: string, attempt = 1): VmStatus => ({ vmId, attempt, phase: phase as VmStatus['phase'] });

describe('StatusBatcher', () => {
  afterEach(() => vi.useRealTimers());

  it('coalesces a burst into one report within the window, latest status per instance winning', () => {
    vi.useFakeTimers();
    const sent: VmStatus[][] = [];
    const b = new StatusBatcher(50, (vms) => sent.push(vms));
    b.add(status('a', VmPhase.VM_PHASE_STARTING));
    vi.advanceTimersByTime(20);
    b.add(status('a', VmPhase.VM_PHASE_RUNNING));
    b.add(status('b', VmPhase.VM_PHASE_STARTING));
    b.add(status('a', VmPhase.VM_PHASE_GONE, 0));
    expect(sent).toEqual([]);
    vi.advanceTimersByTime(30); // 50 ms after the FIRST change: never held longer than the window
    expect(sent).toHaveLength(1);
    expect(sent[0]!.map((s) => `${s.vmId}#${s.attempt}:${s.phase}`)).toEqual(['a#1:VM_PHASE_RUNNING', 'b#1:VM_PHASE_STARTING', 'a#0:VM_PHASE_GONE']);
    expect(vi.getTimerCount()).toBe(0); // idle: no timer
  });

  it('flushes immediately with a zero window and drops pending statuses on clear()', () => {
    vi.useFakeTimers();
    const sent: VmStatus[][] = [];
    new StatusBatcher(0, (vms) => sent.push(vms)).add(status('x', VmPhase.VM_PHASE_RUNNING));
    expect(sent).toHaveLength(1);
    const b = new StatusBatcher(50, (vms) => sent.push(vms));
    b.add(status('y', VmPhase.VM_PHASE_RUNNING));
    b.clear();
    vi.advanceTimersByTime(100);
    expect(sent).toHaveLength(1);
  });
});
