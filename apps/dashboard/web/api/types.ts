// The API's own TypeBox types, shared with the controller (no copies that drift).
export type {
  VmObject,
  VmCreate,
  WorkerObject,
  EventObject,
  EventPage,
  TokenObject,
  TokenCreated,
  BootstrapTokenCreated,
  AccountObject,
  LoginResponse,
  FleetOverview,
  StatsSeries,
  StatsSample,
  WhoAmI,
  ControllerInfo,
  ControllerObject,
  TransferProgressObject,
  WorkerImageObject,
  WorkerImageList,
  ImageOperationObject,
  ImageSummaryObject,
  ImageSummaryList,
} from '@fleet/api';
import type { ControllerObject } from '@fleet/api';

/** `GET /v1/health` and its `controller` field (absent from controllers older than issue 13). */
export type { Health, ServingController } from '@fleet/api';

export type Role = 'read' | 'write' | 'connect' | 'admin';
export const ROLES: readonly Role[] = ['read', 'write', 'connect', 'admin'];

/** Same rule as the controller's auth/roles.ts: admin implies all, write implies read. */
export function hasRole(granted: readonly Role[], required: Role): boolean {
  if (granted.includes('admin')) return true;
  if (required === 'read') return granted.includes('read') || granted.includes('write');
  return granted.includes(required);
}
