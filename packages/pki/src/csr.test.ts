import { X509Certificate as NodeX509, createPrivateKey, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  PkiError,
  certificateFingerprint,
  createCertificateAuthority,
  createKeyAndCsr,
  issueServerCertificate,
  signClientCsr,
  verifyIssuedBy,
  type KeyAndCert,
} from './index.ts';
import { normaliseNodeFingerprint, startTlsServer, tlsRequest } from './test-helpers.ts';

const DAY = 86_400_000;
const wc = webcrypto as unknown as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[1];

let ca: KeyAndCert;
let server: KeyAndCert;

beforeAll(async () => {
  ca = await createCertificateAuthority({ commonName: 'Fleet test CA' });
  server = await issueServerCertificate(ca, { commonName: 'fleet-controller', dnsNames: [], ipAddresses: [] });
});

function pemOf(der: Uint8Array, label: string): string {
  return `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
}
function derOf(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

describe('createKeyAndCsr', () => {
  it('makes a P-256 PKCS#8 key and a self-signed CSR for it', async () => {
    const { keyPem, csrPem } = await createKeyAndCsr({ commonName: 'worker-1' });
    expect(keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(csrPem).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----\n/);
    const key = createPrivateKey(keyPem);
    expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const csr = new x509.Pkcs10CertificateRequest(csrPem);
    expect(csr.subject).toBe('CN=worker-1');
    expect(await csr.verify(wc)).toBe(true);
  });
});

describe('signClientCsr', () => {
  it('issues a clientAuth certificate with CN forced to the given id and a correct fingerprint', async () => {
    const { csrPem, keyPem } = await createKeyAndCsr({ commonName: 'i-want-to-be-admin' });
    const issued = await signClientCsr(ca, csrPem, { commonName: 'w-3k9x2m1q8z7a' });
    const cert = new NodeX509(issued.certPem);
    expect(cert.subject).toBe('CN=w-3k9x2m1q8z7a');
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(cert.checkPrivateKey(createPrivateKey(keyPem))).toBe(true);
    expect(await verifyIssuedBy(issued.certPem, ca.certPem)).toBe(true);
    expect(issued.fingerprint).toBe(certificateFingerprint(issued.certPem));
    expect(issued.fingerprint).toBe(normaliseNodeFingerprint(cert.fingerprint256));
    expect(issued.serial).toMatch(/^[0-9a-f]+$/);
    expect(issued.serial).toBe(cert.serialNumber.toLowerCase());
    expect(issued.notAfter.getTime()).toBe(Date.parse(cert.validTo));
    const days = (issued.notAfter.getTime() - Date.now()) / DAY;
    expect(days).toBeGreaterThan(364);
    expect(days).toBeLessThanOrEqual(365);
    // Different certificates get different serials.
    const again = await signClientCsr(ca, csrPem, { commonName: 'w-3k9x2m1q8z7a', validDays: 7 });
    expect(again.serial).not.toBe(issued.serial);
    expect((again.notAfter.getTime() - Date.now()) / DAY).toBeLessThanOrEqual(7);
  });

  it('is accepted by a real mTLS server, which sees the CN and the same fingerprint', async () => {
    const { csrPem, keyPem } = await createKeyAndCsr({ commonName: 'whatever' });
    const issued = await signClientCsr(ca, csrPem, { commonName: 'worker-abc' });
    const srv = await startTlsServer({
      key: server.keyPem,
      cert: server.certPem + ca.certPem,
      ca: ca.certPem,
      requestCert: true,
      rejectUnauthorized: true,
    });
    try {
      const res = await tlsRequest({ host: '127.0.0.1', port: srv.port, ca: ca.certPem, servername: 'fleet-controller', key: keyPem, cert: issued.certPem });
      expect(res.authorized).toBe(true);
      expect(res.data).toBe('hello\n');
      expect(srv.accepted).toHaveLength(1);
      const seen = srv.accepted[0]!;
      expect(seen.authorized).toBe(true);
      expect(seen.peer.subject.CN).toBe('worker-abc');
      expect(normaliseNodeFingerprint(seen.peer.fingerprint256)).toBe(issued.fingerprint);

      // A client certificate from another CA is refused by the same server.
      const otherCa = await createCertificateAuthority({ commonName: 'Other CA' });
      const rogue = await signClientCsr(otherCa, csrPem, { commonName: 'worker-abc' });
      // (With TLS 1.3 the client may see either an alert error or a bare close.)
      const outcome = await tlsRequest({ host: '127.0.0.1', port: srv.port, ca: ca.certPem, servername: 'fleet-controller', key: keyPem, cert: rogue.certPem }).then(
        (r) => r.data,
        (e: Error) => `error: ${e.message}`,
      );
      expect(outcome).not.toContain('hello');
      expect(srv.accepted).toHaveLength(1);
    } finally {
      await srv.close();
    }
  });

  it('ignores extensions requested in the CSR (no CA:true, no serverAuth)', async () => {
    const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
    const csr = await x509.Pkcs10CertificateRequestGenerator.create(
      {
        name: 'CN=sneaky',
        keys: keys as never,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        extensions: [
          new x509.BasicConstraintsExtension(true, 5, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
          new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'fleet-controller' }]),
        ],
      },
      wc,
    );
    const issued = await signClientCsr(ca, csr.toString('pem'), { commonName: 'worker-x' });
    const cert = new NodeX509(issued.certPem);
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(cert.subjectAltName).toBeUndefined();
  });

  it('accepts RSA-2048 CSRs and rejects weak RSA keys', async () => {
    const rsa = (bits: number) =>
      webcrypto.subtle.generateKey({ name: 'RSASSA-PKCS1-v1_5', modulusLength: bits, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, true, ['sign', 'verify']);
    const make = async (bits: number) =>
      (await x509.Pkcs10CertificateRequestGenerator.create({ name: 'CN=r', keys: (await rsa(bits)) as never, signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5' } }, wc)).toString('pem');
    const ok = await signClientCsr(ca, await make(2048), { commonName: 'rsa-worker' });
    expect(new NodeX509(ok.certPem).publicKey.asymmetricKeyType).toBe('rsa');
    await expect(signClientCsr(ca, await make(1024), { commonName: 'rsa-worker' })).rejects.toThrow(/invalid CSR: RSA key too small/);
  });

  it('rejects garbage with "invalid CSR: …"', async () => {
    const bad = [
      '',
      'hello',
      '-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n',
      '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
      pemOf(new Uint8Array(300).fill(7), 'CERTIFICATE REQUEST'),
      ca.certPem, // a certificate, not a CSR
      'x'.repeat(20_000),
    ];
    for (const input of bad) {
      const err = await signClientCsr(ca, input, { commonName: 'w' }).catch((e: unknown) => e);
      expect(err, JSON.stringify(input.slice(0, 40))).toBeInstanceOf(PkiError);
      expect((err as Error).message).toMatch(/^invalid CSR: /);
    }
    // Not even a string.
    await expect(signClientCsr(ca, undefined as unknown as string, { commonName: 'w' })).rejects.toThrow(/^invalid CSR: /);
  });

  it('rejects tampered CSRs (subject changed after signing, or signature flipped)', async () => {
    const { csrPem } = await createKeyAndCsr({ commonName: 'worker-1' });
    const der = derOf(csrPem);
    const at = der.indexOf(Buffer.from('worker-1'));
    expect(at).toBeGreaterThan(0);
    const renamed = Buffer.from(der);
    renamed.write('worker-2', at, 'latin1');
    await expect(signClientCsr(ca, pemOf(renamed, 'CERTIFICATE REQUEST'), { commonName: 'w' })).rejects.toThrow(
      /^invalid CSR: signature does not verify/,
    );
    const flipped = Buffer.from(der);
    flipped[flipped.length - 3]! ^= 0x01; // inside the ECDSA signature's s value
    const err = await signClientCsr(ca, pemOf(flipped, 'CERTIFICATE REQUEST'), { commonName: 'w' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PkiError);
    expect((err as Error).message).toMatch(/^invalid CSR: /);
    // Someone else's public key under a valid-looking CSR: swap SPKI between two CSRs.
    const a = derOf((await createKeyAndCsr({ commonName: 'worker-1' })).csrPem);
    const b = derOf((await createKeyAndCsr({ commonName: 'worker-1' })).csrPem);
    const spkiA = new x509.Pkcs10CertificateRequest(new Uint8Array(a)).publicKey.rawData;
    const spkiB = new x509.Pkcs10CertificateRequest(new Uint8Array(b)).publicKey.rawData;
    const swapped = Buffer.from(a);
    swapped.set(new Uint8Array(spkiB), a.indexOf(Buffer.from(spkiA)));
    await expect(signClientCsr(ca, pemOf(swapped, 'CERTIFICATE REQUEST'), { commonName: 'w' })).rejects.toThrow(
      /^invalid CSR: signature does not verify/,
    );
  });

  it('validates commonName and the CA', async () => {
    const { csrPem } = await createKeyAndCsr({ commonName: 'w' });
    await expect(signClientCsr(ca, csrPem, { commonName: '' })).rejects.toThrow(/commonName/);
    await expect(signClientCsr(server, csrPem, { commonName: 'w' })).rejects.toThrow(/not a CA/);
    await expect(createKeyAndCsr({ commonName: 'a\nb' })).rejects.toThrow(/control characters/);
  });
});
