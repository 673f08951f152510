// Original file: fleet/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface WorkerEvent {
  'vmId'?: (string);
  'kind'?: (string);
  'level'?: (string);
  'message'?: (string);
  'atUnixMs'?: (number | string | Long);
}

export interface WorkerEvent__Output {
  'vmId': (string);
  'kind': (string);
  'level': (string);
  'message': (string);
  'atUnixMs': (string);
}
