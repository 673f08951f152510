import { X509Certificate as NodeX509, createPrivateKey } from 'node:crypto';
import tls from 'node:tls';
import * as x509 from '@peculiar/x509';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  PkiError,
  certificateFingerprint,
  createCertificateAuthority,
  fingerprintOfDer,
  issueServerCertificate,
  normalizeFingerprint,
  verifyIssuedBy,
  type KeyAndCert,
} from './index.ts';
import { startTlsServer, tlsRequest } from './test-helpers.ts';

const DAY = 86_400_000;

let ca: KeyAndCert;
let server: KeyAndCert;

beforeAll(async () => {
  ca = await createCertificateAuthority({ commonName: 'Fleet test CA' });
  server = await issueServerCertificate(ca, {
    commonName: 'fleet-controller',
    dnsNames: ['controller.example.test', 'fleet-controller'],
    ipAddresses: ['10.1.2.3', 'fd00::7'],
  });
});

describe('createCertificateAuthority', () => {
  it('creates a self-signed ECDSA P-256 CA valid for ~10 years with a PKCS#8 key', async () => {
    const cert = new NodeX509(ca.certPem);
    expect(cert.ca).toBe(true);
    expect(cert.subject).toBe('CN=Fleet test CA');
    expect(cert.issuer).toBe(cert.subject);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.publicKey.asymmetricKeyType).toBe('ec');
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const days = (Date.parse(cert.validTo) - Date.now()) / DAY;
    expect(days).toBeGreaterThan(3649);
    expect(days).toBeLessThanOrEqual(3650);
    expect(ca.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(cert.checkPrivateKey(createPrivateKey(ca.keyPem))).toBe(true);

    const parsed = new x509.X509Certificate(ca.certPem);
    const basic = parsed.getExtension(x509.BasicConstraintsExtension);
    expect(basic?.critical).toBe(true);
    expect(basic?.pathLength).toBe(0);
    const ku = parsed.getExtension(x509.KeyUsagesExtension);
    expect(ku!.usages & x509.KeyUsageFlags.keyCertSign).toBeTruthy();
  });

  it('honours validDays and rejects bad input', async () => {
    const short = await createCertificateAuthority({ commonName: 'short', validDays: 2 });
    const days = (Date.parse(new NodeX509(short.certPem).validTo) - Date.now()) / DAY;
    expect(days).toBeGreaterThan(1.9);
    expect(days).toBeLessThanOrEqual(2);
    await expect(createCertificateAuthority({ commonName: '' })).rejects.toThrow(PkiError);
    await expect(createCertificateAuthority({ commonName: 'x'.repeat(65) })).rejects.toThrow(/too long/);
    await expect(createCertificateAuthority({ commonName: 'ok', validDays: 0 })).rejects.toThrow(/validDays/);
  });
});

describe('issueServerCertificate', () => {
  it('puts the default and the given names in the SAN, serverAuth EKU, and chains to the CA', async () => {
    const cert = new NodeX509(server.certPem);
    expect(cert.ca).toBe(false);
    expect(cert.subject).toBe('CN=fleet-controller');
    expect(cert.checkIssued(new NodeX509(ca.certPem))).toBe(true);
    expect(cert.verify(new NodeX509(ca.certPem).publicKey)).toBe(true);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    const san = cert.subjectAltName!.split(', ');
    expect(san).toEqual([
      'DNS:fleet-controller',
      'DNS:localhost',
      'DNS:controller.example.test',
      'IP Address:127.0.0.1',
      'IP Address:0:0:0:0:0:0:0:1',
      'IP Address:10.1.2.3',
      'IP Address:FD00:0:0:0:0:0:0:7',
    ]);
    const days = (Date.parse(cert.validTo) - Date.now()) / DAY;
    expect(days).toBeGreaterThan(824);
    expect(days).toBeLessThanOrEqual(825);
    expect(cert.checkPrivateKey(createPrivateKey(server.keyPem))).toBe(true);
    expect(await verifyIssuedBy(server.certPem, ca.certPem)).toBe(true);
  });

  it('passes Node hostname checks for fleet-controller, localhost, loopback IPs and extra names', () => {
    const peer = new NodeX509(server.certPem).toLegacyObject();
    for (const name of ['fleet-controller', 'localhost', '127.0.0.1', '::1', 'controller.example.test', '10.1.2.3', 'fd00::7']) {
      expect(tls.checkServerIdentity(name, peer), name).toBeUndefined();
    }
    expect(tls.checkServerIdentity('other.example.test', peer)).toBeInstanceOf(Error);
    expect(tls.checkServerIdentity('10.9.9.9', peer)).toBeInstanceOf(Error);
  });

  it('serves a chain (server + CA) that a Node TLS client trusting only the CA accepts', async () => {
    const srv = await startTlsServer({ key: server.keyPem, cert: server.certPem + ca.certPem });
    try {
      const res = await tlsRequest({ host: '127.0.0.1', port: srv.port, ca: ca.certPem, servername: 'fleet-controller' });
      expect(res.authorized).toBe(true);
      expect(res.data).toBe('hello\n');
      expect(res.serverCert.subject.CN).toBe('fleet-controller');
      // Without servername, Node checks the IP SAN.
      const byIp = await tlsRequest({ host: '127.0.0.1', port: srv.port, ca: ca.certPem });
      expect(byIp.authorized).toBe(true);
      // A client trusting a different CA refuses it.
      const other = await createCertificateAuthority({ commonName: 'Other CA' });
      await expect(tlsRequest({ host: '127.0.0.1', port: srv.port, ca: other.certPem, servername: 'fleet-controller' })).rejects.toThrow(
        /self-signed|unable to verify|issuer/i,
      );
      // …and so does one expecting another name.
      await expect(tlsRequest({ host: '127.0.0.1', port: srv.port, ca: ca.certPem, servername: 'evil.example.test' })).rejects.toThrow(
        /altnames|Hostname/i,
      );
    } finally {
      await srv.close();
    }
  });

  it('caps notAfter at the CA notAfter', async () => {
    const shortCa = await createCertificateAuthority({ commonName: 'short-lived CA', validDays: 10 });
    const s = await issueServerCertificate(shortCa, { commonName: 'fleet-controller', dnsNames: [], ipAddresses: [] });
    expect(new NodeX509(s.certPem).validTo).toBe(new NodeX509(shortCa.certPem).validTo);
  });

  it('rejects bad names, a non-CA issuer and a key that does not belong to the CA', async () => {
    const base = { commonName: 'fleet-controller', dnsNames: [] as string[], ipAddresses: [] as string[] };
    await expect(issueServerCertificate(ca, { ...base, dnsNames: ['bad name'] })).rejects.toThrow(/invalid DNS name/);
    await expect(issueServerCertificate(ca, { ...base, ipAddresses: ['300.1.1.1'] })).rejects.toThrow(/invalid IP address/);
    await expect(issueServerCertificate(server, base)).rejects.toThrow(/not a CA/);
    const other = await createCertificateAuthority({ commonName: 'Other CA' });
    await expect(issueServerCertificate({ certPem: ca.certPem, keyPem: other.keyPem }, base)).rejects.toThrow(/does not match/);
    await expect(issueServerCertificate({ certPem: ca.certPem, keyPem: 'nope' }, base)).rejects.toThrow(PkiError);
    await expect(issueServerCertificate({ certPem: 'nope', keyPem: ca.keyPem }, base)).rejects.toThrow(PkiError);
  });
});

describe('fingerprints', () => {
  it('is the SHA-256 of the first certificate DER, lowercase hex, as Node computes it', () => {
    const fp = certificateFingerprint(server.certPem + ca.certPem);
    expect(fp).toMatch(/^[0-9a-f]{64}$/);
    expect(fp).toBe(normalizeFingerprint(new NodeX509(server.certPem).fingerprint256));
    expect(fingerprintOfDer(new NodeX509(ca.certPem).raw)).toBe(certificateFingerprint(ca.certPem));
    expect(() => certificateFingerprint('not a pem')).toThrow(PkiError);
  });

  it('normalizeFingerprint accepts colon/uppercase forms and rejects others', () => {
    const fp = certificateFingerprint(ca.certPem);
    expect(normalizeFingerprint(fp.toUpperCase().match(/../g)!.join(':'))).toBe(fp);
    expect(() => normalizeFingerprint(fp.slice(2))).toThrow(/length/);
    expect(() => normalizeFingerprint('zz' + fp.slice(2))).toThrow(/hexadecimal/);
  });

  it('verifyIssuedBy is false for the wrong CA and for a certificate signed by another key under the same name', async () => {
    const other = await createCertificateAuthority({ commonName: 'Fleet test CA' }); // same subject, other key
    expect(await verifyIssuedBy(server.certPem, other.certPem)).toBe(false);
    const unrelated = await createCertificateAuthority({ commonName: 'Unrelated' });
    expect(await verifyIssuedBy(server.certPem, unrelated.certPem)).toBe(false);
    expect(await verifyIssuedBy(ca.certPem, ca.certPem)).toBe(true);
    await expect(verifyIssuedBy('junk', ca.certPem)).rejects.toThrow(PkiError);
  });
});
