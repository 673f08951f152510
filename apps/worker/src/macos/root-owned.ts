// "Root never executes or trusts a file another user could have swapped": a path is trusted only
// if it and every directory above it is owned by root and writable by nobody else.
import { createHash } from 'node:crypto';
import { createReadStream, lstatSync, realpathSync, type Stats } from 'node:fs';
import path from 'node:path';

export class UntrustedPathError extends Error {
  override readonly name = 'UntrustedPathError';
}

/**
 * Throws unless `file` (resolved through symlinks first: /var is a link on macOS) and every parent
 * up to `stopAt` (default /) is owned by root (or `ownerUid`) and not writable by group or others.
 */
export function assertRootOwned(file: string, opts: { stopAt?: string; ownerUid?: number; lstat?: (p: string) => Stats } = {}): void {
  const owner = opts.ownerUid ?? 0;
  const st = opts.lstat ?? ((p: string) => lstatSync(p));
  let p: string;
  try {
    p = realpathSync(file);
  } catch (e) {
    throw new UntrustedPathError(`${file}: ${(e as Error).message}`);
  }
  const stop = opts.stopAt ? realpathSync(opts.stopAt) : path.parse(p).root;
  for (;;) {
    const s = st(p);
    if (s.isSymbolicLink()) throw new UntrustedPathError(`${p} is a symbolic link`);
    if (s.uid !== owner) throw new UntrustedPathError(`${p} is owned by uid ${s.uid}, not ${owner === 0 ? 'root' : `uid ${owner}`}: another user could replace what root runs (fix: chown root ${p})`);
    if ((s.mode & 0o022) !== 0) throw new UntrustedPathError(`${p} is writable by ${(s.mode & 0o002) !== 0 ? 'everyone' : 'its group'} (mode ${(s.mode & 0o7777).toString(8)}): fix: chmod go-w ${p}`);
    if (p === stop || p === path.dirname(p)) return;
    p = path.dirname(p);
  }
}

export function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (c) => h.update(c))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

/** The file is root-owned (with its parents) and still has the content `sha256` pinned when it was made. */
export async function verifyPinned(file: string, sha256: string, opts: { stopAt?: string; ownerUid?: number } = {}): Promise<void> {
  assertRootOwned(file, opts);
  const now = await sha256File(file);
  if (now !== sha256) throw new UntrustedPathError(`${file} changed since it was signed and pinned (sha256 ${now.slice(0, 16)}…, pinned ${sha256.slice(0, 16)}…): restart the worker to re-create it`);
}
