// Original file: fleet/v1/worker.proto

import type { Platform as _fleet_v1_Platform, Platform__Output as _fleet_v1_Platform__Output } from '../../fleet/v1/Platform';
import type { Capacity as _fleet_v1_Capacity, Capacity__Output as _fleet_v1_Capacity__Output } from '../../fleet/v1/Capacity';
import type { VmStatus as _fleet_v1_VmStatus, VmStatus__Output as _fleet_v1_VmStatus__Output } from '../../fleet/v1/VmStatus';
import type { WorkerNetwork as _fleet_v1_WorkerNetwork, WorkerNetwork__Output as _fleet_v1_WorkerNetwork__Output } from '../../fleet/v1/WorkerNetwork';

export interface Hello {
  'protocolVersion'?: (number);
  'workerVersion'?: (string);
  'hostname'?: (string);
  'machineId'?: (string);
  'platform'?: (_fleet_v1_Platform | null);
  'capacity'?: (_fleet_v1_Capacity | null);
  'labels'?: ({[key: string]: string});
  'drivers'?: (string)[];
  'vms'?: (_fleet_v1_VmStatus)[];
  'networks'?: (_fleet_v1_WorkerNetwork)[];
}

export interface Hello__Output {
  'protocolVersion': (number);
  'workerVersion': (string);
  'hostname': (string);
  'machineId': (string);
  'platform': (_fleet_v1_Platform__Output | null);
  'capacity': (_fleet_v1_Capacity__Output | null);
  'labels': ({[key: string]: string});
  'drivers': (string)[];
  'vms': (_fleet_v1_VmStatus__Output)[];
  'networks': (_fleet_v1_WorkerNetwork__Output)[];
}
