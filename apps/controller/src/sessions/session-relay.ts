// Relays a client's session WebSocket to the controller that holds the worker's stream (several
// controllers, issue 13): exec / ssh / port-forward / cp work whichever controller the client
// reached. The relay is a byte-for-byte pipe of WebSocket messages; the other controller
// authenticates the same bearer token against the shared database, runs the session and audits
// it. A relayed request carries `x-fleet-relayed`, and is never relayed again (no loops).
import tls from 'node:tls';
import WebSocket from 'ws';
import type { Logger } from 'pino';

export const RELAYED_HEADER = 'x-fleet-relayed';
/** Pause the side that sends while this much is queued towards the other (per direction). */
const HIGH_WATER_BYTES = 4 * 1024 * 1024;
const CONNECT_TIMEOUT_MS = 5_000;

export interface RelayTarget {
  /** The other controller's REST API base URL (http[s]://host:port). */
  apiUrl: string;
  /** Its name, for messages. */
  name: string;
}

export interface RelayOptions {
  target: RelayTarget;
  /** Path and query of the session endpoint (/v1/vms/<name>/session). */
  path: string;
  token: string;
  /** Fleet CA (PEM): the other controller's API certificate is issued by it. */
  caPem: string;
  /** Name every controller certificate carries (controllers often sit behind addresses not in it). */
  serverName: string;
  fromController: string;
  maxPayload: number;
  log: Logger;
  onError: (socket: WebSocket, code: string, message: string) => void;
}

function closeCode(code: number): number {
  // 1005/1006/1015 are reported, never sent.
  return code === 1005 || code === 1006 || code === 1015 || code < 1000 || code > 4999 ? 1011 : code;
}

/** Pipes `client` to the target controller's session endpoint until either side closes. */
export function relaySession(client: WebSocket, opts: RelayOptions): void {
  const url = opts.target.apiUrl.replace(/^http/, 'ws') + opts.path;
  // ws hands these to https.request, so they follow tls.connect's types, not ws's own declaration.
  const trust: tls.ConnectionOptions = {
    ca: [...tls.rootCertificates, opts.caPem],
    checkServerIdentity: (host, cert) => (tls.checkServerIdentity(host, cert) === undefined ? undefined : tls.checkServerIdentity(opts.serverName, cert)),
  };
  const upstream = new WebSocket(url, ['fleet.v1'], {
    ...(trust as WebSocket.ClientOptions),
    headers: { authorization: `Bearer ${opts.token}`, [RELAYED_HEADER]: opts.fromController },
    perMessageDeflate: false,
    maxPayload: opts.maxPayload,
    handshakeTimeout: CONNECT_TIMEOUT_MS,
  });
  const early: { data: WebSocket.RawData; binary: boolean }[] = [];
  let done = false;

  const finish = (code: number, reason: string) => {
    if (done) return;
    done = true;
    if (client.readyState === WebSocket.OPEN) client.close(closeCode(code), reason.slice(0, 120));
    if (upstream.readyState === WebSocket.OPEN || upstream.readyState === WebSocket.CONNECTING) {
      if (upstream.readyState === WebSocket.OPEN) upstream.close(closeCode(code), reason.slice(0, 120));
      else upstream.terminate();
    }
  };

  // One direction: forward each message, pausing the source while the destination's queue is deep.
  const pipe = (from: WebSocket, to: WebSocket) => {
    let queued = 0;
    let paused = false;
    from.on('message', (data: WebSocket.RawData, binary: boolean) => {
      if (to.readyState !== WebSocket.OPEN) {
        if (to === upstream && upstream.readyState === WebSocket.CONNECTING) early.push({ data, binary });
        return;
      }
      const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data instanceof ArrayBuffer ? data.byteLength : data.length;
      queued += size;
      to.send(data, { binary }, () => {
        queued -= size;
        if (paused && queued < HIGH_WATER_BYTES / 2) {
          paused = false;
          from.resume();
        }
      });
      if (!paused && queued >= HIGH_WATER_BYTES) {
        paused = true;
        from.pause();
      }
    });
  };

  pipe(client, upstream);
  upstream.once('open', () => {
    for (const m of early.splice(0)) upstream.send(m.data, { binary: m.binary });
    pipe(upstream, client);
  });
  // The other controller refused the upgrade (401/403/404/409 ...): pass its error on.
  upstream.once('unexpected-response', (_req, res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (d: string) => {
      if (body.length < 4096) body += d;
    });
    res.on('end', () => {
      let code = 'internal';
      let message = `controller ${opts.target.name} answered ${res.statusCode}`;
      try {
        const e = (JSON.parse(body) as { error?: { code?: unknown; message?: unknown } }).error;
        if (typeof e?.code === 'string') code = e.code;
        if (typeof e?.message === 'string') message = e.message;
      } catch {
        /* not JSON: keep the status line */
      }
      opts.onError(client, code, message);
      finish(1008, 'refused');
    });
  });
  upstream.on('error', (err: Error) => {
    if (done) return;
    opts.log.warn({ err, controller: opts.target.name }, 'session relay to the controller holding the worker stream failed');
    if (upstream.readyState !== WebSocket.OPEN) {
      opts.onError(client, 'worker-offline', `the worker is connected to controller ${opts.target.name}, which cannot be reached from here: ${err.message}`);
    }
    finish(1011, 'relay failed');
  });
  upstream.on('close', (code: number, reason: Buffer) => finish(code, reason.toString('utf8')));
  client.on('close', (code: number, reason: Buffer) => finish(code, reason.toString('utf8')));
  client.on('error', () => finish(1011, 'client error'));
}
