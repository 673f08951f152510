// Original file: fleet/v1/worker.proto

export const VmPhase = {
  VM_PHASE_UNSPECIFIED: 'VM_PHASE_UNSPECIFIED',
  VM_PHASE_STARTING: 'VM_PHASE_STARTING',
  VM_PHASE_RUNNING: 'VM_PHASE_RUNNING',
  VM_PHASE_STOPPING: 'VM_PHASE_STOPPING',
  VM_PHASE_STOPPED: 'VM_PHASE_STOPPED',
  VM_PHASE_FAILED: 'VM_PHASE_FAILED',
  VM_PHASE_GONE: 'VM_PHASE_GONE',
} as const;

export type VmPhase =
  | 'VM_PHASE_UNSPECIFIED'
  | 0
  | 'VM_PHASE_STARTING'
  | 1
  | 'VM_PHASE_RUNNING'
  | 2
  | 'VM_PHASE_STOPPING'
  | 3
  | 'VM_PHASE_STOPPED'
  | 4
  | 'VM_PHASE_FAILED'
  | 5
  | 'VM_PHASE_GONE'
  | 6

export type VmPhase__Output = typeof VmPhase[keyof typeof VmPhase]
