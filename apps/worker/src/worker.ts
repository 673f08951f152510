// Composition root: credentials + driver + reconciler + controller link = one worker.
// Many workers can run in one process (tests, the benchmark): each holds one gRPC channel,
// a heartbeat interval while connected, and a slow safety-net reconcile timer — nothing else
// ticks while idle.
import { randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { PROTOCOL_VERSION, type Hello, type VmStatus } from '@fleet/proto';
import type { Logger } from 'pino';
import { mergeAnnouncedControllers, normalizeHostPort, parseControllerList, sanitizeControllerAddresses } from './config/address.ts';
import { defaultWorkerName, detectCapacity, detectHostname, detectPlatform, type CapacityConfig } from './config/capacity.ts';
import { CredentialStore, type WorkerIdentity } from './config/credentials.ts';
import { resolveMachineId } from './config/machine-id.ts';
import { dataDirLayout, resolveDataDir } from './config/paths.ts';
import type { Driver } from './drivers/driver.ts';
import { openDriver, type QemuRuntimeOptions } from './drivers/registry.ts';
import type { BackoffOptions } from './link/backoff.ts';
import { ControllerLink, type LinkExit } from './link/link.ts';
import { defaultLogger } from './logger.ts';
import { Reconciler } from './reconcile/reconciler.ts';
import { NetworkCounterSampler } from './telemetry/network-counters.ts';
import { VmSshPool } from './sessions/vm-ssh-pool.ts';
import { SessionRunner } from './sessions/session-runner.ts';
import { WORKER_VERSION } from './version.ts';
import { ImageCache } from './images/image-cache.ts';
import { ImageOperations } from './images/image-operations.ts';
import { CertificateRenewer, type CertificateRenewerOptions } from './enrollment/certificate-renewal.ts';
import { LeaseKeeper, type LeaseKeeperOptions } from './fencing/lease.ts';
import { leaseFilePath } from './fencing/lease-file.ts';

export interface StartWorkerOptions {
  /** Data dir holding the enrollment (default $FLEET_WORKER_DATA_DIR or ~/.fleet-worker). */
  dataDir?: string;
  /**
   * Controller address override, host:port; several as an array or comma-separated, dialed in
   * order (default: the list stored at enrollment). An override is never written to worker.json.
   */
  controller?: string | readonly string[];
  /**
   * Transport override (tests: grpc.credentials.createInsecure()). Without it the worker
   * uses the stored mTLS material. With it, the data dir is only read if `dataDir` is given,
   * and `controller` is required when there is no enrollment.
   */
  credentials?: grpc.ChannelCredentials;
  channelOptions?: grpc.ChannelOptions;
  /** Identity when running without an enrollment (only with `credentials`). */
  name?: string;
  machineId?: string;
  /** Hello.hostname (default os.hostname()). */
  hostname?: string;
  labels?: Record<string, string>;
  /** Overrides of detected capacity. */
  capacity?: Partial<CapacityConfig>;
  /** Driver name (default "synthetic") or a ready driver instance (not closed by stop()). */
  driver?: string | Driver;
  synthetic?: {
    /** Delay multiplier: 1 realistic (boot 1–3 s), 0.1 ten times faster, 0 instant. Default 1. */
    speed?: number;
    /** Persist instances in <data-dir>/synthetic/instances.json (default: true when a data dir is used). */
    persist?: boolean;
    /** Size of the fake VM address pool (default: 129,536; a small one exercises address exhaustion). */
    natAddresses?: number;
  };
  /** QEMU driver settings (NAT network, guest keys, images). */
  qemu?: QemuRuntimeOptions;
  /** The registry image cache (issue 15); used when the driver runs registry images. */
  imageCache?: {
    /** Default <data dir>/image-cache. */
    dir?: string;
    /** Bytes before least-recently-used unused images are evicted (default 0 = no limit). */
    limitBytes?: number;
  };
  /** Shared logger (a child with the worker name is derived). Default: one process-wide stderr logger. */
  logger?: Logger;
  /** Concurrent VM operations (default 8). */
  concurrency?: number;
  /** Safety-net reconcile period (default 10 s, ±10 % jitter). */
  resyncIntervalMs?: number;
  /** Status coalescing window (default 50 ms). */
  statusFlushMs?: number;
  backoff?: BackoffOptions;
  welcomeTimeoutMs?: number;
  /** Client-certificate renewal timing (tests); renewal runs only with stored credentials. */
  certificateRenewal?: Pick<CertificateRenewerOptions, 'now' | 'checkIntervalMs' | 'retryMs'>;
  /** Lease clocks and timers (tests). */
  lease?: Pick<LeaseKeeperOptions, 'now' | 'wallNow' | 'setTimer' | 'clearTimer'>;
}

/** The worker's lease from the controller, as tests and diagnostics see it. */
export interface WorkerLease {
  expired: boolean;
  /** False while unlimited (an older controller: no fencing). */
  fencing: boolean;
  validUntilUnixMs: number | null;
  fenceAfterMs: number;
  /** <data dir>/lease.json, if the worker has a data dir. */
  file: string | undefined;
}

export type WorkerExit = LinkExit;

export interface WorkerHandle {
  /** Worker name (from the enrollment, else `options.name`, else the host name). */
  readonly name: string;
  /** Worker id (from the enrollment, or Welcome once connected); undefined before either. */
  readonly workerId: string | undefined;
  readonly machineId: string;
  readonly dataDir: string | undefined;
  readonly driver: Driver;
  /** Resolves when the worker ends: `stopped` after stop(), `fatal` on a refusal by the controller. */
  readonly done: Promise<WorkerExit>;
  /** A Connect stream is open and welcomed. */
  connected(): boolean;
  /** Streams opened so far (1 + reconnects). */
  streamsOpened(): number;
  /** The controller addresses the link dials, in order (updated by each Welcome). */
  controllers(): readonly string[];
  /** The address the current (or last) stream dialed. */
  controllerAddress(): string;
  /** Current status of every instance held. */
  instances(): VmStatus[];
  /** Resolves when no reconcile step is running or queued. */
  idle(): Promise<void>;
  /** The lease from the controller (client-side fencing). */
  lease(): WorkerLease;
  /** Disconnects and detaches (VMs are left as they are). Idempotent. */
  stop(): Promise<void>;
}

export async function startWorker(options: StartWorkerOptions = {}): Promise<WorkerHandle> {
  const baseLogger = options.logger ?? defaultLogger();
  let dataDir: string | undefined;
  let addresses: string[];
  let credentials: grpc.ChannelCredentials;
  let name: string;
  let machineId: string;
  let workerId: string | undefined;
  let credentialStore: CredentialStore | undefined;
  /** Where a controller list announced in Welcome is saved: the stored enrollment, unless overridden. */
  let identityStore: CredentialStore | undefined;

  if (options.credentials) {
    dataDir = options.dataDir !== undefined ? resolveDataDir(options.dataDir) : undefined;
    const store = dataDir ? new CredentialStore(dataDir) : undefined;
    const stored = store ? await store.readIdentity() : undefined;
    const controller = options.controller ?? stored?.controllers;
    if (!controller) throw new Error('startWorker: `controller` is required when credentials are injected and the data dir holds no enrollment');
    addresses = typeof controller === 'string' || options.controller !== undefined ? parseControllerList(controller) : [...controller];
    if (stored && options.controller === undefined) identityStore = store;
    credentials = options.credentials;
    name = options.name ?? stored?.name ?? defaultWorkerName();
    machineId = options.machineId ?? stored?.machineId ?? (dataDir ? await resolveMachineId(dataDir) : randomUUID());
    workerId = stored?.workerId;
  } else {
    dataDir = resolveDataDir(options.dataDir);
    const store = new CredentialStore(dataDir);
    credentialStore = store;
    const stored = await store.load();
    for (const warning of await store.audit()) baseLogger.warn({ dataDir }, warning);
    addresses = options.controller !== undefined ? parseControllerList(options.controller) : stored.identity.controllers;
    if (options.controller === undefined) identityStore = store;
    credentials = grpc.credentials.createSsl(Buffer.from(stored.caPem), Buffer.from(stored.keyPem), Buffer.from(stored.certPem));
    name = stored.identity.name;
    machineId = options.machineId ?? stored.identity.machineId;
    workerId = stored.identity.workerId;
  }

  addresses = addresses.map(normalizeHostPort); // clear error for a malformed --controller or worker.json
  const log = baseLogger.child({ worker: name });
  // The lease first: a restarted worker inherits what is left of its predecessor's (lease.json),
  // and must not start reschedule VMs on an expired one.
  const lease = new LeaseKeeper({
    ...(dataDir !== undefined ? { file: leaseFilePath(dataDir) } : {}),
    ...(dataDir !== undefined ? leaseFileOwner(dataDir) : {}),
    log: log.child({ component: 'lease' }),
    ...options.lease,
  });
  const ownsDriver = typeof options.driver !== 'object';
  const driver =
    typeof options.driver === 'object'
      ? options.driver
      : await openDriver(options.driver ?? 'synthetic', {
          logger: log,
          ...(dataDir !== undefined ? { dataDir, fenceLeaseFile: leaseFilePath(dataDir) } : {}),
          ...(options.qemu ? { qemu: options.qemu } : {}),
          poolSeed: `${name}/${machineId}`,
          ...(options.synthetic?.speed !== undefined ? { syntheticSpeed: options.synthetic.speed } : {}),
          ...(options.synthetic?.natAddresses !== undefined ? { syntheticNatAddresses: options.synthetic.natAddresses } : {}),
          ...(dataDir && (options.synthetic?.persist ?? true) ? { syntheticStateFile: dataDirLayout(dataDir).syntheticState } : {}),
          ...(options.capacity?.macosSlots !== undefined ? { maxMacosGuests: options.capacity.macosSlots } : {}),
        });
  const capacity = detectCapacity(options.capacity ?? {}, driver.capabilities);
  const configuredMacosSlots = capacity.macosSlots;
  const platform = detectPlatform();
  const hostname = options.hostname ?? detectHostname();
  const labels = { ...(options.labels ?? {}) };

  let sshPool: VmSshPool | undefined;
  let link: ControllerLink | undefined;
  // Registry images (issue 15): a content-addressed cache shared by every VM of this worker.
  const imageCacheDir = options.imageCache?.dir ?? (dataDir !== undefined ? path.join(dataDir, 'image-cache') : undefined);
  let inventoryTimer: NodeJS.Timeout | undefined;
  const sendInventory = (): void => {
    if (!images) return;
    void images.inventory().then((inventory) => link?.sendImageInventory(inventory), (error: unknown) => log.warn({ err: error }, 'image cache inventory failed'));
  };
  // Coalesced: a pull reports progress many times a second, and "in use" changes with instances.
  const inventoryChanged = (): void => {
    if (!images || inventoryTimer) return;
    inventoryTimer = setTimeout(() => {
      inventoryTimer = undefined;
      sendInventory();
    }, 1000);
  };
  const images =
    driver.imageFormats?.length && imageCacheDir
      ? new ImageCache({
          dir: imageCacheDir,
          limitBytes: options.imageCache?.limitBytes ?? 0,
          platform: { os: platformOs(driver), architecture: platform.arch === 'arm64' ? 'arm64' : 'amd64' },
          formats: driver.imageFormats,
          inUse: async () => new Set((await driver.list()).flatMap((s) => (s.imageDigest ? [s.imageDigest] : []))),
          log: log.child({ component: 'images' }),
          onChange: () => inventoryChanged(),
        })
      : undefined;
  if (images) await images.init();
  const reconciler = new Reconciler({
    driver,
    logger: log,
    lease,
    ...(images ? { images } : {}),
    ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
    onStatus: (status) => {
      link?.reportStatus(status);
      // An instance made or removed changes which cached images are in use (delete and eviction rely on it).
      if (images && (status.phase === 'VM_PHASE_GONE' || status.phase === 'VM_PHASE_STOPPED' || status.phase === 'VM_PHASE_RUNNING')) inventoryChanged();
      // A VM that stopped, failed or went away takes its pooled SSH connections with it.
      if (status.vmId && status.phase !== 'VM_PHASE_RUNNING' && status.phase !== 'VM_PHASE_STARTING') sshPool?.forgetVm(status.vmId);
    },
    onEvent: (event) => link?.sendEvent(event),
  });
  lease.onExpired(() => reconciler.leaseChanged());
  lease.onRenewed(() => reconciler.leaseChanged());
  try {
    await reconciler.adopt(); // fences adopted reschedule instances if the inherited lease ran out
  } catch (error) {
    lease.close();
    if (ownsDriver) await driver.close().catch(() => {});
    throw error;
  }

  // Remote access (exec / ssh / port-forward): one pooled SSH connection per VM.
  sshPool = new VmSshPool();
  const sessions = new SessionRunner({
    pool: sshPool,
    instance: (vmId, attempt) => reconciler.snapshot().find((s) => s.vmId === vmId && (!attempt || s.attempt === attempt) && s.phase !== 'VM_PHASE_GONE'),
    log: log.child({ component: 'sessions' }),
    driver: driver.name, // the synthetic driver's sessions are refused, never dialled
    ...(driver.consoleEndpoint
      ? {
          consoleEndpoint: (vmId: string, attempt: number) => {
            // A session may name no attempt: the instance this worker holds for the VM.
            const st = reconciler.snapshot().find((s) => s.vmId === vmId && (!attempt || s.attempt === attempt) && s.phase !== 'VM_PHASE_GONE');
            return st ? driver.consoleEndpoint!({ vmId, attempt: st.attempt ?? attempt }) : Promise.resolve(undefined);
          },
        }
      : {}),
  });

  // Welcome.controller_addresses (and a renewal announcing a changed list) replaces the list;
  // saved to worker.json one write at a time.
  let saving: Promise<void> = Promise.resolve();
  const learnControllers = (dialed: string, announced: readonly string[], addOnly = false): void => {
    const current = link!.addresses;
    const { valid, rejected } = sanitizeControllerAddresses(announced);
    if (rejected.length) log.warn({ controller: dialed, rejected }, 'ignored malformed controller addresses announced by a controller');
    if (valid.length === 0) return; // an older controller, or nothing usable: keep what we have
    // A renewal only adds (a controller that joined): one that is down for a moment is dropped
    // only at the next Welcome, so a second failure meanwhile never leaves a too-short list.
    const list = addOnly ? mergeAnnouncedControllers(dialed, [...current, ...valid], current) : mergeAnnouncedControllers(dialed, valid, current);
    if (sameList(list, current)) return;
    link!.setAddresses(list);
    log.info({ controllers: list, from: dialed }, 'controller list updated');
    const store = identityStore;
    if (!store) return;
    saving = saving.then(() => saveControllerList(store, workerId, list)).catch((error: unknown) => {
      log.warn({ err: error, dataDir }, 'could not save the controller list in worker.json; it is used until the worker stops');
    });
  };

  link = new ControllerLink({
    addresses,
    credentials,
    logger: log,
    ...(options.channelOptions ? { channelOptions: options.channelOptions } : {}),
    ...(options.backoff ? { backoff: options.backoff } : {}),
    leaseRemainingMs: () => lease.remainingMs(),
    ...(options.statusFlushMs !== undefined ? { statusFlushMs: options.statusFlushMs } : {}),
    ...(options.welcomeTimeoutMs !== undefined ? { welcomeTimeoutMs: options.welcomeTimeoutMs } : {}),
    handlers: {
      hello: (): Hello => ({
        protocolVersion: PROTOCOL_VERSION,
        workerVersion: WORKER_VERSION,
        hostname,
        machineId,
        platform,
        capacity,
        labels,
        drivers: [driver.name],
        vms: reconciler.snapshot(),
        // Issue 18: what the controller may place here, by network mode.
        networks: (driver.capabilities.networks ?? []).map((n) => ({ ...n })),
      }),
      onControllerAddresses: (announced, dialed) => learnControllers(dialed, announced, true),
      onWelcome: (welcome, dialed) => {
        learnControllers(dialed, welcome.controllerAddresses ?? []);
        if (welcome.workerId) workerId = welcome.workerId;
        renewer?.start();
        sendInventory();
        if (welcome.workerName && welcome.workerName !== name) {
          log.warn({ enrolledAs: name, controllerSays: welcome.workerName }, 'the controller knows this worker under another name');
        }
      },
      onDesiredState: (state) => {
        reconciler.setDesired(state);
        imageOps?.setDesired(state.imageOperations ?? []);
      },
      runningVms: () => reconciler.runningCount(),
      onSessionOpen: (open, client) => sessions.open(open, client),
      onSessionCancel: (cancel) => sessions.cancel(cancel.sessionId, cancel.reason || 'cancelled by the controller'),
      onLease: (event) => {
        if (event.kind === 'welcome') lease.welcome(event.fenceAfterMs, event.helloSentAtMonoMs, event.helloSentAtUnixMs);
        else lease.renew(event.validUntilMonoMs, event.validUntilUnixMs, event.fenceAfterMs);
      },
    },
  });

  const imageOps =
    images && imageCacheDir
      ? new ImageOperations({
          cache: images,
          driver,
          // A finished operation goes after the inventory it changed: whoever waited for it
          // (`fleet image prefetch --wait`) then finds the image listed.
          send: (status) => {
            if (status.state === 'running') return link?.sendImageOperation(status);
            void images
              .inventory()
              .then((inventory) => link?.sendImageInventory(inventory))
              .catch((error: unknown) => log.warn({ err: error }, 'image cache inventory failed'))
              .finally(() => link?.sendImageOperation(status));
          },
          workDir: path.join(imageCacheDir, 'tmp'),
          log: log.child({ component: 'images' }),
        })
      : undefined;
  const linkRef = link;
  // Renews the mTLS certificate well before it expires (started once the controller has
  // accepted the current one); the link uses the new one from its next connection.
  const renewer = credentialStore
    ? new CertificateRenewer({
        store: credentialStore,
        address: () => linkRef.address,
        onRenewed: (creds) => link?.setCredentials(creds),
        logger: log.child({ component: 'certificates' }),
        ...options.certificateRenewal,
      })
    : undefined;

  // Safety net: re-run reconciliation periodically (idempotent), jittered so that many
  // workers in one process do not tick in lockstep.
  const resyncMs = options.resyncIntervalMs ?? 10_000;
  let resyncTimer: NodeJS.Timeout | undefined;
  const armResync = (): void => {
    if (resyncMs <= 0) return;
    resyncTimer = setTimeout(() => {
      reconciler.reconcileAll();
      armResync();
    }, resyncMs * (0.9 + Math.random() * 0.2));
    resyncTimer.unref();
  };
  armResync();
  // A runtime that learns it can hold fewer macOS guests says so; the controller then stops
  // placing macOS VMs here instead of sending ones that could never start.
  const offMacosLimit = driver.onMacosSlotLimit?.((slots, reason) => {
    const macosSlots = Math.min(slots, configuredMacosSlots);
    if (macosSlots === capacity.macosSlots) return;
    capacity.macosSlots = macosSlots;
    log.warn({ macosSlots, reason }, 'macOS capacity changed');
    link?.sendCapacity({ capacity, reason });
  });
  const sampler = new NetworkCounterSampler({
    driver,
    instances: () => reconciler.snapshot(),
    send: (report) => link?.sendNetworkCounters(report),
    log,
  });
  sampler.start();

  log.info(
    { controllers: addresses, machineId, driver: driver.name, capacity, labels, instances: reconciler.snapshot().length, dataDir },
    driver.name === 'synthetic' ? 'worker starting with the SYNTHETIC driver (in-memory VMs, nothing really boots)' : 'worker starting',
  );
  link.start();

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      clearTimeout(resyncTimer);
      resyncTimer = undefined;
      clearTimeout(inventoryTimer);
      sampler.stop();
      renewer?.stop();
      offMacosLimit?.();
      sessions.closeAll('the worker is stopping');
      sshPool.close();
      await link.stop();
      await saving;
      lease.close(); // lease.json stays: VM host processes keep fencing on it
      await reconciler.close();
      if (ownsDriver) await driver.close();
      log.info('worker stopped');
    })();
    return stopping;
  };
  // A refusal ends the link; stop the rest too so nothing keeps ticking.
  void link.done.then((exit) => {
    if (exit.kind === 'fatal') void stop();
  });

  return {
    name,
    get workerId() {
      return workerId;
    },
    machineId,
    dataDir,
    driver,
    done: link.done,
    connected: () => linkRef.welcomed,
    streamsOpened: () => linkRef.streamsOpened,
    controllers: () => linkRef.addresses,
    controllerAddress: () => linkRef.address,
    instances: () => reconciler.snapshot(),
    idle: () => reconciler.idle(),
    lease: () => ({ expired: lease.expired, fencing: lease.fencing, validUntilUnixMs: lease.validUntilUnixMs, fenceAfterMs: lease.fenceAfterMs, file: lease.file }),
    stop,
  };
}

/** The OS picked from multi-platform image indexes: what this driver's guests are. */
function platformOs(driver: Driver): string {
  return driver.imageFormats?.includes('tart') ? 'darwin' : 'linux';
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Writes `controllers` into worker.json, re-read first: only the list changes, and a file that
 * meanwhile belongs to another enrollment (`enroll --force` while running) is left alone.
 */
async function saveControllerList(store: CredentialStore, workerId: string | undefined, controllers: string[]): Promise<void> {
  const identity = await store.readIdentity();
  if (!identity || (workerId !== undefined && identity.workerId !== workerId)) return;
  const next: WorkerIdentity = { ...identity, controller: controllers[0]!, controllers };
  if (identity.controller === next.controller && sameList(identity.controllers, controllers)) return;
  await store.saveIdentity(next);
}

/** A root worker whose data dir belongs to someone else (the macOS daemon) hands lease.json to that user. */
function leaseFileOwner(dataDir: string): { owner?: { uid: number; gid: number } } {
  if (process.getuid?.() !== 0) return {};
  try {
    const st = statSync(dataDir);
    return st.uid !== 0 ? { owner: { uid: st.uid, gid: st.gid } } : {};
  } catch {
    return {};
  }
}
