// Original file: fleet/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface Capacity {
  'cpus'?: (number);
  'memoryMib'?: (number | string | Long);
  'vmSlots'?: (number);
  'macosSlots'?: (number);
  'natAddresses'?: (number);
}

export interface Capacity__Output {
  'cpus': (number);
  'memoryMib': (string);
  'vmSlots': (number);
  'macosSlots': (number);
  'natAddresses': (number);
}
