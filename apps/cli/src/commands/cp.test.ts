// `fleet cp` against a fake controller's session WebSocket standing in for a VM.
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { runCli } from '../testing/run-cli.ts';

let server: http.Server;
let wss: WebSocketServer;
let url = '';
let dir = '';

const stdout = (ws: WebSocket, data: Buffer | string) => ws.send(Buffer.concat([Buffer.from([1]), Buffer.from(data)]));

beforeEach(async () => {
  server = http.createServer();
  wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) return;
      const m = JSON.parse(data.toString()) as { type: string; command?: string[] };
      if (m.type !== 'start') return;
      ws.send(JSON.stringify({ type: 'started', sessionId: 's' }));
      const script = m.command?.[2] ?? '';
      if (script.includes('sha256sum')) {
        stdout(ws, `${'a'.repeat(64)}  out.txt\n`);
        ws.send(JSON.stringify({ type: 'exit', code: 0, signal: null }));
        return;
      }
      // The "tar" stream: not a tar archive, and long enough to outlast the local tar.
      let sent = 0;
      const t = setInterval(() => {
        if (ws.readyState !== ws.OPEN) return clearInterval(t);
        if (sent++ < 40) stdout(ws, Buffer.alloc(256 * 1024, 'x'));
        else {
          clearInterval(t);
          ws.send(JSON.stringify({ type: 'exit', code: 0, signal: null }));
        }
      }, 5);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  dir = mkdtempSync(join(tmpdir(), 'fleet-cli-cp-'));
});
afterEach(async () => {
  wss.close();
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('fleet cp (download)', () => {
  it('fails cleanly, leaving nothing behind, when the local tar rejects the stream', async () => {
    const dst = join(dir, 'dst');
    const r = await runCli(['cp', 'web-1:/tmp/out.txt', dst], { env: { FLEET_URL: url, FLEET_TOKEN: 'fleet_test_s3cr3t', FLEET_CONFIG: join(dir, 'config.json') } });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/local tar failed/);
    expect(existsSync(dst)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith('.fleet-cp-'))).toEqual([]);
  });
});
