import { webcrypto } from 'node:crypto';
import net, { type AddressInfo } from 'node:net';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  FingerprintMismatchError,
  PkiError,
  certificateFingerprint,
  createCertificateAuthority,
  fetchPinnedCaCertificate,
  issueServerCertificate,
  type KeyAndCert,
} from './index.ts';
import { startTlsServer, tlsRequest, type TestTlsServer } from './test-helpers.ts';

function derToPem(der: Uint8Array, label: string): string {
  return `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
}

let ca: KeyAndCert;
let caFp: string;
let server: KeyAndCert;
let srv: TestTlsServer;

beforeAll(async () => {
  ca = await createCertificateAuthority({ commonName: 'Fleet test CA' });
  caFp = certificateFingerprint(ca.certPem);
  server = await issueServerCertificate(ca, { commonName: 'fleet-controller', dnsNames: [], ipAddresses: [] });
  // ALPNProtocols: like grpc-js's http2 server, only h2.
  srv = await startTlsServer({ key: server.keyPem, cert: server.certPem + ca.certPem, ALPNProtocols: ['h2'] });
});
afterAll(async () => {
  await srv?.close();
});

describe('fetchPinnedCaCertificate', () => {
  it('returns the CA certificate whose fingerprint is pinned, usable as a trust anchor', async () => {
    const pem = await fetchPinnedCaCertificate({ host: '127.0.0.1', port: srv.port, expectedCaFingerprint: caFp });
    expect(certificateFingerprint(pem)).toBe(caFp);
    expect(pem.replace(/\s+/g, '')).toBe(ca.certPem.replace(/\s+/g, ''));
    const res = await tlsRequest({ host: '127.0.0.1', port: srv.port, ca: pem, servername: 'fleet-controller' });
    expect(res.authorized).toBe(true);
    // Colon-separated uppercase pins (as printed by openssl) work too.
    const colons = caFp.toUpperCase().match(/../g)!.join(':');
    expect(certificateFingerprint(await fetchPinnedCaCertificate({ host: 'localhost', port: srv.port, expectedCaFingerprint: colons }))).toBe(caFp);
  });

  it('throws FingerprintMismatchError listing the presented fingerprints for a wrong pin', async () => {
    const wrong = certificateFingerprint((await createCertificateAuthority({ commonName: 'Other' })).certPem);
    const err = await fetchPinnedCaCertificate({ host: '127.0.0.1', port: srv.port, expectedCaFingerprint: wrong }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FingerprintMismatchError);
    expect(err).toBeInstanceOf(PkiError);
    const msg = (err as Error).message;
    expect(msg).toContain(wrong);
    expect(msg).toContain(caFp);
    expect(msg).toContain(certificateFingerprint(server.certPem));
    expect(msg).toContain(`127.0.0.1:${srv.port}`);
  });

  it('rejects a server that appends the (public) pinned CA to a leaf from another CA', async () => {
    // Node links issuerCertificate by name/key id, so the stray CA is not even part of the walked chain.
    const attackerCa = await createCertificateAuthority({ commonName: 'Fleet test CA' });
    const attackerLeaf = await issueServerCertificate(attackerCa, { commonName: 'fleet-controller', dnsNames: [], ipAddresses: [] });
    const evil = await startTlsServer({ key: attackerLeaf.keyPem, cert: attackerLeaf.certPem + ca.certPem });
    try {
      const err = await fetchPinnedCaCertificate({ host: '127.0.0.1', port: evil.port, expectedCaFingerprint: caFp }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FingerprintMismatchError);
      expect((err as Error).message).toContain(certificateFingerprint(attackerLeaf.certPem));
    } finally {
      await evil.close();
    }
  });

  it('rejects a forged leaf that names the pinned CA as issuer (same issuer DN and key id) but is signed by another key', async () => {
    const realCa = new x509.X509Certificate(ca.certPem);
    const attackerKeys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
    const leafKeys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
    const forged = await x509.X509CertificateGenerator.create(
      {
        subject: 'CN=fleet-controller',
        issuer: realCa.subjectName,
        publicKey: leafKeys.publicKey as never,
        signingKey: attackerKeys.privateKey as never,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        extensions: [new x509.AuthorityKeyIdentifierExtension(realCa.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId)],
      },
      webcrypto as never,
    );
    const leafKeyPem = derToPem(new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey)), 'PRIVATE KEY');
    const evil = await startTlsServer({ key: leafKeyPem, cert: forged.toString('pem') + '\n' + ca.certPem });
    try {
      const err = await fetchPinnedCaCertificate({ host: '127.0.0.1', port: evil.port, expectedCaFingerprint: caFp }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FingerprintMismatchError);
      expect((err as Error).message).toMatch(/presented the pinned CA .* but its server certificate [0-9a-f]{64} is not signed by that CA/);
    } finally {
      await evil.close();
    }
  });

  it('rejects a server that sends only its leaf', async () => {
    const leafOnly = await startTlsServer({ key: server.keyPem, cert: server.certPem });
    try {
      const err = await fetchPinnedCaCertificate({ host: '127.0.0.1', port: leafOnly.port, expectedCaFingerprint: caFp }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FingerprintMismatchError);
      expect((err as Error).message).toContain(certificateFingerprint(server.certPem));
    } finally {
      await leafOnly.close();
    }
  });

  it('throws PkiError naming host:port when nothing listens', async () => {
    const tmp = net.createServer();
    await new Promise<void>((r) => tmp.listen(0, '127.0.0.1', r));
    const port = (tmp.address() as AddressInfo).port;
    await new Promise<void>((r) => tmp.close(() => r()));
    const err = await fetchPinnedCaCertificate({ host: '127.0.0.1', port, expectedCaFingerprint: caFp }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PkiError);
    expect(err).not.toBeInstanceOf(FingerprintMismatchError);
    expect((err as Error).message).toContain(`127.0.0.1:${port}`);
    expect((err as Error).message).toMatch(/ECONNREFUSED/);
  });

  it('times out (PkiError naming host:port) against a server that never speaks TLS', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as AddressInfo).port;
    try {
      const started = Date.now();
      const err = await fetchPinnedCaCertificate({ host: '127.0.0.1', port, expectedCaFingerprint: caFp, timeoutMs: 300 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PkiError);
      expect((err as Error).message).toMatch(new RegExp(`timed out after 300 ms .*127\\.0\\.0\\.1:${port}`));
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  it('fails cleanly against a server that is not TLS', async () => {
    const sockets: net.Socket[] = [];
    const plain = net.createServer((s) => {
      sockets.push(s);
      s.on('error', () => {});
      s.end('HTTP/1.1 400 Bad Request\r\n\r\n');
    });
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
    const port = (plain.address() as AddressInfo).port;
    try {
      const err = await fetchPinnedCaCertificate({ host: '127.0.0.1', port, expectedCaFingerprint: caFp, timeoutMs: 3000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PkiError);
      expect((err as Error).message).toContain(`127.0.0.1:${port}`);
      expect((err as Error).message).toMatch(/TLS handshake failed \(wrong version number\)/);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => plain.close(() => r()));
    }
  });

  it('validates its arguments', async () => {
    await expect(fetchPinnedCaCertificate({ host: '127.0.0.1', port: srv.port, expectedCaFingerprint: 'abc' })).rejects.toThrow(/fingerprint length/);
    await expect(fetchPinnedCaCertificate({ host: '127.0.0.1', port: 0, expectedCaFingerprint: caFp })).rejects.toThrow(/invalid port/);
  });
});
