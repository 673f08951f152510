// Original file: fleet/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface VmNetworkCounters {
  'vmId'?: (string);
  'attempt'?: (number);
  'fromVm'?: ({[key: string]: number | string | Long});
  'fromHost'?: ({[key: string]: number | string | Long});
  'sampledAtUnixMs'?: (number | string | Long);
}

export interface VmNetworkCounters__Output {
  'vmId': (string);
  'attempt': (number);
  'fromVm': ({[key: string]: string});
  'fromHost': ({[key: string]: string});
  'sampledAtUnixMs': (string);
}
