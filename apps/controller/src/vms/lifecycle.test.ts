import { describe, expect, it } from 'vitest';
import { FleetError } from '../errors.ts';
import {
  assertTransition,
  canTransition,
  holdsPlacement,
  InvalidTransitionError,
  isTerminal,
  isVmState,
  nextStates,
  restartDelayMs,
  shouldRestart,
  stateFromWorkerPhase,
  VM_STATES,
  type VmState,
  type WorkerPhase,
} from './lifecycle.ts';

// The whole table, written out: every pair not listed here must be refused.
const EXPECTED: Record<VmState, VmState[]> = {
  pending: ['scheduled', 'failed', 'deleting'],
  scheduled: ['pending', 'starting', 'running', 'stopping', 'stopped', 'unknown', 'failed', 'deleting'],
  starting: ['running', 'stopping', 'stopped', 'unknown', 'failed', 'deleting'],
  running: ['starting', 'stopping', 'stopped', 'unknown', 'failed', 'deleting'],
  stopping: ['stopped', 'starting', 'running', 'unknown', 'failed', 'deleting'],
  stopped: ['starting', 'running', 'unknown', 'failed', 'deleting'],
  unknown: ['starting', 'running', 'stopping', 'stopped', 'failed', 'deleting'],
  failed: ['pending', 'deleting'],
  deleting: [],
};

describe('transition table', () => {
  it('allows exactly the listed edges (all 81 pairs)', () => {
    for (const from of VM_STATES) {
      for (const to of VM_STATES) {
        expect(canTransition(from, to), `${from} -> ${to}`).toBe(EXPECTED[from].includes(to));
      }
    }
  });

  it('deleting is reachable from every other state and nothing leaves it', () => {
    for (const s of VM_STATES) if (s !== 'deleting') expect(canTransition(s, 'deleting')).toBe(true);
    for (const s of VM_STATES) expect(canTransition('deleting', s)).toBe(false);
    expect(nextStates('deleting')).toEqual([]);
  });

  it('no state transitions to itself', () => {
    for (const s of VM_STATES) expect(canTransition(s, s)).toBe(false);
  });

  it('the happy path and a restart are allowed', () => {
    const path: VmState[] = ['pending', 'scheduled', 'starting', 'running', 'stopping', 'stopped', 'starting', 'running', 'failed', 'pending'];
    for (let i = 1; i < path.length; i++) expect(canTransition(path[i - 1]!, path[i]!)).toBe(true);
  });

  it('a VM cannot skip the scheduler or come back from failed without a restart', () => {
    expect(canTransition('pending', 'running')).toBe(false);
    expect(canTransition('pending', 'starting')).toBe(false);
    expect(canTransition('failed', 'running')).toBe(false);
    expect(canTransition('running', 'pending')).toBe(false);
    expect(canTransition('stopped', 'stopping')).toBe(false);
  });

  it('assertTransition throws an InvalidTransitionError with context', () => {
    expect(() => assertTransition('running', 'stopping', 'web-1')).not.toThrow();
    let err: unknown;
    try {
      assertTransition('deleting', 'running', 'web-1');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidTransitionError);
    expect(err).toBeInstanceOf(FleetError);
    const e = err as InvalidTransitionError;
    expect(e.statusCode).toBe(409);
    expect(e.code).toBe('invalid_transition');
    expect(e.message).toContain('"web-1"');
    expect(e.message).toContain('deleting to running');
    expect(e.message).toContain('nothing leaves deleting');
    expect(e.details).toMatchObject({ vm: 'web-1', from: 'deleting', to: 'running' });
    expect(() => assertTransition('pending', 'running', 'db')).toThrow(/allowed from pending: scheduled, failed, deleting/);
  });

  it('isVmState guards strings from the database', () => {
    expect(isVmState('running')).toBe(true);
    expect(isVmState('Running')).toBe(false);
    expect(isVmState('')).toBe(false);
  });
});

describe('stateFromWorkerPhase', () => {
  const P = (phase: string) => `VM_PHASE_${phase}` as WorkerPhase;

  it('follows the worker through a normal start and stop', () => {
    expect(stateFromWorkerPhase('scheduled', P('STARTING'), 'running')).toEqual({ state: 'starting' });
    expect(stateFromWorkerPhase('starting', P('RUNNING'), 'running')).toEqual({ state: 'running' });
    expect(stateFromWorkerPhase('running', P('STOPPING'), 'stopped')).toEqual({ state: 'stopping' });
    expect(stateFromWorkerPhase('stopping', P('STOPPED'), 'stopped')).toEqual({ state: 'stopped' });
    expect(stateFromWorkerPhase('stopped', P('STARTING'), 'running')).toEqual({ state: 'starting' });
  });

  it('accepts coalesced reports that skip a step', () => {
    expect(stateFromWorkerPhase('scheduled', P('RUNNING'), 'running')).toEqual({ state: 'running' });
    expect(stateFromWorkerPhase('scheduled', P('STOPPED'), 'stopped')).toEqual({ state: 'stopped' });
    expect(stateFromWorkerPhase('stopping', P('RUNNING'), 'running')).toEqual({ state: 'running' });
  });

  it('returns null when nothing changes', () => {
    expect(stateFromWorkerPhase('running', P('RUNNING'), 'running')).toBeNull();
    expect(stateFromWorkerPhase('starting', P('STARTING'), 'running')).toBeNull();
    expect(stateFromWorkerPhase('stopped', P('STOPPED'), 'stopped')).toBeNull();
  });

  it('ignores everything for a deleting VM (deletes win)', () => {
    for (const phase of ['STARTING', 'RUNNING', 'STOPPING', 'STOPPED', 'FAILED', 'GONE']) {
      for (const power of ['running', 'stopped'] as const) expect(stateFromWorkerPhase('deleting', P(phase), power)).toBeNull();
    }
  });

  it('ignores late reports for pending and failed VMs (no live attempt)', () => {
    for (const state of ['pending', 'failed'] as const) {
      for (const phase of ['STARTING', 'RUNNING', 'STOPPING', 'STOPPED', 'FAILED', 'GONE']) {
        expect(stateFromWorkerPhase(state, P(phase), 'running')).toBeNull();
      }
    }
  });

  it('ignores out-of-order reports the table forbids', () => {
    expect(stateFromWorkerPhase('stopped', P('STOPPING'), 'stopped')).toBeNull();
  });

  it('FAILED fails the VM with a reason', () => {
    const r = stateFromWorkerPhase('running', P('FAILED'), 'running');
    expect(r?.state).toBe('failed');
    expect(r?.reason).toContain('failed');
  });

  it('GONE for a VM that should run means the instance vanished', () => {
    for (const state of ['scheduled', 'starting', 'running', 'stopping', 'stopped'] as const) {
      const r = stateFromWorkerPhase(state, P('GONE'), 'running');
      expect(r?.state).toBe('failed');
      expect(r?.reason).toContain('disappeared');
      expect(r?.reason).toContain(state);
    }
  });

  it('GONE while desired power is stopped also fails (the slot was released)', () => {
    const r = stateFromWorkerPhase('stopped', P('GONE'), 'stopped');
    expect(r?.state).toBe('failed');
    expect(r?.reason).toContain('desired power: stopped');
  });

  it('STOPPED while desired power is running is recorded with a reason', () => {
    const r = stateFromWorkerPhase('running', P('STOPPED'), 'running');
    expect(r).toEqual({ state: 'stopped', reason: expect.stringContaining('stopped on its own') });
  });

  it('every non-null result is an allowed transition', () => {
    const phases: WorkerPhase[] = ['VM_PHASE_STARTING', 'VM_PHASE_RUNNING', 'VM_PHASE_STOPPING', 'VM_PHASE_STOPPED', 'VM_PHASE_FAILED', 'VM_PHASE_GONE'];
    for (const from of VM_STATES) {
      for (const phase of phases) {
        for (const power of ['running', 'stopped'] as const) {
          const r = stateFromWorkerPhase(from, phase, power);
          if (r) expect(canTransition(from, r.state), `${from} + ${phase} (${power}) -> ${r.state}`).toBe(true);
        }
      }
    }
  });
});

describe('restart policy and backoff', () => {
  it('doubles from 5 s', () => {
    expect([0, 1, 2, 3, 4, 5].map(restartDelayMs)).toEqual([5_000, 10_000, 20_000, 40_000, 80_000, 160_000]);
  });

  it('caps at 5 minutes', () => {
    expect(restartDelayMs(6)).toBe(300_000);
    expect(restartDelayMs(7)).toBe(300_000);
    expect(restartDelayMs(1_000)).toBe(300_000);
    expect(restartDelayMs(Number.MAX_SAFE_INTEGER)).toBe(300_000);
    expect(restartDelayMs(Number.POSITIVE_INFINITY)).toBe(300_000);
  });

  it('treats nonsense counts as the first restart', () => {
    expect(restartDelayMs(-3)).toBe(5_000);
    expect(restartDelayMs(Number.NaN)).toBe(5_000);
    expect(restartDelayMs(1.7)).toBe(10_000);
  });

  it('is never decreasing', () => {
    for (let n = 1; n < 50; n++) expect(restartDelayMs(n)).toBeGreaterThanOrEqual(restartDelayMs(n - 1));
  });

  it('restarts only on-failure', () => {
    expect(shouldRestart('on-failure')).toBe(true);
    expect(shouldRestart('never')).toBe(false);
  });
});

describe('state classes', () => {
  it('terminal: stopped and failed are settled, deleting is final', () => {
    expect(VM_STATES.filter(isTerminal)).toEqual(['stopped', 'failed', 'deleting']);
  });

  it('placement is held by scheduled, starting, running, stopping, stopped and unknown (its worker may still run it)', () => {
    expect(VM_STATES.filter(holdsPlacement)).toEqual(['scheduled', 'starting', 'running', 'stopping', 'stopped', 'unknown']);
  });

  it('a worker that reports again moves an unknown VM to what it reports, without a restart', () => {
    expect(stateFromWorkerPhase('unknown', 'VM_PHASE_RUNNING', 'running')).toEqual({ state: 'running' });
    expect(stateFromWorkerPhase('unknown', 'VM_PHASE_STOPPED', 'stopped')).toEqual({ state: 'stopped' });
    expect(stateFromWorkerPhase('unknown', 'VM_PHASE_STOPPED', 'running')?.state).toBe('stopped');
    expect(stateFromWorkerPhase('unknown', 'VM_PHASE_FAILED', 'running')?.state).toBe('failed');
    expect(stateFromWorkerPhase('unknown', 'VM_PHASE_GONE', 'running')?.state).toBe('failed');
  });
});
