// Original file: fleet/v1/worker.proto

import type { VmSpec as _fleet_v1_VmSpec, VmSpec__Output as _fleet_v1_VmSpec__Output } from '../../fleet/v1/VmSpec';
import type { PowerState as _fleet_v1_PowerState, PowerState__Output as _fleet_v1_PowerState__Output } from '../../fleet/v1/PowerState';
import type { ImagePull as _fleet_v1_ImagePull, ImagePull__Output as _fleet_v1_ImagePull__Output } from '../../fleet/v1/ImagePull';
import type { Long } from '@grpc/proto-loader';

export interface VmAssignment {
  'vmId'?: (string);
  'name'?: (string);
  'attempt'?: (number);
  'generation'?: (number | string | Long);
  'spec'?: (_fleet_v1_VmSpec | null);
  'desiredPower'?: (_fleet_v1_PowerState);
  'disconnectPolicy'?: (string);
  'imagePull'?: (_fleet_v1_ImagePull | null);
}

export interface VmAssignment__Output {
  'vmId': (string);
  'name': (string);
  'attempt': (number);
  'generation': (string);
  'spec': (_fleet_v1_VmSpec__Output | null);
  'desiredPower': (_fleet_v1_PowerState__Output);
  'disconnectPolicy': (string);
  'imagePull': (_fleet_v1_ImagePull__Output | null);
}
