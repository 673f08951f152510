import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { throttle, type Descriptor, type RegistryClient, type TransferProgress } from './client.ts';
import { OciError } from './errors.ts';
import { isDigest } from './reference.ts';

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
  const concurrency = opts.concurrency ?? 4;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`downloadBlobs: concurrency must be a positive integer, got ${concurrency}`);

  const unique = new Map<string, Descriptor>();
  for (const d of descs) {
    if (!isDigest(d.digest)) throw new OciError('bad-reference', `blob digest ${JSON.stringify(d.digest)} in ${repository} is not sha256:<64 hex>`);
    const seen = unique.get(d.digest);
    if (seen && seen.size !== d.size) {
      throw new OciError('protocol', `blob ${d.digest} in ${repository} is listed with two sizes (${seen.size} and ${d.size})`);
    }
    if (!seen) unique.set(d.digest, d);
  }
  const paths = new Map<string, string>();
  for (const digest of unique.keys()) paths.set(digest, path.join(dir, `sha256-${digest.slice('sha256:'.length)}`));
  await fsp.mkdir(dir, { recursive: true });

  const bytesTotal = [...unique.values()].reduce((n, d) => n + d.size, 0);
  const done = new Map<string, number>();
  const sum = (): number => {
    let n = 0;
    for (const v of done.values()) n += v;
    return n;
  };
  const progress = throttle(opts.onProgress ? (bytesDone) => opts.onProgress!({ bytesDone, bytesTotal }) : undefined);
  const report = (): void => {
    const n = sum();
    progress(n, n === bytesTotal);
  };

  // One controller for all downloads: the caller's abort and our own first failure.
  const ac = new AbortController();
  const onOuterAbort = (): void => ac.abort(opts.signal?.reason);
  if (opts.signal?.aborted) onOuterAbort();
  else opts.signal?.addEventListener('abort', onOuterAbort, { once: true });

  const queue = [...unique.values()];
  let firstError: unknown;
  const worker = async (): Promise<void> => {
    for (;;) {
      if (ac.signal.aborted) return;
      const desc = queue.shift();
      if (!desc) return;
      try {
        await client.downloadBlob(repository, desc, paths.get(desc.digest)!, {
          signal: ac.signal,
          onProgress: (n) => {
            done.set(desc.digest, n);
            report();
          },
        });
        done.set(desc.digest, desc.size);
        report();
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
    await Promise.all(Array.from({ length: Math.min(concurrency, unique.size) }, worker));
  } finally {
    opts.signal?.removeEventListener('abort', onOuterAbort);
    if (firstError !== undefined) progress.cancel();
  }
  if (opts.signal?.aborted && (firstError === undefined || (firstError instanceof OciError && firstError.code === 'aborted'))) {
    throw firstError ?? new OciError('aborted', `download of ${repository} was aborted`);
  }
  if (firstError !== undefined) throw firstError;
  if (unique.size === 0) report();
  return paths;
}
