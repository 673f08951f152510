// Original file: fleet/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface LeaseRenewal {
  'heartbeatSeq'?: (number | string | Long);
  'fenceAfterMs'?: (number);
  'controllerAddresses'?: (string)[];
}

export interface LeaseRenewal__Output {
  'heartbeatSeq': (string);
  'fenceAfterMs': (number);
  'controllerAddresses': (string)[];
}
