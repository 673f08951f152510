/**
 * A non-socket port on an fd whose kernel side refuses io_uring's RWF_NOWAIT (a FIFO: EOPNOTSUPP)
 * falls back to the write() loop without losing a frame, and keeps the send contract: a batch is
 * accepted as a prefix, the first refusal stops it, nothing after it is written. (A FIFO can be
 * filled, which a TAP cannot.) The TAP itself, through io_uring, is tested in tap.test.ts (root).
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, constants, readSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TAP_IO_URING_BUILT, type FramePort } from './index.ts';
import { TAP_IO_MODES, portInMode, type TapIoMode } from './testing/tap-io-modes.ts';

const hasMkfifo = spawnSync('mkfifo', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasMkfifo) console.warn('\n*** native-vz io_uring send tests SKIPPED: mkfifo is missing ***\n');
if (hasMkfifo && !TAP_IO_URING_BUILT) console.warn('\n*** native-vz: built without liburing; the io_uring fallback is not tested here ***\n');

/** A port on `fd` in this mode, not owning it. */
const port = (fd: number, mode: TapIoMode): FramePort => portInMode(fd, mode, { ownsFd: false, frameSize: 2048, batch: 8 });

/** Frame i: 1514 bytes, each byte (i % 251). */
const frame = (i: number): Buffer => Buffer.alloc(1514, i % 251);

describe.skipIf(!hasMkfifo).each(TAP_IO_MODES)('a FIFO port (no RWF_NOWAIT), %s', (mode) => {
  const cleanups: Array<() => void> = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });

  /** A FIFO opened read-write and non-blocking (so opening it does not wait for a peer). */
  function fifo(): number {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'fvz-fifo-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const p = path.join(dir, 'f');
    expect(spawnSync('mkfifo', [p]).status).toBe(0);
    const fd = openSync(p, constants.O_RDWR | constants.O_NONBLOCK);
    cleanups.push(() => closeSync(fd));
    return fd;
  }

  it('accepts a prefix of the batch, counts one EAGAIN, drops the rest, and writes exactly the prefix in order (after falling back, for io_uring)', () => {
    const fd = fifo();
    const p = port(fd, mode);
    cleanups.push(() => p.close());
    expect(p.kind).toBe('tap');
    expect(p.stats().tapIoUring).toBe(mode === 'io_uring' ? 1 : 0); // until the first request is refused
    const frames = Array.from({ length: 100 }, (_, i) => frame(i)); // ~148 KiB: more than the FIFO's 64 KiB
    const accepted = p.send(frames);
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(100);
    const s = p.stats();
    expect(s.txFrames).toBe(accepted);
    expect(s.txDrops).toBe(100 - accepted);
    expect(s.eagain).toBe(1);
    expect(s.txErrors).toBe(0);
    expect(s.lastError).toBe('EAGAIN');
    // io_uring: the FIFO's EOPNOTSUPP sent the port back to write() for good, at the first frame.
    expect(s.tapIoUring).toBe(0);
    expect(s.ioUringFallbacks).toBe(mode === 'io_uring' ? 1 : 0);
    // What the FIFO holds is exactly frames 0 .. accepted-1, whole and in order.
    const buf = Buffer.alloc(1514 * 100);
    let got = 0;
    for (;;) {
      let n = 0;
      try {
        n = readSync(fd, buf, got, buf.length - got, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') break;
        throw e;
      }
      if (n === 0) break;
      got += n;
    }
    expect(got).toBe(1514 * accepted);
    for (let i = 0; i < accepted; i++) expect(buf.subarray(i * 1514, (i + 1) * 1514).equals(frames[i]!)).toBe(true);
    // Room again: the next batch goes through.
    expect(p.send(frames.slice(0, 3))).toBe(3);
  });

  it('accepts the same prefix as the other mode (the write() loop is the reference)', () => {
    const counts = (['io_uring', 'loops'] as const).filter((m) => TAP_IO_MODES.includes(m)).map((m) => {
      const fd = fifo();
      const p = port(fd, m);
      cleanups.push(() => p.close());
      return p.send(Array.from({ length: 100 }, (_, i) => frame(i)));
    });
    expect(new Set(counts).size).toBe(1);
  });
});
