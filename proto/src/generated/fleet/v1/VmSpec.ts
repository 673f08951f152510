// Original file: fleet/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface VmSpec {
  'image'?: (string);
  'os'?: (string);
  'cpus'?: (number);
  'memoryMib'?: (number | string | Long);
  'diskGib'?: (number);
  'labels'?: ({[key: string]: string});
  'username'?: (string);
  'driver'?: (string);
}

export interface VmSpec__Output {
  'image': (string);
  'os': (string);
  'cpus': (number);
  'memoryMib': (string);
  'diskGib': (number);
  'labels': ({[key: string]: string});
  'username': (string);
  'driver': (string);
}
