// FramePort's sender thread (sendQueueBytes, issue 20): sends copy frames into a bounded queue
// and return at once; the port's own thread writes them, waiting for a slow peer instead of
// dropping; a full queue refuses (counted), and nothing the queue accepted is lost or reordered.
import { describe, expect, it } from 'vitest';
import { FramePort, closeFd, socketpairDgram, socketpairStream } from './index.ts';
import { collect, frame } from './testing/numbered-frames.ts';
import { closersAfterEach } from './testing/cleanup.ts';

const cleanup = closersAfterEach();

const QUEUE = 256 << 10;

function queuedPair(sndbuf = 256 << 10): { tx: FramePort; rx: FramePort } {
  const [a, b] = socketpairDgram({ sndbuf, rcvbuf: sndbuf });
  const tx = new FramePort(a, { frameSize: 2048, sendQueueBytes: QUEUE });
  const rx = new FramePort(b, { frameSize: 2048 });
  cleanup.push(() => tx.close(), () => rx.close());
  return { tx, rx };
}

async function until(pred: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timeout: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('FramePort sender thread (sendQueueBytes)', () => {
  it('delivers every frame intact and in order; send() returns at once with the whole batch accepted', async () => {
    const { tx, rx } = queuedPair();
    expect(tx.sendThread).toBe(true);
    expect(rx.sendThread).toBe(false);
    const frames = Array.from({ length: 120 }, (_, i) => frame(i));
    const got = collect(rx, frames.length);
    // Three batches: sendBatch over one buffer, send() of views, and a second sendBatch.
    const area = Buffer.concat(frames.slice(0, 50));
    const offs = new Uint32Array(50);
    const lens = new Uint32Array(50);
    let o = 0;
    for (let i = 0; i < 50; i++) {
      offs[i] = o;
      lens[i] = frames[i]!.length;
      o += frames[i]!.length;
    }
    expect(tx.sendBatch(area, offs, lens, 50)).toBe(50);
    area.fill(0); // the queue holds copies: the caller may reuse its buffer at once
    expect(tx.send(frames.slice(50, 100))).toBe(50);
    expect(tx.send(frames.slice(100))).toBe(20);
    const { frames: out } = await got;
    expect(out.map((f) => f.readUInt32BE(0))).toEqual(frames.map((_, i) => i));
    expect(out.every((f, i) => f.equals(frames[i]!))).toBe(true);
    await until(() => tx.stats().txFrames === 120, 'txFrames');
    const s = tx.stats();
    expect(s).toMatchObject({ txFrames: 120, txDrops: 0, txQueueFull: 0, txQueuedFrames: 0, txQueuedBytes: 0, txErrors: 0 });
    expect(s.txBytes).toBe(frames.reduce((n, f) => n + f.length, 0));
  });

  it('a peer that stops reading: the thread waits (nothing accepted is lost), a full queue refuses and counts; all accepted frames arrive once the peer reads', async () => {
    const { tx, rx } = queuedPair(64 << 10);
    const f = (i: number): Buffer => frame(i, 1000);
    let sent = 0;
    let refused = 0;
    // Far more than socket buffer + queue can hold, in batches of 64.
    for (let b = 0; b < 20; b++) {
      const batch = Array.from({ length: 64 }, (_, i) => f(sent + i));
      const n = tx.send(batch);
      sent += n;
      refused += 64 - n;
      await new Promise((r) => setTimeout(r, 2)); // let the thread fill the socket
    }
    expect(refused).toBeGreaterThan(0);
    await until(() => tx.stats().eagain > 0, 'the sender to wait for the socket');
    const before = tx.stats();
    expect(before.txQueueFull).toBe(refused);
    expect(before.txDrops).toBe(refused); // only refusals: the thread itself dropped nothing
    expect(before.txQueuedFrames).toBeGreaterThan(0);
    // The peer reads: every accepted frame arrives, in order, none twice.
    const { frames } = await collect(rx, sent);
    expect(frames.map((x) => x.readUInt32BE(0))).toEqual(Array.from({ length: sent }, (_, i) => i));
    await until(() => tx.stats().txQueuedFrames === 0, 'the queue to drain');
    expect(tx.stats()).toMatchObject({ txFrames: sent, txDrops: refused, txQueueFull: refused });
  });

  it('waitWritable() resolves once the queue has drained to half, not before', async () => {
    const { tx, rx } = queuedPair(32 << 10);
    let accepted = 0;
    for (let i = 0; i < 40 && tx.stats().txQueueFull === 0; i++) {
      accepted += tx.send(Array.from({ length: 32 }, (_, j) => frame(accepted + j, 1400)));
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(tx.stats().txQueueFull).toBeGreaterThan(0);
    let woke = false;
    const w = tx.writable().then(() => {
      woke = true;
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(woke).toBe(false); // the peer has not read: the queue is still full
    const got = collect(rx, accepted);
    await w;
    expect(tx.stats().txQueuedBytes).toBeLessThanOrEqual(QUEUE / 2);
    expect((await got).frames).toHaveLength(accepted);
  });

  it('close() with frames still queued: stops the thread at once, counts them as drops, closes the fd', async () => {
    const [a, b] = socketpairDgram({ sndbuf: 32 << 10, rcvbuf: 32 << 10 });
    cleanup.push(() => closeFd(b));
    const tx = new FramePort(a, { frameSize: 2048, sendQueueBytes: QUEUE });
    let accepted = 0;
    for (let i = 0; i < 10; i++) accepted += tx.send(Array.from({ length: 32 }, (_, j) => frame(j, 1400)));
    await until(() => tx.stats().eagain > 0, 'the sender to wait for the socket');
    const t0 = Date.now();
    tx.close();
    expect(Date.now() - t0).toBeLessThan(1000);
    const s = tx.stats();
    expect(s.txFrames + s.txDrops - s.txQueueFull).toBe(accepted); // each accepted frame is sent or counted
    expect(s.txQueuedFrames).toBe(0);
    expect(() => tx.send([frame(0)])).toThrow(/closed/);
  });

  it('a peer that is gone: every accepted frame is counted as dropped, with one failed system call per batch, not per frame', async () => {
    const [a, b] = socketpairDgram();
    const tx = new FramePort(a, { frameSize: 2048, sendQueueBytes: QUEUE });
    cleanup.push(() => tx.close());
    closeFd(b);
    let accepted = 0;
    for (let i = 0; i < 4; i++) {
      accepted += tx.send(Array.from({ length: 64 }, (_, j) => frame(64 * i + j, 600)));
      await until(() => tx.stats().txQueuedFrames === 0, 'the thread to take the batch');
    }
    expect(accepted).toBe(256);
    const s = tx.stats();
    expect(s.txFrames).toBe(0);
    expect(s.txDrops).toBe(256);
    expect(s.txErrors).toBeGreaterThanOrEqual(1);
    expect(s.txErrors).toBeLessThanOrEqual(4);
  });

  it('refuses a queue that cannot hold one frame; a stream socket sends on the caller\'s thread', () => {
    const [a, b] = socketpairDgram();
    cleanup.push(() => closeFd(a), () => closeFd(b));
    expect(() => new FramePort(a, { frameSize: 2048, sendQueueBytes: 100, ownsFd: false })).toThrow(/sendQueueBytes/);
    expect(() => new FramePort(a, { sendQueueBytes: -1, ownsFd: false })).toThrow(RangeError);
    const [s1, s2] = socketpairStream();
    cleanup.push(() => closeFd(s2));
    const p = new FramePort(s1, { frameSize: 2048, sendQueueBytes: QUEUE });
    cleanup.push(() => p.close());
    expect(p.sendThread).toBe(false);
  });
});
