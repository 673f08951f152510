// Original file: fleet/v1/worker.proto

import type { VmNetworkPolicy as _fleet_v1_VmNetworkPolicy, VmNetworkPolicy__Output as _fleet_v1_VmNetworkPolicy__Output } from '../../fleet/v1/VmNetworkPolicy';
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
  'network'?: (_fleet_v1_VmNetworkPolicy | null);
  'authorizedKeys'?: (string)[];
  'mac'?: (string);
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
  'network': (_fleet_v1_VmNetworkPolicy__Output | null);
  'authorizedKeys': (string)[];
  'mac': (string);
}
