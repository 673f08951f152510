import type { ControllerView } from '../cluster/controller-registry.ts';
import type { RelayTarget } from '../sessions/session-relay.ts';
import type { StorageHealth } from '../storage/storage-health.ts';
import type { VmService } from '../vms/vm-service.ts';
import type { WorkerService } from '../workers/worker-service.ts';
import type { TokenService } from '../auth/token-service.ts';
import type { EventLog } from '../events/event-log.ts';
import type { FleetBus } from '../fleet-bus.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { SettingsService } from '../settings.ts';
import type { ControllerInfo } from './schemas.ts';
import type { SessionBroker } from '../sessions/session-broker.ts';
import type { IdempotencyService } from '../idempotency/idempotency-service.ts';

/** What route handlers may use. */
import type { NetworkCounterStore } from '../vms/network-counters.ts';

import type { AccountService } from '../accounts/account-service.ts';
import type { RegistryService } from '../images/registry-service.ts';
import type { WorkerImageService } from '../images/worker-image-service.ts';
import type { ImageOperationService } from '../images/image-operation-service.ts';
import type { FleetOverview, WorkerObject } from './schemas.ts';

/** Registries, workers' image caches and image operations (issue 15). */
export interface ImagesApi {
  registries: RegistryService;
  inventory: WorkerImageService;
  operations: ImageOperationService;
}

/** What routes may use: services only — routes never query the database (the layering rule). */
/** What the API shows of the controllers (several on PostgreSQL, issue 13). */
export interface ClusterView {
  id: string;
  name: string;
  isLeader(): boolean;
  /** The leader's name as last seen, or null. */
  leaderName(): string | null;
  controllers(): ControllerView[];
  /** Where a session for this worker must be relayed: null when its stream is here (or nowhere known). */
  sessionTarget?(workerId: string | null): Promise<RelayTarget | null>;
  /** The fleet CA (PEM) and the name on every controller certificate, for relaying to another controller. */
  relayTrust?: { caPem: string; serverName: string };
}

export interface ApiContext {
  vms: VmService;
  workers: WorkerService;
  tokens: TokenService;
  events: EventLog;
  bus: FleetBus;
  metrics: Metrics;
  settings: SettingsService;
  info: () => Promise<ControllerInfo>;
  /** The address printed in enroll commands (host:port of the gRPC listener as workers should dial it). */
  grpcAdvertiseAddress: string;
  /** Remote-access sessions (exec / ssh / port-forward); absent = the session endpoint is not served. */
  sessions?: SessionBroker;
  /** Packet-filter counters of running VMs (in memory; shown in VM views). */
  networkCounters?: NetworkCounterStore;
  /** Whether the database takes writes (GET /v1/health; 503 storage_unavailable answers feed it). */
  storage?: StorageHealth;
  /** Serve /metrics without a token (default: a token with the read role is needed). */
  metricsPublic?: boolean;
  /** `Idempotency-Key` on the routes that opt in (config.idempotency); absent = the header is ignored. */
  idempotency?: IdempotencyService;
  /** Accounts (dashboard logins). */
  accounts: AccountService;
  /** This controller among the fleet's controllers (GET /v1/health, /v1/controllers). */
  cluster?: ClusterView;
  /** Registries and images (issue 15); absent = those routes are not served. */
  images?: ImagesApi;
  /** The fleet at a glance; `workers` when the caller has just listed them. */
  overview: (workers?: WorkerObject[]) => Promise<FleetOverview>;
}
