// Original file: fleet/v1/worker.proto

import type { TransferProgress as _fleet_v1_TransferProgress, TransferProgress__Output as _fleet_v1_TransferProgress__Output } from '../../fleet/v1/TransferProgress';
import type { Long } from '@grpc/proto-loader';

export interface CachedImage {
  'digest'?: (string);
  'reference'?: (string);
  'format'?: (string);
  'sizeBytes'?: (number | string | Long);
  'lastUsedUnixMs'?: (number | string | Long);
  'inUse'?: (number);
  'state'?: (string);
  'progress'?: (_fleet_v1_TransferProgress | null);
  'error'?: (string);
}

export interface CachedImage__Output {
  'digest': (string);
  'reference': (string);
  'format': (string);
  'sizeBytes': (string);
  'lastUsedUnixMs': (string);
  'inUse': (number);
  'state': (string);
  'progress': (_fleet_v1_TransferProgress__Output | null);
  'error': (string);
}
