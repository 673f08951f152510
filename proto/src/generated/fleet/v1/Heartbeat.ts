// Original file: fleet/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface Heartbeat {
  'sentAtUnixMs'?: (number | string | Long);
  'runningVms'?: (number);
  'seq'?: (number | string | Long);
}

export interface Heartbeat__Output {
  'sentAtUnixMs': (string);
  'runningVms': (number);
  'seq': (string);
}
