// Positioned writes of one blob into its region of a file that several downloads fill at once
// (a fleet-qemu disk assembled from its pieces while they download).
import type { Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';

/** All-zero pieces this large, aligned to the file, are left as holes by sparse writes. */
export const HOLE_GRANULARITY = 64 * 1024;
/** Read size when re-reading a region (re-hash before a resume, local copies). */
export const REGION_READ = 4 * 1024 * 1024;
const ZEROS = Buffer.alloc(HOLE_GRANULARITY);

function isAllZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - i);
    if (Buffer.compare(b.subarray(i, i + n), ZEROS.subarray(0, n)) !== 0) return false;
  }
  return true;
}

/** Writes all of `buf` at `position` (a positioned write may write less than asked). */
export async function writeAllAt(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    if (bytesWritten <= 0) throw new Error(`short write at offset ${position + done}`);
    done += bytesWritten;
  }
}

/**
 * Writes the bytes of one blob into [offset, offset + size) of `fh`; `at` is relative to the
 * region. With `sparse`, the region must read as zeros when the writer is created (a file just
 * truncated to its size): all-zero pieces (split at 64 KiB boundaries of the file) are then
 * skipped, so they stay holes, but only past every byte this writer has actually written; a
 * rewrite from an earlier position (a download restarted from byte 0) writes everything.
 */
export class RegionWriter {
  /** Relative end of what may hold data written earlier: below it nothing is skipped. */
  #dirtyEnd: number;

  constructor(
    private readonly fh: FileHandle,
    private readonly offset: number,
    private readonly sparse: boolean,
    /** Bytes of the region that may already hold data (not known to read as zeros). */
    dirty = 0,
  ) {
    this.#dirtyEnd = dirty;
  }

  async write(buf: Buffer, at: number): Promise<void> {
    if (buf.length === 0) return;
    if (!this.sparse || at < this.#dirtyEnd) {
      await writeAllAt(this.fh, buf, this.offset + at);
      this.#dirtyEnd = Math.max(this.#dirtyEnd, at + buf.length);
      return;
    }
    let i = 0;
    let runStart = -1;
    while (i < buf.length) {
      const abs = this.offset + at + i;
      const next = Math.min(buf.length, i + (HOLE_GRANULARITY - (abs % HOLE_GRANULARITY)));
      if (isAllZero(buf.subarray(i, next))) {
        if (runStart >= 0) {
          await this.#put(buf.subarray(runStart, i), at + runStart);
          runStart = -1;
        }
      } else if (runStart < 0) {
        runStart = i;
      }
      i = next;
    }
    if (runStart >= 0) await this.#put(buf.subarray(runStart), at + runStart);
  }

  async #put(buf: Buffer, at: number): Promise<void> {
    await writeAllAt(this.fh, buf, this.offset + at);
    this.#dirtyEnd = Math.max(this.#dirtyEnd, at + buf.length);
  }
}

/**
 * Feeds [offset, offset + length) of `fh` to `hash` (what an earlier attempt wrote, before a
 * resume). Returns how many bytes were there: fewer than `length` when the file ends earlier.
 */
export async function hashRegion(fh: FileHandle, offset: number, length: number, hash: Hash): Promise<number> {
  const buf = Buffer.allocUnsafe(Math.min(REGION_READ, Math.max(1, length)));
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - done), offset + done);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    done += bytesRead;
  }
  return done;
}

/**
 * Copies `size` bytes within one file from `from` to `to` (regions that do not overlap), through
 * a RegionWriter (`sparse`: the destination reads as zeros). Calls `onProgress` with the bytes copied.
 */
export async function copyRegion(
  fh: FileHandle,
  from: number,
  to: number,
  size: number,
  opts: { sparse?: boolean; signal?: AbortSignal; onProgress?: (n: number) => void } = {},
): Promise<void> {
  const out = new RegionWriter(fh, to, opts.sparse === true);
  const buf = Buffer.allocUnsafe(Math.min(REGION_READ, Math.max(1, size)));
  let done = 0;
  while (done < size) {
    opts.signal?.throwIfAborted();
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - done), from + done);
    if (bytesRead === 0) throw new Error(`the file ended at ${from + done} while copying ${size} bytes from offset ${from}`);
    await out.write(buf.subarray(0, bytesRead), done);
    done += bytesRead;
    opts.onProgress?.(done);
  }
}
