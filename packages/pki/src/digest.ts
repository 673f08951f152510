// Certificate fingerprints: hashes of DER bytes, without parsing a certificate (no @peculiar/x509).
import { createHash } from 'node:crypto';
import { PkiError } from './errors.ts';
import { firstPemBlock } from './pem.ts';

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
