// `fleet-worker enroll`: trade a bootstrap token for an mTLS client certificate.
//
//  1. parse the token (fleet-bootstrap-v1.<id>.<secret>.<caFingerprint>)
//  2. fetch the controller's CA over TLS and check it against the fingerprint in the token (pin)
//  3. generate a key pair + CSR locally (the key never leaves this machine)
//  4. Enroll over TLS trusting ONLY the pinned CA
//  5. store worker.json, key.pem (0600), cert.pem, ca.pem in the data dir
import * as grpc from '@grpc/grpc-js';
import {
  certificateFingerprint,
  createKeyAndCsr,
  fetchPinnedCaCertificate,
  FingerprintMismatchError,
  normalizeFingerprint,
  parseBootstrapToken,
  PkiError,
} from '@fleet/pki';
import { loadFleetProto, PROTOCOL_VERSION, type EnrollResponse__Output } from '@fleet/proto';
import type { Logger } from 'pino';
import { formatHostPort, parseHostPort } from '../config/address.ts';
import { CredentialStore, type WorkerIdentity } from '../config/credentials.ts';
import { defaultWorkerName } from '../config/capacity.ts';
import { resolveMachineId } from '../config/machine-id.ts';
import { resolveDataDir } from '../config/paths.ts';
import { controllerChannelOptions } from '../link/link.ts';
import { silentLogger } from '../logger.ts';

export interface EnrollWorkerOptions {
  /** Controller gRPC address, host:port. */
  controller: string;
  /** The whole bootstrap token as printed by the controller. */
  token: string;
  /** Worker name (unique in the fleet); default: this host's name, lower-cased, first DNS label. */
  name?: string;
  /** Default $FLEET_WORKER_DATA_DIR or ~/.fleet-worker. */
  dataDir?: string;
  /** Replace an existing enrollment in the data dir. */
  force?: boolean;
  /** Machine identity override (tests, many workers on one host); default: detected. */
  machineId?: string;
  /** Per network step (CA fetch, Enroll call); default 15 s. */
  timeoutMs?: number;
  logger?: Logger;
}

export interface EnrollWorkerResult extends WorkerIdentity {
  dataDir: string;
}

export type EnrollmentErrorCode =
  | 'already-enrolled'
  | 'bad-token'
  | 'fingerprint-mismatch'
  | 'unreachable'
  | 'refused'
  | 'name-taken'
  | 'invalid'
  | 'failed';

export class EnrollmentError extends Error {
  override readonly name = 'EnrollmentError';
  constructor(
    readonly code: EnrollmentErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export async function enrollWorker(options: EnrollWorkerOptions): Promise<EnrollWorkerResult> {
  const log = (options.logger ?? silentLogger()).child({ step: 'enroll' });
  const dataDir = resolveDataDir(options.dataDir);
  const store = new CredentialStore(dataDir);
  const timeoutMs = options.timeoutMs ?? 15_000;

  const existing = await store.readIdentity().catch(() => undefined);
  if (existing && !options.force) {
    throw new EnrollmentError(
      'already-enrolled',
      `${dataDir} already holds an enrollment (worker "${existing.name}", ${existing.workerId}, controller ${existing.controller}); pass --force to replace it`,
    );
  }

  let host: string;
  let port: number;
  try {
    ({ host, port } = parseHostPort(options.controller));
  } catch (error) {
    throw new EnrollmentError('invalid', (error as Error).message);
  }
  const controller = formatHostPort(host, port);
  const name = (options.name ?? defaultWorkerName()).trim();
  if (name === '') throw new EnrollmentError('invalid', 'worker name must not be empty');

  let token: ReturnType<typeof parseBootstrapToken>;
  try {
    token = parseBootstrapToken(options.token.trim());
  } catch (error) {
    throw new EnrollmentError('bad-token', `the bootstrap token is malformed: ${(error as Error).message}`, { cause: error });
  }

  log.debug({ controller }, 'fetching the controller CA and checking it against the token fingerprint');
  let caPem: string;
  try {
    caPem = await fetchPinnedCaCertificate({ host, port, expectedCaFingerprint: token.caFingerprint, timeoutMs });
  } catch (error) {
    if (error instanceof FingerprintMismatchError) {
      throw new EnrollmentError(
        'fingerprint-mismatch',
        `the controller at ${controller} does not present the CA pinned by the bootstrap token (refusing to send the token): ${error.message}`,
        { cause: error },
      );
    }
    throw new EnrollmentError('unreachable', `cannot reach the controller at ${controller}: ${(error as Error).message}`, { cause: error });
  }

  const machineId = options.machineId ?? existing?.machineId ?? (await resolveMachineId(dataDir));
  const { keyPem, csrPem } = await createKeyAndCsr({ commonName: name });

  const response = await callEnroll({
    controller,
    caPem,
    timeoutMs,
    request: { protocolVersion: PROTOCOL_VERSION, bootstrapToken: options.token.trim(), name, machineId, csrPem },
  });

  // The CA we keep must be the pinned one, whatever the response says.
  if (response.caCertificatePem && !sameFingerprint(certificateFingerprint(response.caCertificatePem), token.caFingerprint)) {
    throw new EnrollmentError('fingerprint-mismatch', 'the controller returned a CA certificate that differs from the pinned one; refusing to store it');
  }
  if (!response.clientCertificatePem || !response.workerId) {
    throw new EnrollmentError('failed', 'the controller answered Enroll without a worker id or client certificate');
  }

  const identity: WorkerIdentity = {
    workerId: response.workerId,
    name: response.workerName || name,
    controller,
    machineId,
    enrolledAt: new Date().toISOString(),
  };
  await store.save({ identity, keyPem, certPem: response.clientCertificatePem, caPem });
  log.info({ workerId: identity.workerId, name: identity.name, controller, dataDir }, 'worker enrolled');
  return { ...identity, dataDir };
}

interface EnrollCall {
  controller: string;
  caPem: string;
  timeoutMs: number;
  request: { protocolVersion: number; bootstrapToken: string; name: string; machineId: string; csrPem: string };
}

async function callEnroll(call: EnrollCall): Promise<EnrollResponse__Output> {
  const { WorkerService } = loadFleetProto();
  const client = new WorkerService(call.controller, grpc.credentials.createSsl(Buffer.from(call.caPem)), controllerChannelOptions());
  try {
    return await new Promise<EnrollResponse__Output>((resolve, reject) => {
      client.Enroll(call.request, { deadline: Date.now() + call.timeoutMs }, (error, response) => {
        if (error) reject(error);
        else if (!response) reject(new Error('empty Enroll response'));
        else resolve(response);
      });
    });
  } catch (error) {
    throw enrollError(error as grpc.ServiceError, call);
  } finally {
    client.close();
  }
}

function enrollError(error: grpc.ServiceError, call: EnrollCall): EnrollmentError {
  const details = error.details || error.message;
  switch (error.code) {
    case grpc.status.UNAUTHENTICATED:
      return new EnrollmentError('refused', `the controller refused the bootstrap token (${details}): it is unknown, expired, revoked or used up; ask an admin for a new one (\`fleet token create\`)`, { cause: error });
    case grpc.status.ALREADY_EXISTS:
      return new EnrollmentError('name-taken', `the worker name "${call.request.name}" belongs to another machine (${details}); pick another --name, or delete the old worker first`, { cause: error });
    case grpc.status.INVALID_ARGUMENT:
      return new EnrollmentError('invalid', `the controller rejected the enrollment request: ${details}`, { cause: error });
    case grpc.status.FAILED_PRECONDITION:
      return new EnrollmentError('invalid', `the controller does not accept this worker's protocol version ${call.request.protocolVersion}: ${details}`, { cause: error });
    case grpc.status.UNAVAILABLE:
    case grpc.status.DEADLINE_EXCEEDED:
      return new EnrollmentError('unreachable', `cannot reach the controller at ${call.controller}: ${details}`, { cause: error });
    default:
      return new EnrollmentError('failed', `enrollment failed (${grpc.status[error.code] ?? error.code}): ${details}`, { cause: error });
  }
}

function sameFingerprint(a: string, b: string): boolean {
  try {
    return normalizeFingerprint(a) === normalizeFingerprint(b);
  } catch (error) {
    if (error instanceof PkiError) return false;
    throw error;
  }
}
