// Original file: fleet/v1/worker.proto

import type { TransferProgress as _fleet_v1_TransferProgress, TransferProgress__Output as _fleet_v1_TransferProgress__Output } from '../../fleet/v1/TransferProgress';

export interface ImageOperationStatus {
  'id'?: (string);
  'state'?: (string);
  'message'?: (string);
  'progress'?: (_fleet_v1_TransferProgress | null);
  'digest'?: (string);
}

export interface ImageOperationStatus__Output {
  'id': (string);
  'state': (string);
  'message': (string);
  'progress': (_fleet_v1_TransferProgress__Output | null);
  'digest': (string);
}
