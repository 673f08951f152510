// Original file: fleet/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface Ping {
  'nonce'?: (number | string | Long);
  'sentAtUnixMs'?: (number | string | Long);
}

export interface Ping__Output {
  'nonce': (string);
  'sentAtUnixMs': (string);
}
