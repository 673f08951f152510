// Enrollment and the first mTLS connection against a fake controller over REAL TLS:
// a CA and server certificate from @fleet/pki, a bootstrap token pinning the CA.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { certificateFingerprint, createCertificateAuthority, encodeBootstrapToken, generateSecret, type KeyAndCert } from '@fleet/pki';
import { PROTOCOL_VERSION } from '@fleet/proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestPki, startFakeController, type FakeController } from '../link/fake-controller.test-helper.ts';
import { silentLogger } from '../logger.ts';
import { startWorker } from '../worker.ts';
import { enrollWorker, EnrollmentError } from './enroll.ts';

let ca: KeyAndCert;
let token: string;
let fake: FakeController;
let dir: string;
const peerCommonNames: string[] = [];

beforeAll(async () => {
  const pki = await createTestPki();
  ca = pki.ca;
  token = pki.token;
  fake = await startFakeController({
    credentials: pki.serverCredentials,
    enroll: (request) => pki.enroll(request),
    onConnect: (stream) => {
      const cn = pki.peerName(stream);
      if (!cn) {
        stream.fail(grpc.status.UNAUTHENTICATED, 'client certificate required');
        return;
      }
      peerCommonNames.push(String(cn));
      stream.send({ welcome: { protocolVersion: 1, workerId: `wrk-${String(cn)}`, workerName: String(cn), controllerVersion: 'fake', heartbeatIntervalMs: 60_000 } });
    },
  });
  dir = await mkdtemp(join(tmpdir(), 'fleet-enroll-'));
});

afterAll(async () => {
  await fake.close();
  await rm(dir, { recursive: true, force: true });
});

async function enrollOk(opts: Partial<Parameters<typeof enrollWorker>[0]> & { dataDir: string }) {
  return enrollWorker({ controller: fake.address, token, name: 'mac-1', machineId: 'machine-1', logger: silentLogger(), ...opts });
}

describe('enrollWorker', () => {
  it('pins the CA, sends a CSR with the whole token, and stores the credential with safe file modes', async () => {
    const dataDir = join(dir, 'a');
    const result = await enrollOk({ dataDir });
    expect(result).toMatchObject({ workerId: 'wrk-mac-1', name: 'mac-1', controller: fake.address, machineId: 'machine-1', dataDir });

    const request = fake.enrollRequests.at(-1)!;
    expect(request).toMatchObject({ protocolVersion: PROTOCOL_VERSION, bootstrapToken: token, name: 'mac-1', machineId: 'machine-1' });
    expect(request.csrPem).toMatch(/BEGIN CERTIFICATE REQUEST/);

    const json = JSON.parse(await readFile(join(dataDir, 'worker.json'), 'utf8'));
    expect(json).toMatchObject({ workerId: 'wrk-mac-1', name: 'mac-1', controller: fake.address, machineId: 'machine-1' });
    expect(Date.parse(json.enrolledAt)).toBeGreaterThan(0);
    expect((await stat(join(dataDir, 'key.pem'))).mode & 0o777).toBe(0o600);
    expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
    expect(await readFile(join(dataDir, 'key.pem'), 'utf8')).toMatch(/PRIVATE KEY/);
    expect(certificateFingerprint(await readFile(join(dataDir, 'ca.pem'), 'utf8'))).toBe(certificateFingerprint(ca.certPem));
    expect(await readFile(join(dataDir, 'cert.pem'), 'utf8')).toMatch(/BEGIN CERTIFICATE/);
  });

  it('then connects over mTLS with the stored credential', async () => {
    const worker = await startWorker({ dataDir: join(dir, 'a'), logger: silentLogger(), synthetic: { speed: 0 } });
    try {
      const stream = await fake.stream(fake.streams.length === 0 ? 0 : fake.streams.length - 1);
      const hello = await stream.hello();
      expect(hello.machineId).toBe('machine-1');
      const deadline = Date.now() + 5000;
      while (!worker.connected() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(worker.connected()).toBe(true);
      expect(peerCommonNames).toContain('mac-1');
      expect(worker.workerId).toBe('wrk-mac-1');
    } finally {
      await worker.stop();
    }
  });

  it('refuses to replace an enrollment without force, and replaces it with force', async () => {
    const dataDir = join(dir, 'a');
    await expect(enrollOk({ dataDir })).rejects.toMatchObject({ code: 'already-enrolled', message: expect.stringMatching(/--force/) });
    const before = await readFile(join(dataDir, 'key.pem'), 'utf8');
    await enrollOk({ dataDir, force: true });
    expect(await readFile(join(dataDir, 'key.pem'), 'utf8')).not.toBe(before);
  });

  it('never sends the token to a controller whose CA does not match the pin', async () => {
    const other = await createCertificateAuthority({ commonName: 'Someone else' });
    const wrong = encodeBootstrapToken({ id: 'tok1', secret: generateSecret(), caFingerprint: certificateFingerprint(other.certPem) });
    const sent = fake.enrollRequests.length;
    const error = await enrollOk({ dataDir: join(dir, 'b'), token: wrong }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EnrollmentError);
    expect(error).toMatchObject({ code: 'fingerprint-mismatch' });
    expect(fake.enrollRequests.length).toBe(sent);
  });

  it('with several controllers, skips one that is down, stores the union with the announced ones (bad entries ignored)', async () => {
    const pki = await createTestPki();
    const down = await startFakeController();
    await down.close();
    const spare = await startFakeController();
    await spare.close();
    const up = await startFakeController({
      credentials: pki.serverCredentials,
      enroll: async (request) => {
        const answer = await pki.enroll(request);
        return 'code' in answer ? answer : { ...answer, controllerAddresses: [up.address, spare.address, 'not an address', 'x:0'] };
      },
    });
    try {
      const dataDir = join(dir, 'several');
      const result = await enrollWorker({ controller: [down.address, up.address], token: pki.token, name: 'mac-2', machineId: 'machine-2', dataDir, timeoutMs: 3000, logger: silentLogger() });
      expect(result.controller).toBe(up.address);
      expect(result.controllers).toEqual([up.address, down.address, spare.address]);
      expect(JSON.parse(await readFile(join(dataDir, 'worker.json'), 'utf8'))).toMatchObject({ controller: up.address, controllers: [up.address, down.address, spare.address] });
      expect(up.enrollRequests).toHaveLength(1);

      // Every one down: one error naming each.
      const error = await enrollWorker({ controller: `${down.address},${spare.address}`, token: pki.token, name: 'mac-3', machineId: 'm-3', dataDir: join(dir, 'none'), timeoutMs: 3000, logger: silentLogger() }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'unreachable' });
      expect((error as Error).message).toContain(down.address);
      expect((error as Error).message).toContain(spare.address);
    } finally {
      await up.close();
    }
  });

  it('does not try the next controller after a refusal (the token would meet the same verdict)', async () => {
    const other = await createTestPki();
    const second = await startFakeController({ credentials: other.serverCredentials, enroll: (r) => other.enroll(r) });
    try {
      const badSecret = encodeBootstrapToken({ id: 'tok1', secret: generateSecret(), caFingerprint: certificateFingerprint(ca.certPem) });
      await expect(enrollOk({ dataDir: join(dir, 'refused'), token: badSecret, controller: [fake.address, second.address] })).rejects.toMatchObject({ code: 'refused' });
      expect(second.enrollRequests).toHaveLength(0);
    } finally {
      await second.close();
    }
  });

  it('explains refusals: bad token, name taken, malformed token, unreachable controller', async () => {
    const badSecret = encodeBootstrapToken({ id: 'tok1', secret: generateSecret(), caFingerprint: certificateFingerprint(ca.certPem) });
    await expect(enrollOk({ dataDir: join(dir, 'c'), token: badSecret })).rejects.toMatchObject({ code: 'refused', message: expect.stringMatching(/expired, revoked or used up/) });
    await expect(enrollOk({ dataDir: join(dir, 'c'), name: 'taken' })).rejects.toMatchObject({ code: 'name-taken', message: expect.stringMatching(/belongs to another machine/) });
    await expect(enrollOk({ dataDir: join(dir, 'c'), token: 'not-a-token' })).rejects.toMatchObject({ code: 'bad-token' });
    await expect(enrollOk({ dataDir: join(dir, 'c'), controller: 'nope' })).rejects.toMatchObject({ code: 'invalid' });
    const closed = await startFakeController();
    await closed.close();
    await expect(enrollOk({ dataDir: join(dir, 'c'), controller: closed.address, timeoutMs: 3000 })).rejects.toMatchObject({ code: 'unreachable' });
    await expect(stat(join(dir, 'c', 'worker.json'))).rejects.toThrow(/ENOENT/);
  });
});
