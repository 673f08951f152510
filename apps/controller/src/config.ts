import path from 'node:path';
import type { SchedulerProfile } from './scheduler/placement.ts';
import type { KeyProvider } from './secrets/key-provider.ts';

export interface ControllerOptions {
  /** Where the database, CA, certificates and the first admin token live. */
  dataDir: string;
  /** Database URL; default `file:<dataDir>/fleet.db` (SQLite). */
  databaseUrl?: string;
  /** SQLite `synchronous` (default FULL: acknowledged writes survive a power loss). No CLI flag: benchmarks only. */
  sqliteSynchronous?: 'FULL' | 'NORMAL';
  /** REST API + dashboard listener. */
  apiHost: string;
  apiPort: number;
  /** gRPC (TLS) listener for workers. */
  grpcHost: string;
  grpcPort: number;
  /** Extra DNS names / IPs for the gRPC server certificate. */
  certificateNames: string[];
  /** Operator-provided server certificate + key + CA (PEM paths); generated when absent. */
  tlsCertFile?: string;
  tlsKeyFile?: string;
  tlsCaFile?: string;
  /** Heartbeat cadence the controller asks workers for. */
  heartbeatIntervalMs: number;
  /**
   * lostAfter: a worker with no heartbeat for this long is offline; its "reschedule" VMs fail and
   * are re-placed per their restart policy, its "wait" VMs stay `unknown`.
   */
  workerOfflineTimeoutMs: number;
  /** fenceAfter: how long a worker keeps "reschedule" VMs running without the controller (default: derived, failure-timing.ts). */
  workerFenceAfterMs?: number;
  /** Safety-net scheduler pass period (passes also run on every change). */
  schedulerIntervalMs: number;
  defaultSchedulerProfile: SchedulerProfile;
  /**
   * TLS on the REST API, the WebSockets and the dashboard: `auto` (default) = on unless the
   * API listens on a loopback address. The certificate is issued by the controller's CA.
   */
  apiTls?: 'auto' | 'on' | 'off';
  /** Extra names/IPs clients use to reach the REST API (added to the controller's certificate). */
  apiHostnames?: string[];
  /** Operator-provided certificate (PEM chain) and key for the REST API, instead of one from our CA. */
  apiCertFile?: string;
  apiKeyFile?: string;
  /** Serve /metrics without authentication (default: needs a token with the read role). */
  metricsPublic?: boolean;
  /** Token to create for the first admin instead of a random one (automation). */
  bootstrapAdminToken?: string;
  /** This controller's name among several (default: the host name). */
  controllerName?: string;
  /** Leader lease length (PostgreSQL, several controllers): failover after a cut-off leader takes about this long. Default 3 s. */
  leaderLeaseMs?: number;
  /** Issue 15: which registries VM images may name ("any", or "known": only those added with `fleet registry login`). */
  registries?: 'any' | 'known';
  /** How the other controllers reach this one's REST API (sessions are relayed to the controller holding the worker's stream). Default: the API's own URL. */
  advertiseApiUrl?: string;
  /** --secrets-key-file: the key-encryption key in a file outside the data dir (default `<data-dir>/secrets.key`). */
  secretsKeyFile?: string;
  /** --secrets-key-command: a command printing the key(s) (KMS-style hook; secrets/key-provider.ts). */
  secretsKeyCommand?: string;
  /** A keyring given directly (embedding, tests); wins over the options above and FLEET_SECRETS_KEY. */
  secretsKeys?: KeyProvider;
  logLevel: string;
}

export function defaultOptions(overrides: Partial<ControllerOptions> = {}): ControllerOptions {
  const dataDir = overrides.dataDir ?? path.join(process.env.HOME ?? '.', '.fleet-controller');
  return {
    dataDir,
    apiHost: '127.0.0.1',
    apiPort: 8080,
    grpcHost: '0.0.0.0',
    grpcPort: 7443,
    certificateNames: [],
    heartbeatIntervalMs: 5_000,
    workerOfflineTimeoutMs: 30_000,
    schedulerIntervalMs: 2_000,
    defaultSchedulerProfile: 'pack',
    logLevel: process.env.FLEET_LOG_LEVEL ?? 'info',
    ...overrides,
  };
}

export function databaseUrlFor(options: ControllerOptions): string {
  return options.databaseUrl ?? `file:${path.join(options.dataDir, 'fleet.db')}`;
}
