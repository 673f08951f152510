// Composition root: opens the database (migrating it), loads or creates the
// controller's TLS identity, wires services, and starts the REST API, the
// worker gRPC server, the scheduler and liveness loops.
import { failureTimings } from './workers/failure-timing.ts';
import { AccountService } from './accounts/account-service.ts';
import { computeOverview } from './stats/overview.ts';
import { mkdir, writeFile, chmod } from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { acquireControllerLock, migrateDatabase, openDatabase, providerOf, sqlitePath, startLeaderLease, withMigrationLock, type FleetDb } from '@fleet/db';
import { checkDataDirModes, createPrivateFile } from './secrets/file-modes.ts';
import { loadKeyProvider, type KeyProvider } from './secrets/key-provider.ts';
import { SecretBox } from './secrets/secret-box.ts';
import { VmSecrets } from './secrets/vm-secrets.ts';
import { RegistrySecrets, mergeKekCounts } from './secrets/registry-secrets.ts';
import { RegistryService } from './images/registry-service.ts';
import { createImageResolver } from './images/image-resolver.ts';
import { imagePullsFor } from './images/image-pulls.ts';
import { WorkerImageService } from './images/worker-image-service.ts';
import { ImageOperationService } from './images/image-operation-service.ts';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Leadership } from './cluster/leadership.ts';
import { ControllerRegistry } from './cluster/controller-registry.ts';
import { ClusterBus } from './cluster/cluster-bus.ts';
import { PROTOCOL_VERSION } from '@fleet/proto';
import type { Logger } from 'pino';
import { databaseUrlFor, defaultOptions, type ControllerOptions } from './config.ts';
import { loadOrCreateIdentity, SERVER_NAME, type ControllerIdentity } from './identity/controller-identity.ts';
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
  /** Seals and opens the VM secrets in the database (tests read them through it). */
  secrets: VmSecrets;
  vms: VmService;
  workers: WorkerService;
  tokens: TokenService;
  scheduler: SchedulerLoop;
  metrics: Metrics;
  stop(): Promise<void>;
}

export async function startController(partial: Partial<ControllerOptions> = {}, rootLog: Logger = createLogger(partial.logLevel)): Promise<ControllerHandle> {
  let log = rootLog;
  const opts = defaultOptions(partial);
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const url = databaseUrlFor(opts);
  const multi = providerOf(url) !== 'sqlite';
  // The key-encryption key first: without it no secret can be sealed or opened, so a missing or
  // too-open key stops the start before anything else happens.
  const keys: KeyProvider =
    opts.secretsKeys ??
    (await loadKeyProvider({
      dataDir: opts.dataDir,
      ...(opts.secretsKeyFile ? { keyFile: opts.secretsKeyFile } : {}),
      ...(opts.secretsKeyCommand ? { keyCommand: opts.secretsKeyCommand } : {}),
      create: true,
    }));
  const secrets = new VmSecrets(new SecretBox(keys));
  // Registry passwords (issue 15): the same box, bound to their own rows.
  const registrySecrets = new RegistrySecrets(secrets.box);
  const sqliteFile = multi ? undefined : sqlitePath(url);
  // SQLite would create the file 0644 (umask); create it 0600 first (its -wal and -shm follow it).
  if (sqliteFile) {
    await mkdir(path.dirname(sqliteFile), { recursive: true, mode: 0o700 });
    await createPrivateFile(sqliteFile);
  }
  // SQLite: one controller per database, for the life of this process (a second one refuses here,
  // saying why). PostgreSQL: any number, one of them the leader (cluster/leadership.ts).
  const lock = await acquireControllerLock(url);
  // Migrations run in a short-lived child process (apps/controller/bin/migrate-database.cjs), under
  // the lock this process holds: Prisma's schema engine cannot be released once loaded, and the
  // controller runs for weeks (issue 20: ~12 MiB RSS). Its warnings reach this log; its
  // per-migration lines are debug, the summary below is the info line.
  const migrateLog = log.child({ component: 'migrate' });
  const migrateStarted = Date.now();
  let migratePid: number | undefined;
  const migrated = await withMigrationLock(url, () =>
    migrateDatabase(url, {
      logger: { info: (m) => migrateLog.debug(m), warn: (m) => migrateLog.warn(m), debug: (m) => migrateLog.debug(m) },
      inChildProcess: { entry: new URL('../bin/migrate-database.cjs', import.meta.url), onSpawn: (pid) => (migratePid = pid) },
    }),
  ).catch(async (err: unknown) => {
    await lock.release();
    throw err;
  });
  migrateLog.debug({ pid: migratePid, ms: Date.now() - migrateStarted }, 'migration process done');
  if (migrated.applied.length) log.info({ applied: migrated.applied }, 'database migrated');
  const db = openDatabase({ url, ...(opts.sqliteSynchronous ? { sqliteSynchronous: opts.sqliteSynchronous } : {}) });
  const controllerId = `ctl-${randomBytes(6).toString('hex')}`;
  const controllerName = opts.controllerName ?? hostname();
  log = log.child({ controller: controllerName });

  const identity = await loadOrCreateIdentity({
    dataDir: opts.dataDir,
    // The API's names go after --name: the first --name is what workers are told to dial.
    extraNames: [...new Set([...opts.certificateNames, ...apiCertificateNames(opts.apiHost, opts.apiHostnames ?? [])])],
    ...(opts.tlsCertFile ? { certFile: opts.tlsCertFile } : {}),
    ...(opts.tlsKeyFile ? { keyFile: opts.tlsKeyFile } : {}),
    ...(opts.tlsCaFile ? { caFile: opts.tlsCaFile } : {}),
  });
  const fatalModes: string[] = [];
  for (const f of await checkDataDirModes(opts.dataDir, sqliteFile ? { sqliteFile } : {})) {
    if (f.fatal) fatalModes.push(f.message);
    else log.warn({ file: f.file, mode: f.mode }, f.message);
  }
  const settings = new SettingsService(db, opts.defaultSchedulerProfile);
  const timings = failureTimings({ heartbeatIntervalMs: opts.heartbeatIntervalMs, lostAfterMs: opts.workerOfflineTimeoutMs, fenceAfterMs: opts.workerFenceAfterMs });
  await (async () => {
    if (fatalModes.length) throw new Error(fatalModes.join('\n'));
    await settings.checkFleetCa(identity.caFingerprint, opts.dataDir);
    // The key checks before anything is sealed: a wrong key must not seal legacy rows.
    await checkSecretsOpen(db, secrets, registrySecrets, keys, log);
    await settings.checkFleetSecretsKey(keys, opts.dataDir);
    await sealLegacySecrets(db, secrets, keys, sqliteFile !== undefined, log);
    // Other controllers running now: their rows were refreshed lately (every 2 s).
    const othersRunning = multi && (await db.controller.count({ where: { lastSeenAt: { gt: new Date(Date.now() - 10_000) } } })) > 0;
    await settings.checkFleetTimings(timings, othersRunning);
  })().catch(async (err: unknown) => {
    await db.$disconnect();
    await lock.release();
    throw err;
  });
  const metrics = new Metrics();
  const lease = await startLeaderLease({
    url,
    holderId: controllerId,
    holderName: controllerName,
    ...(opts.leaderLeaseMs ? { ttlMs: opts.leaderLeaseMs } : {}),
    onError: (err) => log.debug({ err }, 'leader lease statement failed'),
    recordSqliteHolder: async (h) => {
      const now = new Date();
      const row = { holderId: h.id, holderName: h.name, expiresAt: new Date(8.64e15), backendPid: 0, acquiredAt: now };
      await db.controllerLease.upsert({ where: { id: 'leader' }, create: { id: 'leader', token: 1, ...row }, update: { ...row, token: { increment: 1 } } });
    },
  });
  const leadership = new Leadership(lease, log.child({ component: 'leadership' }), metrics);
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
  // Images (issue 15): registries' credentials, tag → digest resolution, workers' caches, image operations.
  const registries = new RegistryService(db, registrySecrets, events, { policy: opts.registries ?? 'any' });
  const imageResolver = createImageResolver(registries);
  const workerImages = new WorkerImageService(db);
  const imageOperations = new ImageOperationService(db, events, bus, registries, imageResolver, workerImages);
  const vms = new VmService(db, events, bus, metrics, secrets);
  vms.resolveImage = (image) => imageResolver.resolveForVm(image);
  vms.pushInProgress = async (vmId) => (await imageOperations.pushInProgress(vmId))?.id ?? null;
  const networkCounters = new NetworkCounterStore();
  const streams = new WorkerStreams(db, log, {
    sink: storage,
    secrets,
    imagePulls: (list) => imagePullsFor(list, registries),
    imageOperations: (workerId) => imageOperations.pendingFor(workerId),
  });
  let registry: ControllerRegistry | undefined;
  const workers = new WorkerService(db, events, bus, vms, metrics, log, {
    timings,
    controllerId,
    disconnect: (id, reason) => streams.disconnect(id, grpc.status.UNAVAILABLE, reason),
    fence: leadership.fence,
    aliveControllers: () => registry?.aliveIds(),
    sink: storage,
    onLivenessError: (err) => leadership.observe(err),
  });
  const tokens = new TokenService(db, events, identity.caFingerprint);
  tokens.onStorageError = (err) => storage.observe(err);
  // First start: create the admin service account and print its token once. Controllers starting
  // together on one PostgreSQL database take turns here, so only the first creates it.
  const adminToken = await withMigrationLock(url, async () => {
    if (await tokens.hasAnyApiToken()) return null;
    const preset = opts.bootstrapAdminToken;
    const created = await tokens.createApiToken({ name: 'admin', roles: ['admin'], ...(preset ? { presetToken: preset } : {}) }, 'controller');
    const file = path.join(opts.dataDir, 'admin.token');
    await writeFile(file, created.token + '\n', { mode: 0o600 });
    await chmod(file, 0o600);
    return created.token;
  });

  bus.onDesiredStateChange((workerId) => streams.markDirty(workerId));
  const scheduler = new SchedulerLoop(db, events, bus, metrics, log.child({ component: 'scheduler' }), () => settings.schedulerProfile(), opts.schedulerIntervalMs, {
    sink: storage,
    fence: leadership.fence,
    deposed: (err) => leadership.observe(err),
    startNow: false,
  });
  // Background loops: a failure is logged, reported and retried with backoff; none of them ever stops.
  // A refused fence is not a storage fault: the leadership steps down instead.
  const leaderSink = { observe: (err: unknown) => void (leadership.observe(err) || storage.observe(err)) };
  const restarts = new PeriodicTask(() => vms.requeueRestarts(leadership.fence), { name: 'restart requeue', intervalMs: 1000, log, sink: leaderSink });
  const gauges = new PeriodicTask(() => refreshVmGauges(db, metrics), { name: 'vm gauges', intervalMs: 5000, log, sink: storage }).start();
  // The storage is back: retry what waits for it now rather than at the end of its backoff.
  storage.onRecovered(() => {
    streams.retryNow();
    scheduler.retryNow();
    restarts.runNow();
    writes.retryNow();
  });
  // Idempotency-Key records live 24 h; nothing else in the controller purges old rows, so it has its own timer.
  const idempotency = new IdempotencyService(db, { ownerId: controllerId, isOwnerAlive: (owner) => registry?.isAlive(owner) ?? false });
  // Only the leader runs the singleton loops; they start and stop with the leader lease.
  leadership.add(workers.liveness);
  leadership.add(scheduler);
  leadership.add({ name: 'restart requeue', start: () => void restarts.start(), stop: () => restarts.stop() });
  // Finished image operations are kept 7 days.
  const imageOperationRetention = new PeriodicTask(() => imageOperations.purgeFinished(), { name: 'image operation retention', intervalMs: 3600_000, log, sink: leaderSink });
  leadership.add({ name: 'image operation retention', start: () => void imageOperationRetention.start(), stop: () => imageOperationRetention.stop() });
  leadership.add({
    name: 'idempotency key retention',
    start: () =>
      idempotency.startPurging(10 * 60_000, (err) => {
        storage.observe(err);
        log.warn({ err }, 'purging expired idempotency keys failed');
      }),
    stop: () => idempotency.stop(),
  });

  const sessions = new SessionBroker({ db, streams, bus, events, secrets, log: log.child({ component: 'sessions' }), writes });
  const grpcServer = await startWorkerGrpcServer(
    {
      db,
      identity,
      tokens,
      workers,
      vms,
      events,
      streams,
      sessions,
      networkCounters,
      metrics,
      log: log.child({ component: 'grpc' }),
      heartbeatIntervalMs: opts.heartbeatIntervalMs,
      fenceAfterMs: timings.fenceAfterMs,
      storage,
      isLeader: leadership.isLeader,
      // Empty until the registry runs (a worker then keeps the addresses it has).
      controllerAddresses: async () => registry?.grpcAddresses() ?? [],
      images: { inventory: workerImages, operations: imageOperations },
    },
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
    images: { registries, inventory: workerImages, operations: imageOperations },
    cluster: {
      id: controllerId,
      name: controllerName,
      isLeader: leadership.isLeader,
      leaderName: () => lease.leader()?.name ?? null,
      controllers: () => registry?.list(leadership.isLeader() ? controllerId : lease.leader()?.id) ?? [],
      sessionTarget: async (workerId) => {
        if (!workerId || streams.get(workerId) || !registry) return null;
        const holder = await workers.streamHolder(workerId);
        if (!holder || holder === controllerId) return null;
        const c = registry.alive(holder);
        return c ? { apiUrl: c.apiUrl, name: c.name } : null;
      },
      relayTrust: { caPem: identity.serverCaPem, serverName: SERVER_NAME },
    },
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

  // Known to the other controllers (session routing, workers' address lists), then changes from
  // them (PostgreSQL only), then the singleton loops if this one leads.
  registry = new ControllerRegistry(db, { id: controllerId, name: controllerName, apiUrl: opts.advertiseApiUrl ?? apiUrl, grpcAddress, version: CONTROLLER_VERSION }, {
    isLeader: leadership.isLeader,
    connectedWorkers: () => streams.size,
    log: log.child({ component: 'registry' }),
    onError: (err) => storage.observe(err),
  });
  await registry.start();
  const reg = registry;
  let clusterBus: ClusterBus | undefined;
  if (multi) {
    clusterBus = new ClusterBus({
      url,
      controllerId,
      bus,
      log: log.child({ component: 'cluster-bus' }),
      metrics,
      heldHere: (workerId) => streams.get(workerId) !== undefined,
      isLeader: leadership.isLeader,
      othersAlive: () => reg.aliveIds().length > 1,
      resync: () => {
        streams.markAllDirty();
        bus.scheduleRequested();
      },
      loadVm: (id) => vms.findById(id),
    });
    await clusterBus.start();
    // Cut off from the database: this controller can renew no worker's lease, so its workers must
    // move to a controller that can (their links fail over at once). Not on SQLite: there is no
    // other controller, and the workers' leases are renewed from memory meanwhile.
    let cutOff: NodeJS.Timeout | undefined;
    storage.onRecovered(() => clearTimeout(cutOff));
    storage.onFailing(() => {
      clearTimeout(cutOff);
      cutOff = setTimeout(() => {
        if (storage.status().ok) return;
        log.warn({ streams: streams.size }, 'the database is unreachable: closing worker streams so they move to another controller');
        streams.closeAll('this controller cannot reach its database: connect to another controller');
      }, CUT_OFF_GRACE_MS);
      cutOff.unref();
    });
  }
  leadership.begin();
  log.info({ apiUrl, grpcAddress, caFingerprint: identity.caFingerprint, controllerId, leader: leadership.isLeader() }, 'controller started');

  let stopped = false;
  const handle: ControllerHandle = {
    apiUrl,
    grpcAddress,
    caFingerprint: identity.caFingerprint,
    adminToken,
    identity,
    db,
    secrets,
    vms,
    workers,
    tokens,
    scheduler,
    metrics,
    async stop() {
      if (stopped) return;
      stopped = true;
      await leadership.stop();
      await clusterBus?.stop();
      await reg.stop();
      gauges.stop();
      storage.stop();
      idempotency.stop();
      sessions.closeAll('the controller is shutting down');
      streams.closeAll('controller shutting down');
      grpcServer.server.forceShutdown();
      await api.close();
      writes.stop();
      // A scheduler pass still running would reopen the database right after $disconnect.
      await scheduler.settled();
      await db.$disconnect();
      await lock.release();
    },
  };
  return handle;
}

/**
 * Envelopes under a key this controller does not hold are reported (they cannot be opened here);
 * if it holds none of the keys in use, the start is refused.
 */
async function checkSecretsOpen(db: FleetDb, secrets: VmSecrets, registrySecrets: RegistrySecrets, keys: KeyProvider, log: Logger): Promise<void> {
  const byKek = mergeKekCounts(await secrets.envelopesByKek(db), await registrySecrets.envelopesByKek(db));
  const unknown = [...byKek].filter(([id]) => !keys.byId(id));
  if (byKek.size > 0 && unknown.length === byKek.size) {
    // Not one secret opens: the wrong key (typically a controller joining a shared PostgreSQL
    // database that created its own secrets.key). Running would seal new VMs' secrets under a key
    // the other controllers do not hold.
    throw new Error(
      `the secrets in this database are sealed under key${unknown.length > 1 ? 's' : ''} ${unknown.map(([id]) => id).join(', ')}, but this controller's key (${keys.describe}) is ${keys.current().id}: ` +
        `give it the fleet's key (copy secrets.key from another controller's data dir, mode 0600, or set the same FLEET_SECRETS_KEY / --secrets-key-command; docs/operations.md, "Secrets at rest")`,
    );
  }
  for (const [id, count] of unknown) {
    log.warn({ key: id, secrets: count, source: keys.describe }, `${count} secrets (VM keys and passwords, registry passwords) are sealed under key ${id}, which this controller does not hold: sessions to those VMs and pulls from those registries will fail until it gets that key (docs/operations.md, "Secrets at rest")`);
  }
}

/**
 * Plain text left by an older Fleet is sealed, then scrubbed from the file (SQLite keeps deleted
 * bytes in free pages and the WAL, PostgreSQL in dead tuples). No re-wrap at start: with several
 * controllers, only `rotate-key` decides which key is current.
 */
async function sealLegacySecrets(db: FleetDb, secrets: VmSecrets, keys: KeyProvider, sqlite: boolean, log: Logger): Promise<void> {
  const sealed = await secrets.sealLegacyRows(db);
  if (sealed === 0) return;
  if (sqlite) {
    await db.$executeRawUnsafe('VACUUM');
    await db.$queryRawUnsafe('PRAGMA wal_checkpoint(TRUNCATE)');
  } else {
    await db.$executeRawUnsafe('VACUUM FULL "VmAccess"');
  }
  log.info({ rows: sealed, key: keys.current().id }, 'sealed VM secrets stored in plain text by an earlier version (private keys, passwords)');
}

/** How long the database may be unreachable before worker streams are sent elsewhere. */
const CUT_OFF_GRACE_MS = 2_000;

async function refreshVmGauges(db: FleetDb, metrics: Metrics): Promise<void> {
  const rows = await db.vm.groupBy({ by: ['state'], _count: { _all: true } });
  metrics.vmsByState.reset();
  for (const r of rows) metrics.vmsByState.set({ state: r.state }, r._count._all);
}
