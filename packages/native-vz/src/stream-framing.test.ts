// FramePort's stream framing (QEMU `-netdev stream`: 4-byte big-endian length, then the frame) on
// an AF_UNIX SOCK_STREAM socketpair: partial frames across reads, many frames per read, oversized
// frames and impossible prefixes from the peer, and a send buffer that never splits a frame.
import { readSync, writeSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { FramePort, closeFd, fdInfo, socketpairStream } from './index.ts';
import { collect, frame } from './testing/numbered-frames.ts';
import { closersAfterEach } from './testing/cleanup.ts';

const cleanup = closersAfterEach();

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function prefixed(f: Uint8Array): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(f.length, 0);
  return Buffer.concat([h, f]);
}

/** A FramePort on one end, the raw other end for the test to write/read bytes. */
function portAndRaw(opts: { batch?: number; frameSize?: number; sndbuf?: number } = {}): { port: FramePort; raw: number } {
  const [a, b] = socketpairStream(opts.sndbuf !== undefined ? { sndbuf: opts.sndbuf } : {});
  const port = new FramePort(a, { batch: opts.batch ?? 64, frameSize: opts.frameSize ?? 2048 });
  cleanup.push(() => port.close(), () => closeFd(b));
  return { port, raw: b };
}

/** Reads everything queued on a non-blocking fd. */
function drain(fd: number): Buffer {
  const parts: Buffer[] = [];
  const buf = Buffer.alloc(1 << 16);
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf, 0, buf.length, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') break;
      throw e;
    }
    if (n === 0) break;
    parts.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(parts);
}

/** Splits a byte stream into frames; throws on a trailing partial frame. */
function parse(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    if (bytes.length - pos < 4) throw new Error(`partial prefix at ${pos}`);
    const len = bytes.readUInt32BE(pos);
    if (bytes.length - pos - 4 < len) throw new Error(`partial frame at ${pos} (${len} bytes announced, ${bytes.length - pos - 4} there)`);
    out.push(bytes.subarray(pos + 4, pos + 4 + len));
    pos += 4 + len;
  }
  return out;
}

describe('socketpairStream', () => {
  it('creates a connected stream pair, close-on-exec and non-blocking, that FramePort reads as kind "stream"', () => {
    const [a, b] = socketpairStream();
    const p = new FramePort(a, { ownsFd: false });
    try {
      expect(fdInfo(a)).toMatchObject({ cloexec: true, nonblock: true, kind: 'stream' });
      expect(fdInfo(b)).toMatchObject({ cloexec: true, nonblock: true, kind: 'stream' });
      expect(p.kind).toBe('stream');
    } finally {
      p.close();
      closeFd(a);
      closeFd(b);
    }
  });
});

describe('FramePort stream framing', () => {
  it('round-trips frames between two stream ports, whole and in order, many per read', async () => {
    const [a, b] = socketpairStream();
    const pa = new FramePort(a, { frameSize: 2048 });
    const pb = new FramePort(b, { frameSize: 2048 });
    cleanup.push(() => pa.close(), () => pb.close());
    const n = 3000;
    const sent = Array.from({ length: n }, (_, i) => frame(i));
    const got = collect(pb, n);
    let i = 0;
    // Sends in batches of 100; a batch the socket does not take whole is resumed when writable.
    while (i < n) {
      const k = pa.send(sent.slice(i, i + 100));
      i += k;
      if (k < Math.min(100, n - i + k)) await pa.writable();
    }
    const { frames, batches } = await got;
    expect(frames.length).toBe(n);
    for (let j = 0; j < n; j++) expect(frames[j]!.equals(sent[j]!)).toBe(true);
    expect(Math.max(...batches)).toBeGreaterThan(1);
    expect(pb.kind).toBe('stream');
    const sa = pa.stats();
    expect(sa.txFrames).toBe(n);
    expect(sa.txPendingBytes).toBe(0);
    const sb = pb.stats();
    expect(sb.rxFrames).toBe(n);
    expect(sb.rxBatches).toBeLessThan(n / 4);
    expect(sb.rxTruncated + sb.rxBadLength).toBe(0);
  });

  it('reassembles frames written a byte at a time (partial prefix, partial frame)', async () => {
    const { port, raw } = portAndRaw();
    const sent = [frame(1, 60), frame(2, 1514), frame(3, 61)];
    const bytes = Buffer.concat(sent.map(prefixed));
    const got = collect(port, sent.length);
    for (let i = 0; i < bytes.length; i++) {
      writeSync(raw, bytes, i, 1);
      if (i % 97 === 0 || i === 2 || i === 5) await sleep(0); // let the port read the partial state
    }
    const { frames } = await got;
    expect(frames.map((f) => f.length)).toEqual([60, 1514, 61]);
    frames.forEach((f, i) => expect(f.equals(sent[i]!)).toBe(true));
    expect(port.stats().rxWakeups).toBeGreaterThan(3);
  });

  it('hands several frames of one read to one callback, at most `batch` per callback', async () => {
    const { port, raw } = portAndRaw({ batch: 16 });
    const sent = Array.from({ length: 40 }, (_, i) => frame(i, 100));
    writeSync(raw, Buffer.concat(sent.map(prefixed)));
    const { frames, batches } = await collect(port, 40);
    expect(frames.length).toBe(40);
    expect(batches).toEqual([16, 16, 8]);
    expect(port.stats().rxWakeups).toBe(1);
  });

  it('pause() inside a callback keeps the rest of the read for later: each frame exactly once, in order', async () => {
    const { port, raw } = portAndRaw({ batch: 4 });
    const sent = Array.from({ length: 30 }, (_, i) => frame(i, 80));
    const got: number[] = [];
    const onFrames = (fs: Buffer[]): void => {
      got.push(...fs.map((f) => f.readUInt32BE(0)));
      // Like a pump whose output is full: stop reading, resume a little later.
      port.pause();
      setTimeout(() => port.closed || port.onFrames(onFrames), 2);
    };
    port.onFrames(onFrames);
    writeSync(raw, Buffer.concat(sent.map(prefixed))); // one write: one read takes all 30
    for (let t = 0; t < 100 && got.length < 30; t++) await sleep(5);
    expect(got).toEqual(sent.map((_, i) => i));
    expect(port.stats().rxBatches).toBe(8);
  });

  it('skips a frame longer than frameSize (counted as rxTruncated) and stays in step', async () => {
    const { port, raw } = portAndRaw({ frameSize: 2048 });
    const big = frame(7, 9000);
    const got = collect(port, 2);
    writeSync(raw, Buffer.concat([prefixed(frame(1, 100)), prefixed(big), prefixed(frame(2, 200))]));
    const { frames } = await got;
    expect(frames.map((f) => f.readUInt32BE(0))).toEqual([1, 2]);
    expect(port.stats()).toMatchObject({ rxTruncated: 1, rxBadLength: 0, rxFrames: 2 });
  });

  it('an impossible length prefix shuts the stream down, counted, without crashing or delivering garbage', async () => {
    const { port, raw } = portAndRaw();
    const got: number[] = [];
    port.onFrames((fs) => got.push(...fs.map((f) => f.length)));
    const evil = Buffer.alloc(4);
    evil.writeUInt32BE(0xfffffff0, 0);
    writeSync(raw, Buffer.concat([prefixed(frame(1, 100)), evil, Buffer.alloc(3000, 0xaa)]));
    await sleep(50);
    expect(got).toEqual([100]);
    expect(port.stats()).toMatchObject({ rxBadLength: 1, rxFrames: 1 });
    // Shut down both ways: the peer reads end of stream; later sends fail and are counted.
    expect(drain(raw).length).toBe(0);
    expect(port.send([frame(2, 100)])).toBe(0);
    expect(port.stats().txDrops).toBe(1);
  });

  it('stops reading at end of stream (no busy loop) and counts it', async () => {
    const [a, b] = socketpairStream();
    const port = new FramePort(a);
    cleanup.push(() => port.close());
    port.onFrames(() => {});
    writeSync(b, prefixed(frame(1, 100)).subarray(0, 50)); // a frame cut off by the close
    closeFd(b);
    await sleep(50);
    const s = port.stats();
    expect(s.rxEof).toBe(1);
    expect(s.rxTruncated).toBe(1);
    expect(s.rxWakeups).toBeLessThan(5);
  });

  it('a full send buffer never splits a frame: the tail of a partly written frame goes out first, the rest are counted drops', async () => {
    const { port, raw } = portAndRaw({ sndbuf: 16 * 1024 });
    const sent: Buffer[] = [];
    let accepted = 0;
    let offered = 0;
    // The peer does not read: fill the socket until a send accepts nothing.
    for (let i = 0; i < 200; i++) {
      const batch = Array.from({ length: 8 }, (_, j) => frame(i * 8 + j, 1514));
      offered += batch.length;
      const k = port.send(batch);
      sent.push(...batch.slice(0, k));
      accepted += k;
      if (k === 0) break;
    }
    const s1 = port.stats();
    expect(s1.txFrames).toBe(accepted);
    expect(s1.txDrops).toBe(offered - accepted);
    expect(s1.eagain).toBeGreaterThan(0);
    // Read everything while the port finishes any kept tail on writability.
    let bytes = drain(raw);
    for (let t = 0; t < 50 && port.stats().txPendingBytes > 0; t++) {
      await sleep(10);
      bytes = Buffer.concat([bytes, drain(raw)]);
    }
    await sleep(20);
    bytes = Buffer.concat([bytes, drain(raw)]);
    const frames = parse(bytes);
    expect(frames.length).toBe(accepted);
    frames.forEach((f, i) => expect(f.equals(sent[i]!)).toBe(true));
    expect(port.stats().txPendingBytes).toBe(0);
    // The port keeps working afterwards.
    expect(port.send([frame(9999, 64)])).toBe(1);
    await sleep(10);
    expect(parse(drain(raw)).map((f) => f.readUInt32BE(0))).toEqual([9999]);
  });

  it('partial writes happen and are completed (small buffer, reader draining concurrently)', async () => {
    const { port, raw } = portAndRaw({ sndbuf: 8 * 1024 });
    let bytes = Buffer.alloc(0);
    const sent: Buffer[] = [];
    for (let round = 0; round < 300; round++) {
      const batch = Array.from({ length: 6 }, (_, j) => frame(round * 6 + j, 700 + ((round * 6 + j) % 800)));
      const k = port.send(batch);
      sent.push(...batch.slice(0, k));
      if (round % 3 === 0) bytes = Buffer.concat([bytes, drain(raw)]);
      if (round % 10 === 0) await sleep(1);
    }
    for (let t = 0; t < 50 && port.stats().txPendingBytes > 0; t++) {
      await sleep(5);
      bytes = Buffer.concat([bytes, drain(raw)]);
    }
    await sleep(10);
    bytes = Buffer.concat([bytes, drain(raw)]);
    const frames = parse(bytes);
    expect(frames.length).toBe(sent.length);
    frames.forEach((f, i) => expect(f.equals(sent[i]!)).toBe(true));
    const s = port.stats();
    expect(s.txFrames).toBe(sent.length);
    expect(s.txPartial).toBeGreaterThan(0);
  });
});
