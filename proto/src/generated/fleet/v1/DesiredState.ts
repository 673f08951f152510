// Original file: fleet/v1/worker.proto

import type { VmAssignment as _fleet_v1_VmAssignment, VmAssignment__Output as _fleet_v1_VmAssignment__Output } from '../../fleet/v1/VmAssignment';
import type { Long } from '@grpc/proto-loader';

export interface DesiredState {
  'revision'?: (number | string | Long);
  'vms'?: (_fleet_v1_VmAssignment)[];
}

export interface DesiredState__Output {
  'revision': (string);
  'vms': (_fleet_v1_VmAssignment__Output)[];
}
