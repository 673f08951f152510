// The VM lifecycle as pure rules: which state changes are allowed, what a
// worker's report means for the controller's state, and the restart backoff.
// No I/O and no clock: callers pass whatever time they need.
//
//   pending ──► scheduled ──► starting ──► running ──► stopping ──► stopped
//      ▲            │             │           │           │            │
//      │            └─────────────┴───────────┴─────┬─────┴────────────┘
//      │                                            ▼
//      └──────────── (restart policy) ─────────── failed
//
//   deleting: reachable from every state, left by none (the row is removed
//   once no worker holds the VM). Deletes always win.
//
//   unknown: its worker cannot be reached (stream lost, heartbeats missing). The
//   attempt is still current and may well be running: nothing is re-placed. It
//   leaves unknown when the worker reports again, or — disconnect policy
//   "reschedule" only — for failed once the worker is lost (lostAfter), by which
//   time the worker has stopped it (fenceAfter < lostAfter; docs/architecture.md).
import { FleetError } from '../errors.ts';

export const VM_STATES = ['pending', 'scheduled', 'starting', 'running', 'stopping', 'stopped', 'unknown', 'failed', 'deleting'] as const;
export type VmState = (typeof VM_STATES)[number];

/**
 * Allowed edges, 'deleting' excepted (added for every state below).
 *  - scheduled may skip ahead (a worker's reports can be coalesced: it may first
 *    be seen running, or already stopped when created with power state stopped),
 *    and goes back to pending only if the scheduler withdraws the placement.
 *  - running -> starting: the worker restarts the instance in place (e.g. the
 *    guest powered off while its desired power is running).
 *  - stopping -> starting/running: the desired power flipped back to running.
 *  - failed -> pending: a restart (restart policy on-failure, after the backoff).
 */
const EDGES: Record<VmState, readonly VmState[]> = {
  pending: ['scheduled', 'failed'],
  scheduled: ['pending', 'starting', 'running', 'stopping', 'stopped', 'unknown', 'failed'],
  starting: ['running', 'stopping', 'stopped', 'unknown', 'failed'],
  running: ['starting', 'stopping', 'stopped', 'unknown', 'failed'],
  stopping: ['stopped', 'starting', 'running', 'unknown', 'failed'],
  stopped: ['starting', 'running', 'unknown', 'failed'],
  unknown: ['starting', 'running', 'stopping', 'stopped', 'failed'],
  failed: ['pending'],
  deleting: [],
};

/** States whose VM is (or may be) live on its worker: they become `unknown` when the worker cannot be reached. */
export const SUSPECTABLE_STATES: readonly VmState[] = ['starting', 'running', 'stopping', 'stopped'];

export type DisconnectPolicy = 'reschedule' | 'wait';
export const DISCONNECT_POLICIES: readonly DisconnectPolicy[] = ['reschedule', 'wait'];

export function disconnectPolicyOf(value: string): DisconnectPolicy {
  return value === 'wait' ? 'wait' : 'reschedule';
}

const ALLOWED: ReadonlyMap<VmState, ReadonlySet<VmState>> = new Map(
  VM_STATES.map((from) => [from, new Set<VmState>(from === 'deleting' ? [] : [...EDGES[from], 'deleting'])]),
);

export function isVmState(value: string): value is VmState {
  return (VM_STATES as readonly string[]).includes(value);
}

/** Whether `from -> to` is an allowed transition. Staying in the same state is not a transition. */
export function canTransition(from: VmState, to: VmState): boolean {
  return ALLOWED.get(from)?.has(to) ?? false;
}

/** The states reachable from `from` in one step. */
export function nextStates(from: VmState): VmState[] {
  return [...(ALLOWED.get(from) ?? [])];
}

export class InvalidTransitionError extends FleetError {
  constructor(
    readonly vmName: string,
    readonly from: VmState,
    readonly to: VmState,
  ) {
    const allowed = nextStates(from);
    super(
      409,
      'invalid_transition',
      `vm "${vmName}" cannot go from ${from} to ${to} (${allowed.length > 0 ? `allowed from ${from}: ${allowed.join(', ')}` : `nothing leaves ${from}`})`,
      { vm: vmName, from, to, allowed },
    );
    this.name = 'InvalidTransitionError';
  }
}

export function assertTransition(from: VmState, to: VmState, vmName: string): void {
  if (!canTransition(from, to)) throw new InvalidTransitionError(vmName, from, to);
}

export type WorkerPhase =
  | 'VM_PHASE_STARTING'
  | 'VM_PHASE_RUNNING'
  | 'VM_PHASE_STOPPING'
  | 'VM_PHASE_STOPPED'
  | 'VM_PHASE_FAILED'
  | 'VM_PHASE_GONE';

const PHASE_STATE: Record<Exclude<WorkerPhase, 'VM_PHASE_GONE'>, VmState> = {
  VM_PHASE_STARTING: 'starting',
  VM_PHASE_RUNNING: 'running',
  VM_PHASE_STOPPING: 'stopping',
  VM_PHASE_STOPPED: 'stopped',
  VM_PHASE_FAILED: 'failed',
};

/**
 * What the controller's state becomes when the worker reports `phase` for the
 * VM's current attempt, or null when nothing changes:
 *  - same state, or a change the table does not allow (stale or out-of-order reports);
 *  - 'deleting' ignores everything (the caller removes the VM once the worker
 *    confirms GONE and no allocation is left);
 *  - 'pending' and 'failed' have no live attempt on a worker: a late report
 *    about the old attempt changes nothing (a failed instance is dropped from
 *    the worker's desired set, which stops it).
 * GONE (for a VM that is not deleting): the instance vanished -> failed with a
 * reason, and the restart policy applies. With desired power stopped it is
 * failed too, not 'stopped': GONE releases the worker's slot, and a VM left in
 * a placed state without its slot would be recreated on a worker that no
 * longer accounts for it; failing it sends it back through the scheduler.
 * STOPPED while desired power is running (from starting/running): recorded as
 * 'stopped' with a reason saying it stopped on its own; the desired state still
 * says running, so the worker's reconcile loop decides whether to start it again.
 */
export function stateFromWorkerPhase(
  current: VmState,
  phase: WorkerPhase,
  desiredPower: 'running' | 'stopped',
): { state: VmState; reason?: string } | null {
  if (current === 'deleting' || current === 'pending' || current === 'failed') return null;
  if (phase === 'VM_PHASE_GONE') {
    const note = desiredPower === 'stopped' ? ' (desired power: stopped)' : '';
    return { state: 'failed', reason: `the instance disappeared from its worker while ${current}${note}` };
  }
  const next = PHASE_STATE[phase];
  if (next === current || !canTransition(current, next)) return null;
  if (next === 'failed') return { state: 'failed', reason: `the worker reported the VM failed while ${current}` };
  if (next === 'stopped' && desiredPower === 'running' && (current === 'running' || current === 'starting')) {
    return { state: 'stopped', reason: 'stopped on its own while its desired power is running' };
  }
  return { state: next };
}

export type RestartPolicy = 'never' | 'on-failure';

export const RESTART_BASE_DELAY_MS = 5_000;
export const RESTART_MAX_DELAY_MS = 5 * 60_000;

/** Backoff before restart number `restartCount` (0 for the first): 5 s, 10 s, 20 s, ... capped at 5 min. */
export function restartDelayMs(restartCount: number): number {
  const n = Number.isFinite(restartCount) ? Math.max(0, Math.floor(restartCount)) : restartCount > 0 ? 64 : 0;
  if (n >= 6) return RESTART_MAX_DELAY_MS; // 5 s * 2^6 = 320 s > 5 min
  return Math.min(RESTART_MAX_DELAY_MS, RESTART_BASE_DELAY_MS * 2 ** n);
}

export function shouldRestart(policy: RestartPolicy): boolean {
  return policy === 'on-failure';
}

/** Settled (stopped, failed) or final (deleting): nothing moves without a new request or a restart. */
export function isTerminal(state: VmState): boolean {
  return state === 'stopped' || state === 'failed' || state === 'deleting';
}

const HOLDS_PLACEMENT: ReadonlySet<VmState> = new Set<VmState>(['scheduled', 'starting', 'running', 'stopping', 'stopped', 'unknown']);

/** States in which the VM belongs to its worker's desired set (and holds its slot). */
export function holdsPlacement(state: VmState): boolean {
  return HOLDS_PLACEMENT.has(state);
}
