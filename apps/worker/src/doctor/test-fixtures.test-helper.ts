// Real certificates for the doctor tests: a CA, a client certificate stored in a data dir the way
// enrollment stores it, and a TLS server standing in for the controller.
import { mkdtemp } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { createCertificateAuthority, createKeyAndCsr, issueServerCertificate, signClientCsr, type KeyAndCert } from '@fleet/pki';
import { CredentialStore, type StoredCredentials } from '../config/credentials.ts';

export async function enrolledDataDir(opts: { ca?: KeyAndCert; validDays?: number; controller?: string; controllers?: string[] } = {}): Promise<{ dataDir: string; ca: KeyAndCert; credentials: StoredCredentials }> {
  const ca = opts.ca ?? (await createCertificateAuthority({ commonName: 'doctor test CA' }));
  const { keyPem, csrPem } = await createKeyAndCsr({ commonName: 'mac-01' });
  const issued = await signClientCsr(ca, csrPem, { commonName: 'mac-01', ...(opts.validDays !== undefined ? { validDays: opts.validDays } : {}) });
  const dataDir = path.join(await mkdtemp(path.join(tmpdir(), 'fleet-doctor-')), 'data');
  const credentials: StoredCredentials = {
    identity: {
      workerId: 'wrk-1',
      name: 'mac-01',
      controller: opts.controllers?.[0] ?? opts.controller ?? '127.0.0.1:1',
      controllers: opts.controllers ?? [opts.controller ?? '127.0.0.1:1'],
      machineId: 'm-1',
      enrolledAt: new Date().toISOString(),
    },
    keyPem,
    certPem: issued.certPem,
    caPem: ca.certPem,
  };
  await new CredentialStore(dataDir).save(credentials);
  return { dataDir, ca, credentials };
}

/** A TLS server like the controller's gRPC port: server certificate from `ca`, client certificates required. */
export async function startTlsController(ca: KeyAndCert, clientCa: string = ca.certPem): Promise<{ address: string; close: () => Promise<void> }> {
  const server = await issueServerCertificate(ca, { commonName: 'fleet-controller', dnsNames: [], ipAddresses: [] });
  const srv = tls.createServer({ key: server.keyPem, cert: server.certPem, ca: clientCa, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'] }, (socket) => {
    socket.on('error', () => {});
  });
  srv.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  return { address: `127.0.0.1:${port}`, close: () => new Promise((resolve) => srv.close(() => resolve())) };
}
