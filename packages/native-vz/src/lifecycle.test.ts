/**
 * Lifecycle and build-script checks that run in child processes (a crash there must not take the
 * test runner down).
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const addon = createRequire(import.meta.url).resolve('../build/Release/native_vz.node');

describe('environment teardown', () => {
  it('worker threads that exit with ports still reading and waiting for writability do not crash the process', () => {
    // Each worker opens a pair, reads on one end, fills the other until EAGAIN and waits for
    // writability, then is terminated without closing anything. The env cleanup hook must close
    // the uv handles and fds before Node unloads the addon (else: abort or SIGSEGV).
    const script = `
const { Worker } = require('node:worker_threads');
const code = \`
const native = require(\${JSON.stringify(process.argv[1])});
const [a, b] = native.socketpairDgram(65536, 65536, false);
const mk = (fd) => new native.FramePort(fd, new ArrayBuffer(2048 * 8), new Uint32Array(8), new Uint32Array(8), 2048, 8, true, 4);
const pa = mk(a), pb = mk(b);
pb.start(() => {});
const f = Buffer.alloc(1514);
while (pa.sendBatch(f, new Uint32Array([0]), new Uint32Array([1514]), 1) === 1) {}
pa.waitWritable(() => {});
require('node:worker_threads').parentPort.postMessage('ready');
\`;
let n = 0;
function one() {
  const w = new Worker(code, { eval: true });
  w.on('message', () => (n % 2 ? w.terminate() : setTimeout(() => w.terminate(), 5)));
  w.on('error', (e) => { console.error(e); process.exit(2); });
  w.on('exit', () => (++n < 12 ? one() : console.log('ok ' + n)));
}
one();`;
    const r = spawnSync(process.execPath, ['-e', script, addon], { encoding: 'utf8', timeout: 20_000 });
    expect({ status: r.status, signal: r.signal, out: r.stdout.trim() }).toEqual({ status: 0, signal: null, out: 'ok 12' });
  });
});

describe('callback exceptions', () => {
  it('an exception thrown by a batch callback becomes uncaughtException; the port keeps working', () => {
    const script = `
const n = require(process.argv[1]);
const [a, b] = n.socketpairDgram(0, 0, false);
const mk = (fd) => new n.FramePort(fd, new ArrayBuffer(2048 * 8), new Uint32Array(8), new Uint32Array(8), 2048, 8, true, 4);
const pa = mk(a), pb = mk(b);
let calls = 0;
process.on('uncaughtException', (e) => { console.log('caught ' + e.message); if (calls >= 2) { pa.close(); pb.close(); } });
pb.start(() => { calls++; throw new Error('boom' + calls); });
pa.send([Buffer.alloc(10)]);
setTimeout(() => pa.send([Buffer.alloc(10)]), 20);`;
    const r = spawnSync(process.execPath, ['-e', script, addon], { encoding: 'utf8', timeout: 10_000 });
    expect({ status: r.status, out: r.stdout }).toEqual({ status: 0, out: 'caught boom1\ncaught boom2\n' });
  });
});

describe('install script', () => {
  it('fails with a message naming what to install when the compiler is missing', () => {
    const r = spawnSync(process.execPath, ['scripts/build.mjs'], {
      cwd: pkgDir,
      encoding: 'utf8',
      env: { ...process.env, CXX: 'fleet-no-such-compiler' },
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('cannot build the native addon');
    expect(r.stderr).toContain('a C++17 compiler (fleet-no-such-compiler): apt-get install g++');
  });
});
