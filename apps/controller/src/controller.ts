// Composition root: opens the database (migrating it), loads or creates the
// controller's TLS identity, wires services, and starts the REST API, the
// worker gRPC server, the scheduler and liveness loops.
import { failureTimings } from './workers/failure-timing.ts';
import { AccountService } from './accounts/account-service.ts';
import { computeOverview } from './stats/overview.ts';
import { mkdir, writeFile, chmod } from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { acquireControllerLock, migrateDatabase, openDatabase, type FleetDb } from '@fleet/db';
import { PROTOCOL_VERSION } from '@fleet/proto';
import type { Logger } from 'pino';
import { databaseUrlFor, defaultOptions, type ControllerOptions } from './config.ts';
import { loadOrCreateIdentity, type ControllerIdentity } from './identity/controller-identity.ts';
import { EventLog } from './events/event-log.ts';
import { FleetBus } from './fleet-bus.ts';
import { Metrics } from './observability/metrics.ts';
import { createLogger } from './observability/logger.ts';
import { VmService } from './vms/vm-service.ts';
import { WorkerService } from './workers/worker-service.ts';
import { TokenService } from './auth/token-service.ts';
import { SettingsService } from './settings.ts';
import { SchedulerLoop } from './scheduler/scheduler-loop.ts';
import { WorkerStreams } from './grpc/worker-streams.ts';
import { startWorkerGrpcServer } from './grpc/worker-grpc-server.ts';
import { SessionBroker } from './sessions/session-broker.ts';
import { NetworkCounterStore } from './vms/network-counters.ts';
import { buildApiServer } from './api/api-server.ts';
import { StorageHealth, settingsRowProbe } from './storage/storage-health.ts';
import { BackgroundWrites } from './storage/background-writes.ts';
import { PeriodicTask } from './storage/backoff.ts';
import { IdempotencyService } from './idempotency/idempotency-service.ts';
import { apiCertificateNames, apiTlsEnabled, apiTlsMaterial, isLoopback } from './api/api-tls.ts';
import { CONTROLLER_VERSION } from './version.ts';
import type { ApiContext } from './api/context.ts';

export interface ControllerHandle {
  apiUrl: string;
  grpcAddress: string;
  caFingerprint: string;
  /** Set only on the first start of a fresh data dir (or when given by the operator). */
  adminToken: string | null;
  identity: ControllerIdentity;
  db: FleetDb;
  vms: VmService;
  workers: WorkerService;
  tokens: TokenService;
  scheduler: SchedulerLoop;
  metrics: Metrics;
  stop(): Promise<void>;
}

export async function startController(partial: Partial<ControllerOptions> = {}, log: Logger = createLogger(partial.logLevel)): Promise<ControllerHandle> {
  const opts = defaultOptions(partial);
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const url = databaseUrlFor(opts);
  // One controller per database, for the life of this process (a second one refuses here, saying why).
  let onLockLost: (reason: string) => void = () => undefined;
  const lock = await acquireControllerLock(url, { onLost: (reason) => onLockLost(reason) });
  const migrated = await migrateDatabase(url).catch(async (err: unknown) => {
    await lock.release();
    throw err;
  });
  if (migrated.applied.length) log.info({ applied: migrated.applied }, 'database migrated');
  const db = openDatabase({ url, ...(opts.sqliteSynchronous ? { sqliteSynchronous: opts.sqliteSynchronous } : {}) });

  const identity = await loadOrCreateIdentity({
    dataDir: opts.dataDir,
    // The API's names go after --name: the first --name is what workers are told to dial.
    extraNames: [...new Set([...opts.certificateNames, ...apiCertificateNames(opts.apiHost, opts.apiHostnames ?? [])])],
    ...(opts.tlsCertFile ? { certFile: opts.tlsCertFile } : {}),
    ...(opts.tlsKeyFile ? { keyFile: opts.tlsKeyFile } : {}),
    ...(opts.tlsCaFile ? { caFile: opts.tlsCaFile } : {}),
  });
  const metrics = new Metrics();
  // Whether the database takes writes: fed by every failure the API and the loops see, probed while failing.
  const storage = new StorageHealth({
    probe: settingsRowProbe(db),
    log: log.child({ component: 'storage' }),
    onChange: (ok) => metrics.storageAvailable.set(ok ? 1 : 0),
    onFault: (f) => metrics.storageErrors.inc({ kind: f.kind }),
  });
  metrics.storageAvailable.set(1);
  const writes = new BackgroundWrites({ log: log.child({ component: 'background-writes' }), sink: storage });
  const bus = new FleetBus();
  const events = new EventLog(db);
  const vms = new VmService(db, events, bus, metrics);
  const networkCounters = new NetworkCounterStore();
  const streams = new WorkerStreams(db, log, { sink: storage });
  vms.neverDelivered = (workerId, vmId, attempt) => streams.neverDelivered(workerId, vmId, attempt);
  const timings = failureTimings({ heartbeatIntervalMs: opts.heartbeatIntervalMs, lostAfterMs: opts.workerOfflineTimeoutMs, fenceAfterMs: opts.workerFenceAfterMs });
  const workers = new WorkerService(db, events, bus, vms, metrics, log, {
    timings,
    disconnect: (id, reason) => streams.disconnect(id, grpc.status.UNAVAILABLE, reason),
  });
  const tokens = new TokenService(db, events, identity.caFingerprint);
  tokens.onStorageError = (err) => storage.observe(err);
  const settings = new SettingsService(db, opts.defaultSchedulerProfile);

  // First start: create the admin service account and print its token once.
  let adminToken: string | null = null;
  if (!(await tokens.hasAnyApiToken())) {
    const preset = opts.bootstrapAdminToken;
    const created = await tokens.createApiToken({ name: 'admin', roles: ['admin'], ...(preset ? { presetToken: preset } : {}) }, 'controller');
    adminToken = created.token;
    const file = path.join(opts.dataDir, 'admin.token');
    await writeFile(file, adminToken + '\n', { mode: 0o600 });
    await chmod(file, 0o600);
  }

  await workers.start();
  bus.onDesiredStateChange((workerId) => streams.markDirty(workerId));
  const scheduler = new SchedulerLoop(db, events, bus, metrics, log.child({ component: 'scheduler' }), () => settings.schedulerProfile(), workers.isOnline, opts.schedulerIntervalMs, { sink: storage });
  // Background loops: a failure is logged, reported and retried with backoff; none of them ever stops.
  const restarts = new PeriodicTask(() => vms.requeueRestarts(), { name: 'restart requeue', intervalMs: 1000, log, sink: storage }).start();
  const gauges = new PeriodicTask(() => refreshVmGauges(db, metrics), { name: 'vm gauges', intervalMs: 5000, log, sink: storage }).start();
  // The storage is back: retry what waits for it now rather than at the end of its backoff.
  storage.onRecovered(() => {
    streams.retryNow();
    scheduler.retryNow();
    restarts.runNow();
    writes.retryNow();
  });
  // Idempotency-Key records live 24 h; nothing else in the controller purges old rows, so it has its own timer.
  const idempotency = new IdempotencyService(db);
  idempotency.startPurging(10 * 60_000, (err) => {
    storage.observe(err);
    log.warn({ err }, 'purging expired idempotency keys failed');
  });

  const sessions = new SessionBroker({ db, streams, bus, events, log: log.child({ component: 'sessions' }), writes });
  const grpcServer = await startWorkerGrpcServer(
    { db, identity, tokens, workers, vms, events, streams, sessions, networkCounters, metrics, log: log.child({ component: 'grpc' }), heartbeatIntervalMs: opts.heartbeatIntervalMs, fenceAfterMs: timings.fenceAfterMs, storage },
    opts.grpcHost,
    opts.grpcPort,
  );
  const advertiseHost = opts.grpcHost === '0.0.0.0' || opts.grpcHost === '::' ? (opts.certificateNames[0] ?? '127.0.0.1') : opts.grpcHost;
  const grpcAddress = `${advertiseHost}:${grpcServer.port}`;

  const ctx: ApiContext = {
    vms,
    workers,
    tokens,
    events,
    bus,
    metrics,
    settings,
    grpcAdvertiseAddress: grpcAddress,
    ...(opts.metricsPublic ? { metricsPublic: true } : {}),
    sessions,
    networkCounters,
    idempotency,
    storage,
    accounts: new AccountService(db, events, tokens),
    overview: (listed) => computeOverview({ db, listWorkers: async () => listed ?? (await workers.list()) }),
    info: async () => ({
      version: CONTROLLER_VERSION,
      protocolVersion: PROTOCOL_VERSION,
      grpcAddress,
      caFingerprint: identity.caFingerprint,
      schedulerProfile: await settings.schedulerProfile(),
    }),
  };
  const apiTls = apiTlsEnabled(opts.apiTls ?? 'auto', opts.apiHost);
  if (!apiTls && !isLoopback(opts.apiHost)) {
    log.warn({ apiHost: opts.apiHost }, 'THE REST API LISTENS ON A NON-LOOPBACK ADDRESS WITHOUT TLS (--api-tls off): tokens and exec sessions cross the network in clear text');
  }
  const api = await buildApiServer(ctx, log, apiTls ? await apiTlsMaterial(identity, opts.apiCertFile, opts.apiKeyFile) : undefined);
  await api.listen({ host: opts.apiHost, port: opts.apiPort });
  const address = api.server.address();
  const apiPort = typeof address === 'object' && address ? address.port : opts.apiPort;
  const apiUrl = `${apiTls ? 'https' : 'http'}://${opts.apiHost.includes(':') ? `[${opts.apiHost}]` : opts.apiHost}:${apiPort}`;
  scheduler.trigger();
  log.info({ apiUrl, grpcAddress, caFingerprint: identity.caFingerprint }, 'controller started');

  let stopped = false;
  const handle: ControllerHandle = {
    apiUrl,
    grpcAddress,
    caFingerprint: identity.caFingerprint,
    adminToken,
    identity,
    db,
    vms,
    workers,
    tokens,
    scheduler,
    metrics,
    async stop() {
      if (stopped) return;
      stopped = true;
      scheduler.stop();
      workers.stop();
      restarts.stop();
      gauges.stop();
      storage.stop();
      idempotency.stop();
      sessions.closeAll('the controller is shutting down');
      streams.closeAll('controller shutting down');
      grpcServer.server.forceShutdown();
      await api.close();
      writes.stop();
      await db.$disconnect();
      await lock.release();
    },
  };
  // PostgreSQL: another controller took the database while this one was cut off from it. This one
  // is no longer the only controller: it stops rather than act beside the other.
  onLockLost = (reason) => {
    log.fatal({ reason }, 'lost the single-controller database lock; stopping');
    void handle.stop().finally(() => opts.onFatal?.(reason));
  };
  return handle;
}

async function refreshVmGauges(db: FleetDb, metrics: Metrics): Promise<void> {
  const rows = await db.vm.groupBy({ by: ['state'], _count: { _all: true } });
  metrics.vmsByState.reset();
  for (const r of rows) metrics.vmsByState.set({ state: r.state }, r._count._all);
}
