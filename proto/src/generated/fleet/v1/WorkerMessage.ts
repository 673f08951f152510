// Original file: fleet/v1/worker.proto

import type { Hello as _fleet_v1_Hello, Hello__Output as _fleet_v1_Hello__Output } from '../../fleet/v1/Hello';
import type { Heartbeat as _fleet_v1_Heartbeat, Heartbeat__Output as _fleet_v1_Heartbeat__Output } from '../../fleet/v1/Heartbeat';
import type { VmStatusReport as _fleet_v1_VmStatusReport, VmStatusReport__Output as _fleet_v1_VmStatusReport__Output } from '../../fleet/v1/VmStatusReport';
import type { WorkerEvent as _fleet_v1_WorkerEvent, WorkerEvent__Output as _fleet_v1_WorkerEvent__Output } from '../../fleet/v1/WorkerEvent';
import type { Pong as _fleet_v1_Pong, Pong__Output as _fleet_v1_Pong__Output } from '../../fleet/v1/Pong';
import type { VmNetworkReport as _fleet_v1_VmNetworkReport, VmNetworkReport__Output as _fleet_v1_VmNetworkReport__Output } from '../../fleet/v1/VmNetworkReport';
import type { CapacityUpdate as _fleet_v1_CapacityUpdate, CapacityUpdate__Output as _fleet_v1_CapacityUpdate__Output } from '../../fleet/v1/CapacityUpdate';
import type { ImageInventory as _fleet_v1_ImageInventory, ImageInventory__Output as _fleet_v1_ImageInventory__Output } from '../../fleet/v1/ImageInventory';
import type { ImageOperationStatus as _fleet_v1_ImageOperationStatus, ImageOperationStatus__Output as _fleet_v1_ImageOperationStatus__Output } from '../../fleet/v1/ImageOperationStatus';

export interface WorkerMessage {
  'hello'?: (_fleet_v1_Hello | null);
  'heartbeat'?: (_fleet_v1_Heartbeat | null);
  'vmStatus'?: (_fleet_v1_VmStatusReport | null);
  'event'?: (_fleet_v1_WorkerEvent | null);
  'pong'?: (_fleet_v1_Pong | null);
  'vmNetwork'?: (_fleet_v1_VmNetworkReport | null);
  'capacityUpdate'?: (_fleet_v1_CapacityUpdate | null);
  'imageInventory'?: (_fleet_v1_ImageInventory | null);
  'imageOperation'?: (_fleet_v1_ImageOperationStatus | null);
  'payload'?: "hello"|"heartbeat"|"vmStatus"|"event"|"pong"|"vmNetwork"|"capacityUpdate"|"imageInventory"|"imageOperation";
}

export interface WorkerMessage__Output {
  'hello'?: (_fleet_v1_Hello__Output | null);
  'heartbeat'?: (_fleet_v1_Heartbeat__Output | null);
  'vmStatus'?: (_fleet_v1_VmStatusReport__Output | null);
  'event'?: (_fleet_v1_WorkerEvent__Output | null);
  'pong'?: (_fleet_v1_Pong__Output | null);
  'vmNetwork'?: (_fleet_v1_VmNetworkReport__Output | null);
  'capacityUpdate'?: (_fleet_v1_CapacityUpdate__Output | null);
  'imageInventory'?: (_fleet_v1_ImageInventory__Output | null);
  'imageOperation'?: (_fleet_v1_ImageOperationStatus__Output | null);
  'payload'?: "hello"|"heartbeat"|"vmStatus"|"event"|"pong"|"vmNetwork"|"capacityUpdate"|"imageInventory"|"imageOperation";
}
