// Original file: fleet/v1/worker.proto

import type { Capacity as _fleet_v1_Capacity, Capacity__Output as _fleet_v1_Capacity__Output } from '../../fleet/v1/Capacity';

export interface CapacityUpdate {
  'capacity'?: (_fleet_v1_Capacity | null);
  'reason'?: (string);
}

export interface CapacityUpdate__Output {
  'capacity': (_fleet_v1_Capacity__Output | null);
  'reason': (string);
}
