import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { throttle, type Descriptor, type RegistryClient, type TransferProgress } from './client.ts';
import { OciError, errnoCode } from './errors.ts';
import { isDigest } from './reference.ts';
import { copyRegion } from './region.ts';

/**
 * One blob to fetch: to a file of its own (`file`: RegistryClient.downloadBlob, verified, then
 * renamed into place), or straight into a region of an open file (`fh` at `offset`:
 * RegistryClient.downloadBlobInto, positioned writes verified as they arrive).
 */
export type BlobJob = { desc: Descriptor; file: string } | { desc: Descriptor; fh: FileHandle; offset: number };

export interface PullBlobsOptions {
  /** Downloads in flight at once (default 4). */
  concurrency?: number;
  signal?: AbortSignal;
  /** Summed over all jobs (a region filled by a local copy counts as it is copied). */
  onProgress?: (p: TransferProgress) => void;
  /** Region jobs: the file reads as zeros there (just truncated to size); all-zero 64 KiB pieces stay holes. */
  sparse?: boolean;
}

function checkConcurrency(fn: string, concurrency: number): void {
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`${fn}: concurrency must be a positive integer, got ${concurrency}`);
}

function checkDigest(repository: string, d: Descriptor): void {
  if (!isDigest(d.digest)) throw new OciError('bad-reference', `blob digest ${JSON.stringify(d.digest)} in ${repository} is not sha256:<64 hex>`);
}

/**
 * Runs `jobs`, at most `concurrency` downloads at a time, with progress summed over all of them.
 * The first failure aborts the others and is what this rejects with; it resolves or rejects only
 * once no job touches a file any more (so the caller may close or delete what they write to).
 *
 * A digest that several region jobs share (the all-zero pieces of a raw disk) is downloaded once,
 * into the first of those regions, and copied locally from there into the others once verified.
 * File jobs naming the same file and digest are one job. Regions of one file must not overlap.
 */
export async function pullBlobs(client: RegistryClient, repository: string, jobs: BlobJob[], opts: PullBlobsOptions = {}): Promise<void> {
  const concurrency = opts.concurrency ?? 4;
  checkConcurrency('pullBlobs', concurrency);

  // Work units: one download each, plus the local copies that wait for it.
  interface Unit {
    job: BlobJob;
    copies: { fh: FileHandle; offset: number }[];
    key: number;
  }
  const units: Unit[] = [];
  const files = new Map<string, Unit>();
  const regionsByDigest = new Map<string, Unit>();
  const regionsByFile = new Map<FileHandle, { offset: number; size: number }[]>();
  const sizes = new Map<string, number>();
  let keys = 0;
  for (const job of jobs) {
    const d = job.desc;
    checkDigest(repository, d);
    const seen = sizes.get(d.digest);
    if (seen !== undefined && seen !== d.size) throw new OciError('protocol', `blob ${d.digest} in ${repository} is listed with two sizes (${seen} and ${d.size})`);
    sizes.set(d.digest, d.size);
    if ('file' in job) {
      const key = `${d.digest} ${job.file}`;
      if (files.has(key)) continue;
      const unit: Unit = { job, copies: [], key: keys++ };
      files.set(key, unit);
      units.push(unit);
      continue;
    }
    if (!Number.isSafeInteger(job.offset) || job.offset < 0) throw new RangeError(`pullBlobs: offset must be a non-negative integer, got ${job.offset}`);
    const regions = regionsByFile.get(job.fh) ?? [];
    regions.push({ offset: job.offset, size: d.size });
    regionsByFile.set(job.fh, regions);
    const first = regionsByDigest.get(d.digest);
    if (first && 'fh' in first.job && first.job.fh === job.fh) {
      first.copies.push({ fh: job.fh, offset: job.offset });
      continue;
    }
    const unit: Unit = { job, copies: [], key: keys++ };
    if (!first) regionsByDigest.set(d.digest, unit);
    units.push(unit);
  }
  for (const regions of regionsByFile.values()) {
    regions.sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < regions.length; i++) {
      const prev = regions[i - 1]!;
      if (prev.offset + prev.size > regions[i]!.offset) {
        throw new RangeError(`pullBlobs: the regions at ${prev.offset} (${prev.size} bytes) and ${regions[i]!.offset} of one file overlap`);
      }
    }
  }

  const bytesTotal = units.reduce((n, u) => n + u.job.desc.size * (1 + u.copies.length), 0);
  const done = new Map<number, number>();
  let doneSum = 0;
  const set = (key: number, n: number): void => {
    doneSum += n - (done.get(key) ?? 0);
    done.set(key, n);
  };
  const progress = throttle(opts.onProgress ? (bytesDone) => opts.onProgress!({ bytesDone, bytesTotal }) : undefined);
  const report = (): void => progress(doneSum, doneSum === bytesTotal);

  // One controller for all downloads: the caller's abort and our own first failure.
  const ac = new AbortController();
  const onOuterAbort = (): void => ac.abort(opts.signal?.reason);
  if (opts.signal?.aborted) onOuterAbort();
  else opts.signal?.addEventListener('abort', onOuterAbort, { once: true });

  const queue = [...units];
  let firstError: unknown;
  const run = async (unit: Unit): Promise<void> => {
    const { job } = unit;
    const desc = job.desc;
    const onProgress = (n: number): void => {
      set(unit.key, n);
      report();
    };
    if ('file' in job) {
      await client.downloadBlob(repository, desc, job.file, { signal: ac.signal, onProgress });
    } else {
      await client.downloadBlobInto(repository, desc, job.fh, job.offset, { signal: ac.signal, onProgress, ...(opts.sparse ? { sparse: true } : {}) });
    }
    set(unit.key, desc.size);
    report();
    for (const [i, copy] of unit.copies.entries()) {
      const from = (job as { offset: number }).offset;
      const before = desc.size * (i + 1);
      try {
        await copyRegion(copy.fh, from, copy.offset, desc.size, {
          sparse: opts.sparse === true,
          signal: ac.signal,
          onProgress: (n) => {
            set(unit.key, before + n);
            report();
          },
        });
      } catch (err) {
        if (ac.signal.aborted) throw new OciError('aborted', `copy of ${desc.digest} in ${repository} was aborted`, { cause: err });
        const code = errnoCode(err);
        if (code === 'ENOSPC' || code === 'EDQUOT') {
          throw new OciError('disk-full', `no space left on the device while storing blob ${desc.digest} in ${repository}: free some space and retry`, { cause: err });
        }
        throw err;
      }
    }
  };
  const worker = async (): Promise<void> => {
    for (;;) {
      if (ac.signal.aborted) return;
      const unit = queue.shift();
      if (!unit) return;
      try {
        await run(unit);
      } catch (err) {
        if (firstError === undefined) {
          firstError = err;
          ac.abort(new Error(`another blob of ${repository} failed`));
        }
        return;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, units.length) }, worker));
  } finally {
    opts.signal?.removeEventListener('abort', onOuterAbort);
    if (firstError !== undefined) progress.cancel();
  }
  if (opts.signal?.aborted && (firstError === undefined || (firstError instanceof OciError && firstError.code === 'aborted'))) {
    throw firstError ?? new OciError('aborted', `download of ${repository} was aborted`);
  }
  if (firstError !== undefined) throw firstError;
  if (units.length === 0) report();
}

/**
 * Downloads `descs` into `dir` as `sha256-<hex>` files, at most `concurrency` at a
 * time; a digest listed twice is fetched once. Progress is summed over all blobs.
 * The first failure aborts the other downloads (their partial files stay for a later
 * resume) and is what this rejects with. Returns digest → file path.
 */
export async function downloadBlobs(
  client: RegistryClient,
  repository: string,
  descs: Descriptor[],
  dir: string,
  opts: { concurrency?: number; signal?: AbortSignal; onProgress?: (p: TransferProgress) => void } = {},
): Promise<Map<string, string>> {
  checkConcurrency('downloadBlobs', opts.concurrency ?? 4);
  const unique = new Map<string, Descriptor>();
  for (const d of descs) {
    checkDigest(repository, d);
    const seen = unique.get(d.digest);
    if (seen && seen.size !== d.size) {
      throw new OciError('protocol', `blob ${d.digest} in ${repository} is listed with two sizes (${seen.size} and ${d.size})`);
    }
    if (!seen) unique.set(d.digest, d);
  }
  const paths = new Map<string, string>();
  for (const digest of unique.keys()) paths.set(digest, path.join(dir, `sha256-${digest.slice('sha256:'.length)}`));
  await fsp.mkdir(dir, { recursive: true });
  await pullBlobs(
    client,
    repository,
    [...unique.values()].map((desc) => ({ desc, file: paths.get(desc.digest)! })),
    opts,
  );
  return paths;
}
