import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { CachedImage as _fleet_v1_CachedImage, CachedImage__Output as _fleet_v1_CachedImage__Output } from './fleet/v1/CachedImage';
import type { Capacity as _fleet_v1_Capacity, Capacity__Output as _fleet_v1_Capacity__Output } from './fleet/v1/Capacity';
import type { CapacityUpdate as _fleet_v1_CapacityUpdate, CapacityUpdate__Output as _fleet_v1_CapacityUpdate__Output } from './fleet/v1/CapacityUpdate';
import type { ControllerMessage as _fleet_v1_ControllerMessage, ControllerMessage__Output as _fleet_v1_ControllerMessage__Output } from './fleet/v1/ControllerMessage';
import type { DesiredState as _fleet_v1_DesiredState, DesiredState__Output as _fleet_v1_DesiredState__Output } from './fleet/v1/DesiredState';
import type { EnrollRequest as _fleet_v1_EnrollRequest, EnrollRequest__Output as _fleet_v1_EnrollRequest__Output } from './fleet/v1/EnrollRequest';
import type { EnrollResponse as _fleet_v1_EnrollResponse, EnrollResponse__Output as _fleet_v1_EnrollResponse__Output } from './fleet/v1/EnrollResponse';
import type { Heartbeat as _fleet_v1_Heartbeat, Heartbeat__Output as _fleet_v1_Heartbeat__Output } from './fleet/v1/Heartbeat';
import type { Hello as _fleet_v1_Hello, Hello__Output as _fleet_v1_Hello__Output } from './fleet/v1/Hello';
import type { ImageDelete as _fleet_v1_ImageDelete, ImageDelete__Output as _fleet_v1_ImageDelete__Output } from './fleet/v1/ImageDelete';
import type { ImageInventory as _fleet_v1_ImageInventory, ImageInventory__Output as _fleet_v1_ImageInventory__Output } from './fleet/v1/ImageInventory';
import type { ImageOperation as _fleet_v1_ImageOperation, ImageOperation__Output as _fleet_v1_ImageOperation__Output } from './fleet/v1/ImageOperation';
import type { ImageOperationStatus as _fleet_v1_ImageOperationStatus, ImageOperationStatus__Output as _fleet_v1_ImageOperationStatus__Output } from './fleet/v1/ImageOperationStatus';
import type { ImagePrefetch as _fleet_v1_ImagePrefetch, ImagePrefetch__Output as _fleet_v1_ImagePrefetch__Output } from './fleet/v1/ImagePrefetch';
import type { ImagePull as _fleet_v1_ImagePull, ImagePull__Output as _fleet_v1_ImagePull__Output } from './fleet/v1/ImagePull';
import type { ImagePush as _fleet_v1_ImagePush, ImagePush__Output as _fleet_v1_ImagePush__Output } from './fleet/v1/ImagePush';
import type { LeaseRenewal as _fleet_v1_LeaseRenewal, LeaseRenewal__Output as _fleet_v1_LeaseRenewal__Output } from './fleet/v1/LeaseRenewal';
import type { Ping as _fleet_v1_Ping, Ping__Output as _fleet_v1_Ping__Output } from './fleet/v1/Ping';
import type { Platform as _fleet_v1_Platform, Platform__Output as _fleet_v1_Platform__Output } from './fleet/v1/Platform';
import type { Pong as _fleet_v1_Pong, Pong__Output as _fleet_v1_Pong__Output } from './fleet/v1/Pong';
import type { RegistryAccess as _fleet_v1_RegistryAccess, RegistryAccess__Output as _fleet_v1_RegistryAccess__Output } from './fleet/v1/RegistryAccess';
import type { RenewCertificateRequest as _fleet_v1_RenewCertificateRequest, RenewCertificateRequest__Output as _fleet_v1_RenewCertificateRequest__Output } from './fleet/v1/RenewCertificateRequest';
import type { RenewCertificateResponse as _fleet_v1_RenewCertificateResponse, RenewCertificateResponse__Output as _fleet_v1_RenewCertificateResponse__Output } from './fleet/v1/RenewCertificateResponse';
import type { Resize as _fleet_v1_Resize, Resize__Output as _fleet_v1_Resize__Output } from './fleet/v1/Resize';
import type { SessionCancel as _fleet_v1_SessionCancel, SessionCancel__Output as _fleet_v1_SessionCancel__Output } from './fleet/v1/SessionCancel';
import type { SessionError as _fleet_v1_SessionError, SessionError__Output as _fleet_v1_SessionError__Output } from './fleet/v1/SessionError';
import type { SessionExit as _fleet_v1_SessionExit, SessionExit__Output as _fleet_v1_SessionExit__Output } from './fleet/v1/SessionExit';
import type { SessionFrame as _fleet_v1_SessionFrame, SessionFrame__Output as _fleet_v1_SessionFrame__Output } from './fleet/v1/SessionFrame';
import type { SessionOpen as _fleet_v1_SessionOpen, SessionOpen__Output as _fleet_v1_SessionOpen__Output } from './fleet/v1/SessionOpen';
import type { SessionProgress as _fleet_v1_SessionProgress, SessionProgress__Output as _fleet_v1_SessionProgress__Output } from './fleet/v1/SessionProgress';
import type { TransferProgress as _fleet_v1_TransferProgress, TransferProgress__Output as _fleet_v1_TransferProgress__Output } from './fleet/v1/TransferProgress';
import type { VmAssignment as _fleet_v1_VmAssignment, VmAssignment__Output as _fleet_v1_VmAssignment__Output } from './fleet/v1/VmAssignment';
import type { VmNetworkCounters as _fleet_v1_VmNetworkCounters, VmNetworkCounters__Output as _fleet_v1_VmNetworkCounters__Output } from './fleet/v1/VmNetworkCounters';
import type { VmNetworkPolicy as _fleet_v1_VmNetworkPolicy, VmNetworkPolicy__Output as _fleet_v1_VmNetworkPolicy__Output } from './fleet/v1/VmNetworkPolicy';
import type { VmNetworkReport as _fleet_v1_VmNetworkReport, VmNetworkReport__Output as _fleet_v1_VmNetworkReport__Output } from './fleet/v1/VmNetworkReport';
import type { VmSpec as _fleet_v1_VmSpec, VmSpec__Output as _fleet_v1_VmSpec__Output } from './fleet/v1/VmSpec';
import type { VmStatus as _fleet_v1_VmStatus, VmStatus__Output as _fleet_v1_VmStatus__Output } from './fleet/v1/VmStatus';
import type { VmStatusReport as _fleet_v1_VmStatusReport, VmStatusReport__Output as _fleet_v1_VmStatusReport__Output } from './fleet/v1/VmStatusReport';
import type { Welcome as _fleet_v1_Welcome, Welcome__Output as _fleet_v1_Welcome__Output } from './fleet/v1/Welcome';
import type { WorkerEvent as _fleet_v1_WorkerEvent, WorkerEvent__Output as _fleet_v1_WorkerEvent__Output } from './fleet/v1/WorkerEvent';
import type { WorkerMessage as _fleet_v1_WorkerMessage, WorkerMessage__Output as _fleet_v1_WorkerMessage__Output } from './fleet/v1/WorkerMessage';
import type { WorkerNetwork as _fleet_v1_WorkerNetwork, WorkerNetwork__Output as _fleet_v1_WorkerNetwork__Output } from './fleet/v1/WorkerNetwork';
import type { WorkerServiceClient as _fleet_v1_WorkerServiceClient, WorkerServiceDefinition as _fleet_v1_WorkerServiceDefinition } from './fleet/v1/WorkerService';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  fleet: {
    v1: {
      CachedImage: MessageTypeDefinition<_fleet_v1_CachedImage, _fleet_v1_CachedImage__Output>
      Capacity: MessageTypeDefinition<_fleet_v1_Capacity, _fleet_v1_Capacity__Output>
      CapacityUpdate: MessageTypeDefinition<_fleet_v1_CapacityUpdate, _fleet_v1_CapacityUpdate__Output>
      ControllerMessage: MessageTypeDefinition<_fleet_v1_ControllerMessage, _fleet_v1_ControllerMessage__Output>
      DesiredState: MessageTypeDefinition<_fleet_v1_DesiredState, _fleet_v1_DesiredState__Output>
      EnrollRequest: MessageTypeDefinition<_fleet_v1_EnrollRequest, _fleet_v1_EnrollRequest__Output>
      EnrollResponse: MessageTypeDefinition<_fleet_v1_EnrollResponse, _fleet_v1_EnrollResponse__Output>
      Heartbeat: MessageTypeDefinition<_fleet_v1_Heartbeat, _fleet_v1_Heartbeat__Output>
      Hello: MessageTypeDefinition<_fleet_v1_Hello, _fleet_v1_Hello__Output>
      ImageDelete: MessageTypeDefinition<_fleet_v1_ImageDelete, _fleet_v1_ImageDelete__Output>
      ImageInventory: MessageTypeDefinition<_fleet_v1_ImageInventory, _fleet_v1_ImageInventory__Output>
      ImageOperation: MessageTypeDefinition<_fleet_v1_ImageOperation, _fleet_v1_ImageOperation__Output>
      ImageOperationStatus: MessageTypeDefinition<_fleet_v1_ImageOperationStatus, _fleet_v1_ImageOperationStatus__Output>
      ImagePrefetch: MessageTypeDefinition<_fleet_v1_ImagePrefetch, _fleet_v1_ImagePrefetch__Output>
      ImagePull: MessageTypeDefinition<_fleet_v1_ImagePull, _fleet_v1_ImagePull__Output>
      ImagePush: MessageTypeDefinition<_fleet_v1_ImagePush, _fleet_v1_ImagePush__Output>
      LeaseRenewal: MessageTypeDefinition<_fleet_v1_LeaseRenewal, _fleet_v1_LeaseRenewal__Output>
      Ping: MessageTypeDefinition<_fleet_v1_Ping, _fleet_v1_Ping__Output>
      Platform: MessageTypeDefinition<_fleet_v1_Platform, _fleet_v1_Platform__Output>
      Pong: MessageTypeDefinition<_fleet_v1_Pong, _fleet_v1_Pong__Output>
      PowerState: EnumTypeDefinition
      RegistryAccess: MessageTypeDefinition<_fleet_v1_RegistryAccess, _fleet_v1_RegistryAccess__Output>
      RenewCertificateRequest: MessageTypeDefinition<_fleet_v1_RenewCertificateRequest, _fleet_v1_RenewCertificateRequest__Output>
      RenewCertificateResponse: MessageTypeDefinition<_fleet_v1_RenewCertificateResponse, _fleet_v1_RenewCertificateResponse__Output>
      Resize: MessageTypeDefinition<_fleet_v1_Resize, _fleet_v1_Resize__Output>
      SessionCancel: MessageTypeDefinition<_fleet_v1_SessionCancel, _fleet_v1_SessionCancel__Output>
      SessionError: MessageTypeDefinition<_fleet_v1_SessionError, _fleet_v1_SessionError__Output>
      SessionExit: MessageTypeDefinition<_fleet_v1_SessionExit, _fleet_v1_SessionExit__Output>
      SessionFrame: MessageTypeDefinition<_fleet_v1_SessionFrame, _fleet_v1_SessionFrame__Output>
      SessionKind: EnumTypeDefinition
      SessionOpen: MessageTypeDefinition<_fleet_v1_SessionOpen, _fleet_v1_SessionOpen__Output>
      SessionProgress: MessageTypeDefinition<_fleet_v1_SessionProgress, _fleet_v1_SessionProgress__Output>
      TransferProgress: MessageTypeDefinition<_fleet_v1_TransferProgress, _fleet_v1_TransferProgress__Output>
      VmAssignment: MessageTypeDefinition<_fleet_v1_VmAssignment, _fleet_v1_VmAssignment__Output>
      VmNetworkCounters: MessageTypeDefinition<_fleet_v1_VmNetworkCounters, _fleet_v1_VmNetworkCounters__Output>
      VmNetworkPolicy: MessageTypeDefinition<_fleet_v1_VmNetworkPolicy, _fleet_v1_VmNetworkPolicy__Output>
      VmNetworkReport: MessageTypeDefinition<_fleet_v1_VmNetworkReport, _fleet_v1_VmNetworkReport__Output>
      VmPhase: EnumTypeDefinition
      VmSpec: MessageTypeDefinition<_fleet_v1_VmSpec, _fleet_v1_VmSpec__Output>
      VmStatus: MessageTypeDefinition<_fleet_v1_VmStatus, _fleet_v1_VmStatus__Output>
      VmStatusReport: MessageTypeDefinition<_fleet_v1_VmStatusReport, _fleet_v1_VmStatusReport__Output>
      Welcome: MessageTypeDefinition<_fleet_v1_Welcome, _fleet_v1_Welcome__Output>
      WorkerEvent: MessageTypeDefinition<_fleet_v1_WorkerEvent, _fleet_v1_WorkerEvent__Output>
      WorkerMessage: MessageTypeDefinition<_fleet_v1_WorkerMessage, _fleet_v1_WorkerMessage__Output>
      WorkerNetwork: MessageTypeDefinition<_fleet_v1_WorkerNetwork, _fleet_v1_WorkerNetwork__Output>
      WorkerService: SubtypeConstructor<typeof grpc.Client, _fleet_v1_WorkerServiceClient> & { service: _fleet_v1_WorkerServiceDefinition }
    }
  }
}

