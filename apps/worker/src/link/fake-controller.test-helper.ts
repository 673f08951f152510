// A fake controller for tests: a real grpc-js server speaking fleet.v1.WorkerService,
// whose Connect streams are driven by the test.
import * as grpc from '@grpc/grpc-js';
import { certificateFingerprint, createCertificateAuthority, encodeBootstrapToken, generateSecret, issueServerCertificate, signClientCsr, type KeyAndCert } from '@fleet/pki';
import { loadFleetProto, type ControllerMessage, type EnrollRequest__Output, type EnrollResponse, type SessionFrame__Output, type WorkerMessage__Output } from '@fleet/proto';

export class FakeStream {
  readonly received: WorkerMessage__Output[] = [];
  ended = false;
  readonly #waiters: Array<() => void> = [];

  constructor(readonly call: grpc.ServerDuplexStream<WorkerMessage__Output, ControllerMessage>) {
    call.on('data', (message: WorkerMessage__Output) => {
      this.received.push(message);
      this.#wake();
    });
    const finish = (): void => {
      this.ended = true;
      this.#wake();
    };
    call.on('end', () => {
      finish();
      if (!call.writableEnded) call.end();
    });
    call.on('cancelled', finish);
    call.on('error', finish);
  }

  /** Resolves with the first message (already received or future) matching `predicate`. */
  async next(predicate: (m: WorkerMessage__Output) => boolean, timeoutMs = 5000): Promise<WorkerMessage__Output> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.find(predicate);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for a worker message; got ${JSON.stringify(this.received.map((m) => m.payload))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** All messages with the given payload received so far. */
  all<K extends NonNullable<WorkerMessage__Output['payload']>>(payload: K): Array<NonNullable<WorkerMessage__Output[K]>> {
    return this.received.filter((m) => m.payload === payload).map((m) => m[payload]!) as Array<NonNullable<WorkerMessage__Output[K]>>;
  }

  async hello(): Promise<NonNullable<WorkerMessage__Output['hello']>> {
    return (await this.next((m) => m.payload === 'hello')).hello!;
  }

  send(message: ControllerMessage): void {
    this.call.write(message);
  }

  /** `fenceAfterMs` 0 = an older controller (no leases, no fencing). */
  welcome(heartbeatIntervalMs = 60_000, fenceAfterMs = 0): void {
    this.send({ welcome: { protocolVersion: 1, workerId: 'wrk-1', workerName: 'w1', controllerVersion: 'fake', heartbeatIntervalMs, fenceAfterMs } });
  }

  /**
   * Answers every heartbeat (already received and future) with a LeaseRenewal echoing its seq, as
   * the controller does; with `controllerAddresses`, each renewal announces that list too.
   */
  renewLeases(fenceAfterMs: number, controllerAddresses: string[] = []): void {
    const answer = (m: WorkerMessage__Output): void => {
      if (m.payload === 'heartbeat') this.send({ lease: { heartbeatSeq: m.heartbeat!.seq, fenceAfterMs, controllerAddresses } });
    };
    for (const m of this.received) answer(m);
    this.call.on('data', answer);
  }

  /** Ends the stream with an error status. */
  fail(code: grpc.status, details: string): void {
    this.call.emit('error', { code, details, name: 'Error', message: details, metadata: new grpc.Metadata() } satisfies grpc.ServiceError);
  }

  /** Ends the stream with status OK. */
  end(): void {
    this.call.end();
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }
}

export interface FakeControllerOptions {
  credentials?: grpc.ServerCredentials;
  onConnect?: (stream: FakeStream) => void;
  enroll?: (request: EnrollRequest__Output) => Promise<EnrollResponse | grpc.ServiceError> | EnrollResponse | grpc.ServiceError;
}

export interface FakeController {
  /** 127.0.0.1:port */
  address: string;
  port: number;
  streams: FakeStream[];
  enrollRequests: EnrollRequest__Output[];
  /** Session streams the worker opened: their fleet-session-id and the frames received. */
  sessions: Array<{ id: string; frames: SessionFrame__Output[] }>;
  /** The n-th Connect stream (0-based), waiting for it if needed. */
  stream(n: number, timeoutMs?: number): Promise<FakeStream>;
  close(): Promise<void>;
}

export async function startFakeController(options: FakeControllerOptions = {}): Promise<FakeController> {
  const { WorkerService } = loadFleetProto();
  const server = new grpc.Server();
  const streams: FakeStream[] = [];
  const enrollRequests: EnrollRequest__Output[] = [];
  const sessions: Array<{ id: string; frames: SessionFrame__Output[] }> = [];
  const waiters: Array<() => void> = [];
  server.addService(WorkerService.service, {
    Connect: (call: grpc.ServerDuplexStream<WorkerMessage__Output, ControllerMessage>) => {
      const stream = new FakeStream(call);
      streams.push(stream);
      for (const wake of waiters.splice(0)) wake();
      options.onConnect?.(stream);
    },
    Enroll: (call: grpc.ServerUnaryCall<EnrollRequest__Output, EnrollResponse>, callback: grpc.sendUnaryData<EnrollResponse>) => {
      enrollRequests.push(call.request);
      const unimplemented: grpc.ServiceError = { code: grpc.status.UNIMPLEMENTED, details: 'no enroll handler', name: 'Error', message: '', metadata: new grpc.Metadata() };
      void Promise.resolve(options.enroll ? options.enroll(call.request) : unimplemented).then(
        (result) => {
          if ('code' in result && typeof result.code === 'number') callback(result as grpc.ServiceError);
          else callback(null, result as EnrollResponse);
        },
        (error: Error) => callback({ ...unimplemented, code: grpc.status.INTERNAL, details: error.message }),
      );
    },
    Session: (call: grpc.ServerDuplexStream<SessionFrame__Output, unknown>) => {
      const session = { id: String(call.metadata.get('fleet-session-id')[0] ?? ''), frames: [] as SessionFrame__Output[] };
      sessions.push(session);
      call.on('data', (f: SessionFrame__Output) => session.frames.push(f));
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', options.credentials ?? grpc.ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    port,
    streams,
    enrollRequests,
    sessions,
    async stream(n, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (!streams[n]) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for Connect stream #${n} (have ${streams.length})`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 50);
          waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      return streams[n]!;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.forceShutdown();
        resolve();
      }),
  };
}

// ---------------------------------------------------------------------------- real TLS

class StaticProvider implements grpc.experimental.CertificateProvider {
  constructor(
    private readonly ca: Buffer,
    private readonly cert: Buffer,
    private readonly key: Buffer,
  ) {}
  // grpc-js drops an update delivered synchronously from addListener: deliver on a microtask.
  addCaCertificateListener(l: grpc.experimental.CaCertificateUpdateListener): void {
    queueMicrotask(() => l({ caCertificate: this.ca }));
  }
  removeCaCertificateListener(): void {}
  addIdentityCertificateListener(l: grpc.experimental.IdentityCertificateUpdateListener): void {
    queueMicrotask(() => l({ certificate: this.cert, privateKey: this.key }));
  }
  removeIdentityCertificateListener(): void {}
}

export interface TestPki {
  ca: KeyAndCert;
  /** A valid bootstrap token pinning `ca`. */
  token: string;
  /**
   * Server credentials like the controller's: one port for Enroll (no client certificate)
   * and Connect (client certificate requested, verified against the CA, not required by TLS).
   * The chain carries the CA so that an enrolling worker can find and pin it.
   */
  serverCredentials: grpc.ServerCredentials;
  /** Enroll handler: checks the token, signs the CSR (CN = name), workerId = `wrk-<name>`. */
  enroll(request: EnrollRequest__Output): Promise<EnrollResponse | grpc.ServiceError>;
  /** The client certificate CN of a Connect stream, if any. */
  peerName(stream: FakeStream): string | undefined;
}

export const serviceError = (code: grpc.status, details: string): grpc.ServiceError => ({ code, details, message: details, name: 'Error', metadata: new grpc.Metadata() });

export async function createTestPki(): Promise<TestPki> {
  const ca = await createCertificateAuthority({ commonName: 'Fleet test CA' });
  const server = await issueServerCertificate(ca, { commonName: 'fleet-controller', dnsNames: [], ipAddresses: [] });
  const token = encodeBootstrapToken({ id: 'tok1', secret: generateSecret(), caFingerprint: certificateFingerprint(ca.certPem) });
  const provider = new StaticProvider(Buffer.from(ca.certPem), Buffer.from(`${server.certPem.trimEnd()}\n${ca.certPem}`), Buffer.from(server.keyPem));
  return {
    ca,
    token,
    serverCredentials: grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false),
    async enroll(request) {
      if (request.bootstrapToken !== token) return serviceError(grpc.status.UNAUTHENTICATED, 'unknown bootstrap token');
      if (request.name === 'taken') return serviceError(grpc.status.ALREADY_EXISTS, 'name held by machine m-other');
      const issued = await signClientCsr(ca, request.csrPem, { commonName: request.name });
      return { workerId: `wrk-${request.name}`, workerName: request.name, clientCertificatePem: issued.certPem, caCertificatePem: ca.certPem };
    },
    peerName(stream) {
      const cn = stream.call.getAuthContext().sslPeerCertificate?.subject?.CN;
      return cn ? String(cn) : undefined;
    },
  };
}
