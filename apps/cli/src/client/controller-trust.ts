// Trust in a controller's HTTPS certificate: the CA pinned in a context (by
// `fleet context add --ca-fingerprint|--ca-file`), used by every request and session
// WebSocket to that controller's URL. The pin is process-wide, keyed by base URL, so
// the commands that open sessions need no extra plumbing. Without a pin, https uses
// the system's trust store; never is a failed verification retried over http.
import { createHash, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type * as Tls from 'node:tls';
import type { Agent } from 'undici';
import { CliError, ExitCode, UnreachableError, UsageError } from '../errors.ts';

/** node:tls costs more to load than the rest of the CLI: only the commands that use TLS load it (issue 16). */
const tls = (): typeof Tls => process.getBuiltinModule('node:tls');

const pinned = new Map<string, { caPem: string; contextName: string | null; agent: Agent | null }>();

/**
 * With a pinned fleet CA, the name "fleet-controller" (which every controller certificate
 * carries, and which workers check too) is accepted when the URL's host is not among the
 * certificate's names: the pin already proves whose certificate it is, and controllers are
 * often reached by an address nobody added with --api-hostname.
 */
export function pinnedServerIdentity(host: string, cert: Tls.PeerCertificate): Error | undefined {
  const err = tls().checkServerIdentity(host, cert);
  if (!err) return undefined;
  return tls().checkServerIdentity('fleet-controller', cert) ? err : undefined;
}

/** Requests to `url` (a normalised base URL) trust only `caPem` from now on. */
export function pinControllerCa(url: string, caPem: string, contextName: string | null = null): void {
  if (pinned.get(url)?.caPem === caPem) return;
  pinned.set(url, { caPem, contextName, agent: null });
}

/** TLS options for a WebSocket to `url`: the pinned CA, or nothing (system trust). */
export function wsTlsOptions(url: string): { ca: string; checkServerIdentity: typeof pinnedServerIdentity } | Record<string, never> {
  const pin = pinned.get(url);
  return pin && url.startsWith('https:') ? { ca: pin.caPem, checkServerIdentity: pinnedServerIdentity } : {};
}

/** fetch() for `url`: Node's global fetch, or undici's with an Agent trusting only the pinned CA. */
export function fetchFor(url: string): (input: string, init: RequestInit) => Promise<Response> {
  const pin = pinned.get(url);
  if (!pin || !url.startsWith('https:')) return (input, init) => fetch(input, init);
  return async (input, init) => {
    // undici is loaded only here (a pinned https controller): it is most of the CLI's code.
    const { Agent, fetch: undiciFetch } = await (undici ??= loadUndici());
    pin.agent ??= new Agent({ connect: { ca: pin.caPem, checkServerIdentity: pinnedServerIdentity } });
    const dispatcher = pin.agent;
    // Node's global fetch is undici's; the casts only bridge the two packages' type declarations.
    return undiciFetch(input, { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher }) as unknown as Promise<Response>;
  };
}
let undici: Promise<typeof import('undici')> | undefined;
async function loadUndici(): Promise<typeof import('undici')> {
  const m = await import('undici');
  // A CommonJS package: bundled (apps/cli/dist), its exports arrive as the default export only.
  return 'Agent' in m ? m : (m as unknown as { default: typeof m }).default;
}

const CERT_ERRORS = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_HAS_EXPIRED',
]);

export function isCertificateError(code: string | undefined): boolean {
  return code !== undefined && CERT_ERRORS.has(code);
}

/** A controller whose certificate does not verify: exit 4 (the controller failed to authenticate) with what to check and how to re-pin. */
export function untrustedControllerError(url: string, code: string): CliError {
  const pin = pinned.get(url);
  const what = pin
    ? `does not verify against the CA pinned in ${pin.contextName ? `context "${pin.contextName}"` : 'the context'} (SHA-256 ${fingerprintOfPem(pin.caPem)}): the controller's CA changed, or this is not your controller`
    : 'is not trusted by this machine';
  const fix = `check the fingerprint on the controller host ("fleet-controller ca-fingerprint --data-dir DIR") and, if it is right, run "fleet context add NAME --url ${url} --token T --ca-fingerprint SHA256"`;
  return new CliError(`TLS: the certificate of ${url} ${what} [${code}]; ${fix}`, ExitCode.AUTH);
}

/** SHA-256 of a certificate's DER, lowercase hex: the format bootstrap tokens and the controller log use. */
export function fingerprintOfPem(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('hex');
}

/** Accepts "AA:BB:…", "sha256:…" or plain hex; returns 64 lowercase hex characters. */
export function normalizeFingerprint(input: string, flag = '--ca-fingerprint'): string {
  const hex = input.trim().replace(/^sha256[:=]/i, '').replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new UsageError(`invalid ${flag} "${input.slice(0, 100)}": expected the 64 hex digits of a SHA-256 fingerprint`);
  return hex;
}

export interface PresentedChain {
  /** The top of the chain the server sent: its CA (a self-signed root, or the last certificate sent). */
  caPem: string;
  caFingerprint: string;
  caSubject: string;
  /** True if the chain verifies against the system's trusted CAs and names the host. */
  systemTrusted: boolean;
}

function toPem(der: Buffer): string {
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`;
}

function endpoint(baseUrl: string): { host: string; port: number; servername?: string } {
  const url = new URL(baseUrl);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return { host, port: Number(url.port || 443), ...(isIP(host) ? {} : { servername: host }) };
}

function tlsConnect<T>(baseUrl: string, options: Tls.ConnectionOptions, timeoutMs: number, onSecure: (socket: Tls.TLSSocket) => T, onError: (err: NodeJS.ErrnoException) => Error): Promise<T> {
  return new Promise((resolve, reject) => {
    const socket = tls().connect({ ...endpoint(baseUrl), ...options, timeout: timeoutMs });
    socket.once('timeout', () => {
      socket.destroy();
      reject(new UnreachableError(`cannot reach the controller at ${baseUrl}: no TLS handshake within ${timeoutMs / 1000} s`));
    });
    socket.once('error', (err: NodeJS.ErrnoException) => reject(onError(err)));
    socket.once('secureConnect', () => {
      try {
        resolve(onSecure(socket));
      } catch (err) {
        reject(err as Error);
      } finally {
        socket.end();
      }
    });
  });
}

/**
 * Connects to an https:// controller without trusting anything yet and returns the CA at
 * the top of the chain it presents, for comparison with a fingerprint obtained out of
 * band. Nothing is sent over this connection (no token).
 */
export function fetchPresentedChain(baseUrl: string, timeoutMs = 10_000): Promise<PresentedChain> {
  return tlsConnect(
    baseUrl,
    { rejectUnauthorized: false },
    timeoutMs,
    (socket) => {
      let cert = socket.getPeerCertificate(true);
      if (!cert.raw) throw new CliError(`${baseUrl} presented no certificate`, ExitCode.ERROR);
      for (let i = 0; i < 10; i++) {
        const up = cert.issuerCertificate;
        if (!up || !up.raw || up.fingerprint256 === cert.fingerprint256) break; // self-signed root refers to itself
        cert = up;
      }
      return { caPem: toPem(cert.raw), caFingerprint: createHash('sha256').update(cert.raw).digest('hex'), caSubject: String(cert.subject?.CN ?? ''), systemTrusted: socket.authorized };
    },
    (err) => {
      const plain = err.code === 'EPROTO' || err.code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number/i.test(err.message);
      return new UnreachableError(`cannot reach the controller at ${baseUrl} over TLS: ${plain ? 'it does not speak TLS (a plain http:// controller?)' : err.message}`);
    },
  );
}

/** Checks that `baseUrl`'s certificate verifies against `caPem` (chain and host name). */
export function verifyAgainstCa(baseUrl: string, caPem: string, timeoutMs = 10_000): Promise<void> {
  return tlsConnect(
    baseUrl,
    { ca: caPem, checkServerIdentity: pinnedServerIdentity },
    timeoutMs,
    () => undefined,
    (err) =>
      isCertificateError(err.code)
        ? new CliError(`TLS: the certificate of ${baseUrl} does not verify against the given CA: ${err.message} [${err.code}]`, ExitCode.UNREACHABLE)
        : new UnreachableError(`cannot reach the controller at ${baseUrl}: ${err.message}`),
  );
}
