// Original file: fleet/v1/worker.proto

import type { VmPhase as _fleet_v1_VmPhase, VmPhase__Output as _fleet_v1_VmPhase__Output } from '../../fleet/v1/VmPhase';
import type { TransferProgress as _fleet_v1_TransferProgress, TransferProgress__Output as _fleet_v1_TransferProgress__Output } from '../../fleet/v1/TransferProgress';
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
  'pull'?: (_fleet_v1_TransferProgress | null);
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
  'pull': (_fleet_v1_TransferProgress__Output | null);
}
