// Original file: fleet/v1/worker.proto

export const PowerState = {
  POWER_STATE_UNSPECIFIED: 'POWER_STATE_UNSPECIFIED',
  POWER_STATE_RUNNING: 'POWER_STATE_RUNNING',
  POWER_STATE_STOPPED: 'POWER_STATE_STOPPED',
} as const;

export type PowerState =
  | 'POWER_STATE_UNSPECIFIED'
  | 0
  | 'POWER_STATE_RUNNING'
  | 1
  | 'POWER_STATE_STOPPED'
  | 2

export type PowerState__Output = typeof PowerState[keyof typeof PowerState]
