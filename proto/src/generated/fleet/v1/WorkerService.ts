// Original file: fleet/v1/worker.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { ControllerMessage as _fleet_v1_ControllerMessage, ControllerMessage__Output as _fleet_v1_ControllerMessage__Output } from '../../fleet/v1/ControllerMessage';
import type { EnrollRequest as _fleet_v1_EnrollRequest, EnrollRequest__Output as _fleet_v1_EnrollRequest__Output } from '../../fleet/v1/EnrollRequest';
import type { EnrollResponse as _fleet_v1_EnrollResponse, EnrollResponse__Output as _fleet_v1_EnrollResponse__Output } from '../../fleet/v1/EnrollResponse';
import type { RenewCertificateRequest as _fleet_v1_RenewCertificateRequest, RenewCertificateRequest__Output as _fleet_v1_RenewCertificateRequest__Output } from '../../fleet/v1/RenewCertificateRequest';
import type { RenewCertificateResponse as _fleet_v1_RenewCertificateResponse, RenewCertificateResponse__Output as _fleet_v1_RenewCertificateResponse__Output } from '../../fleet/v1/RenewCertificateResponse';
import type { SessionFrame as _fleet_v1_SessionFrame, SessionFrame__Output as _fleet_v1_SessionFrame__Output } from '../../fleet/v1/SessionFrame';
import type { WorkerMessage as _fleet_v1_WorkerMessage, WorkerMessage__Output as _fleet_v1_WorkerMessage__Output } from '../../fleet/v1/WorkerMessage';

export interface WorkerServiceClient extends grpc.Client {
  Connect(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_fleet_v1_WorkerMessage, _fleet_v1_ControllerMessage__Output>;
  Connect(options?: grpc.CallOptions): grpc.ClientDuplexStream<_fleet_v1_WorkerMessage, _fleet_v1_ControllerMessage__Output>;
  connect(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_fleet_v1_WorkerMessage, _fleet_v1_ControllerMessage__Output>;
  connect(options?: grpc.CallOptions): grpc.ClientDuplexStream<_fleet_v1_WorkerMessage, _fleet_v1_ControllerMessage__Output>;
  
  Enroll(argument: _fleet_v1_EnrollRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_fleet_v1_EnrollResponse__Output>): grpc.ClientUnaryCall;
  Enroll(argument: _fleet_v1_EnrollRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_fleet_v1_EnrollResponse__Output>): grpc.ClientUnaryCall;
  Enroll(argument: _fleet_v1_EnrollRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_fleet_v1_EnrollResponse__Output>): grpc.ClientUnaryCall;
  Enroll(argument: _fleet_v1_EnrollRequest, callback: grpc.requestCallback<_fleet_v1_EnrollResponse__Output>): grpc.ClientUnaryCall;
  enroll(argument: _fleet_v1_EnrollRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_fleet_v1_EnrollResponse__Output>): grpc.ClientUnaryCall;
  enroll(argument: _fleet_v1_EnrollRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_fleet_v1_EnrollResponse__Output>): grpc.ClientUnaryCall;
  enroll(argument: _fleet_v1_EnrollRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_fleet_v1_EnrollResponse__Output>): grpc.ClientUnaryCall;
  enroll(argument: _fleet_v1_EnrollRequest, callback: grpc.requestCallback<_fleet_v1_EnrollResponse__Output>): grpc.ClientUnaryCall;
  
  RenewCertificate(argument: _fleet_v1_RenewCertificateRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_fleet_v1_RenewCertificateResponse__Output>): grpc.ClientUnaryCall;
  RenewCertificate(argument: _fleet_v1_RenewCertificateRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_fleet_v1_RenewCertificateResponse__Output>): grpc.ClientUnaryCall;
  RenewCertificate(argument: _fleet_v1_RenewCertificateRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_fleet_v1_RenewCertificateResponse__Output>): grpc.ClientUnaryCall;
  RenewCertificate(argument: _fleet_v1_RenewCertificateRequest, callback: grpc.requestCallback<_fleet_v1_RenewCertificateResponse__Output>): grpc.ClientUnaryCall;
  renewCertificate(argument: _fleet_v1_RenewCertificateRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_fleet_v1_RenewCertificateResponse__Output>): grpc.ClientUnaryCall;
  renewCertificate(argument: _fleet_v1_RenewCertificateRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_fleet_v1_RenewCertificateResponse__Output>): grpc.ClientUnaryCall;
  renewCertificate(argument: _fleet_v1_RenewCertificateRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_fleet_v1_RenewCertificateResponse__Output>): grpc.ClientUnaryCall;
  renewCertificate(argument: _fleet_v1_RenewCertificateRequest, callback: grpc.requestCallback<_fleet_v1_RenewCertificateResponse__Output>): grpc.ClientUnaryCall;
  
  Session(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_fleet_v1_SessionFrame, _fleet_v1_SessionFrame__Output>;
  Session(options?: grpc.CallOptions): grpc.ClientDuplexStream<_fleet_v1_SessionFrame, _fleet_v1_SessionFrame__Output>;
  session(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_fleet_v1_SessionFrame, _fleet_v1_SessionFrame__Output>;
  session(options?: grpc.CallOptions): grpc.ClientDuplexStream<_fleet_v1_SessionFrame, _fleet_v1_SessionFrame__Output>;
  
}

export interface WorkerServiceHandlers extends grpc.UntypedServiceImplementation {
  Connect: grpc.handleBidiStreamingCall<_fleet_v1_WorkerMessage__Output, _fleet_v1_ControllerMessage>;
  
  Enroll: grpc.handleUnaryCall<_fleet_v1_EnrollRequest__Output, _fleet_v1_EnrollResponse>;
  
  RenewCertificate: grpc.handleUnaryCall<_fleet_v1_RenewCertificateRequest__Output, _fleet_v1_RenewCertificateResponse>;
  
  Session: grpc.handleBidiStreamingCall<_fleet_v1_SessionFrame__Output, _fleet_v1_SessionFrame>;
  
}

export interface WorkerServiceDefinition extends grpc.ServiceDefinition {
  Connect: MethodDefinition<_fleet_v1_WorkerMessage, _fleet_v1_ControllerMessage, _fleet_v1_WorkerMessage__Output, _fleet_v1_ControllerMessage__Output>
  Enroll: MethodDefinition<_fleet_v1_EnrollRequest, _fleet_v1_EnrollResponse, _fleet_v1_EnrollRequest__Output, _fleet_v1_EnrollResponse__Output>
  RenewCertificate: MethodDefinition<_fleet_v1_RenewCertificateRequest, _fleet_v1_RenewCertificateResponse, _fleet_v1_RenewCertificateRequest__Output, _fleet_v1_RenewCertificateResponse__Output>
  Session: MethodDefinition<_fleet_v1_SessionFrame, _fleet_v1_SessionFrame, _fleet_v1_SessionFrame__Output, _fleet_v1_SessionFrame__Output>
}
