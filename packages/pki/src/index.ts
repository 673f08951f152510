export { PkiError, FingerprintMismatchError } from './errors.ts';
export {
  createCertificateAuthority,
  issueServerCertificate,
  CONTROLLER_TLS_NAME,
  DEFAULT_SERVER_DNS_NAMES,
  DEFAULT_SERVER_IP_ADDRESSES,
  type KeyAndCert,
} from './ca.ts';
export { createKeyAndCsr, signClientCsr, type IssuedClientCertificate } from './csr.ts';
export { certificateFingerprint, fingerprintOfDer, normalizeFingerprint, verifyIssuedBy } from './fingerprint.ts';
export {
  generateSecret,
  hashSecret,
  constantTimeEqualHex,
  newId,
  encodeBootstrapToken,
  parseBootstrapToken,
  encodeApiToken,
  parseApiToken,
  type BootstrapTokenParts,
  type ApiTokenParts,
} from './tokens.ts';
export { fetchPinnedCaCertificate } from './pinning.ts';
