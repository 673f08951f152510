// Client-certificate renewal over real gRPC/TLS: a worker whose certificate is due (its
// clock is moved forward) renews it with its current one, stores the new pair, and the
// controller retires the old credential the first time the new one is used; a raw
// client holding the old certificate is then refused.
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { certificateFingerprint } from '@fleet/pki';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type ControllerHandle } from '@fleet/controller';
import { enrollWorker, silentLogger, startWorker } from '@fleet/worker';
import { loadFleetProto, type RenewCertificateResponse__Output } from '@fleet/proto';
import { ApiClient, removeDir, tempDir, waitUntil } from './support/fleet-processes.ts';

let controller: ControllerHandle;
let api: ApiClient;
const dirs: string[] = [];
const DAY = 86_400_000;

beforeAll(async () => {
  const dataDir = await tempDir('ctl-renew');
  dirs.push(dataDir);
  controller = await startController({ dataDir, apiPort: 0, grpcPort: 0, grpcHost: '127.0.0.1', logLevel: 'silent', heartbeatIntervalMs: 500 });
  api = new ApiClient(controller.apiUrl, controller.adminToken);
});
afterAll(async () => {
  await controller?.stop();
  await Promise.all(dirs.map(removeDir));
});

function renewWith(creds: grpc.ChannelCredentials, csrPem: string): Promise<RenewCertificateResponse__Output> {
  const Client = loadFleetProto().WorkerService;
  const client = new Client(controller.grpcAddress, creds, { 'grpc.ssl_target_name_override': 'fleet-controller' });
  return new Promise((resolve, reject) => {
    client.RenewCertificate({ csrPem }, { deadline: Date.now() + 10_000 }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res!);
    });
  });
}

describe('worker certificate renewal', () => {
  it('renews a certificate that is due, keeps the worker online, and retires the old credential once the new one is used', async () => {
    const dataDir = await tempDir('w-renew');
    dirs.push(dataDir);
    const { token } = await api.createBootstrapToken();
    await enrollWorker({ controller: controller.grpcAddress, token, name: 'renew-1', dataDir, logger: silentLogger() });
    const file = (f: string) => readFile(path.join(dataDir, f), 'utf8');
    const oldCert = await file('cert.pem');
    const oldKey = await file('key.pem');
    const ca = await file('ca.pem');

    // 300 days on, a 365-day certificate is due (less than a third of its life left).
    const worker = await startWorker({ dataDir, logger: silentLogger(), certificateRenewal: { now: () => new Date(Date.now() + 300 * DAY) } });
    try {
      await waitUntil(async () => (await api.ok('GET', '/v1/events?kind=worker.certificate-renewed')).events.length === 1, 20_000, 'renewal event');
      // The controller records the event before it answers; the worker stores the pair after.
      await waitUntil(async () => (await file('cert.pem')) !== oldCert, 10_000, 'renewed certificate stored');
      const newCert = await file('cert.pem');
      expect(await file('key.pem')).not.toBe(oldKey);
      const creds = await controller.db.workerCredential.findMany({ where: { worker: { name: 'renew-1' } }, orderBy: { createdAt: 'asc' } });
      expect(creds.map((c) => c.fingerprint)).toEqual([certificateFingerprint(oldCert), certificateFingerprint(newCert)]);
      expect(creds.every((c) => c.revokedAt === null)).toBe(true); // the old one stays valid until the new one is used
      const view = await api.worker('renew-1');
      expect(view?.status).toBe('online');
      expect(view?.certificateExpiresAt).toBe(new Date(new X509Certificate(newCert).validTo).toISOString());
    } finally {
      await worker.stop();
    }

    // The restarted worker connects with the new certificate; that retires the old one.
    const again = await startWorker({ dataDir, logger: silentLogger() });
    try {
      await waitUntil(async () => again.connected(), 20_000, 'reconnected with the renewed certificate');
      await waitUntil(async () => (await controller.db.workerCredential.count({ where: { worker: { name: 'renew-1' }, revokedAt: { not: null } } })) === 1, 10_000, 'old credential revoked');
    } finally {
      await again.stop();
    }
    const oldCreds = grpc.credentials.createSsl(Buffer.from(ca), Buffer.from(oldKey), Buffer.from(oldCert));
    const { createKeyAndCsr } = await import('@fleet/pki');
    const { csrPem } = await createKeyAndCsr({ commonName: 'renew-1' });
    await expect(renewWith(oldCreds, csrPem)).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED, details: expect.stringMatching(/revoked/) });
  });

  it('refuses a renewal without a client certificate, and a malformed CSR', async () => {
    const dataDir = await tempDir('w-renew-bad');
    dirs.push(dataDir);
    const { token } = await api.createBootstrapToken();
    await enrollWorker({ controller: controller.grpcAddress, token, name: 'renew-2', dataDir, logger: silentLogger() });
    const file = (f: string) => readFile(path.join(dataDir, f));
    const anonymous = grpc.credentials.createSsl(await file('ca.pem'));
    await expect(renewWith(anonymous, 'x')).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    const creds = grpc.credentials.createSsl(await file('ca.pem'), await file('key.pem'), await file('cert.pem'));
    await expect(renewWith(creds, '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n')).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(renewWith(creds, '')).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    expect(await controller.db.workerCredential.count({ where: { worker: { name: 'renew-2' } } })).toBe(1);
  });
});
