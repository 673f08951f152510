import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { VmImageError, asVmImageError } from './errors.ts';

export const MiB = 1024 * 1024;
/** Read size for streaming files: big enough to amortise syscalls, small enough to bound memory. */
export const READ_CHUNK = 4 * MiB;
/** Zero regions at least this aligned and large are left as holes when writing disks. */
export const HOLE_GRANULARITY = 64 * 1024;
const ZEROS = Buffer.alloc(HOLE_GRANULARITY);

export function isAllZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - i);
    if (Buffer.compare(b.subarray(i, i + n), ZEROS.subarray(0, n)) !== 0) return false;
  }
  return true;
}

export function randomSuffix(): string {
  return randomBytes(6).toString('hex');
}

/** Writes all of buf at position (fh.write may write less than asked). */
export async function writeAllAt(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    if (bytesWritten <= 0) throw new Error(`short write at offset ${position + done}`);
    done += bytesWritten;
  }
}

/**
 * Writes a stream of data at increasing offsets, skipping all-zero 64 KiB-aligned pieces so they stay
 * holes. The file must already read as zeros there (fresh file, ftruncate'd to size).
 */
export class SparseWriter {
  constructor(
    private readonly fh: FileHandle,
    public position: number,
  ) {}

  async write(buf: Uint8Array): Promise<void> {
    let i = 0;
    let runStart = -1;
    while (i < buf.length) {
      const abs = this.position + i;
      const next = Math.min(buf.length, i + (HOLE_GRANULARITY - (abs % HOLE_GRANULARITY)));
      if (isAllZero(buf.subarray(i, next))) {
        if (runStart >= 0) {
          await writeAllAt(this.fh, buf.subarray(runStart, i), this.position + runStart);
          runStart = -1;
        }
      } else if (runStart < 0) {
        runStart = i;
      }
      i = next;
    }
    if (runStart >= 0) await writeAllAt(this.fh, buf.subarray(runStart), this.position + runStart);
    this.position += buf.length;
  }
}

/** sha256 and size of a file, streamed. */
export async function hashFile(file: string, signal?: AbortSignal): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: READ_CHUNK, signal })) {
    h.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${h.digest('hex')}`, size };
}

export function digestOf(h: Hash): string {
  return `sha256:${h.digest('hex')}`;
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** fsync a directory so a rename inside it survives a crash (best effort: not every FS allows it). */
export async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/**
 * Builds a directory under a temporary sibling name (destDir + ".tmp-<random>") and renames it to
 * destDir only when `fill` succeeded, so a crash or error never leaves a half-written destDir that
 * looks complete. destDir must not exist, or be an empty directory. On failure the temp dir is
 * removed and fs errors become VmImageErrors (ENOSPC → 'disk-full').
 */
export async function buildDirAtomically<T>(destDir: string, what: string, fill: (tmpDir: string) => Promise<T>): Promise<T> {
  const dest = path.resolve(destDir);
  try {
    const entries = await fsp.readdir(dest);
    if (entries.length > 0) throw new VmImageError('io', `${what}: destination ${dest} already exists and is not empty`);
  } catch (err) {
    if (err instanceof VmImageError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') throw new VmImageError('io', `${what}: destination ${dest} exists and is not a directory`);
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw asVmImageError(err, `${what}: checking ${dest}`);
  }
  const tmp = `${dest}.tmp-${randomSuffix()}`;
  try {
    await fsp.mkdir(path.dirname(dest), { recursive: true });
    await fsp.mkdir(tmp);
    const result = await fill(tmp);
    await syncDir(tmp);
    // rename(2) replaces an empty directory atomically (Linux and macOS).
    await fsp.rename(tmp, dest);
    await syncDir(path.dirname(dest));
    return result;
  } catch (err) {
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw asVmImageError(err, `${what} into ${dest}`);
  }
}

/** Reads a whole (small) file, refusing anything larger than `limit`. */
export async function readSmallFile(file: string, limit: number, what: string): Promise<Buffer> {
  const st = await fsp.stat(file).catch((err: unknown) => {
    throw asVmImageError(err, `reading ${what} ${file}`);
  });
  if (st.size > limit) throw new VmImageError('bad-config', `${what} ${file} is ${st.size} bytes; at most ${limit} are accepted`);
  return fsp.readFile(file).catch((err: unknown) => {
    throw asVmImageError(err, `reading ${what} ${file}`);
  });
}

/**
 * Content-addressed blob store for packing: blobs land in <workDir>/blobs/sha256/<hex> (the same
 * layout as an OCI image layout, so writeOciLayout on workDir can hard-link them). Each blob is
 * written to a temp name and renamed when its digest is known; `cleanup()` removes what this packer
 * created (used when packing fails).
 */
export class BlobWriter {
  readonly dir: string;
  private created: string[] = [];
  private temps = new Set<string>();

  constructor(workDir: string) {
    this.dir = path.join(path.resolve(workDir), 'blobs', 'sha256');
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true });
  }

  /** Opens a temp file; call `commit` with its digest when done. */
  async openTemp(): Promise<{ fh: FileHandle; tmpPath: string }> {
    const tmpPath = path.join(this.dir, `.tmp-${randomSuffix()}`);
    this.temps.add(tmpPath);
    const fh = await fsp.open(tmpPath, 'wx');
    return { fh, tmpPath };
  }

  async commit(tmpPath: string, digest: string): Promise<string> {
    const final = this.pathFor(digest);
    const existed = await exists(final);
    await fsp.rename(tmpPath, final);
    this.temps.delete(tmpPath);
    if (!existed) this.created.push(final);
    return final;
  }

  async writeBytes(data: Uint8Array, digest: string): Promise<string> {
    const { fh, tmpPath } = await this.openTemp();
    try {
      await writeAllAt(fh, data, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
    return this.commit(tmpPath, digest);
  }

  pathFor(digest: string): string {
    return path.join(this.dir, digest.slice('sha256:'.length));
  }

  async cleanup(): Promise<void> {
    for (const p of [...this.temps, ...this.created]) await fsp.rm(p, { force: true }).catch(() => undefined);
    this.temps.clear();
    this.created = [];
  }
}

/** Throws the signal's reason if it has been aborted. */
export function checkAbort(signal: AbortSignal | undefined): void {
  signal?.throwIfAborted();
}
