// Helpers for this package's tests: tiny real TLS servers/clients on 127.0.0.1.
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';

export interface AcceptedConnection {
  authorized: boolean;
  authorizationError: string | null;
  /** Server's view of the client certificate (empty object if none). */
  peer: tls.PeerCertificate;
}

export interface TestTlsServer {
  port: number;
  accepted: AcceptedConnection[];
  close(): Promise<void>;
}

/** Starts a TLS server on 127.0.0.1:0 that writes "hello\n" and ends each connection. */
export async function startTlsServer(options: tls.TlsOptions): Promise<TestTlsServer> {
  const accepted: AcceptedConnection[] = [];
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer(options, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    accepted.push({
      authorized: socket.authorized,
      authorizationError: socket.authorizationError ? String(socket.authorizationError) : null,
      peer: socket.getPeerCertificate(),
    });
    socket.end('hello\n');
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    accepted,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface ClientResult {
  authorized: boolean;
  data: string;
  serverCert: tls.PeerCertificate;
}

/** Connects, waits for the server to end the stream; rejects on any TLS/socket error. */
export function tlsRequest(options: tls.ConnectionOptions): Promise<ClientResult> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(options);
    let data = '';
    let serverCert: tls.PeerCertificate = {} as tls.PeerCertificate;
    socket.setEncoding('utf8');
    socket.on('secureConnect', () => {
      serverCert = socket.getPeerCertificate();
    });
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('end', () => {
      resolve({ authorized: socket.authorized, data, serverCert });
      socket.destroy();
    });
    socket.on('error', (err) => {
      socket.destroy();
      reject(err);
    });
    socket.setTimeout(10_000, () => socket.destroy(new Error('client timeout')));
  });
}

/** "AA:BB:…" (Node's fingerprint256) → "aabb…". */
export function normaliseNodeFingerprint(fp: string): string {
  return fp.replace(/:/g, '').toLowerCase();
}
