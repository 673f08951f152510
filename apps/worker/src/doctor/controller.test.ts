import net from 'node:net';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { certificateFingerprint, createCertificateAuthority } from '@fleet/pki';
import { describe, expect, it } from 'vitest';
import { checkController, checkControllers } from './controller.ts';
import { enrolledDataDir, startTlsController } from './test-fixtures.test-helper.ts';

describe('controller check', () => {
  it('passes when the controller presents a certificate from the pinned CA and accepts the client certificate', async () => {
    const { dataDir, ca, credentials } = await enrolledDataDir();
    const server = await startTlsController(ca);
    try {
      const r = await checkController({ address: server.address, caPem: credentials.caPem, keyPem: credentials.keyPem, certPem: credentials.certPem });
      expect(r.status).toBe('ok');
      expect(r.detail).toContain('TLS handshake ok');
    } finally {
      await server.close();
      await rm(path.dirname(dataDir), { recursive: true, force: true });
    }
  });

  it('fails naming both fingerprints when the controller is signed by another CA', async () => {
    const { dataDir, credentials } = await enrolledDataDir();
    const otherCa = await createCertificateAuthority({ commonName: 'impostor CA' });
    const server = await startTlsController(otherCa, credentials.caPem);
    try {
      const r = await checkController({ address: server.address, caPem: credentials.caPem, keyPem: credentials.keyPem, certPem: credentials.certPem });
      expect(r.status).toBe('fail');
      expect(r.detail).toContain(`ca.pem sha256 ${certificateFingerprint(credentials.caPem)}`);
      expect(r.detail).toMatch(/sha256 [0-9a-f]{64} is issued by "impostor CA"/);
      expect(r.fix).toContain('re-enroll');
    } finally {
      await server.close();
      await rm(path.dirname(dataDir), { recursive: true, force: true });
    }
  });

  it('fails when the controller does not accept the client certificate', async () => {
    const { dataDir, ca, credentials } = await enrolledDataDir();
    const otherClientCa = await createCertificateAuthority({ commonName: 'other client CA' });
    const server = await startTlsController(ca, otherClientCa.certPem);
    try {
      const r = await checkController({ address: server.address, caPem: credentials.caPem, keyPem: credentials.keyPem, certPem: credentials.certPem });
      expect(r.status).toBe('fail');
      expect(r.detail).toContain('TLS handshake');
    } finally {
      await server.close();
      await rm(path.dirname(dataDir), { recursive: true, force: true });
    }
  });

  it('fails within the timeout on a closed port and on an unresolvable name', async () => {
    const { dataDir, credentials } = await enrolledDataDir();
    // A port that was just free: nothing listens there.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    try {
      const started = Date.now();
      const r = await checkController({ address: `127.0.0.1:${port}`, caPem: credentials.caPem, keyPem: credentials.keyPem, certPem: credentials.certPem, stepTimeoutMs: 1_000 });
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(r.status).toBe('fail');
      expect(r.detail).toContain('does not accept TCP connections: ECONNREFUSED');
      const dns = await checkController({ address: 'no-such-host.invalid:7443', caPem: credentials.caPem, keyPem: credentials.keyPem, certPem: credentials.certPem, stepTimeoutMs: 1_000 });
      expect(dns.status).toBe('fail');
      expect(dns.detail).toContain('no-such-host.invalid does not resolve');
    } finally {
      await rm(path.dirname(dataDir), { recursive: true, force: true });
    }
  });

  it('several controllers: ok when all answer, a warning naming the failing one when some do, a failure when none does', async () => {
    const { dataDir, ca, credentials } = await enrolledDataDir();
    const server = await startTlsController(ca);
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const down = `127.0.0.1:${(closed.address() as net.AddressInfo).port}`;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const pems = { caPem: credentials.caPem, keyPem: credentials.keyPem, certPem: credentials.certPem, stepTimeoutMs: 2000 };
    try {
      const second = await startTlsController(ca);
      try {
        const all = await checkControllers({ ...pems, addresses: [server.address, second.address] });
        expect(all.status).toBe('ok');
        expect(all.detail).toMatch(/^2 of 2 controllers answer: ok /);
      } finally {
        await second.close();
      }
      const some = await checkControllers({ ...pems, addresses: [down, server.address] });
      expect(some.status).toBe('warn');
      expect(some.detail).toContain('1 of 2 controllers answer');
      expect(some.detail).toContain(`FAILED ${down}: `);
      expect(some.detail).toContain(`ok ${server.address} (127.0.0.1): TLS handshake ok`);
      expect(some.fix).toContain(`${down}: `);
      const none = await checkControllers({ ...pems, addresses: [down] });
      expect(none.status).toBe('fail');
    } finally {
      await server.close();
      await rm(path.dirname(dataDir), { recursive: true, force: true });
    }
  });
});
