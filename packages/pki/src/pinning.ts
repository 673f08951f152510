import { isIP } from 'node:net';
import tls, { type DetailedPeerCertificate } from 'node:tls';
import { CONTROLLER_TLS_NAME } from './ca.ts';
import { FingerprintMismatchError, PkiError } from './errors.ts';
import { fingerprintOfDer, normalizeFingerprint, verifyIssuedBy } from './fingerprint.ts';
import { derToPem } from './pem.ts';

function endpoint(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** OpenSSL messages are long; keep the reason ("wrong version number") and say what it likely means. */
function describeSocketError(err: Error & { code?: string }): string {
  const ssl = /SSL routines:[^:]*:([^:]+):/.exec(err.message);
  if (ssl) return `TLS handshake failed (${ssl[1]}); is this the controller's gRPC TLS port?`;
  return err.message;
}

/** DERs of the presented chain, leaf first (Node links it via issuerCertificate). */
function presentedChain(socket: tls.TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  let cert: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  const seen = new Set<DetailedPeerCertificate>();
  while (cert && cert.raw && !seen.has(cert)) {
    seen.add(cert);
    out.push(cert.raw);
    // A self-signed certificate is its own issuerCertificate.
    cert = cert.issuerCertificate;
  }
  return out;
}

/**
 * Trust-on-first-use with a pin: opens a TLS connection to host:port WITHOUT CA
 * verification (ALPN "h2", SNI fleet-controller, so it works against a grpc-js
 * server), reads the presented chain and returns, as PEM, the certificate whose
 * SHA-256 equals `expectedCaFingerprint`. The leaf must be signed by that
 * certificate (or be it).
 *
 * Throws FingerprintMismatchError (listing the presented fingerprints) if no
 * certificate matches or the leaf is not signed by the pinned one; PkiError on
 * connect errors and timeouts (default 10 s).
 */
export async function fetchPinnedCaCertificate(opts: { host: string; port: number; expectedCaFingerprint: string; timeoutMs?: number }): Promise<string> {
  const expected = normalizeFingerprint(opts.expectedCaFingerprint);
  const { host, port } = opts;
  if (typeof host !== 'string' || host === '') throw new PkiError('host must be a non-empty string');
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new PkiError(`invalid port ${String(port)}`);
  const where = endpoint(host, port);
  const timeoutMs = opts.timeoutMs ?? 10_000;

  const chain = await new Promise<Buffer[]>((resolve, reject) => {
    let settled = false;
    const socket = tls.connect({
      host,
      port,
      servername: CONTROLLER_TLS_NAME,
      ALPNProtocols: ['h2'],
      // Verification happens below, against the pin, not against any CA store.
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
    });
    const finish = (err: Error | null, value?: Buffer[]): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(value ?? []);
    };
    const timer = setTimeout(() => finish(new PkiError(`timed out after ${timeoutMs} ms fetching the TLS certificate chain from ${where}`)), timeoutMs);
    socket.once('secureConnect', () => {
      try {
        finish(null, presentedChain(socket));
      } catch (err) {
        finish(new PkiError(`cannot read the TLS certificate chain from ${where}: ${(err as Error).message}`));
      }
    });
    socket.once('error', (err) => finish(new PkiError(`cannot fetch the TLS certificate chain from ${where}: ${describeSocketError(err)}`, { cause: err })));
    socket.once('close', () => finish(new PkiError(`connection to ${where} closed before the TLS handshake completed`)));
  });

  if (chain.length === 0) throw new FingerprintMismatchError(`${where} presented no certificates; expected the CA with SHA-256 fingerprint ${expected}`);
  const fingerprints = chain.map((der) => fingerprintOfDer(der));
  const index = fingerprints.indexOf(expected);
  if (index < 0) {
    throw new FingerprintMismatchError(
      `no certificate presented by ${where} matches the pinned CA fingerprint ${expected}; presented (leaf first): ${fingerprints.join(', ')}`,
    );
  }
  const caPem = derToPem('CERTIFICATE', chain[index]!);
  if (index !== 0) {
    const leafPem = derToPem('CERTIFICATE', chain[0]!);
    if (!(await verifyIssuedBy(leafPem, caPem))) {
      throw new FingerprintMismatchError(
        `${where} presented the pinned CA ${expected}, but its server certificate ${fingerprints[0]} is not signed by that CA`,
      );
    }
  }
  return caPem;
}
