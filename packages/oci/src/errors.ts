/** What went wrong, coarse enough for callers to branch on (retry, ask for a login, give up). */
export type OciErrorCode =
  | 'bad-reference'
  | 'unauthorized'
  | 'denied'
  | 'not-found'
  | 'digest-mismatch'
  | 'too-large'
  | 'unsupported-media-type'
  | 'network'
  | 'protocol'
  | 'tls'
  | 'insecure-refused'
  | 'no-platform'
  | 'disk-full'
  | 'aborted';

/**
 * Every error thrown by @fleet/oci. Messages are written for operators: what failed,
 * against which registry/repository/digest, and the fix when there is one. They never
 * contain credentials or tokens.
 */
export class OciError extends Error {
  readonly code: OciErrorCode;
  /** HTTP status of the registry answer that caused the error, when there was one. */
  readonly status?: number;

  constructor(code: OciErrorCode, message: string, opts?: { status?: number; cause?: unknown }) {
    super(message, opts?.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'OciError';
    this.code = code;
    if (opts?.status !== undefined) this.status = opts.status;
  }
}

export function isOciError(err: unknown, code?: OciErrorCode): err is OciError {
  return err instanceof OciError && (code === undefined || err.code === code);
}

/** Node's system error code (ECONNRESET, ENOSPC, ...) if `err` carries one. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EADDRNOTAVAIL',
  'UND_ERR_SOCKET',
  'ERR_STREAM_PREMATURE_CLOSE',
  'HPE_INVALID_CONSTANT',
  'HPE_UNEXPECTED_CONTENT_LENGTH',
]);

/** TLS failures that mean "this certificate is not trusted / does not match". */
const CERT_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'HOSTNAME_MISMATCH',
]);

/**
 * Maps a transport/file-system error to an OciError. `where` names the peer
 * ("registry 127.0.0.1:5000") and `registry` is the host:port to put in fix hints.
 */
export function transportError(err: unknown, where: string, registry: string): OciError {
  if (err instanceof OciError) return err;
  const code = errnoCode(err);
  const detail = describe(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new OciError('disk-full', `no space left on the device while writing data from ${where}: free some space and retry (${detail})`, { cause: err });
  }
  if (code !== undefined && CERT_CODES.has(code)) {
    return new OciError(
      'tls',
      `TLS certificate of ${where} is not trusted (${code}: ${detail}); if the registry uses a private CA, pass its CA certificate to fleet registry login ${registry}`,
      { cause: err },
    );
  }
  if (code === 'EPROTO' || code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number|packet length too long/i.test(detail)) {
    return new OciError(
      'insecure-refused',
      `${where} does not speak TLS (it looks like plain HTTP); if this registry is meant to be used without TLS, mark it insecure: fleet registry login ${registry} --insecure`,
      { cause: err },
    );
  }
  if (code?.startsWith('ERR_SSL') || code?.startsWith('ERR_TLS') || /\bSSL\b|\bTLS\b/.test(detail)) {
    return new OciError('tls', `TLS handshake with ${where} failed: ${detail}`, { cause: err });
  }
  if ((code !== undefined && NETWORK_CODES.has(code)) || /socket hang up|aborted|premature close/i.test(detail)) {
    return new OciError('network', `connection to ${where} failed: ${detail}${code && !detail.includes(code) ? ` (${code})` : ''}`, { cause: err });
  }
  return new OciError('network', `request to ${where} failed: ${detail}`, { cause: err });
}
