// @fleet/pki: everything @fleet/pki/basics offers (errors, tokens, fingerprints; no
// @peculiar/x509), plus what needs X.509: the CA, certificate requests, issuer checks, pinning.
export * from './basics.ts';
export {
  createCertificateAuthority,
  issueServerCertificate,
  CONTROLLER_TLS_NAME,
  DEFAULT_SERVER_DNS_NAMES,
  DEFAULT_SERVER_IP_ADDRESSES,
  type KeyAndCert,
} from './ca.ts';
export { createKeyAndCsr, signClientCsr, type IssuedClientCertificate } from './csr.ts';
export { verifyIssuedBy } from './fingerprint.ts';
export { fetchPinnedCaCertificate } from './pinning.ts';
