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
} from '@fleet/controller/api-schemas';
import type { ControllerObject } from '@fleet/controller/api-schemas';

/**
 * `GET /v1/health`'s `controller` field: which controller answered and who it takes for the leader.
 * The controller declares the health schema beside its route (meta-routes.ts), not in api-schemas,
 * so the fields it shares with ControllerObject are taken from there and only `leader` is spelled out.
 */
export type ServingController = Pick<ControllerObject, 'id' | 'name' | 'role'> & { leader: string | null };

/** `GET /v1/health` (no auth; 503 while the database cannot take writes). Only the fields the dashboard reads. */
export interface Health {
  status: 'ok' | 'degraded';
  /** Absent from controllers older than issue 13. */
  controller?: ServingController;
}

export type Role = 'read' | 'write' | 'connect' | 'admin';
export const ROLES: readonly Role[] = ['read', 'write', 'connect', 'admin'];

/** Same rule as the controller's auth/roles.ts: admin implies all, write implies read. */
export function hasRole(granted: readonly Role[], required: Role): boolean {
  if (granted.includes('admin')) return true;
  if (required === 'read') return granted.includes('read') || granted.includes('write');
  return granted.includes(required);
}
