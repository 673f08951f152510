// Original file: fleet/v1/worker.proto

import type { VmStatus as _fleet_v1_VmStatus, VmStatus__Output as _fleet_v1_VmStatus__Output } from '../../fleet/v1/VmStatus';

export interface VmStatusReport {
  'vms'?: (_fleet_v1_VmStatus)[];
}

export interface VmStatusReport__Output {
  'vms': (_fleet_v1_VmStatus__Output)[];
}
