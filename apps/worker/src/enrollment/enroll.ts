// `fleet-worker enroll`: trade a bootstrap token for an mTLS client certificate.
//
//  1. parse the token (fleet-bootstrap-v1.<id>.<secret>.<caFingerprint>)
//  2. fetch the controller's CA over TLS and check it against the fingerprint in the token (pin)
//  3. generate a key pair + CSR locally (the key never leaves this machine)
//  4. Enroll over TLS trusting ONLY the pinned CA
//  5. store worker.json, key.pem (0600), cert.pem, ca.pem in the data dir
//
// Several controllers (issue 13): `--controller` may name several; they are tried in order until
// one answers (steps 2 and 4; a controller that cannot be reached is skipped, one that presents
// another CA stops the enrollment: that is an attack or a misconfiguration, not an outage). The
// stored list is the one that answered, then the others given, then those the controller
// announced in EnrollResponse.controller_addresses.
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
import { parseControllerList, parseHostPort, sanitizeControllerAddresses, uniqueAddresses, MAX_CONTROLLER_ADDRESSES } from '../config/address.ts';
import { CredentialStore, type WorkerIdentity } from '../config/credentials.ts';
import { defaultWorkerName } from '../config/capacity.ts';
import { resolveMachineId } from '../config/machine-id.ts';
import { resolveDataDir } from '../config/paths.ts';
import { controllerChannelOptions } from '../link/link.ts';
import { silentLogger } from '../logger.ts';

export interface EnrollWorkerOptions {
  /** Controller gRPC address(es), host:port; several as an array or comma-separated, tried in order. */
  controller: string | readonly string[];
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
  /** Nothing reached the controller (or it could not take the request): the next one may be tried. */
  readonly tryNext: boolean;
  constructor(
    readonly code: EnrollmentErrorCode,
    message: string,
    options?: { cause?: unknown; tryNext?: boolean },
  ) {
    super(message, options);
    this.tryNext = options?.tryNext ?? false;
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

  let given: string[];
  try {
    given = parseControllerList(options.controller);
  } catch (error) {
    throw new EnrollmentError('invalid', (error as Error).message);
  }
  const name = (options.name ?? defaultWorkerName()).trim();
  if (name === '') throw new EnrollmentError('invalid', 'worker name must not be empty');

  let token: ReturnType<typeof parseBootstrapToken>;
  try {
    token = parseBootstrapToken(options.token.trim());
  } catch (error) {
    throw new EnrollmentError('bad-token', `the bootstrap token is malformed: ${(error as Error).message}`, { cause: error });
  }

  const machineId = options.machineId ?? existing?.machineId ?? (await resolveMachineId(dataDir));
  const { keyPem, csrPem } = await createKeyAndCsr({ commonName: name });
  const request = { protocolVersion: PROTOCOL_VERSION, bootstrapToken: options.token.trim(), name, machineId, csrPem };

  // Each controller in turn until one answers. Only "cannot reach it" moves on: a CA mismatch or
  // a refusal is an answer, and the same token would meet the same verdict elsewhere.
  const unreachable: EnrollmentError[] = [];
  let answered: { controller: string; caPem: string; response: EnrollResponse__Output } | undefined;
  for (const controller of given) {
    try {
      const caPem = await pinnedCa(controller, token.caFingerprint, timeoutMs, log);
      const response = await callEnroll({ controller, caPem, timeoutMs, request });
      answered = { controller, caPem, response };
      break;
    } catch (error) {
      if (!(error instanceof EnrollmentError) || !error.tryNext) throw error;
      unreachable.push(error);
      if (given.length > 1) log.warn({ controller, err: error.message }, 'controller unreachable; trying the next one');
    }
  }
  if (!answered) {
    const last = unreachable.at(-1)!;
    if (unreachable.length === 1) throw last;
    throw new EnrollmentError('unreachable', `cannot reach any of the ${unreachable.length} controllers: ${unreachable.map((e) => e.message).join('; ')}`, { cause: last });
  }
  const { controller, caPem, response } = answered;

  // The CA we keep must be the pinned one, whatever the response says.
  if (response.caCertificatePem && !sameFingerprint(certificateFingerprint(response.caCertificatePem), token.caFingerprint)) {
    throw new EnrollmentError('fingerprint-mismatch', 'the controller returned a CA certificate that differs from the pinned one; refusing to store it');
  }
  if (!response.clientCertificatePem || !response.workerId) {
    throw new EnrollmentError('failed', 'the controller answered Enroll without a worker id or client certificate');
  }

  const announced = sanitizeControllerAddresses(response.controllerAddresses ?? []);
  if (announced.rejected.length) log.warn({ controller, rejected: announced.rejected }, 'ignored malformed controller addresses in the Enroll answer');
  const identity: WorkerIdentity = {
    workerId: response.workerId,
    name: response.workerName || name,
    controller,
    // The one that answered first: the link dials the list in order.
    controllers: uniqueAddresses([controller, ...given, ...announced.valid]).slice(0, MAX_CONTROLLER_ADDRESSES),
    machineId,
    enrolledAt: new Date().toISOString(),
  };
  await store.save({ identity, keyPem, certPem: response.clientCertificatePem, caPem });
  log.info({ workerId: identity.workerId, name: identity.name, controller, controllers: identity.controllers, dataDir }, 'worker enrolled');
  return { ...identity, dataDir };
}

/** Step 2 for one controller: its CA, checked against the token's fingerprint. */
async function pinnedCa(controller: string, caFingerprint: string, timeoutMs: number, log: Logger): Promise<string> {
  const { host, port } = parseHostPort(controller);
  log.debug({ controller }, 'fetching the controller CA and checking it against the token fingerprint');
  try {
    return await fetchPinnedCaCertificate({ host, port, expectedCaFingerprint: caFingerprint, timeoutMs });
  } catch (error) {
    if (error instanceof FingerprintMismatchError) {
      throw new EnrollmentError(
        'fingerprint-mismatch',
        `the controller at ${controller} does not present the CA pinned by the bootstrap token (refusing to send the token): ${error.message}`,
        { cause: error },
      );
    }
    throw new EnrollmentError('unreachable', `cannot reach the controller at ${controller}: ${(error as Error).message}`, { cause: error, tryNext: true });
  }
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
      return new EnrollmentError('unreachable', `cannot reach the controller at ${call.controller}: ${details}`, { cause: error, tryNext: true });
    case grpc.status.DEADLINE_EXCEEDED:
      // Not tried elsewhere: this controller may have taken the token (a single-use token would
      // then be refused by the next one, hiding what happened).
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
