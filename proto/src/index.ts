// The single source of the controller <-> worker contract: loads fleet/v1/worker.proto
// at runtime with @grpc/proto-loader and re-exports the generated TypeScript types
// (src/generated, produced by `pnpm --filter @fleet/proto generate`).
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from './generated/worker.ts';

export type * from './generated/fleet/v1/CachedImage.ts';
export type * from './generated/fleet/v1/Capacity.ts';
export type * from './generated/fleet/v1/CapacityUpdate.ts';
export type * from './generated/fleet/v1/ControllerMessage.ts';
export type * from './generated/fleet/v1/DesiredState.ts';
export type * from './generated/fleet/v1/EnrollRequest.ts';
export type * from './generated/fleet/v1/EnrollResponse.ts';
export type * from './generated/fleet/v1/Heartbeat.ts';
export type * from './generated/fleet/v1/Hello.ts';
export type * from './generated/fleet/v1/ImageDelete.ts';
export type * from './generated/fleet/v1/ImageInventory.ts';
export type * from './generated/fleet/v1/ImageOperation.ts';
export type * from './generated/fleet/v1/ImageOperationStatus.ts';
export type * from './generated/fleet/v1/ImagePrefetch.ts';
export type * from './generated/fleet/v1/ImagePull.ts';
export type * from './generated/fleet/v1/ImagePush.ts';
export type * from './generated/fleet/v1/Ping.ts';
export type * from './generated/fleet/v1/Platform.ts';
export type * from './generated/fleet/v1/Pong.ts';
export type * from './generated/fleet/v1/RegistryAccess.ts';
export type * from './generated/fleet/v1/RenewCertificateRequest.ts';
export type * from './generated/fleet/v1/RenewCertificateResponse.ts';
export type * from './generated/fleet/v1/Resize.ts';
export type * from './generated/fleet/v1/SessionCancel.ts';
export type * from './generated/fleet/v1/SessionError.ts';
export type * from './generated/fleet/v1/SessionExit.ts';
export type * from './generated/fleet/v1/SessionFrame.ts';
export type * from './generated/fleet/v1/SessionOpen.ts';
export type * from './generated/fleet/v1/SessionProgress.ts';
export type * from './generated/fleet/v1/TransferProgress.ts';
export type * from './generated/fleet/v1/VmAssignment.ts';
export type * from './generated/fleet/v1/VmNetworkCounters.ts';
export type * from './generated/fleet/v1/VmNetworkPolicy.ts';
export type * from './generated/fleet/v1/WorkerNetwork.ts';
export type * from './generated/fleet/v1/VmNetworkReport.ts';
export type * from './generated/fleet/v1/VmSpec.ts';
export type * from './generated/fleet/v1/VmStatus.ts';
export type * from './generated/fleet/v1/VmStatusReport.ts';
export type * from './generated/fleet/v1/Welcome.ts';
export type * from './generated/fleet/v1/WorkerEvent.ts';
export type * from './generated/fleet/v1/WorkerMessage.ts';
export type * from './generated/fleet/v1/WorkerService.ts';
export { VmPhase } from './generated/fleet/v1/VmPhase.ts';
export { PowerState } from './generated/fleet/v1/PowerState.ts';
export { SessionKind } from './generated/fleet/v1/SessionKind.ts';

/** Revision of worker.proto this build speaks. Bump when semantics change. */
export const PROTOCOL_VERSION = 1;
/** Oldest worker protocol revision the controller still serves. */
export const MIN_SUPPORTED_PROTOCOL_VERSION = 1;

/** Metadata key carrying the session id on WorkerService.Session calls. */
export const SESSION_ID_METADATA_KEY = 'fleet-session-id';

export const PROTO_ROOT = fileURLToPath(new URL('..', import.meta.url));
export const PROTO_FILE = 'fleet/v1/worker.proto';

/** Options shared by the loader and the type generator (see package.json "generate"). */
const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

let cached: ProtoGrpcType | undefined;

/** The loaded `fleet.v1` package: `.WorkerService` is both the client constructor and `.service`. */
export function loadFleetProto(): ProtoGrpcType['fleet']['v1'] {
  if (!cached) {
    const definition = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);
    cached = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  }
  return cached.fleet.v1;
}
