/**
 * TAP tests (root only). The TAP lives in a network namespace the test creates, with
 * 10.231.0.1/24 on it and a static neighbour 10.231.0.2 = our side of the wire; traffic never
 * leaves that namespace. Skipped loudly without root or /dev/net/tun.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FramePort, TAP_IO_URING_BUILT, fdInfo, openTap } from './index.ts';
import { echoRequest } from './testing/icmp-frames.ts';
import { TAP_IO_MODES, portInMode } from './testing/tap-io-modes.ts';

const isRoot = process.getuid?.() === 0;
const hasTun = existsSync('/dev/net/tun');
const hasIp = spawnSync('ip', ['-V'], { stdio: 'ignore' }).status === 0;
const skipReason = !isRoot ? 'not running as root' : !hasTun ? '/dev/net/tun is absent' : !hasIp ? 'iproute2 (ip) is missing' : null;
if (skipReason !== null) console.warn(`\n*** native-vz TAP tests SKIPPED: ${skipReason} ***\n`);

const TAP_MAC = Buffer.from([0x02, 0, 0, 0, 0, 0x01]);
const OUR_MAC = Buffer.from([0x02, 0, 0, 0, 0, 0x02]);
const TAP_IP = [10, 231, 0, 1];
const OUR_IP = [10, 231, 0, 2];

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

const ECHO = { srcMac: OUR_MAC, dstMac: TAP_MAC, srcIp: OUR_IP, dstIp: TAP_IP };

if (skipReason === null && !TAP_IO_URING_BUILT) {
  console.warn('\n*** native-vz TAP tests: the addon was built without liburing (Debian: liburing-dev); only the read()/write() loops are tested ***\n');
}


describe.skipIf(skipReason !== null).each(TAP_IO_MODES)('TAP (root), %s', (mode) => {
  let tap: { fd: number; name: string };
  let port: FramePort;
  const received: Buffer[] = [];
  let waiters: Array<() => void> = [];
  const NS = `fvz-tap-${process.pid}-${mode === 'loops' ? 'l' : 'u'}`;
  const TAP = `fvzt${mode === 'loops' ? 'l' : 'u'}${process.pid % 100000}`;
  const nsExec = (...args: string[]): string => execFileSync('ip', ['netns', 'exec', NS, ...args], { encoding: 'utf8' });

  beforeAll(() => {
    ip('netns', 'add', NS);
    nsExec('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
    nsExec('sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1');
    tap = openTap(TAP);
    ip('link', 'set', TAP, 'netns', NS); // the fd stays attached
    nsExec('ip', 'link', 'set', 'dev', TAP, 'address', '02:00:00:00:00:01');
    nsExec('ip', 'addr', 'add', '10.231.0.1/24', 'dev', TAP);
    nsExec('ip', 'link', 'set', TAP, 'up');
    nsExec('ip', 'neigh', 'replace', '10.231.0.2', 'lladdr', '02:00:00:00:00:02', 'dev', TAP, 'nud', 'permanent');
    port = portInMode(tap.fd, mode);
    port.onFrames(
      (frames) => {
        received.push(...frames);
        const w = waiters;
        waiters = [];
        for (const f of w) f();
      },
      { copy: true },
    );
  });

  afterAll(() => {
    port?.close(); // a non-persistent TAP disappears with its last fd
    spawnSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
    spawnSync('ip', ['link', 'del', TAP], { stdio: 'ignore' });
  });

  async function waitFor(pred: () => boolean, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error('timeout waiting for frames from the TAP');
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  it('opens a non-blocking, close-on-exec TAP and wraps it as a tap FramePort', () => {
    expect(tap.name).toBe(TAP);
    expect(fdInfo(tap.fd)).toEqual({ cloexec: true, nonblock: true, kind: 'char' });
    expect(port.kind).toBe('tap');
    expect(nsExec('ip', '-o', 'link', 'show', TAP)).toContain('02:00:00:00:00:01');
  });

  it('kernel -> TAP: 100 UDP datagrams sent in the namespace arrive as frames, in batches', async () => {
    const before = port.stats().rxBatches;
    nsExec(
      'python3',
      '-c',
      "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(100): s.sendto(b'fleet-%03d' % i, ('10.231.0.2', 9))",
    );
    const udp = () => received.filter((f) => f.length >= 42 && f.readUInt16BE(12) === 0x0800 && f[23] === 17 && f.readUInt16BE(36) === 9);
    await waitFor(() => udp().length >= 100);
    const frames = udp();
    expect(frames.map((f) => f.subarray(42).toString())).toEqual(Array.from({ length: 100 }, (_, i) => `fleet-${String(i).padStart(3, '0')}`));
    expect(frames[0]!.subarray(0, 6).equals(OUR_MAC)).toBe(true);
    expect(port.stats().rxBatches - before).toBeLessThan(100); // read loop batches frames per callback
  });

  it('TAP -> kernel -> TAP: a batch of 32 ICMP echo requests written in one send() gets 32 echo replies', async () => {
    const id = 0x4242;
    const requests = Array.from({ length: 32 }, (_, seq) => echoRequest(ECHO, id, seq));
    expect(port.send(requests)).toBe(32);
    const replies = () => received.filter((f) => f.length >= 42 && f.readUInt16BE(12) === 0x0800 && f[23] === 1 && f[34] === 0 && f.readUInt16BE(38) === id);
    await waitFor(() => replies().length >= 32);
    const r = replies();
    expect(r.map((f) => f.readUInt16BE(40)).sort((a, b) => a - b)).toEqual(Array.from({ length: 32 }, (_, i) => i));
    expect(r[0]!.subarray(0, 6).equals(OUR_MAC)).toBe(true);
    expect([...r[0]!.subarray(26, 30)]).toEqual(TAP_IP);
    const s = port.stats();
    expect(s.txFrames).toBe(32);
    expect(s.txErrors + s.eagain + s.enobufs).toBe(0);
  });

  it(mode === 'io_uring' ? 'batches its reads and writes through io_uring' : 'uses read()/write() loops when FLEET_TAP_IO_URING=0', () => {
    const s = port.stats();
    expect(s.tapIoUring).toBe(mode === 'io_uring' ? 1 : 0);
    expect(s.ioUringFallbacks).toBe(0);
    // The frames of the tests above really went that way: through the ring's calls, or none of them.
    if (mode === 'io_uring') {
      expect(s.ioUringRxCalls).toBeGreaterThan(0);
      expect(s.ioUringTxCalls).toBeGreaterThan(0);
    } else {
      expect(s.ioUringRxCalls).toBe(0);
      expect(s.ioUringTxCalls).toBe(0);
    }
  });

  it('TAP -> kernel -> TAP: 300 echo requests in one send() (more than a ring holds) get 300 replies; TAP -> us keeps their order', async () => {
    const id = 0x4343;
    const requests = Array.from({ length: 300 }, (_, seq) => echoRequest(ECHO, id, seq));
    const before = port.stats();
    expect(port.send(requests)).toBe(300);
    const replies = () => received.filter((f) => f.length >= 42 && f.readUInt16BE(12) === 0x0800 && f[23] === 1 && f[34] === 0 && f.readUInt16BE(38) === id);
    await waitFor(() => replies().length >= 300);
    // The kernel answers each request as it is written, in order; the port delivers them in that order.
    expect(replies().map((f) => f.readUInt16BE(40))).toEqual(Array.from({ length: 300 }, (_, i) => i));
    const s = port.stats();
    expect(s.txFrames - before.txFrames).toBe(300);
    expect(s.txDrops - before.txDrops).toBe(0);
    expect(s.ioUringFallbacks).toBe(0);
    const txCalls = s.ioUringTxCalls - before.ioUringTxCalls;
    if (mode === 'io_uring') {
      // Written in chunks of the ring's size (at least 64 a call here), not a call per frame.
      expect(txCalls).toBeGreaterThanOrEqual(1);
      expect(txCalls).toBeLessThanOrEqual(Math.ceil(300 / 64));
      expect(s.ioUringRxCalls - before.ioUringRxCalls).toBeGreaterThan(0);
    } else {
      expect(txCalls).toBe(0);
    }
  });

  it('a frame longer than the slot is counted and skipped; the frame after it arrives whole', async () => {
    // A second TAP with 128-byte slots, on its own subnet in the same namespace.
    const name = `${TAP}s`;
    const small = openTap(name);
    ip('link', 'set', name, 'netns', NS);
    nsExec('ip', 'link', 'set', 'dev', name, 'address', '02:00:00:00:01:01');
    nsExec('ip', 'addr', 'add', '10.232.0.1/24', 'dev', name);
    nsExec('ip', 'link', 'set', name, 'up');
    nsExec('ip', 'neigh', 'replace', '10.232.0.2', 'lladdr', '02:00:00:00:01:02', 'dev', name, 'nud', 'permanent');
    const p = portInMode(small.fd, mode, { frameSize: 128, batch: 8 });
    const got: Buffer[] = [];
    p.onFrames((frames) => got.push(...frames.filter((f) => f.length >= 42 && f[23] === 17 && f.readUInt16BE(36) === 9)), { copy: true });
    try {
      // 42 bytes of headers: a 120-byte payload makes a 162-byte frame (too long), 15 bytes a 57-byte one.
      nsExec('python3', '-c', "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(20): s.sendto((b'L%02d' % i) * 40 if i % 2 == 0 else (b's%02d' % i) * 5, ('10.232.0.2', 9))");
      const deadline = Date.now() + 5000;
      while (got.length < 10 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(got.map((f) => f.subarray(42).toString())).toEqual(Array.from({ length: 10 }, (_, k) => `s${String(2 * k + 1).padStart(2, '0')}`.repeat(5)));
      expect(p.stats().rxTruncated).toBe(10);
      expect(p.stats().tapIoUring).toBe(mode === 'io_uring' ? 1 : 0);
    } finally {
      p.close();
    }
  });

  it('a frame the TAP refuses in the middle of a batch ends it there: the frames before it accepted, one error, the rest dropped and not written', async () => {
    const id = 0x4545;
    const batch = [0, 1, 2, 3, 4].map((seq) => echoRequest(ECHO, id, seq));
    batch[2] = Buffer.alloc(10); // shorter than an Ethernet header: tun answers EINVAL
    const before = port.stats();
    expect(port.send(batch)).toBe(2);
    const s = port.stats();
    expect(s.txFrames - before.txFrames).toBe(2);
    expect(s.txDrops - before.txDrops).toBe(3);
    expect(s.txErrors - before.txErrors).toBe(1);
    expect(s.lastError).toBe('EINVAL');
    expect(s.tapIoUring).toBe(mode === 'io_uring' ? 1 : 0);
    // Only the two accepted requests reached the kernel: two replies, and none for 3 and 4.
    const replies = () => received.filter((f) => f.length >= 42 && f.readUInt16BE(12) === 0x0800 && f[23] === 1 && f[34] === 0 && f.readUInt16BE(38) === id);
    await waitFor(() => replies().length >= 2);
    await new Promise((r) => setTimeout(r, 300));
    expect(replies().map((f) => f.readUInt16BE(40))).toEqual([0, 1]);
  });

  it('a TAP that is down refuses a batch as a whole: nothing accepted, one error counted, every frame dropped', () => {
    const name = `${TAP}d`;
    const down = openTap(name); // never set up: tun answers EIO to writes
    ip('link', 'set', name, 'netns', NS);
    const p = portInMode(down.fd, mode);
    try {
      const frames = Array.from({ length: 5 }, (_, seq) => echoRequest(ECHO, 0x4444, seq));
      expect(p.send(frames)).toBe(0);
      const s = p.stats();
      expect(s.txFrames).toBe(0);
      expect(s.txDrops).toBe(5);
      expect(s.txErrors).toBe(1); // the first write's EIO; the rest were not attempted (loops) or cancelled (io_uring)
      expect(s.lastError).toBe('EIO');
    } finally {
      p.close();
    }
  });

  it('explains EPERM for an unprivileged caller ("needs root or CAP_NET_ADMIN")', () => {
    const addon = createRequire(import.meta.url).resolve('../build/Release/native_vz.node');
    const script = `try { require(${JSON.stringify(addon)}).openTap('fvzperm0', true); console.log('opened'); } catch (e) { console.log(e.code + ' ' + e.message); }`;
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', process.execPath, '-e', script], { encoding: 'utf8' });
    if (r.status !== 0 && r.stdout === '') {
      console.warn(`*** native-vz: EPERM check skipped (setpriv failed: ${r.stderr.trim()}) ***`);
      return;
    }
    expect(r.stdout).toMatch(/^EPERM .*needs root or CAP_NET_ADMIN/);
  });

  it('explains a missing /dev/net/tun (private mount namespace with an empty /dev/net)', () => {
    const addon = createRequire(import.meta.url).resolve('../build/Release/native_vz.node');
    const script = `try { require(${JSON.stringify(addon)}).openTap('fvzmiss0', true); console.log('opened'); } catch (e) { console.log(e.code + ' ' + e.message); }`;
    const r = spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs none /dev/net && exec "$0" -e "$1"', process.execPath, script], { encoding: 'utf8' });
    if (r.status !== 0 && r.stdout === '') {
      console.warn(`*** native-vz: missing-/dev/net/tun check skipped (unshare failed: ${r.stderr.trim()}) ***`);
      return;
    }
    expect(r.stdout).toMatch(/^ENOENT .*\/dev\/net\/tun is missing/);
  });

  it('rejects over-long interface names', () => {
    expect(() => openTap('x'.repeat(16))).toThrow(/longer than 15 bytes/);
  });
});
