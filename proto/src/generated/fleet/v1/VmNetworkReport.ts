// Original file: fleet/v1/worker.proto

import type { VmNetworkCounters as _fleet_v1_VmNetworkCounters, VmNetworkCounters__Output as _fleet_v1_VmNetworkCounters__Output } from '../../fleet/v1/VmNetworkCounters';

export interface VmNetworkReport {
  'vms'?: (_fleet_v1_VmNetworkCounters)[];
}

export interface VmNetworkReport__Output {
  'vms': (_fleet_v1_VmNetworkCounters__Output)[];
}
