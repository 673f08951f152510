import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_RCVBUF,
  DEFAULT_SNDBUF,
  FramePort,
  clearCloexec,
  closeFd,
  fdInfo,
  getBufferSizes,
  socketpairDgram,
} from './index.ts';
import { collect, frame } from './testing/numbered-frames.ts';
import { closersAfterEach } from './testing/cleanup.ts';

const isRoot = process.getuid?.() === 0;
const cleanup = closersAfterEach();

function pair(opts: { sndbuf?: number; rcvbuf?: number } = {}, portOpts: { batch?: number; frameSize?: number } = {}): [FramePort, FramePort] {
  const [a, b] = socketpairDgram(opts);
  const pa = new FramePort(a, portOpts);
  const pb = new FramePort(b, portOpts);
  cleanup.push(() => pa.close(), () => pb.close());
  return [pa, pb];
}

/** Sends all frames, waiting for writability whenever the kernel takes only part of a batch. */
async function sendAll(port: FramePort, frames: Buffer[], chunk: number): Promise<void> {
  let i = 0;
  while (i < frames.length) {
    const n = port.send(frames.slice(i, i + chunk));
    i += n;
    if (i < frames.length && n < Math.min(chunk, frames.length - i + n)) await port.writable();
  }
}

describe('socketpairDgram', () => {
  it('creates a connected SOCK_DGRAM pair, close-on-exec on both ends, with Tart buffer sizes', () => {
    const [a, b] = socketpairDgram();
    cleanup.push(() => closeFd(a), () => closeFd(b));
    for (const fd of [a, b]) {
      expect(fdInfo(fd)).toEqual({ cloexec: true, nonblock: false, kind: 'dgram' });
      const sizes = getBufferSizes(fd);
      if (isRoot) {
        // SO_*BUFFORCE; Linux stores (and reports) twice the requested value.
        expect(sizes.sndbuf).toBe(2 * DEFAULT_SNDBUF);
        expect(sizes.rcvbuf).toBe(2 * DEFAULT_RCVBUF);
      } else {
        expect(sizes.sndbuf).toBeGreaterThan(0);
        expect(sizes.rcvbuf).toBeGreaterThan(0);
      }
    }
  });

  it('honours explicit sizes and the nonblock option', () => {
    const [a, b] = socketpairDgram({ sndbuf: 65536, rcvbuf: 131072, nonblock: true });
    cleanup.push(() => closeFd(a), () => closeFd(b));
    expect(getBufferSizes(a)).toEqual({ sndbuf: 131072, rcvbuf: 262144 });
    expect(fdInfo(b).nonblock).toBe(true);
    expect(() => socketpairDgram({ sndbuf: -1 })).toThrow(RangeError);
  });
});

describe('FramePort over a socketpair', () => {
  it('round-trips frames with datagram boundaries preserved, delivered in batches', async () => {
    const [pa, pb] = pair();
    expect(pa.kind).toBe('dgram');
    const N = 2000;
    const sent = Array.from({ length: N }, (_, i) => frame(i));
    const got = collect(pb, N, { pauseWhenDone: true });
    await sendAll(pa, sent, 100);
    const { frames, batches } = await got;
    expect(frames.length).toBe(N);
    for (let i = 0; i < N; i++) expect(frames[i]!.equals(sent[i]!)).toBe(true);
    // Arrays of frames per callback, never more than the batch size.
    expect(Math.max(...batches)).toBeLessThanOrEqual(64);
    expect(Math.max(...batches)).toBeGreaterThan(1);
    const sa = pa.stats();
    const sb = pb.stats();
    expect(sa.txFrames).toBe(N);
    expect(sb.rxFrames).toBe(N);
    expect(sb.rxBytes).toBe(sent.reduce((s, f) => s + f.length, 0));
    expect(sb.rxBatches).toBe(batches.length);
    expect(sa.txBatches).toBeLessThan(N / 10); // sendmmsg, not one syscall per frame
  });

  it('zero-copy batches: views are valid during the callback, and sendBatch forwards them', async () => {
    const [src, mid] = pair();
    const [out, sink] = pair();
    let forwarded = 0;
    mid.onBatch((b) => {
      // Every frame's first 4 bytes are readable in place.
      for (let i = 0; i < b.count; i++) expect(b.buffer.readUInt32BE(b.offsets[i]!)).toBeGreaterThanOrEqual(0);
      forwarded += out.sendBatch(b.buffer, b.offsets, b.lengths, b.count);
    });
    const N = 500;
    const sent = Array.from({ length: N }, (_, i) => frame(i, 1514));
    const got = collect(sink, N, { pauseWhenDone: true });
    await sendAll(src, sent, 64);
    const { frames } = await got;
    expect(forwarded).toBe(N);
    for (let i = 0; i < N; i++) expect(frames[i]!.equals(sent[i]!)).toBe(true);
  });

  it('handles large batches (1024 frames per send) with partial acceptance and writability waits', async () => {
    const [pa, pb] = pair({ sndbuf: 256 * 1024 }, { batch: 256, frameSize: 2048 });
    const N = 4096;
    const sent = Array.from({ length: N }, (_, i) => frame(i, 1514));
    const got = collect(pb, N, { timeoutMs: 20_000, pauseWhenDone: true });
    await sendAll(pa, sent, 1024);
    const { frames, batches } = await got;
    expect(frames.length).toBe(N);
    for (let i = 0; i < N; i += 97) expect(frames[i]!.equals(sent[i]!)).toBe(true);
    expect(frames[N - 1]!.equals(sent[N - 1]!)).toBe(true);
    expect(Math.max(...batches)).toBeLessThanOrEqual(256);
  });

  it('counts EAGAIN/ENOBUFS when the peer does not read, never throws, and loses nothing it accepted', async () => {
    const [pa, pb] = pair({ sndbuf: 64 * 1024 });
    const batch = Array.from({ length: 64 }, (_, i) => frame(i, 1514));
    let accepted = 0;
    let attempted = 0;
    for (let round = 0; round < 50; round++) {
      attempted += batch.length;
      accepted += pa.send(batch);
    }
    const s = pa.stats();
    expect(accepted).toBeLessThan(attempted);
    expect(s.eagain + s.enobufs).toBeGreaterThan(0);
    expect(s.txDrops).toBe(attempted - accepted);
    expect(s.txFrames).toBe(accepted);
    expect(s.txErrors).toBe(0);
    // Everything accepted is delivered once the peer reads.
    const { frames } = await collect(pb, accepted, { pauseWhenDone: true });
    expect(frames.length).toBe(accepted);
    expect(pb.stats().rxFrames).toBe(accepted);
  });

  it('drops datagrams larger than frameSize (counted as rxTruncated), delivers the rest', async () => {
    const [pa, pb] = pair({}, { frameSize: 1024 });
    pa.send([frame(1, 100), frame(2, 2000), frame(3, 1024)]);
    const { frames } = await collect(pb, 2, { pauseWhenDone: true });
    expect(frames.map((f) => f.readUInt32BE(0))).toEqual([1, 3]);
    expect(pb.stats().rxTruncated).toBe(1);
  });

  it('does not poll busily: an idle port wakes up zero times', async () => {
    const [, pb] = pair();
    pb.onFrames(() => {});
    await new Promise((r) => setTimeout(r, 200));
    expect(pb.stats().rxWakeups).toBe(0);
  });

  it('close semantics: idempotent, closes the owned fd, stops delivery inside a callback, send throws after close', async () => {
    const [pa, pb] = pair();
    let calls = 0;
    const done = new Promise<void>((resolve) => {
      pb.onFrames(() => {
        calls++;
        pb.close(); // inside the callback: no further batches
        setTimeout(resolve, 50);
      });
    });
    pa.send(Array.from({ length: 64 }, (_, i) => frame(i)));
    pa.send(Array.from({ length: 64 }, (_, i) => frame(i)));
    await done;
    expect(calls).toBe(1);
    expect(pb.closed).toBe(true);
    expect(() => fdInfo(pb.fd)).toThrow(/EBADF|Bad file/);
    pb.close();
    expect(() => pb.send([frame(0)])).toThrow(expect.objectContaining({ code: 'ERR_FRAMEPORT_CLOSED' }));
    // Peer closed: sending is an error that is counted, not thrown.
    expect(pa.send([frame(0)])).toBe(0);
    const s = pa.stats();
    expect(s.txErrors).toBe(1);
    expect(s.lastError).toBe('ECONNREFUSED');
  });

  it('ownsFd: false leaves the fd open after close', () => {
    const [a, b] = socketpairDgram();
    cleanup.push(() => closeFd(a), () => closeFd(b));
    const p = new FramePort(a, { ownsFd: false });
    p.close();
    expect(fdInfo(a).kind).toBe('dgram');
  });

  it('rejects bad fds and options', () => {
    const [a, b] = socketpairDgram();
    cleanup.push(() => closeFd(a), () => closeFd(b));
    expect(() => new FramePort(a, { batch: 0 })).toThrow(RangeError);
    expect(() => new FramePort(a, { frameSize: 10 })).toThrow(RangeError);
    expect(() => new FramePort(999_999)).toThrow(/EBADF|Bad file/);
  });
});

describe('passing the VM end to a child process', () => {
  const child = (args: string[], stdio: Array<'ignore' | 'pipe' | number>): Promise<{ code: number | null; out: string }> =>
    new Promise((resolve, reject) => {
      const p = spawn('python3', args, { stdio: stdio as never });
      let out = '';
      p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr?.on('data', (d: Buffer) => (out += d.toString()));
      p.on('error', reject);
      p.on('close', (code) => resolve({ code, out }));
    });

  // The child echoes one datagram back and sends one of its own on the inherited fd.
  const echo = (fd: string) =>
    `import socket,sys\ns=socket.socket(fileno=${fd})\nassert s.type==socket.SOCK_DGRAM\nd=s.recv(65536)\ns.send(b'echo:'+d)\ns.send(b'x'*1514)\nprint('ok')`;

  it('via spawn stdio: the fd appears as fd 3 in the child (how a hypervisor gets its NIC)', async () => {
    const [mine, vm] = socketpairDgram();
    const port = new FramePort(mine);
    cleanup.push(() => port.close());
    const got = collect(port, 2, { pauseWhenDone: true });
    port.send([Buffer.from('hello-from-parent')]);
    const res = await child(['-c', echo('3')], ['ignore', 'pipe', 'pipe', vm]);
    closeFd(vm); // the parent's copy; the child had its own
    expect(res).toEqual({ code: 0, out: 'ok\n' });
    const { frames } = await got;
    expect(frames[0]!.toString()).toBe('echo:hello-from-parent');
    expect(frames[1]!.length).toBe(1514);
  });

  it('via clearCloexec: the fd survives exec at the same number; without it the child cannot see it', async () => {
    const [mine, vm] = socketpairDgram();
    const port = new FramePort(mine);
    cleanup.push(() => port.close(), () => closeFd(vm));
    // Close-on-exec (the default): not inherited.
    const hidden = await child(['-c', `import os\ntry:\n  os.fstat(${vm}); print('visible')\nexcept OSError: print('hidden')`], ['ignore', 'pipe', 'pipe']);
    expect(hidden.out).toBe('hidden\n');
    clearCloexec(vm);
    expect(fdInfo(vm).cloexec).toBe(false);
    const got = collect(port, 2, { pauseWhenDone: true });
    port.send([Buffer.from('hi')]);
    const res = await child(['-c', echo(String(vm))], ['ignore', 'pipe', 'pipe']);
    expect(res).toEqual({ code: 0, out: 'ok\n' });
    const { frames } = await got;
    expect(frames[0]!.toString()).toBe('echo:hi');
  });
});
