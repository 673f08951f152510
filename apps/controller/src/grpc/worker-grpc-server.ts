// The gRPC server workers dial. One TLS port serves:
//  - Enroll: server-authenticated TLS only; the bootstrap token authenticates;
//  - Connect / Session: the worker's client certificate authenticates. TLS asks
//    every client for a certificate but does not require one (Enroll has none);
//    Connect then checks the certificate's SHA-256 against the database, so a
//    credential is revoked by deleting/revoking its row;
//  - RenewCertificate: the client certificate authenticates; a new one is issued for
//    a fresh key before the old one expires (see renewCertificate below).
import { ControllerListAnnouncer } from './controller-announcer.ts';
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import {
  loadFleetProto,
  MIN_SUPPORTED_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
  type EnrollRequest__Output,
  type EnrollResponse,
  type RenewCertificateRequest__Output,
  type RenewCertificateResponse,
  type WorkerMessage__Output,
  type WorkerServiceHandlers,
} from '@fleet/proto';
import { classifyStorageError, describeStorageFault, type FleetDb, type Worker, type WorkerCredential } from '@fleet/db';
// signClientCsr (and with it @peculiar/x509) is imported at the first enrollment or renewal (issue 20).
import { PkiError } from '@fleet/pki/basics';
import type { Logger } from 'pino';
import type { ControllerIdentity } from '../identity/controller-identity.ts';
import { TokenRejected, type TokenService } from '../auth/token-service.ts';
import type { WorkerService } from '../workers/worker-service.ts';
import type { VmService } from '../vms/vm-service.ts';
import type { EventLog } from '../events/event-log.ts';
import type { Metrics } from '../observability/metrics.ts';
import { isUniqueViolation } from '../errors.ts';
import { capacityInfo, helloInfo, reportedInstances, workerEvent } from './worker-input.ts';
import { WorkerStream, WorkerStreams, type ConnectCall } from './worker-streams.ts';
import { CONTROLLER_VERSION } from '../version.ts';
import type { SessionBroker, SessionCall } from '../sessions/session-broker.ts';
import type { NetworkCounterStore } from '../vms/network-counters.ts';
import type { ErrorSink } from '../storage/backoff.ts';
import type { WorkerImageService } from '../images/worker-image-service.ts';
import type { ImageOperationService } from '../images/image-operation-service.ts';
import { imageInventory, operationReport } from '../images/image-input.ts';

const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const HELLO_TIMEOUT_MS = 15_000;

export interface WorkerGrpcDeps {
  db: FleetDb;
  identity: ControllerIdentity;
  tokens: TokenService;
  workers: WorkerService;
  vms: VmService;
  events: EventLog;
  streams: WorkerStreams;
  /** Remote-access sessions; absent = Session answers UNIMPLEMENTED. */
  sessions?: SessionBroker;
  /** Packet-filter counters reported by workers (absent = ignored). */
  networkCounters?: NetworkCounterStore;
  metrics: Metrics;
  log: Logger;
  heartbeatIntervalMs: number;
  /** How long a worker keeps "reschedule" VMs running without a lease renewal (Welcome; failure-timing.ts). */
  fenceAfterMs: number;
  /** Told about errors that end a stream (the storage-health tracker). */
  storage?: ErrorSink;
  /**
   * The gRPC addresses ("host:port") of every live controller of the fleet, this one first, sent in
   * EnrollResponse and Welcome so a worker can move to another controller when its link drops
   * (issue 13). Absent, failing or slow = an empty list: the worker keeps the addresses it has.
   */
  controllerAddresses?: () => Promise<string[]>;
  /** Whether this controller is the leader (several controllers; absent = the only one). */
  isLeader?: () => boolean;
  /** Workers' image caches and image operations (issue 15); absent = those messages are ignored. */
  images?: { inventory: WorkerImageService; operations: ImageOperationService };
}

/** A Welcome waits at most this long for the address list: the first lease must not wait on it. */
const CONTROLLER_ADDRESSES_TIMEOUT_MS = 2_000;
/** How often a stream looks again at the fleet's controller list, to announce a change in a renewal. */
const CONTROLLER_ADDRESSES_REFRESH_MS = 5_000;
/** Bounds on what is sent (the worker validates every entry again). */
const MAX_CONTROLLER_ADDRESSES = 64;
const MAX_CONTROLLER_ADDRESS_LENGTH = 262;

class StaticCertificateProvider implements grpc.experimental.CertificateProvider {
  constructor(
    private readonly ca: Buffer,
    private readonly cert: Buffer,
    private readonly key: Buffer,
  ) {}
  // grpc-js 1.14 drops an update delivered synchronously from addListener: deliver on a microtask.
  addCaCertificateListener(l: grpc.experimental.CaCertificateUpdateListener): void {
    queueMicrotask(() => l({ caCertificate: this.ca }));
  }
  removeCaCertificateListener(): void {}
  addIdentityCertificateListener(l: grpc.experimental.IdentityCertificateUpdateListener): void {
    queueMicrotask(() => l({ certificate: this.cert, privateKey: this.key }));
  }
  removeIdentityCertificateListener(): void {}
}

export function serverCredentials(identity: ControllerIdentity): grpc.ServerCredentials {
  // The chain includes the server's CA so an enrolling worker can find (and pin) it.
  // Client certificates are checked against the controller's own signing CA.
  const chain = Buffer.from(identity.server.certPem.trimEnd() + '\n' + identity.serverCaPem);
  const provider = new StaticCertificateProvider(Buffer.from(identity.ca.certPem), chain, Buffer.from(identity.server.keyPem));
  return grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false);
}

type RenewCall = grpc.ServerUnaryCall<RenewCertificateRequest__Output, RenewCertificateResponse>;

function grpcError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

function peerFingerprint(call: { getAuthContext(): { sslPeerCertificate?: { fingerprint256?: string } } | null }): string | null {
  const cert = call.getAuthContext()?.sslPeerCertificate;
  if (!cert || !cert.fingerprint256) return null;
  return cert.fingerprint256.replace(/:/g, '').toLowerCase();
}

export function workerHandlers(deps: WorkerGrpcDeps): WorkerServiceHandlers {
  const { db, log } = deps;

  // Never fails: the list is advice for the worker's failover, not worth refusing an enrollment
  // or delaying a Welcome (and with it the worker's first lease) for.
  async function liveControllerAddresses(): Promise<string[]> {
    const source = deps.controllerAddresses;
    if (!source) return [];
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${CONTROLLER_ADDRESSES_TIMEOUT_MS} ms`)), CONTROLLER_ADDRESSES_TIMEOUT_MS);
      });
      const list = await Promise.race([source(), timeout]);
      if (!Array.isArray(list)) return [];
      return list
        .filter((a): a is string => typeof a === 'string' && a.length > 0 && a.length <= MAX_CONTROLLER_ADDRESS_LENGTH)
        .slice(0, MAX_CONTROLLER_ADDRESSES);
    } catch (err) {
      log.debug({ err }, 'controller addresses unavailable; sending none');
      return [];
    } finally {
      clearTimeout(timer);
    }
  }

  async function enroll(req: EnrollRequest__Output): Promise<EnrollResponse> {
    if (!NAME.test(req.name)) throw grpcError(grpc.status.INVALID_ARGUMENT, `invalid worker name ${JSON.stringify(req.name.slice(0, 80))}: use lower-case letters, digits and dashes (at most 63)`);
    if (!req.machineId || req.machineId.length > 128) throw grpcError(grpc.status.INVALID_ARGUMENT, 'machine_id is required (at most 128 characters)');
    if (!req.csrPem || req.csrPem.length > 16_384) throw grpcError(grpc.status.INVALID_ARGUMENT, 'csr_pem is required');
    if (req.protocolVersion < MIN_SUPPORTED_PROTOCOL_VERSION || req.protocolVersion > PROTOCOL_VERSION) {
      throw grpcError(grpc.status.FAILED_PRECONDITION, `worker speaks protocol v${req.protocolVersion}; this controller supports v${MIN_SUPPORTED_PROTOCOL_VERSION}..v${PROTOCOL_VERSION}`);
    }
    // The token first: a caller without a valid one learns nothing (not even whether a name is taken).
    let bootstrap;
    try {
      bootstrap = await deps.tokens.checkBootstrapToken(req.bootstrapToken);
    } catch (err) {
      if (err instanceof TokenRejected) throw grpcError(grpc.status.UNAUTHENTICATED, `enrollment refused: ${err.message}`);
      throw err;
    }
    const existing = await db.worker.findUnique({ where: { name: req.name } });
    const nameTaken = () =>
      grpcError(grpc.status.ALREADY_EXISTS, `worker name "${req.name}" is already enrolled from another machine; pick another --name or delete the old worker first (fleet worker delete ${req.name})`);
    if (existing && existing.machineId !== req.machineId) throw nameTaken();
    // The CSR before the token's use: a malformed one must not use up an enrollment.
    const workerId = existing?.id ?? randomUUID();
    let issued;
    try {
      const { signClientCsr } = await import('@fleet/pki');
      issued = await signClientCsr(deps.identity.ca, req.csrPem, { commonName: workerId });
    } catch (err) {
      if (err instanceof PkiError) throw grpcError(grpc.status.INVALID_ARGUMENT, err.message);
      throw err;
    }
    // The use of the token counts only together with the worker and its credential.
    try {
      await db.$transaction(async (tx) => {
        await deps.tokens.useBootstrapToken(bootstrap, tx);
        if (existing) {
          // Re-enrolling the same machine replaces its credential.
          await tx.workerCredential.updateMany({ where: { workerId, revokedAt: null }, data: { revokedAt: new Date() } });
        } else {
          await tx.worker.create({ data: { id: workerId, name: req.name, machineId: req.machineId } });
        }
        await tx.workerCredential.create({
          data: { id: randomUUID(), workerId, fingerprint: issued.fingerprint, serial: issued.serial, notAfter: issued.notAfter },
        });
      });
    } catch (err) {
      if (err instanceof TokenRejected) throw grpcError(grpc.status.UNAUTHENTICATED, `enrollment refused: ${err.message}`);
      if (isUniqueViolation(err)) throw nameTaken(); // another machine enrolled the name meanwhile
      throw err;
    }
    await deps.events.append([
      {
        kind: 'worker.enrolled',
        message: `worker ${req.name} ${existing ? 're-enrolled' : 'enrolled'} with bootstrap token ${bootstrap.name}`,
        workerId,
        actor: `bootstrap-token:${bootstrap.name}`,
      },
    ]);
    log.info({ worker: req.name, workerId }, existing ? 'worker re-enrolled' : 'worker enrolled');
    return {
      workerId,
      workerName: req.name,
      clientCertificatePem: issued.certPem,
      caCertificatePem: deps.identity.serverCaPem,
      controllerAddresses: await liveControllerAddresses(),
    };
  }

  async function authenticate(call: ConnectCall | SessionCall | RenewCall): Promise<Worker> {
    return (await authenticateCredential(call)).worker;
  }

  async function authenticateCredential(call: ConnectCall | SessionCall | RenewCall): Promise<WorkerCredential & { worker: Worker }> {
    const fp = peerFingerprint(call);
    if (!fp) throw grpcError(grpc.status.UNAUTHENTICATED, 'no client certificate: enroll this worker first (fleet-worker enroll)');
    const cred = await db.workerCredential.findUnique({ where: { fingerprint: fp }, include: { worker: true } });
    if (!cred) throw grpcError(grpc.status.UNAUTHENTICATED, 'unknown worker credential: the worker was deleted or never enrolled here; re-enroll with fleet-worker enroll --force');
    if (cred.revokedAt) throw grpcError(grpc.status.UNAUTHENTICATED, `the credential of worker ${cred.worker.name} was revoked; re-enroll with fleet-worker enroll --force`);
    if (cred.notAfter.getTime() <= Date.now()) throw grpcError(grpc.status.UNAUTHENTICATED, `the credential of worker ${cred.worker.name} expired; re-enroll`);
    return cred;
  }

  /**
   * Issues a new client certificate to an authenticated worker. At most two credentials
   * stay valid: the one presented and the new one. The presented one is revoked when the
   * worker first connects with the new one (retireOlderCredentials), not here, so a worker
   * that dies before saving the new certificate can still connect and renew again.
   */
  async function renewCertificate(call: RenewCall): Promise<RenewCertificateResponse> {
    const cred = await authenticateCredential(call);
    const csrPem = call.request.csrPem;
    if (!csrPem || csrPem.length > 16_384) throw grpcError(grpc.status.INVALID_ARGUMENT, 'csr_pem is required (at most 16 KiB)');
    let issued;
    try {
      const { signClientCsr } = await import('@fleet/pki');
      issued = await signClientCsr(deps.identity.ca, csrPem, { commonName: cred.workerId });
    } catch (err) {
      if (err instanceof PkiError) throw grpcError(grpc.status.INVALID_ARGUMENT, err.message);
      throw err;
    }
    await db.$transaction(async (tx) => {
      await tx.workerCredential.updateMany({ where: { workerId: cred.workerId, revokedAt: null, id: { not: cred.id } }, data: { revokedAt: new Date() } });
      await tx.workerCredential.create({
        data: { id: randomUUID(), workerId: cred.workerId, fingerprint: issued.fingerprint, serial: issued.serial, notAfter: issued.notAfter },
      });
    });
    await deps.events.append([
      {
        kind: 'worker.certificate-renewed',
        message: `worker ${cred.worker.name} renewed its client certificate (the old one expired ${cred.notAfter.toISOString()}; the new one expires ${issued.notAfter.toISOString()})`,
        workerId: cred.workerId,
        actor: `worker:${cred.worker.name}`,
        data: { serial: issued.serial, notAfter: issued.notAfter.toISOString() },
      },
    ]);
    log.info({ worker: cred.worker.name, notAfter: issued.notAfter.toISOString() }, 'worker certificate renewed');
    return { clientCertificatePem: issued.certPem, notAfterUnixMs: String(issued.notAfter.getTime()) };
  }

  /** A worker connected with its newest credential: the ones issued before it are retired. */
  async function retireOlderCredentials(cred: WorkerCredential): Promise<void> {
    const { count } = await db.workerCredential.updateMany({ where: { workerId: cred.workerId, revokedAt: null, createdAt: { lt: cred.createdAt } }, data: { revokedAt: new Date() } });
    if (count) log.info({ workerId: cred.workerId, retired: count }, 'older worker credentials revoked after the renewed one was used');
  }

  function connect(call: ConnectCall): void {
    let stream: WorkerStream | undefined;
    /** The worker as authenticated: what the stream needs for its life. */
    let worker: Pick<Worker, 'id' | 'name'> | undefined;
    /** Its whole row, only until the Hello is handled (~2 KiB a worker for the stream's life otherwise, issue 20 memory). */
    let helloRow: Worker | undefined;
    let helloSeen = false;
    // Messages are handled strictly in order; a failure ends the stream with its status.
    let chain: Promise<void> = Promise.resolve();
    const fail = (err: unknown) => {
      // Only a number is a gRPC status: Prisma errors carry string codes (P2039, ...).
      const given = (err as Partial<grpc.ServiceError>).code;
      const status = typeof given === 'number' ? given : undefined;
      // The database is unavailable: UNAVAILABLE with a short reason; the worker reconnects with backoff and resends.
      const fault = status === undefined ? classifyStorageError(err) : null;
      if (fault) deps.storage?.observe(err);
      const details = fault
        ? `the controller's database is unavailable: ${describeStorageFault(fault)}`
        : ((err as Partial<grpc.ServiceError>).details ?? (err instanceof Error ? err.message : String(err)));
      if (status === undefined) log[fault ? 'warn' : 'error']({ err, ...(fault ? { storage: fault } : {}), worker: worker?.name }, 'worker stream failed');
      const code = status ?? (fault ? grpc.status.UNAVAILABLE : grpc.status.INTERNAL);
      if (stream) stream.close(code, details);
      else call.emit('error', grpcError(code, details));
    };
    const helloTimer = setTimeout(() => {
      if (!helloSeen) fail(grpcError(grpc.status.DEADLINE_EXCEEDED, `no Hello within ${HELLO_TIMEOUT_MS / 1000}s`));
    }, HELLO_TIMEOUT_MS);

    // Resolves false when refused (the stream is already ended with the reason).
    const authenticated: Promise<boolean> = authenticateCredential(call).then(
      async (cred) => {
        worker = { id: cred.worker.id, name: cred.worker.name };
        helloRow = cred.worker;
        // Best effort: a database hiccup here must not refuse (or crash) a valid connection.
        await retireOlderCredentials(cred).catch((err: unknown) => log.warn({ err, workerId: cred.workerId }, 'retiring older worker credentials failed'));
        return true;
      },
      (err: unknown) => {
        fail(err);
        return false;
      },
    );

    // The controller list this stream last carried (Welcome, renewals); changes ride on renewals.
    const announcer = new ControllerListAnnouncer(liveControllerAddresses, CONTROLLER_ADDRESSES_REFRESH_MS);

    const handle = async (msg: WorkerMessage__Output): Promise<void> => {
      if (!(await authenticated)) return;
      const w = worker!;
      if (!helloSeen) {
        const row = helloRow!;
        helloRow = undefined;
        if (msg.payload !== 'hello' || !msg.hello) throw grpcError(grpc.status.INVALID_ARGUMENT, 'the first message on Connect must be a Hello');
        helloSeen = true;
        clearTimeout(helloTimer);
        const hello = helloInfo(
          msg.hello,
          (key, reason) => log.warn({ worker: w.name, label: key, reason }, 'ignored an invalid worker label'),
          (reason) => log.warn({ worker: w.name, reason }, 'ignored an invalid worker network'),
        );
        if (hello.protocolVersion < MIN_SUPPORTED_PROTOCOL_VERSION || hello.protocolVersion > PROTOCOL_VERSION) {
          throw grpcError(
            grpc.status.FAILED_PRECONDITION,
            `worker speaks protocol v${hello.protocolVersion}; this controller (${CONTROLLER_VERSION}) supports v${MIN_SUPPORTED_PROTOCOL_VERSION}..v${PROTOCOL_VERSION}: upgrade the ${hello.protocolVersion < MIN_SUPPORTED_PROTOCOL_VERSION ? 'worker' : 'controller'}`,
          );
        }
        if (hello.machineId && hello.machineId !== row.machineId) {
          throw grpcError(grpc.status.PERMISSION_DENIED, `worker ${w.name} presented its credential from another machine (${hello.machineId}); re-enroll that machine`);
        }
        const { instances, rejected } = reportedInstances(msg.hello.vms ?? []);
        if (rejected.length) log.warn({ worker: w.name, rejected }, 'ignored malformed VM statuses in Hello');
        stream = new WorkerStream(w.id, w.name, call);
        deps.streams.attach(stream);
        deps.metrics.connectedWorkers.set(deps.streams.size);
        await deps.workers.onHello(row, hello);
        await deps.vms.reconcileInventory(w.id, w.name, instances);
        const controllerAddresses = await liveControllerAddresses();
        announcer.sent(controllerAddresses);
        stream.send({
          welcome: {
            protocolVersion: PROTOCOL_VERSION,
            workerId: w.id,
            workerName: w.name,
            controllerVersion: CONTROLLER_VERSION,
            heartbeatIntervalMs: deps.heartbeatIntervalMs,
            fenceAfterMs: deps.fenceAfterMs,
            controllerAddresses,
          },
        });
        await deps.streams.pushOrRetry(stream);
        return;
      }
      // Any message proves liveness; recorded in the database for the leader's liveness judgement.
      const recorded = deps.workers.onHeartbeat(w.id);
      recorded.catch(() => undefined); // a failed write only withholds the renewal below
      switch (msg.payload) {
        case 'heartbeat': {
          // The lease: "I heard your heartbeat <seq>". Only these renew the worker's lease, so a
          // controller that can still send but no longer hears the worker lets it run out.
          // The leader judges liveness itself and renews at once. Any other controller renews only
          // once the heartbeat is committed where the leader reads it: a controller cut off from
          // the database must not keep a worker's VMs running that the leader will re-place.
          // A changed controller list rides along (looked up in the background, never delaying a
          // renewal): a controller that joined after this worker connected becomes known to it.
          const renewal = { lease: { heartbeatSeq: msg.heartbeat?.seq ?? '0', fenceAfterMs: deps.fenceAfterMs, controllerAddresses: announcer.forRenewal() } };
          const s = stream!;
          if (deps.isLeader?.() ?? true) s.send(renewal);
          else recorded.then(() => s.send(renewal), () => undefined);
          return;
        }
        case 'vmStatus': {
          const { instances, rejected } = reportedInstances(msg.vmStatus?.vms ?? []);
          if (rejected.length) log.warn({ worker: w.name, rejected }, 'ignored malformed VM statuses');
          await deps.vms.applyWorkerReports(w.id, w.name, instances);
          return;
        }
        case 'event': {
          if (!msg.event) return;
          const e = workerEvent(msg.event);
          await deps.events.append([{ ...e, workerId: w.id, actor: `worker:${w.name}` }]);
          return;
        }
        case 'pong':
          return;
        case 'capacityUpdate': {
          await deps.workers.onCapacityUpdate(w, capacityInfo(msg.capacityUpdate?.capacity), (msg.capacityUpdate?.reason ?? '').slice(0, 500));
          return;
        }
        case 'vmNetwork': {
          const r = deps.networkCounters?.record(w.id, msg.vmNetwork?.vms ?? []);
          if (r?.rejected) log.warn({ worker: w.name, rejected: r.rejected }, 'ignored malformed network counters');
          return;
        }
        case 'imageInventory': {
          if (!deps.images) return;
          const { inventory, rejected } = imageInventory(msg.imageInventory);
          if (rejected.length) log.warn({ worker: w.name, rejected: rejected.slice(0, 20), count: rejected.length }, 'ignored malformed entries of an image inventory');
          await deps.images.inventory.record(w.id, inventory);
          return;
        }
        case 'imageOperation': {
          if (!deps.images) return;
          const report = operationReport(msg.imageOperation);
          if ('rejected' in report) {
            log.warn({ worker: w.name, rejected: report.rejected }, 'ignored a malformed image operation status');
            return;
          }
          if (!(await deps.images.operations.report(w.id, report, w.name))) log.debug({ worker: w.name, operation: report.id, state: report.state }, 'ignored a status of an image operation that is unknown, of another worker, or finished');
          return;
        }
        case 'hello':
          throw grpcError(grpc.status.INVALID_ARGUMENT, 'Hello may only be sent once per stream');
        default:
          // A newer worker sent a message this controller does not know: degrade, don't fail.
          log.warn({ worker: w.name }, 'ignored a Connect message with an unknown payload (newer worker?)');
      }
    };

    call.on('data', (msg: WorkerMessage__Output) => {
      chain = chain.then(() => handle(msg)).catch((err) => {
        fail(err);
        return Promise.reject(err);
      });
      chain.catch(() => undefined);
    });
    const cleanup = () => {
      clearTimeout(helloTimer);
      if (stream && deps.streams.detach(stream)) {
        deps.metrics.connectedWorkers.set(deps.streams.size);
        void deps.workers.onDisconnect({ id: stream.workerId, name: stream.workerName }).catch((err) => log.error({ err }, 'disconnect bookkeeping failed'));
      }
    };
    call.on('end', () => {
      cleanup();
      call.end();
    });
    call.on('error', cleanup);
    call.on('cancelled', cleanup);
    call.on('close', cleanup);
  }

  /**
   * A gRPC error for a failed unary call: our own ServiceErrors as they are (numeric code),
   * storage faults as UNAVAILABLE (the worker retries), anything else INTERNAL.
   */
  function unaryError(err: unknown, what: string): grpc.ServiceError {
    if (typeof (err as Partial<grpc.ServiceError>).code === 'number') return err as grpc.ServiceError;
    const fault = classifyStorageError(err);
    if (fault) {
      deps.storage?.observe(err);
      log.warn({ err, storage: fault }, `${what} failed: storage unavailable`);
      return grpcError(grpc.status.UNAVAILABLE, `${what} failed: the controller's database is unavailable (${describeStorageFault(fault)}); retry later`);
    }
    log.error({ err }, `${what} failed`);
    return grpcError(grpc.status.INTERNAL, `${what} failed; see the controller log`);
  }

  return {
    Enroll(call, callback) {
      enroll(call.request).then(
        (res) => callback(null, res),
        (err: unknown) => callback(unaryError(err, 'enrollment')),
      );
    },
    Connect: connect,
    RenewCertificate(call, callback) {
      renewCertificate(call).then(
        (res) => callback(null, res),
        (err: unknown) => callback(unaryError(err, 'certificate renewal')),
      );
    },
    Session(call) {
      // Same client-certificate check as Connect; the broker then checks that the
      // session id names a session opened on THIS worker.
      const broker = deps.sessions;
      if (!broker) return void call.emit('error', grpcError(grpc.status.UNIMPLEMENTED, 'sessions are not enabled on this controller'));
      authenticate(call)
        .then(
          (w) => broker.acceptWorkerCall(call, w.id),
          (err: unknown) => call.emit('error', unaryError(err, 'session authentication')),
        )
        .catch((err: unknown) => {
          // Nothing awaits this promise: an unhandled rejection would end the controller.
          log.error({ err }, 'session call failed');
          try {
            call.emit('error', grpcError(grpc.status.INTERNAL, 'session failed; see the controller log'));
          } catch {
            /* already ended */
          }
        });
    },
  };
}

export async function startWorkerGrpcServer(deps: WorkerGrpcDeps, host: string, port: number): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server({
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    'grpc.max_receive_message_length': 16 * 1024 * 1024,
  });
  server.addService(loadFleetProto().WorkerService.service, workerHandlers(deps));
  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, serverCredentials(deps.identity), (err, p) => (err ? reject(err) : resolve(p)));
  });
  // grpc-js leaves Nagle on for accepted connections (its client side turns it off):
  // session frames are small request/response messages that Nagle + delayed ACKs would
  // hold for ~40 ms each. The listener map is internal to grpc-js, hence the guard.
  const listeners = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (listeners instanceof Map) {
    for (const l of listeners.keys()) {
      if (l && typeof (l as { on?: unknown }).on === 'function') (l as import('node:net').Server).on('connection', (sock: import('node:net').Socket) => sock.setNoDelay(true));
    }
  } else deps.log.warn('cannot turn off Nagle on worker connections (grpc-js internals changed); sessions will be slower');
  return { server, port: bound };
}

