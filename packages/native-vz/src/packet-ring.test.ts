/**
 * FramePort's AF_PACKET receive ring (rxRingFrames, issue 20), root only: a veth pair in a
 * namespace this test creates; frames are injected on one end with a plain packet socket and
 * received on the other through the ring. What recvmmsg reported, the ring must report too:
 * frames whole and in order, frames too long for a slot counted, a full ring counted as queue
 * drops; and frames that were queued before the ring existed are not lost.
 * Skipped loudly without root or iproute2.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FramePort, closeFd, linkOffloads, openPacketSocket, socketpairDgram, type FramePortOptions } from './index.ts';
import { frame } from './testing/numbered-frames.ts';

const isRoot = process.getuid?.() === 0;
const hasIp = spawnSync('ip', ['-V'], { stdio: 'ignore' }).status === 0;
const skipReason = !isRoot ? 'not running as root' : !hasIp ? 'iproute2 (ip) is missing' : null;
if (skipReason !== null) console.warn(`\n*** native-vz packet ring tests SKIPPED: ${skipReason} ***\n`);

const NS = `fvz-ring-${process.pid}`;
const SRC_MAC = Buffer.from([0x02, 0, 0, 0, 0x20, 0x01]);
const DST_MAC = Buffer.from([0x02, 0, 0, 0, 0x20, 0x02]);

/** Frame i as an Ethernet frame the receiving end accepts (unicast to its MAC, EtherType 0x88b5: local experimental). */
function eth(i: number, len?: number): Buffer {
  const f = frame(i, len);
  DST_MAC.copy(f, 0);
  SRC_MAC.copy(f, 6);
  f.writeUInt16BE(0x88b5, 12);
  f.writeUInt32BE(i, 14);
  return f;
}
const seq = (f: Buffer): number => f.readUInt32BE(14);
/** Only this test's frames (the kernel may send its own on a link that comes up). */
const ours = (fs: Buffer[]): Buffer[] => fs.filter((f) => f.length >= 18 && f.readUInt16BE(12) === 0x88b5);

async function waitFor(pred: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timeout: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe.skipIf(skipReason !== null)('AF_PACKET receive ring (root)', () => {
  let injector: FramePort;
  const opened: FramePort[] = [];

  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['netns', 'exec', NS, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
    execFileSync('ip', ['netns', 'exec', NS, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1']);
    execFileSync('ip', ['-n', NS, 'link', 'add', 'rgA', 'address', '02:00:00:00:20:01', 'type', 'veth', 'peer', 'name', 'rgB', 'address', '02:00:00:00:20:02']);
    for (const d of ['rgA', 'rgB']) {
      execFileSync('ip', ['-n', NS, 'link', 'set', d, 'up']);
      linkOffloads(d, { netns: NS, disable: true });
    }
    injector = new FramePort(openPacketSocket('rgA', { netns: NS, sndbuf: 4 << 20 }).fd, { frameSize: 2048 });
    injector.onBatch(() => {});
  });

  afterAll(() => {
    injector?.close();
    for (const p of opened) p.close();
    spawnSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
  });

  function receiver(opts: FramePortOptions, sockOpts: { rcvbuf?: number } = {}): { fd: number; open: () => FramePort } {
    const s = openPacketSocket('rgB', { netns: NS, ...sockOpts });
    return {
      fd: s.fd,
      open: () => {
        const p = new FramePort(s.fd, opts);
        opened.push(p);
        return p;
      },
    };
  }

  /** Injects frames in batches of 64, waiting while the injector's socket is full. */
  async function inject(frames: Buffer[]): Promise<void> {
    for (let i = 0; i < frames.length; ) {
      const n = injector.send(frames.slice(i, i + 64));
      i += n;
      if (n === 0) await injector.writable();
    }
  }

  it('delivers frames whole and in order through the ring, including those queued before the ring existed', async () => {
    const r = receiver({ frameSize: 2048, rxRingFrames: 128 });
    await inject(Array.from({ length: 20 }, (_, i) => eth(i))); // queued in the socket: no ring yet
    const port = r.open();
    expect(port.stats().rxRingSlots).toBeGreaterThanOrEqual(128);
    const got: Buffer[] = [];
    port.onFrames((fs) => got.push(...ours(fs)), { copy: true });
    await waitFor(() => got.length >= 20, 'the frames queued before the ring');
    const more = Array.from({ length: 500 }, (_, i) => eth(20 + i));
    // In steps the ring can hold, so none is dropped.
    for (let k = 0; k < more.length; k += 100) {
      await inject(more.slice(k, k + 100));
      await waitFor(() => got.length >= 20 + Math.min(k + 100, more.length), 'ring frames');
    }
    expect(got.map(seq)).toEqual(Array.from({ length: 520 }, (_, i) => i));
    expect(got.every((f, i) => f.equals(i < 20 ? eth(i) : more[i - 20]!))).toBe(true);
    expect(port.stats()).toMatchObject({ rxFrames: 520, rxTruncated: 0, rxQueueDrops: 0, rxCsumPartial: 0 });
    port.close();
  });

  it('a frame longer than the slot is counted as truncated, never delivered cut', async () => {
    const port = receiver({ frameSize: 256, rxRingFrames: 64 }).open();
    const got: Buffer[] = [];
    port.onFrames((fs) => got.push(...ours(fs)), { copy: true });
    await inject([eth(1, 200), eth(2, 1000), eth(3, 256), eth(4, 257)]);
    await waitFor(() => port.stats().rxTruncated >= 2 && got.length >= 2, 'the short frames and the truncation count');
    expect(got.map(seq)).toEqual([1, 3]);
    expect(got.map((f) => f.length)).toEqual([200, 256]);
    expect(port.stats().rxTruncated).toBe(2);
    port.close();
  });

  it('a full ring drops at the kernel and counts it (rxQueueDrops); reading resumes where the ring stands', async () => {
    const port = receiver({ frameSize: 2048, rxRingFrames: 64 }).open();
    const slots = port.stats().rxRingSlots;
    const got: Buffer[] = [];
    port.onFrames((fs) => got.push(...ours(fs)), { copy: true });
    port.pause();
    await inject(Array.from({ length: slots + 200 }, (_, i) => eth(i, 1000)));
    await waitFor(() => port.stats().rxQueueDrops > 0, 'drops at the full ring');
    const dropped = port.stats().rxQueueDrops;
    port.onFrames((fs) => got.push(...ours(fs)), { copy: true });
    await waitFor(() => got.length >= slots, 'the ring\'s frames');
    expect(got.length + dropped).toBe(slots + 200);
    expect(got.map(seq)).toEqual(Array.from({ length: slots }, (_, i) => i)); // the first ones, in order
    await inject([eth(9999, 100)]);
    await waitFor(() => got.some((f) => seq(f) === 9999), 'a frame after the overflow');
    port.close();
  });

  it('close() or pause() inside a callback: no further batch, and the ring is not read after its unmap', async () => {
    // A short batch (fewer frames than the batch size) is when the port looks at the ring again
    // for more: it must not after the callback closed the port.
    for (const stop of ['close', 'pause'] as const) {
      const port = receiver({ frameSize: 2048, rxRingFrames: 256, batch: 64 }).open();
      let batches = 0;
      port.onBatch(() => {
        batches++;
        port[stop]();
      });
      await inject(Array.from({ length: 5 }, (_, i) => eth(i, 500)));
      await waitFor(() => batches > 0, `the first batch (${stop})`);
      await new Promise((r) => setTimeout(r, 50));
      expect(batches).toBe(1);
      expect(port.closed).toBe(stop === 'close');
      port.close();
    }
  });

  it('refuses a ring with slots too large; ignores the ring on a socket that is not AF_PACKET', () => {
    const r = receiver({ frameSize: 65536, rxRingFrames: 64 });
    try {
      expect(() => r.open()).toThrow(/rxRingFrames/);
      expect(() => new FramePort(r.fd, { rxRingFrames: -1 })).toThrow(RangeError);
    } finally {
      closeFd(r.fd); // a failed construction never closes the caller's fd
    }
    const [a, b] = socketpairDgram();
    const p = new FramePort(a, { frameSize: 2048, rxRingFrames: 64 });
    opened.push(p);
    closeFd(b);
    expect(p.stats().rxRingSlots).toBe(0);
  });
});
