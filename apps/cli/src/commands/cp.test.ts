// `fleet cp` against a fake controller's session WebSocket standing in for a VM.
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { runCli } from '../testing/run-cli.ts';
import { compareSums, describeCopied, localSums, parseSums } from './cp.ts';

let server: http.Server;
let wss: WebSocketServer;
let url = '';
let dir = '';
/** True: the "VM" is this machine, each exec runs `sh -c SCRIPT` here for real. */
let localShell = false;

const stdout = (ws: WebSocket, data: Buffer | string) => ws.send(Buffer.concat([Buffer.from([1]), Buffer.from(data)]));

function runHere(ws: WebSocket, script: string): void {
  const child = spawn('sh', ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdout.on('data', (d: Buffer) => stdout(ws, d));
  child.stderr.on('data', (d: Buffer) => ws.send(Buffer.concat([Buffer.from([2]), d])));
  child.on('close', (code) => ws.send(JSON.stringify({ type: 'exit', code: code ?? 255, signal: null })));
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (isBinary) {
      if (data[0] === 0) child.stdin.write(data.subarray(1));
    } else if ((JSON.parse(data.toString()) as { type: string }).type === 'eof') child.stdin.end();
  });
}

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
      if (localShell) return runHere(ws, script);
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
  localShell = false;
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

describe('fleet cp verification of symbolic links', () => {
  const env = () => ({ FLEET_URL: url, FLEET_TOKEN: 'fleet_test_s3cr3t', FLEET_CONFIG: join(dir, 'config.json') });
  const makeTree = (root: string) => {
    mkdirSync(join(root, 'sub'), { recursive: true });
    writeFileSync(join(root, 'a.txt'), 'hello\n');
    writeFileSync(join(root, 'sub', 'b.txt'), 'world\n');
    symlinkSync('a.txt', join(root, 'link-to-file'));
    symlinkSync('sub', join(root, 'link-to-dir'));
    symlinkSync('/nowhere/at/all', join(root, 'dangling'));
  };
  const checkTree = (root: string) => {
    expect(readFileSync(join(root, 'sub', 'b.txt'), 'utf8')).toBe('world\n');
    for (const [l, t] of [['link-to-file', 'a.txt'], ['link-to-dir', 'sub'], ['dangling', '/nowhere/at/all']]) {
      expect(lstatSync(join(root, l!)).isSymbolicLink()).toBe(true);
      expect(readlinkSync(join(root, l!))).toBe(t);
    }
  };

  it('records links by their target, without following them', async () => {
    const src = join(dir, 'tree');
    makeTree(src);
    const sums = await localSums(src);
    expect(sums.get('tree/link-to-file')).toBe('symlink:a.txt');
    expect(sums.get('tree/link-to-dir')).toBe('symlink:sub');
    expect(sums.get('tree/dangling')).toBe('symlink:/nowhere/at/all');
    expect([...sums.keys()].filter((k) => k.startsWith('tree/link-to-dir/'))).toEqual([]);
    expect(describeCopied(sums)).toBe('2 file(s) and 3 symbolic link(s)');
  });

  it('compares link targets and reports a changed or missing link', () => {
    const remote = parseSums(`${'b'.repeat(64)}  x/a.txt\n@symlink x/l\na.txt\n@symlink x/m\nwith spaces -> here\n`, 'tree');
    expect(remote).toEqual(new Map([['tree/a.txt', 'b'.repeat(64)], ['tree/l', 'symlink:a.txt'], ['tree/m', 'symlink:with spaces -> here']]));
    expect(compareSums(remote, remote)).toEqual([]);
    expect(compareSums(new Map([['tree/l', 'symlink:other']]), remote)).toEqual(['tree/l: symbolic link to "other", at the destination to "a.txt"']);
    expect(compareSums(new Map([['tree/a.txt', 'symlink:x']]), remote)).toEqual(['tree/a.txt: a symbolic link here, not one at the destination']);
    expect(compareSums(new Map([['tree/l', 'b'.repeat(64)]]), remote)).toEqual(['tree/l: a symbolic link at the destination, a file here']);
    expect(compareSums(new Map([['tree/gone', 'symlink:a']]), remote)).toEqual(['tree/gone: missing at the destination']);
  });

  it('uploads and downloads a folder holding links, and verifies it (the "VM" is this machine)', async () => {
    localShell = true;
    const src = join(dir, 'tree');
    makeTree(src);
    const vmDir = join(dir, 'vm');
    mkdirSync(vmDir);
    const up = await runCli(['cp', src, `web-1:${vmDir}`], { env: env() });
    expect(up.stderr).toMatch(/copied 2 file\(s\) and 3 symbolic link\(s\) to web-1:.*SHA-256 verified/);
    expect(up.code).toBe(0);
    checkTree(join(vmDir, 'tree'));

    const back = join(dir, 'back');
    const down = await runCli(['cp', `web-1:${join(vmDir, 'tree')}`, back], { env: env() });
    expect(down.stderr).toMatch(/copied 2 file\(s\) and 3 symbolic link\(s\) from web-1:/);
    expect(down.code).toBe(0);
    checkTree(back);
  });
});
