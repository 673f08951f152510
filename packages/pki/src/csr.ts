import * as x509 from '@peculiar/x509';
import { assertCommonName, issueCertificate, loadCa, nameWithCn, type KeyAndCert } from './ca.ts';
import { PkiError } from './errors.ts';
import { fingerprintOfDer } from './fingerprint.ts';
import { pemBlocks, toArrayBuffer } from './pem.ts';
import { crypto, describePublicKey, exportPkcs8Pem, generateEcKeyPair } from './webcrypto.ts';

/** Largest CSR PEM accepted (a P-256 CSR is ~500 bytes; RSA-4096 ~1.7 KB). */
const MAX_CSR_PEM_LENGTH = 16 * 1024;

/**
 * Worker side of enrollment: a fresh ECDSA P-256 key (PKCS#8 PEM, never leaves
 * the worker) and a PKCS#10 CSR for it signed with ECDSA-SHA256.
 */
export async function createKeyAndCsr(opts: { commonName: string }): Promise<{ keyPem: string; csrPem: string }> {
  assertCommonName(opts.commonName);
  const keys = await generateEcKeyPair();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { name: nameWithCn(opts.commonName), keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } },
    crypto,
  );
  return { keyPem: await exportPkcs8Pem(keys.privateKey), csrPem: csr.toString('pem') + '\n' };
}

export interface IssuedClientCertificate {
  certPem: string;
  /** Serial number, lowercase hex as encoded (may carry a leading 00 byte). */
  serial: string;
  notAfter: Date;
  /** SHA-256 of the certificate DER, lowercase hex: what the controller stores and checks. */
  fingerprint: string;
}

function invalid(reason: string): PkiError {
  return new PkiError(`invalid CSR: ${reason}`);
}

/** Parses and checks a CSR: PEM shape, DER, self-signature, acceptable key type. */
export async function parseAndVerifyCsr(csrPem: string): Promise<x509.Pkcs10CertificateRequest> {
  if (typeof csrPem !== 'string' || csrPem.length === 0) throw invalid('empty');
  if (csrPem.length > MAX_CSR_PEM_LENGTH) throw invalid(`too large (${csrPem.length} bytes)`);
  let blocks;
  try {
    blocks = pemBlocks(csrPem);
  } catch (err) {
    throw invalid((err as Error).message);
  }
  const block = blocks.find((b) => b.label === 'CERTIFICATE REQUEST' || b.label === 'NEW CERTIFICATE REQUEST');
  if (!block) throw invalid('no "CERTIFICATE REQUEST" PEM block');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(toArrayBuffer(block.der));
  } catch (err) {
    throw invalid(`cannot parse PKCS#10 structure (${(err as Error).message})`);
  }
  const key = describePublicKey(new Uint8Array(csr.publicKey.rawData));
  if (!key.ok) throw invalid(key.reason ?? 'unsupported public key');
  let ok: boolean;
  try {
    ok = await csr.verify(crypto);
  } catch (err) {
    throw invalid(`cannot verify signature (${(err as Error).message})`);
  }
  if (!ok) throw invalid('signature does not verify (tampered or not signed by its own key)');
  return csr;
}

/**
 * Controller side of enrollment: verifies the CSR's proof of possession and
 * issues a client certificate for its public key. The CSR's subject and any
 * requested extensions are ignored: subject is CN=opts.commonName, EKU is
 * clientAuth only, basicConstraints CA:false. notAfter is clamped to the CA's.
 */
export async function signClientCsr(ca: KeyAndCert, csrPem: string, opts: { commonName: string; validDays?: number }): Promise<IssuedClientCertificate> {
  assertCommonName(opts.commonName);
  const csr = await parseAndVerifyCsr(csrPem);
  const loaded = await loadCa(ca);
  const isRsa = csr.publicKey.algorithm.name.startsWith('RSA');
  const cert = await issueCertificate(loaded, {
    commonName: opts.commonName,
    publicKey: csr.publicKey,
    validDays: opts.validDays,
    defaultDays: 365,
    extensions: [
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | (isRsa ? x509.KeyUsageFlags.keyEncipherment : 0), true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
    ],
  });
  return {
    certPem: cert.toString('pem') + '\n',
    serial: cert.serialNumber.toLowerCase(),
    notAfter: cert.notAfter,
    fingerprint: fingerprintOfDer(new Uint8Array(cert.rawData)),
  };
}
