// `fleet vnc` against a fake controller's session WebSocket: the URL on stdout, every viewer
// connection its own `vnc` session (raw RFB bytes both ways), --open launches the viewer on the URL.
import http from 'node:http';
import net from 'node:net';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { runCli } from '../testing/run-cli.ts';

let server: http.Server;
let wss: WebSocketServer;
let url = '';
let dir = '';
const starts: unknown[] = [];

beforeEach(async () => {
  starts.length = 0;
  server = http.createServer();
  wss = new WebSocketServer({ server });
  // A stand-in console: greets with an RFB version, echoes what the viewer sends.
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        if (data[0] === 0) ws.send(Buffer.concat([Buffer.from([1]), Buffer.from('echo:'), data.subarray(1)]));
        return;
      }
      const m = JSON.parse(data.toString()) as { type: string };
      if (m.type === 'start') {
        starts.push(m);
        ws.send(JSON.stringify({ type: 'started', sessionId: `s-${starts.length}` }));
        ws.send(Buffer.concat([Buffer.from([1]), Buffer.from('RFB 003.008\n')]));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  dir = mkdtempSync(join(tmpdir(), 'fleet-cli-vnc-'));
});
afterEach(async () => {
  wss.close();
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

async function exchange(port: number, send: string, until: string): Promise<string> {
  const sock = net.connect({ host: '127.0.0.1', port });
  let got = '';
  await new Promise<void>((resolve, reject) => {
    sock.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.includes('RFB 003.008') && !got.includes('echo:')) sock.write(send);
      if (got.includes(until)) resolve();
    });
    sock.on('error', reject);
  });
  sock.destroy();
  return got;
}

describe('fleet vnc', () => {
  it('prints the vnc:// URL; each viewer connection is its own vnc session; --open launches the viewer', async () => {
    const stop = new AbortController();
    const opened = join(dir, 'opened');
    const opener = join(dir, 'opener.sh');
    writeFileSync(opener, `#!/bin/sh\necho "$1" > ${opened}\n`);
    chmodSync(opener, 0o755);
    let stdout = '';
    const cli = runCli(['vnc', 'mac-1', '--open'], {
      env: { FLEET_URL: url, FLEET_TOKEN: 'fleet_test_s3cr3t', FLEET_CONFIG: join(dir, 'config.json'), FLEET_VNC_OPENER: opener },
      signal: stop.signal,
      onStdout: (s) => (stdout += s),
    });
    for (let i = 0; i < 200 && !/vnc:\/\/127\.0\.0\.1:\d+\n/.test(stdout); i++) await new Promise((r) => setTimeout(r, 10));
    const port = Number(/vnc:\/\/127\.0\.0\.1:(\d+)/.exec(stdout)![1]);
    expect(await exchange(port, 'RFB 003.008\n', 'echo:RFB 003.008')).toContain('echo:RFB 003.008');
    expect(await exchange(port, 'second', 'echo:second')).toContain('echo:second');
    expect(starts).toEqual([
      { type: 'start', kind: 'vnc', waitMs: 60_000 },
      { type: 'start', kind: 'vnc', waitMs: 60_000 },
    ]);
    for (let i = 0; i < 100; i++) {
      try {
        if (readFileSync(opened, 'utf8').trim() === `vnc://127.0.0.1:${port}`) break;
      } catch {
        /* not yet */
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(readFileSync(opened, 'utf8').trim()).toBe(`vnc://127.0.0.1:${port}`);
    stop.abort();
    const r = await cli;
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`vnc://127.0.0.1:${port}`);
  });

  it('refuses a bad --port and a bad VM name as usage errors', async () => {
    const env = { FLEET_URL: url, FLEET_TOKEN: 't', FLEET_CONFIG: join(dir, 'config.json') };
    expect((await runCli(['vnc', 'mac-1', '--port', '70000'], { env })).code).toBe(2);
    expect((await runCli(['vnc', 'mac-1', '--port', 'x'], { env })).stderr).toMatch(/invalid --port "x"/);
    expect((await runCli(['vnc', 'Bad Name'], { env })).code).toBe(2);
  });
});
