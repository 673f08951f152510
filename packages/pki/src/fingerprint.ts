import { createHash } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { PkiError } from './errors.ts';
import { firstPemBlock, toArrayBuffer } from './pem.ts';
import { crypto } from './webcrypto.ts';

/** SHA-256 of DER bytes, lowercase hex without separators (64 characters). */
export function fingerprintOfDer(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex');
}

/** SHA-256 fingerprint (lowercase hex) of the first CERTIFICATE block in `pem`. */
export function certificateFingerprint(pem: string): string {
  return fingerprintOfDer(firstPemBlock(pem, 'CERTIFICATE'));
}

/**
 * Normalises a fingerprint as printed by other tools (`AA:BB:…` from Node's
 * `fingerprint256` or `openssl x509 -fingerprint`, any case) to 64 lowercase hex
 * characters. Throws PkiError if the result is not a SHA-256 fingerprint.
 */
export function normalizeFingerprint(fingerprint: string): string {
  const hex = String(fingerprint).trim().replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]*$/.test(hex)) throw new PkiError('fingerprint is not hexadecimal');
  if (hex.length !== 64) throw new PkiError(`bad fingerprint length: expected 64 hex characters (SHA-256), got ${hex.length}`);
  return hex;
}

export function parseCertificate(pem: string, what = 'certificate'): x509.X509Certificate {
  const der = firstPemBlock(pem, 'CERTIFICATE');
  try {
    return new x509.X509Certificate(toArrayBuffer(der));
  } catch (err) {
    throw new PkiError(`cannot parse ${what}: ${(err as Error).message}`);
  }
}

/**
 * True if the first certificate in `certPem` names the first certificate in
 * `caPem` as its issuer and carries a valid signature by the CA's key.
 * Validity periods are not checked. Unparsable input throws PkiError.
 */
export async function verifyIssuedBy(certPem: string, caPem: string): Promise<boolean> {
  const cert = parseCertificate(certPem);
  const ca = parseCertificate(caPem, 'CA certificate');
  if (cert.issuer !== ca.subject) return false;
  try {
    return await cert.verify({ publicKey: ca.publicKey, signatureOnly: true }, crypto);
  } catch {
    return false;
  }
}
