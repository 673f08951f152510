import { isIP } from 'node:net';
import { randomBytes, type webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { PkiError } from './errors.ts';
import { parseCertificate } from './fingerprint.ts';
import { crypto, exportPkcs8Pem, generateEcKeyPair, importSigningKey, type KeyPair } from './webcrypto.ts';

/** A certificate and its private key. `keyPem` is PKCS#8 ("BEGIN PRIVATE KEY"). */
export interface KeyAndCert {
  certPem: string;
  keyPem: string;
}

/** DNS name workers use to verify the controller (grpc `ssl_target_name_override`). */
export const CONTROLLER_TLS_NAME = 'fleet-controller';
/** Always put into controller server certificates, in addition to the caller's names. */
export const DEFAULT_SERVER_DNS_NAMES: readonly string[] = [CONTROLLER_TLS_NAME, 'localhost'];
export const DEFAULT_SERVER_IP_ADDRESSES: readonly string[] = ['127.0.0.1', '::1'];

const DAY_MS = 86_400_000;
/** notBefore is backdated a little so hosts with slightly slow clocks accept fresh certs. */
const BACKDATE_MS = 5 * 60_000;

export function assertCommonName(cn: unknown): asserts cn is string {
  if (typeof cn !== 'string' || cn.trim().length === 0) throw new PkiError('commonName must be a non-empty string');
  if (cn.length > 64) throw new PkiError(`commonName is too long (${cn.length} characters, max 64)`);
  if (/[\u0000-\u001f\u007f]/.test(cn)) throw new PkiError('commonName must not contain control characters');
}

export function validity(validDays: number | undefined, defaultDays: number, notAfterCap?: Date): { notBefore: Date; notAfter: Date } {
  const days = validDays ?? defaultDays;
  if (typeof days !== 'number' || !Number.isFinite(days) || days <= 0) throw new PkiError(`validDays must be a positive number, got ${String(days)}`);
  const now = Date.now();
  const notBefore = new Date(now - BACKDATE_MS);
  let notAfter = new Date(now + days * DAY_MS);
  // A certificate cannot usefully outlive its issuer: clamp to the CA's notAfter.
  if (notAfterCap && notAfter.getTime() > notAfterCap.getTime()) notAfter = new Date(notAfterCap.getTime());
  // X.509 times have second precision; keep Date values equal to what is encoded.
  notBefore.setUTCMilliseconds(0);
  notAfter.setUTCMilliseconds(0);
  return { notBefore, notAfter };
}

/** 16 random bytes, top bit cleared so the DER INTEGER is positive without padding. */
export function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString('hex');
}

export function nameWithCn(cn: string): x509.Name {
  return new x509.Name([{ CN: [cn] }]);
}

/** Self-signed ECDSA P-256 CA (basicConstraints CA:true pathlen:0, keyCertSign+cRLSign). */
export async function createCertificateAuthority(opts: { commonName: string; validDays?: number }): Promise<KeyAndCert> {
  assertCommonName(opts.commonName);
  const { notBefore, notAfter } = validity(opts.validDays, 3650);
  const keys = await generateEcKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerial(),
      name: nameWithCn(opts.commonName),
      notBefore,
      notAfter,
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return { certPem: cert.toString('pem') + '\n', keyPem: await exportPkcs8Pem(keys.privateKey) };
}

export interface LoadedCa {
  cert: x509.X509Certificate;
  signingKey: webcrypto.CryptoKey;
  signingAlgorithm: { name: 'ECDSA'; hash: string };
}

export async function loadCa(ca: KeyAndCert): Promise<LoadedCa> {
  if (!ca || typeof ca.certPem !== 'string' || typeof ca.keyPem !== 'string') throw new PkiError('CA must be { certPem, keyPem }');
  const cert = parseCertificate(ca.certPem, 'CA certificate');
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  if (!basic?.ca) throw new PkiError('CA certificate is not a CA (basicConstraints CA:true missing)');
  const { key, signingAlgorithm } = await importSigningKey(ca.keyPem);
  // Make sure the key belongs to the certificate before signing anything with it.
  const probe = new Uint8Array(randomBytes(32));
  const sig = await crypto.subtle.sign(signingAlgorithm, key, probe);
  const pub = await cert.publicKey.export({ ...cert.publicKey.algorithm, ...signingAlgorithm }, ['verify'], crypto);
  if (!(await crypto.subtle.verify(signingAlgorithm, pub, sig, probe))) throw new PkiError('CA private key does not match the CA certificate');
  return { cert, signingKey: key, signingAlgorithm };
}

export async function issueCertificate(
  ca: LoadedCa,
  params: { commonName: string; publicKey: x509.PublicKey | webcrypto.CryptoKey; validDays: number | undefined; defaultDays: number; extensions: x509.Extension[] },
): Promise<x509.X509Certificate> {
  const { notBefore, notAfter } = validity(params.validDays, params.defaultDays, ca.cert.notAfter);
  return x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: nameWithCn(params.commonName),
      issuer: ca.cert.subjectName,
      notBefore,
      notAfter,
      publicKey: params.publicKey,
      signingKey: ca.signingKey,
      signingAlgorithm: ca.signingAlgorithm,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        ...params.extensions,
        await x509.SubjectKeyIdentifierExtension.create(params.publicKey, false, crypto),
        await x509.AuthorityKeyIdentifierExtension.create(ca.cert.publicKey, false, crypto),
      ],
    },
    crypto,
  );
}

function uniq(values: Iterable<string>): string[] {
  return [...new Set(values)];
}

/**
 * ECDSA P-256 TLS server certificate signed by `ca`. The SAN always contains
 * DNS fleet-controller and localhost and IP 127.0.0.1 and ::1, plus the given
 * names/addresses (deduplicated). EKU serverAuth. notAfter is clamped to the CA's.
 */
export async function issueServerCertificate(
  ca: KeyAndCert,
  opts: { commonName: string; dnsNames: string[]; ipAddresses: string[]; validDays?: number },
): Promise<KeyAndCert> {
  assertCommonName(opts.commonName);
  const dnsNames = uniq([...DEFAULT_SERVER_DNS_NAMES, ...(opts.dnsNames ?? []).map((n) => n.trim().toLowerCase())]);
  for (const name of dnsNames) {
    if (!/^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$/.test(name) || name.length > 253) {
      throw new PkiError(`invalid DNS name for server certificate: ${JSON.stringify(name)}`);
    }
  }
  const ipAddresses = uniq([...DEFAULT_SERVER_IP_ADDRESSES, ...(opts.ipAddresses ?? []).map((a) => a.trim())]);
  for (const ip of ipAddresses) {
    if (isIP(ip) === 0) throw new PkiError(`invalid IP address for server certificate: ${JSON.stringify(ip)}`);
  }
  const loaded = await loadCa(ca);
  const keys: KeyPair = await generateEcKeyPair();
  const cert = await issueCertificate(loaded, {
    commonName: opts.commonName,
    publicKey: keys.publicKey,
    validDays: opts.validDays,
    defaultDays: 825,
    extensions: [
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
        ...ipAddresses.map((value) => ({ type: 'ip' as const, value })),
      ]),
    ],
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: await exportPkcs8Pem(keys.privateKey) };
}
