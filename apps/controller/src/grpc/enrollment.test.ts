// Enrollment (issue 16): the bootstrap token is checked before anything about the name is
// revealed, and an enrollment that fails (malformed CSR) does not use up one of its uses.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createKeyAndCsr } from '@fleet/pki';
import type { EnrollRequest__Output, EnrollResponse } from '@fleet/proto';
import { tempDb, type TempDb } from '../storage/testing.ts';
import { loadOrCreateIdentity } from '../identity/controller-identity.ts';
import { TokenService } from '../auth/token-service.ts';
import { EventLog } from '../events/event-log.ts';
import { workerHandlers, type WorkerGrpcDeps } from './worker-grpc-server.ts';
import { PROTOCOL_VERSION } from '@fleet/proto';

let t: TempDb;
let dir: string;
let tokens: TokenService;
let enroll: (req: Partial<EnrollRequest__Output>) => Promise<{ ok: EnrollResponse } | { code: number; details: string }>;

beforeEach(async () => {
  t = await tempDb();
  dir = await mkdtemp(path.join(tmpdir(), 'fleet-enroll-'));
  const identity = await loadOrCreateIdentity({ dataDir: dir, extraNames: [] });
  const events = new EventLog(t.db);
  tokens = new TokenService(t.db, events, identity.caFingerprint);
  const log = pino({ level: 'silent' });
  const handlers = workerHandlers({ db: t.db, identity, tokens, events, log, heartbeatIntervalMs: 1000, fenceAfterMs: 5000 } as unknown as WorkerGrpcDeps);
  enroll = (req) =>
    new Promise((resolve) => {
      const request = { name: 'w1', machineId: 'machine-a', csrPem: '', bootstrapToken: '', protocolVersion: PROTOCOL_VERSION, ...req } as EnrollRequest__Output;
      (handlers.Enroll as unknown as (call: unknown, cb: (err: grpc.ServiceError | null, res?: EnrollResponse) => void) => void)({ request }, (err, res) => {
        resolve(err ? { code: err.code, details: err.details } : { ok: res! });
      });
    });
});
afterEach(async () => {
  await t.close();
  await rm(dir, { recursive: true, force: true });
});

const csr = async () => (await createKeyAndCsr({ commonName: 'fleet-worker' })).csrPem;

describe('enrollment', () => {
  it('checks the token before saying a name is taken: a probe without a valid token learns nothing', async () => {
    const { token } = await tokens.createBootstrapToken({ name: 'boot' }, 'test');
    expect(await enroll({ name: 'taken', bootstrapToken: token, csrPem: await csr() })).toHaveProperty('ok');
    const probe = await enroll({ name: 'taken', machineId: 'machine-b', bootstrapToken: 'fleet-bootstrap-garbage', csrPem: await csr() });
    expect(probe).toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    expect((probe as { details: string }).details).not.toMatch(/already enrolled|taken/);
    const free = await enroll({ name: 'free-name', machineId: 'machine-b', bootstrapToken: 'fleet-bootstrap-garbage', csrPem: await csr() });
    expect(free).toEqual(probe); // the same answer whether or not the name exists
    // With a valid token the conflict is reported.
    expect(await enroll({ name: 'taken', machineId: 'machine-b', bootstrapToken: token, csrPem: await csr() })).toMatchObject({ code: grpc.status.ALREADY_EXISTS, details: expect.stringMatching(/already enrolled from another machine/) });
  });

  it('a malformed CSR does not use up a use; the use is counted with the worker', async () => {
    const { token, row } = await tokens.createBootstrapToken({ name: 'once', uses: 1 }, 'test');
    for (const bad of ['not a csr', '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n']) {
      expect(await enroll({ name: 'w-bad', bootstrapToken: token, csrPem: bad })).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    }
    expect((await t.db.bootstrapToken.findUniqueOrThrow({ where: { id: row.id } })).usesLeft).toBe(1);
    expect(await t.db.worker.count({ where: { name: 'w-bad' } })).toBe(0);
    expect(await enroll({ name: 'w-good', bootstrapToken: token, csrPem: await csr() })).toHaveProperty('ok');
    expect((await t.db.bootstrapToken.findUniqueOrThrow({ where: { id: row.id } })).usesLeft).toBe(0);
    expect(await enroll({ name: 'w-third', machineId: 'machine-c', bootstrapToken: token, csrPem: await csr() })).toMatchObject({ code: grpc.status.UNAUTHENTICATED, details: expect.stringMatching(/no enrollments left/) });
  });

  it('a name conflict found with a valid token does not use up a use either', async () => {
    const { token: first } = await tokens.createBootstrapToken({ name: 'first' }, 'test');
    expect(await enroll({ name: 'dup', bootstrapToken: first, csrPem: await csr() })).toHaveProperty('ok');
    const { token, row } = await tokens.createBootstrapToken({ name: 'limited', uses: 2 }, 'test');
    expect(await enroll({ name: 'dup', machineId: 'machine-b', bootstrapToken: token, csrPem: await csr() })).toMatchObject({ code: grpc.status.ALREADY_EXISTS });
    expect((await t.db.bootstrapToken.findUniqueOrThrow({ where: { id: row.id } })).usesLeft).toBe(2);
  });
});
