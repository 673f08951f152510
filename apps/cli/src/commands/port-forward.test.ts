// `fleet port-forward` against a fake controller's session WebSocket: a local client that
// half-closes its connection (sends its request, then FIN, like `nc -N` or an HTTP/1.0
// client) still receives the whole reply.
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { runCli } from '../testing/run-cli.ts';

let server: http.Server;
let wss: WebSocketServer;
let url = '';
let dir = '';

beforeEach(async () => {
  server = http.createServer();
  wss = new WebSocketServer({ server });
  // The VM's service: answers once the client has sent EOF.
  wss.on('connection', (ws) => {
    let got = '';
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        if (data[0] === 0) got += data.subarray(1).toString();
        return;
      }
      const m = JSON.parse(data.toString()) as { type: string };
      if (m.type === 'start') ws.send(JSON.stringify({ type: 'started', sessionId: 's-1' }));
      if (m.type === 'eof') {
        setTimeout(() => {
          ws.send(Buffer.concat([Buffer.from([1]), Buffer.from(`reply to ${got}`)]));
          ws.send(JSON.stringify({ type: 'exit', code: 0, signal: null }));
        }, 100);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  dir = mkdtempSync(join(tmpdir(), 'fleet-cli-pf-'));
});
afterEach(async () => {
  wss.close();
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe('fleet port-forward', () => {
  it('delivers the reply to a local client that half-closed after its request', async () => {
    const local = await freePort();
    const stop = new AbortController();
    const cli = runCli(['port-forward', 'web-1', `${local}:80`], {
      env: { FLEET_URL: url, FLEET_TOKEN: 'fleet_test_s3cr3t', FLEET_CONFIG: join(dir, 'config.json') },
      signal: stop.signal,
    });
    let sock: net.Socket | undefined;
    for (let i = 0; i < 100 && !sock; i++) {
      sock = await new Promise<net.Socket | undefined>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: local, allowHalfOpen: true });
        s.once('connect', () => resolve(s));
        s.once('error', () => setTimeout(() => resolve(undefined), 20));
      });
    }
    expect(sock).toBeDefined();
    let reply = '';
    sock!.on('data', (d: Buffer) => (reply += d.toString()));
    const closed = new Promise<void>((r) => sock!.once('close', () => r()));
    sock!.end('GET /');
    await closed;
    expect(reply).toBe('reply to GET /');
    stop.abort();
    expect((await cli).code).toBe(0);
  });
});
