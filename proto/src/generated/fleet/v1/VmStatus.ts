// Original file: fleet/v1/worker.proto

import type { VmPhase as _fleet_v1_VmPhase, VmPhase__Output as _fleet_v1_VmPhase__Output } from '../../fleet/v1/VmPhase';
import type { Long } from '@grpc/proto-loader';

export interface VmStatus {
  'vmId'?: (string);
  'attempt'?: (number);
  'phase'?: (_fleet_v1_VmPhase);
  'observedGeneration'?: (number | string | Long);
  'ip'?: (string);
  'mac'?: (string);
  'message'?: (string);
  'changedAtUnixMs'?: (number | string | Long);
}

export interface VmStatus__Output {
  'vmId': (string);
  'attempt': (number);
  'phase': (_fleet_v1_VmPhase__Output);
  'observedGeneration': (string);
  'ip': (string);
  'mac': (string);
  'message': (string);
  'changedAtUnixMs': (string);
}
