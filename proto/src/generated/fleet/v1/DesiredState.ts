// Original file: fleet/v1/worker.proto

import type { VmAssignment as _fleet_v1_VmAssignment, VmAssignment__Output as _fleet_v1_VmAssignment__Output } from '../../fleet/v1/VmAssignment';
import type { ImageOperation as _fleet_v1_ImageOperation, ImageOperation__Output as _fleet_v1_ImageOperation__Output } from '../../fleet/v1/ImageOperation';
import type { Long } from '@grpc/proto-loader';

export interface DesiredState {
  'revision'?: (number | string | Long);
  'vms'?: (_fleet_v1_VmAssignment)[];
  'imageOperations'?: (_fleet_v1_ImageOperation)[];
}

export interface DesiredState__Output {
  'revision': (string);
  'vms': (_fleet_v1_VmAssignment__Output)[];
  'imageOperations': (_fleet_v1_ImageOperation__Output)[];
}
