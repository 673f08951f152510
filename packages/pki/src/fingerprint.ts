import * as x509 from '@peculiar/x509';
import { PkiError } from './errors.ts';
import { firstPemBlock, toArrayBuffer } from './pem.ts';
import { crypto } from './webcrypto.ts';

export { certificateFingerprint, fingerprintOfDer, normalizeFingerprint } from './digest.ts';

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
