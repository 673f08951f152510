/**
 * Unix stream rendezvous and fd passing (issue 17: the root network host hands a VM NIC socketpair
 * end to the VM agent of another uid). Sockets live in temp directories this test creates; traffic
 * stays on them.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  FramePort,
  closeFd,
  fdInfo,
  peerCredentials,
  recvFds,
  sendFds,
  setNonBlocking,
  socketpairDgram,
  unixAccept,
  unixConnect,
  unixListen,
  waitReadable,
  type ReceivedFds,
} from './index.ts';
import { closersAfterEach } from './testing/cleanup.ts';

const addonPath = createRequire(import.meta.url).resolve('../build/Release/native_vz.node');
const isRoot = process.getuid?.() === 0;
const NOBODY = 65534;
const SUN_PATH = process.platform === 'darwin' ? 104 : 108;

const dirs: string[] = [];
function tmpDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'fvz-fdpass-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const cleanup = closersAfterEach();
/** Raw fds this test still owns; closed after each test unless released. */
const owned = new Set<number>();
afterEach(() => {
  for (const fd of owned) closeFd(fd);
  owned.clear();
});
function track(fd: number): number {
  owned.add(fd);
  return fd;
}
/** The fd was closed, or something else (net.Socket, FramePort) owns it now: never close its number again. */
function release(fd: number): number {
  owned.delete(fd);
  return fd;
}

/** A connected (server, client) pair through a listening socket in a fresh temp dir. */
async function connectedPair(): Promise<{ server: number; client: number; sockPath: string; listenFd: number }> {
  const sockPath = path.join(tmpDir(), 's.sock');
  const listenFd = track(unixListen(sockPath));
  const client = track(unixConnect(sockPath));
  await waitReadable(listenFd, { signal: AbortSignal.timeout(5000) });
  const server = unixAccept(listenFd);
  expect(server).not.toBeNull();
  return { server: track(server!), client, sockPath, listenFd };
}

/** Waits for and returns the next recvFds result (readiness, not a timer). */
async function recvNext(fd: number, opts: { maxFds?: number; maxBytes?: number } = {}): Promise<ReceivedFds> {
  for (;;) {
    await waitReadable(fd, { signal: AbortSignal.timeout(5000) });
    const r = recvFds(fd, opts);
    if (r !== null) return r;
  }
}

/** Expects fn to throw an Error whose own properties include `props`. */
function expectThrow(fn: () => unknown, props: Record<string, unknown>, message?: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a throw').toBeInstanceOf(Error);
  expect(err).toMatchObject(props);
  if (message) expect((err as Error).message).toMatch(message);
}

function firstFrame(port: FramePort, timeoutMs = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no frame arrived')), timeoutMs);
    port.onFrames(
      (fs) => {
        clearTimeout(t);
        port.pause();
        resolve(fs[0]!);
      },
      { copy: true },
    );
  });
}

function readLine(sock: net.Socket, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`no line within ${timeoutMs} ms (got ${JSON.stringify(buf)})`)), timeoutMs);
    const onData = (d: Buffer): void => {
      buf += d.toString('utf8');
      const i = buf.indexOf('\n');
      if (i >= 0) {
        clearTimeout(t);
        sock.off('data', onData);
        resolve(buf.slice(0, i));
      }
    };
    sock.on('data', onData);
    sock.once('error', reject);
  });
}

describe('unixListen / unixConnect / unixAccept', () => {
  it('listens non-blocking and close-on-exec with mode 0600 by default; accept gives a blocking close-on-exec fd', async () => {
    const sockPath = path.join(tmpDir(), 'a.sock');
    const lfd = track(unixListen(sockPath));
    expect(fdInfo(lfd)).toEqual({ cloexec: true, nonblock: true, kind: 'stream' });
    const st = lstatSync(sockPath);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(unixAccept(lfd)).toBeNull(); // nothing pending: EAGAIN → null, no throw

    const client = track(unixConnect(sockPath));
    expect(fdInfo(client)).toEqual({ cloexec: true, nonblock: false, kind: 'stream' });
    await waitReadable(lfd, { signal: AbortSignal.timeout(5000) });
    const server = unixAccept(lfd);
    expect(server).not.toBeNull();
    track(server!);
    expect(fdInfo(server!)).toEqual({ cloexec: true, nonblock: false, kind: 'stream' });
    expect(unixAccept(lfd)).toBeNull();

    // Both sides see this process (the listener's credentials as of listen()).
    const me = { uid: process.getuid!(), gid: process.getgid!(), pid: process.pid };
    expect(peerCredentials(server!)).toEqual(me);
    expect(peerCredentials(client)).toEqual(me);
  });

  it('applies the requested mode (not the umask) before anyone can connect', () => {
    const dir = tmpDir();
    for (const mode of [0o660, 0o666, 0o640]) {
      const p = path.join(dir, `m${mode.toString(8)}.sock`);
      track(unixListen(p, { mode, backlog: 4 }));
      expect(lstatSync(p).mode & 0o777).toBe(mode);
    }
  });

  it('never unlinks an existing path: EADDRINUSE, the file is untouched', () => {
    const dir = tmpDir();
    const sockPath = path.join(dir, 'taken.sock');
    const lfd = unixListen(sockPath);
    closeFd(lfd); // a stale socket file stays behind
    expectThrow(() => unixListen(sockPath), { code: 'EADDRINUSE', syscall: 'bind' }, /stale socket.*never removed/);
    expect(lstatSync(sockPath).isSocket()).toBe(true);
    // connecting to the stale file: nobody listens
    expectThrow(() => unixConnect(sockPath), { code: 'ECONNREFUSED', syscall: 'connect' });

    const file = path.join(dir, 'regular');
    writeFileSync(file, 'keep me');
    expectThrow(() => unixListen(file), { code: 'EADDRINUSE' });
    expect(readFileSync(file, 'utf8')).toBe('keep me');
  });

  it(`refuses a path that does not fit sun_path (${SUN_PATH} bytes with its NUL) with ENAMETOOLONG`, () => {
    const dir = tmpDir();
    const fit = path.join(dir, 'x'.repeat(SUN_PATH - 1 - dir.length - 1)); // exactly SUN_PATH - 1 bytes
    expect(Buffer.byteLength(fit)).toBe(SUN_PATH - 1);
    track(unixListen(fit));
    track(unixConnect(fit));
    const long = fit + 'y';
    expectThrow(() => unixListen(long), { code: 'ENAMETOOLONG', errno: os.constants.errno.ENAMETOOLONG, syscall: 'bind' }, /shorter than 108|shorter than 104/);
    expectThrow(() => unixConnect(long), { code: 'ENAMETOOLONG', syscall: 'connect' });
    expect(existsSync(long)).toBe(false);
  });

  it('explains ENOENT, and rejects bad paths and options as argument errors', () => {
    const dir = tmpDir();
    expectThrow(() => unixConnect(path.join(dir, 'none.sock')), { code: 'ENOENT' }, /is the listener running/);
    expectThrow(() => unixListen(path.join(dir, 'no', 'dir.sock')), { code: 'ENOENT' }, /does not exist/);
    expectThrow(() => unixListen(''), { code: 'ERR_OUT_OF_RANGE' }, /empty/);
    expectThrow(() => unixListen(path.join(dir, 'a\0b')), { code: 'ERR_OUT_OF_RANGE' }, /NUL/);
    expectThrow(() => unixListen(42 as unknown as string), { code: 'ERR_INVALID_ARG_TYPE', name: 'TypeError' });
    expectThrow(() => unixListen(path.join(dir, 'm.sock'), { mode: 0o4755 }), { code: 'ERR_OUT_OF_RANGE', name: 'RangeError' });
    expectThrow(() => unixListen(path.join(dir, 'b.sock'), { backlog: 0 }), { code: 'ERR_OUT_OF_RANGE' });
    expect(existsSync(path.join(dir, 'm.sock'))).toBe(false);
    expectThrow(() => unixAccept('3' as unknown as number), { name: 'TypeError' });
    expectThrow(() => unixAccept(-1), { name: 'TypeError' });
  });

  it('unixAccept on a socket that is not listening, peerCredentials on a non-socket: errno errors', async () => {
    const { client } = await connectedPair();
    expectThrow(() => unixAccept(client), { code: 'EINVAL', syscall: 'accept' });
    const dir = tmpDir();
    const f = openSync(path.join(dir, 'file'), 'w');
    cleanup.push(() => closeSync(f));
    expectThrow(() => peerCredentials(f), { code: 'ENOTSOCK', syscall: 'getsockopt SO_PEERCRED' });
  });
});

describe('sendFds / recvFds in one process', () => {
  it('hands over a socketpair end with a payload; frames then flow through the received fd both ways', async () => {
    const { server, client } = await connectedPair();
    expect(recvFds(client)).toBeNull(); // idle: null, not a throw

    const [mine, vmEnd] = socketpairDgram();
    const hello = Buffer.from(JSON.stringify({ vm: 'vm7', mac: '02:00:00:00:00:07', mtu: 1500 }) + '\n');
    sendFds(server, [vmEnd], hello);
    closeFd(vmEnd); // the message holds its own reference

    const got = await recvNext(client);
    expect(got.data.equals(hello)).toBe(true);
    expect(got.fds).toHaveLength(1);
    const theirs = got.fds[0]!;
    expect(fdInfo(theirs)).toMatchObject({ cloexec: true, kind: 'dgram' });
    expect(recvFds(client)).toBeNull();

    const host = new FramePort(mine, { batch: 8, frameSize: 2048 }); // the ports own the fds
    const agent = new FramePort(theirs, { batch: 8, frameSize: 2048 });
    cleanup.push(() => host.close(), () => agent.close());
    const toAgent = Buffer.alloc(1514, 0xa5);
    toAgent.write('to-agent', 0);
    const fromAgent = Buffer.alloc(60, 0x5a);
    fromAgent.write('from-agent', 0);
    const atAgent = firstFrame(agent);
    const atHost = firstFrame(host);
    expect(host.send([toAgent])).toBe(1);
    expect(agent.send([fromAgent])).toBe(1);
    expect((await atAgent).equals(toAgent)).toBe(true);
    expect((await atHost).equals(fromAgent)).toBe(true);

    // After the handshake the same connection carries newline-delimited JSON through net.Socket,
    // which owns the fds from here on.
    const s = new net.Socket({ fd: release(server), readable: true, writable: true });
    const c = new net.Socket({ fd: release(client), readable: true, writable: true });
    const line = readLine(s);
    c.write(JSON.stringify({ ok: true }) + '\n');
    expect(JSON.parse(await line)).toEqual({ ok: true });
    const back = readLine(c);
    s.write(JSON.stringify({ frames: 'flowing' }) + '\n');
    expect(JSON.parse(await back)).toEqual({ frames: 'flowing' });
    await new Promise<void>((resolve) => {
      c.once('close', () => resolve());
      s.destroy();
      c.destroy();
    });
    expect(host.stats().txErrors + agent.stats().txErrors).toBe(0);
  });

  it('passes up to 8 fds at once, all close-on-exec, in order', async () => {
    const { server, client } = await connectedPair();
    const pairs = Array.from({ length: 4 }, () => socketpairDgram({ sndbuf: 0, rcvbuf: 0 }));
    for (const [a, b] of pairs) cleanup.push(() => closeFd(a), () => closeFd(b));
    const fds = pairs.flat();
    sendFds(server, fds, Buffer.from('eight'));
    const got = await recvNext(client);
    expect(got.data.toString()).toBe('eight');
    expect(got.fds).toHaveLength(8);
    for (const fd of got.fds) {
      track(fd);
      expect(fdInfo(fd)).toMatchObject({ cloexec: true, kind: 'dgram' });
    }
    // Same order: received fd 2k+1 is the peer of our fd 2k.
    const port = new FramePort(pairs[2]![0], { batch: 4, frameSize: 2048, ownsFd: false });
    const recv = new FramePort(got.fds[5]!, { batch: 4, frameSize: 2048, ownsFd: false });
    cleanup.push(() => port.close(), () => recv.close());
    const f = firstFrame(recv);
    expect(port.send([Buffer.from('pair-2')])).toBe(1);
    expect((await f).toString()).toBe('pair-2');
  });

  it('delivers a 64 KiB payload whole (fds with its first bytes) and then reports EOF as a thrown error', async () => {
    const { server, client } = await connectedPair();
    const [a, b] = socketpairDgram({ sndbuf: 0, rcvbuf: 0 });
    cleanup.push(() => closeFd(a), () => closeFd(b));
    const big = Buffer.alloc(64 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    sendFds(server, [b], big);
    const first = await recvNext(client);
    expect(first.fds).toHaveLength(1);
    track(first.fds[0]!);
    const parts = [first.data];
    let total = first.data.length;
    while (total < big.length) {
      const r = await recvNext(client);
      expect(r.fds).toEqual([]);
      parts.push(r.data);
      total += r.data.length;
    }
    expect(Buffer.concat(parts).equals(big)).toBe(true);

    closeFd(release(server));
    await waitReadable(client, { signal: AbortSignal.timeout(5000) });
    expectThrow(() => recvFds(client), { code: 'EOF', syscall: 'recvmsg' }, /peer closed/);
    // The peer is gone: sending now fails with EPIPE (no SIGPIPE kills the process).
    expectThrow(() => sendFds(client, [a], Buffer.from('x')), { code: 'EPIPE', syscall: 'sendmsg' }, /peer closed/);
  });

  it('on a full non-blocking socket sendFds throws EAGAIN and sends nothing; every accepted message arrives with its fd', async () => {
    const { server, client } = await connectedPair();
    setNonBlocking(server);
    const [a, b] = socketpairDgram({ sndbuf: 0, rcvbuf: 0 });
    cleanup.push(() => closeFd(a), () => closeFd(b));
    let sent = 0;
    let err: unknown = null;
    while (err === null && sent < 100_000) {
      try {
        sendFds(server, [b], Buffer.from([sent & 0xff]));
        sent++;
      } catch (e) {
        err = e;
      }
    }
    expect(err).toMatchObject({ code: 'EAGAIN', syscall: 'sendmsg' });
    expect((err as Error).message).toMatch(/nothing was sent/);
    expect(sent).toBeGreaterThan(10);
    let got = 0;
    for (let m = recvFds(client); m !== null; m = recvFds(client)) {
      // Linux ends each read after the chunk that carried fds: one message per call here.
      expect(m.fds).toHaveLength(1);
      expect([...m.data]).toEqual([got & 0xff]);
      closeFd(m.fds[0]!);
      got++;
    }
    expect(got).toBe(sent);
  });

  it('MSG_CTRUNC: more fds than maxFds closes every received fd and throws EMSGSIZE', async () => {
    const { server, client } = await connectedPair();
    const [a, b] = socketpairDgram({ sndbuf: 0, rcvbuf: 0 });
    const port = new FramePort(a, { batch: 4, frameSize: 2048 });
    cleanup.push(() => port.close());
    sendFds(server, [b, b, b], Buffer.from('three'));
    closeFd(b);
    await waitReadable(client, { signal: AbortSignal.timeout(5000) });
    expectThrow(() => recvFds(client, { maxFds: 1 }), { code: 'EMSGSIZE', syscall: 'recvmsg' }, /MSG_CTRUNC.*closed/);
    // No copy of b is left open anywhere (none leaked into this process): its peer is refused.
    expect(port.send([Buffer.from('anyone?')])).toBe(0);
    expect(port.stats().lastError).toBe('ECONNREFUSED');
  });

  it('works on a datagram socketpair too (an empty datagram is data, not EOF)', async () => {
    const [x, y] = socketpairDgram({ sndbuf: 0, rcvbuf: 0 });
    cleanup.push(() => closeFd(x), () => closeFd(y));
    const [p, q] = socketpairDgram({ sndbuf: 0, rcvbuf: 0 });
    cleanup.push(() => closeFd(p), () => closeFd(q));
    expect(recvFds(y)).toBeNull();
    sendFds(x, [q], Buffer.from('dgram'));
    const got = await recvNext(y);
    track(got.fds[0]!);
    expect(got.data.toString()).toBe('dgram');
    expect(got.fds).toHaveLength(1);
    // A datagram longer than maxBytes: its fds are closed, EMSGSIZE thrown.
    sendFds(x, [q], Buffer.alloc(100, 1));
    await waitReadable(y);
    expectThrow(() => recvFds(y, { maxBytes: 10 }), { code: 'EMSGSIZE' }, /longer than maxBytes=10/);
  });

  it('bad input is a clean thrown error, never a crash', async () => {
    const { server, client } = await connectedPair();
    const [a, b] = socketpairDgram({ sndbuf: 0, rcvbuf: 0 });
    cleanup.push(() => closeFd(a), () => closeFd(b));
    const d = Buffer.from('x');
    expectThrow(() => sendFds(server, ['3' as unknown as number], d), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }, /fds\[0\]/);
    expectThrow(() => sendFds(server, [Number.NaN], d), { name: 'TypeError' });
    expectThrow(() => sendFds(server, [a, -1], d), { name: 'TypeError' }, /fds\[1\]/);
    expectThrow(() => sendFds(server, [1.5], d), { name: 'TypeError' });
    expectThrow(() => sendFds(server, 3 as unknown as number[], d), { name: 'TypeError' });
    expectThrow(() => sendFds(server, [], d), { name: 'RangeError' }, /1\.\.8/);
    expectThrow(() => sendFds(server, Array.from({ length: 9 }, () => a), d), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }, /got 9/);
    expectThrow(() => sendFds(server, [a], Buffer.alloc(0)), { name: 'RangeError' }, /1\.\.65536 bytes \(got 0\)/);
    expectThrow(() => sendFds(server, [a], Buffer.alloc(64 * 1024 + 1)), { name: 'RangeError' }, /got 65537/);
    expectThrow(() => sendFds(server, [a], 'text' as unknown as Buffer), { name: 'TypeError' }, /Buffer or Uint8Array/);
    expectThrow(() => sendFds('x' as unknown as number, [a], d), { name: 'TypeError' });
    expectThrow(() => recvFds(client, { maxFds: 65 }), { name: 'RangeError' });
    expectThrow(() => recvFds(client, { maxBytes: 0 }), { name: 'RangeError' });
    expectThrow(() => peerCredentials(null as unknown as number), { name: 'TypeError' });

    // A closed fd, as the socket or among the fds.
    const [c1, c2] = socketpairDgram({ sndbuf: 0, rcvbuf: 0 });
    closeFd(c1);
    closeFd(c2);
    expectThrow(() => sendFds(server, [a, c1], d), { code: 'EBADF', syscall: 'sendmsg' });
    expectThrow(() => sendFds(c1, [a], d), { code: 'EBADF' });
    expectThrow(() => recvFds(c1), { code: 'EBADF', syscall: 'recvmsg' });
    expectThrow(() => peerCredentials(c1), { code: 'EBADF' });
    expectThrow(() => unixAccept(c1), { code: 'EBADF' });
    await expect(waitReadable(c1)).rejects.toMatchObject({ code: 'EBADF' });
    // Nothing was sent by the failed calls.
    expect(recvFds(client)).toBeNull();

    // The native layer validates on its own too (JS wrappers bypassed).
    const raw = createRequire(import.meta.url)(addonPath) as Record<string, (...args: unknown[]) => unknown>;
    expectThrow(() => raw.sendFds!(server, 'nope', d), { name: 'TypeError' });
    expectThrow(() => raw.sendFds!(server, [a, {}], d), { name: 'TypeError' });
    expectThrow(() => raw.sendFds!(server, [a], new Uint16Array(4)), { name: 'TypeError' });
    expectThrow(() => raw.sendFds!(server, new Array(9).fill(a), d), { name: 'RangeError' });
    expectThrow(() => raw.sendFds!(), { name: 'TypeError' });
    expectThrow(() => raw.recvFds!(client, -1, 10), { name: 'RangeError' });
    expectThrow(() => raw.recvFds!(client, 1, 1e9), { name: 'RangeError' });
    expectThrow(() => raw.recvFds!(client), { name: 'TypeError' });
    expectThrow(() => raw.unixListen!(tmpDir() + '/r.sock', 0o600), { name: 'TypeError' });
    expectThrow(() => raw.unixListen!({}, 0o600, 1), { name: 'TypeError' });
    expectThrow(() => raw.unixConnect!(), { name: 'TypeError' });
    expectThrow(() => raw.peerCredentials!(2 ** 40), { name: 'RangeError' });
    expectThrow(() => raw.unixAccept!(Number.POSITIVE_INFINITY), { name: 'RangeError' });
    expect(recvFds(client)).toBeNull();
  });

  it('waitReadable can be aborted, and does not crash a worker thread that exits while waiting', async () => {
    const { client } = await connectedPair();
    const ac = new AbortController();
    const p = waitReadable(client, { signal: ac.signal });
    ac.abort();
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    await expect(waitReadable(client, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });

    // Worker threads terminated while an FdWatch is waiting: the env cleanup hook must close the
    // uv handle before Node unloads the addon (run in a child: a crash must not take vitest down).
    const script = `
const { Worker } = require('node:worker_threads');
const code = \`
const native = require(\${JSON.stringify(process.argv[1])});
const [a, b] = native.socketpairDgram(65536, 65536, false);
const w = new native.FdWatch(a);
w.wait(() => {});
require('node:worker_threads').parentPort.postMessage('ready');
\`;
let n = 0;
function one() {
  const w = new Worker(code, { eval: true });
  w.on('message', () => (n % 2 ? w.terminate() : setTimeout(() => w.terminate(), 5)));
  w.on('error', (e) => { console.error(e); process.exit(2); });
  w.on('exit', () => (++n < 8 ? one() : console.log('ok ' + n)));
}
one();`;
    const r = spawnSync(process.execPath, ['-e', script, addonPath], { encoding: 'utf8', timeout: 20_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('ok 8');
  });
});

/** The VM agent's side, run by a child of another uid: loads the built addon by absolute path. */
const AGENT_SCRIPT = String.raw`
'use strict';
const [addonPath, sockPath, mode] = process.argv.slice(2);
const addon = require(addonPath);
const net = require('node:net');
function die(code, msg) { console.error(msg); process.exit(code); }
let fd;
try { fd = addon.unixConnect(sockPath); } catch (e) {
  if (mode === 'connect-only') { console.log(e.code); process.exit(0); }
  die(3, 'connect: ' + e.message);
}
if (mode === 'connect-only') { console.log('connected'); process.exit(0); }
// An agent only trusts a listener that root created.
const listener = addon.peerCredentials(fd);
if (listener.uid !== 0) die(4, 'listener is not root: ' + JSON.stringify(listener));
let text = '';
const fds = [];
function next() {
  const w = new addon.FdWatch(fd);
  w.wait((err) => {
    w.close();
    if (err) die(5, 'poll: ' + err);
    const m = addon.recvFds(fd, 8, 65536);
    if (m !== null) { fds.push(...m.fds); text += m.data.toString('utf8'); }
    const nl = text.indexOf('\n');
    if (nl < 0) return next();
    if (text.length > nl + 1) die(6, 'unexpected bytes after the hello line');
    ready(JSON.parse(text.slice(0, nl)));
  });
}
function ready(hello) {
  if (fds.length !== 1) die(7, 'expected one fd, got ' + fds.length);
  const nic = fds[0];
  const port = new addon.FramePort(nic, new ArrayBuffer(4 * 2048), new Uint32Array(4), new Uint32Array(4), 2048, 4, true, 1);
  const frame = Buffer.from(JSON.stringify({ from: 'agent', uid: process.getuid(), vm: hello.vm }));
  if (port.send([frame]) !== 1) die(8, 'frame not accepted: ' + JSON.stringify(port.stats()));
  const sock = new net.Socket({ fd, readable: true, writable: true });
  let buf = '';
  sock.on('data', (d) => {
    buf += d.toString('utf8');
    if (buf.includes('\n')) { port.close(); sock.end(); }
  });
  sock.write(JSON.stringify({ agent: 'ready', uid: process.getuid(), gid: process.getgid() }) + '\n');
}
next();
`;

describe('across processes and uids (root hands the fd to uid 65534)', () => {
  if (!isRoot) console.warn('\n*** native-vz fd passing across uids SKIPPED: not running as root (needs to spawn a uid 65534 child) ***\n');

  it.skipIf(!isRoot)('an unprivileged child connects, is identified by uid, receives the NIC end and writes a frame into it', async () => {
    // Rendezvous directory: root-owned, traversable but neither listable nor writable by others.
    const dir = tmpDir();
    chmodSync(dir, 0o711);
    const sockPath = path.join(dir, 'agent.sock');
    const lfd = track(unixListen(sockPath, { mode: 0o600 }));
    chownSync(sockPath, NOBODY, NOBODY); // connect needs write permission on the socket file

    const scriptDir = tmpDir();
    chmodSync(scriptDir, 0o755);
    const script = path.join(scriptDir, 'agent.cjs');
    writeFileSync(script, AGENT_SCRIPT, { mode: 0o644 });

    const child = spawn(process.execPath, [script, addonPath, sockPath], { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    cleanup.push(() => child.kill());

    await waitReadable(lfd, { signal: AbortSignal.timeout(10_000) });
    const conn = unixAccept(lfd);
    expect(conn).not.toBeNull();
    const creds = peerCredentials(conn!);
    expect(creds).toEqual({ uid: NOBODY, gid: NOBODY, pid: child.pid });

    const [mine, vmEnd] = socketpairDgram();
    const host = new FramePort(mine, { batch: 8, frameSize: 2048 });
    cleanup.push(() => host.close());
    const frame = firstFrame(host, 10_000);
    sendFds(conn!, [vmEnd], Buffer.from(JSON.stringify({ vm: 'vm65534' }) + '\n'));
    closeFd(vmEnd);

    expect(JSON.parse((await frame).toString())).toEqual({ from: 'agent', uid: NOBODY, vm: 'vm65534' });
    const sock = new net.Socket({ fd: conn!, readable: true, writable: true }); // owns conn (never tracked)
    expect(JSON.parse(await readLine(sock))).toEqual({ agent: 'ready', uid: NOBODY, gid: NOBODY });
    sock.write(JSON.stringify({ bye: true }) + '\n');
    const code = await exited;
    sock.destroy();
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });

  it.skipIf(!isRoot)('the socket mode keeps other uids out: uid 65534 gets EACCES on a root 0600 socket', async () => {
    const dir = tmpDir();
    chmodSync(dir, 0o711);
    const sockPath = path.join(dir, 'root-only.sock');
    const lfd = track(unixListen(sockPath));
    const scriptDir = tmpDir();
    chmodSync(scriptDir, 0o755);
    const script = path.join(scriptDir, 'agent.cjs');
    writeFileSync(script, AGENT_SCRIPT, { mode: 0o644 });
    const r = spawnSync(process.execPath, [script, addonPath, sockPath, 'connect-only'], { uid: NOBODY, gid: NOBODY, encoding: 'utf8', timeout: 10_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('EACCES');
    expect(unixAccept(lfd)).toBeNull();
  });
});
