// Controller reachability: DNS, TCP, then a TLS handshake with the worker's client certificate
// verified against the pinned ca.pem under the name the link uses. The Connect stream is never
// opened — it would displace a worker already running with this identity.
import { X509Certificate } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import tls from 'node:tls';
import { certificateFingerprint } from '@fleet/pki';
import { parseHostPort } from '../config/address.ts';
import { CONTROLLER_TLS_NAME } from '../link/link.ts';
import { fail, ok, warn, type Finding } from './check.ts';

export interface ControllerCheckInput {
  /** host:port from worker.json. */
  address: string;
  caPem: string;
  keyPem: string;
  certPem: string;
  /** Per step (lookup, connect, handshake); default 3 s. */
  stepTimeoutMs?: number;
}

const CONNECTIVITY_FIX = 'make sure the controller runs and this host can reach it (firewall, DNS); or pass `fleet-worker run --controller HOST:PORT` if it moved';

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

type Handshake =
  | { ok: true; protocol: string | null }
  | { ok: false; error: Error; peer?: tls.DetailedPeerCertificate };

/** One TLS handshake; on a verification error the presented chain is fetched for the report. */
function handshake(host: string, port: number, input: ControllerCheckInput, timeoutMs: number, verify: boolean): Promise<Handshake> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host,
      port,
      ca: input.caPem,
      key: input.keyPem,
      cert: input.certPem,
      servername: CONTROLLER_TLS_NAME,
      ALPNProtocols: ['h2'],
      rejectUnauthorized: verify,
    });
    let settled = false;
    const done = (result: Handshake): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done({ ok: false, error: new Error(`TLS handshake timed out after ${timeoutMs} ms`) }), timeoutMs);
    socket.once('secureConnect', () => {
      if (!verify) {
        done({ ok: false, error: new Error(String(socket.authorizationError ?? 'unverified')), peer: socket.getPeerCertificate(true) });
        return;
      }
      // With TLS 1.3 the server judges our certificate after the client's handshake is done:
      // a refusal arrives as an alert shortly after. Wait briefly for it.
      const protocol = socket.alpnProtocol || null;
      const grace = setTimeout(() => done({ ok: true, protocol }), 300);
      socket.once('close', () => clearTimeout(grace));
    });
    socket.on('data', () => {});
    socket.once('error', (error) => done({ ok: false, error }));
    socket.once('close', () => done({ ok: false, error: new Error('the controller closed the connection during the TLS handshake') }));
  });
}

function describeChain(peer: tls.DetailedPeerCertificate | undefined): string {
  if (!peer?.raw) return 'the controller presented no certificate';
  // Walk to the top of what the server sent; that is the CA it claims to be signed by.
  let top = peer;
  const seen = new Set<string>();
  while (top.issuerCertificate && top.issuerCertificate !== top && !seen.has(top.fingerprint256)) {
    seen.add(top.fingerprint256);
    top = top.issuerCertificate;
  }
  const leafFp = new X509Certificate(peer.raw).fingerprint256.replace(/:/g, '').toLowerCase();
  const issuerCn = peer.issuer?.CN ?? '?';
  if (top !== peer) {
    const topFp = new X509Certificate(top.raw).fingerprint256.replace(/:/g, '').toLowerCase();
    return `the controller's chain ends at CA "${top.subject?.CN ?? '?'}" sha256 ${topFp}`;
  }
  return `the controller's certificate sha256 ${leafFp} is issued by "${issuerCn}"`;
}

export async function checkController(input: ControllerCheckInput): Promise<Finding> {
  const step = input.stepTimeoutMs ?? 3_000;
  let host: string;
  let port: number;
  try {
    ({ host, port } = parseHostPort(input.address));
  } catch (error) {
    return fail(`worker.json has an invalid controller address ${JSON.stringify(input.address)}: ${(error as Error).message}`, 'pass `fleet-worker run --controller HOST:PORT`, or re-enroll');
  }
  let ip: string;
  try {
    ip = net.isIP(host) ? host : (await withTimeout(lookup(host), step, `resolving ${host}`)).address;
  } catch (error) {
    return fail(`${host} does not resolve: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, CONNECTIVITY_FIX);
  }
  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        const s = net.connect({ host: ip, port });
        s.once('connect', () => {
          s.destroy();
          resolve();
        });
        s.once('error', (e) => {
          s.destroy();
          reject(e);
        });
        setTimeout(() => s.destroy(), step + 100).unref();
      }),
      step,
      `connecting to ${ip}:${port}`,
    );
  } catch (error) {
    return fail(`${input.address} (${ip}) does not accept TCP connections: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, CONNECTIVITY_FIX);
  }
  const result = await handshake(ip, port, input, step, true);
  if (result.ok) {
    return ok(`${input.address} (${ip}): TLS handshake ok, the controller's certificate verifies against ca.pem${result.protocol ? ` (ALPN ${result.protocol})` : ''}`);
  }
  const code = (result.error as NodeJS.ErrnoException).code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO|ISSUER/.test(code) && !/ALTNAME/.test(code)) {
    const unverified = await handshake(ip, port, input, step, false);
    const pinned = certificateFingerprint(input.caPem);
    const chain = unverified.ok ? 'its chain could not be read' : describeChain(unverified.peer);
    return fail(
      `the controller at ${input.address} is not signed by the pinned CA (${code}): ca.pem sha256 ${pinned}; ${chain}`,
      `if the controller's CA was replaced on purpose, re-enroll: fleet-worker enroll --force --controller ${input.address} --token <bootstrap token>; otherwise check that ${input.address} is the right controller`,
    );
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return fail(`the controller's certificate does not name "${CONTROLLER_TLS_NAME}": ${result.error.message}`, 'reissue the controller certificate with `fleet-controller` (it always includes that name)');
  }
  return fail(
    `TLS handshake with ${input.address} failed: ${result.error.message}`,
    /certificate|alert|handshake/i.test(result.error.message)
      ? 'the controller refused this worker\'s certificate (revoked or from another CA): re-enroll with `fleet-worker enroll --force ...`'
      : CONNECTIVITY_FIX,
  );
}

/**
 * Several controllers (issue 13): each is checked (at once, so the check takes as long as the
 * slowest one). It passes when all answer, warns when at least one does (the link fails over to
 * it; the others should be fixed), and fails when none does. The detail names every address.
 */
export async function checkControllers(input: Omit<ControllerCheckInput, 'address'> & { addresses: readonly string[] }): Promise<Finding> {
  const { addresses, ...rest } = input;
  if (addresses.length === 0) return fail('worker.json names no controller', 'pass `fleet-worker run --controller HOST:PORT`, or re-enroll');
  if (addresses.length === 1) return checkController({ ...rest, address: addresses[0]! });
  const findings = await Promise.all(addresses.map((address) => checkController({ ...rest, address })));
  const answering = findings.filter((f) => f.status === 'ok').length;
  const failing = findings.map((f, i) => ({ f, address: addresses[i]! })).filter(({ f }) => f.status !== 'ok');
  const detail = `${answering} of ${addresses.length} controllers answer: ${findings.map((f, i) => `${f.status === 'ok' ? 'ok' : 'FAILED'} ${f.status === 'ok' ? f.detail : `${addresses[i]}: ${f.detail}`}`).join('; ')}`;
  if (failing.length === 0) return ok(detail);
  const fix = failing.map(({ f, address }) => `${address}: ${f.fix ?? 'see above'}`).join('; ');
  return answering > 0 ? warn(detail, fix) : fail(detail, fix);
}
