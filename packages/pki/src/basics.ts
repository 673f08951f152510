// What @fleet/pki offers without @peculiar/x509 (`@fleet/pki/basics`): errors, tokens and
// identifiers, certificate fingerprints. The controller imports these at start and the rest of the
// package (which loads @peculiar/x509: ~3 MiB of heap for the life of the process) only when it
// issues a certificate (issue 20: controller memory).
export { PkiError, FingerprintMismatchError } from './errors.ts';
export { certificateFingerprint, fingerprintOfDer, normalizeFingerprint } from './digest.ts';
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
