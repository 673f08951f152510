// Root touching files a VM user controls (issue 17): the user may have replaced any of them with a
// symlink or a hard link to a file only root may read, or keep changing them. Root therefore
// - reads such a file only through open(O_NOFOLLOW) and only if fstat says it is a regular file
//   owned by that user with a single link (a hard link to someone else's file has their uid),
// - reads it from that fd (never by path again; copyFileFromFd clones or copies sparsely), into a
//   file root creates exclusively,
// - never deletes inside a user's directory itself: the user's own `rm` does (no symlink race
//   can point a root `rm -rf` elsewhere); root removes only the then-empty directory.
import { spawn } from 'node:child_process';
import { copyFileFromFd } from '@fleet/native-vz';
import { constants as fsc, type Stats } from 'node:fs';
import { open, rmdir, type FileHandle } from 'node:fs/promises';

export class UserFileError extends Error {
  override readonly name = 'UserFileError';
}

/** Opens `src` without following a link; only a regular file of `uid` with one link is accepted. */
async function openUserFile(src: string, uid: number): Promise<{ input: FileHandle; st: Stats }> {
  let input: FileHandle;
  try {
    input = await open(src, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserFileError(code === 'ELOOP' || code === 'EMLINK' ? `${src} is a symbolic link: refused` : `${src}: ${(e as Error).message}`);
  }
  try {
    const st = await input.stat();
    if (!st.isFile()) throw new UserFileError(`${src} is not a regular file: refused`);
    if (st.uid !== uid) throw new UserFileError(`${src} belongs to uid ${st.uid}, not the VM user ${uid}: refused`);
    if (st.nlink !== 1) throw new UserFileError(`${src} has ${st.nlink} hard links: refused`);
    return { input, st };
  } catch (e) {
    await input.close();
    throw e;
  }
}

/** Copies `src` (in a directory `uid` controls; its parent directories must be root's) to `dst` (a new file). */
export async function copyUserFile(src: string, dst: string, uid: number, opts: { mode?: number } = {}): Promise<number> {
  const { input, st } = await openUserFile(src, uid);
  try {
    // From the checked fd, never the path again: an APFS clone (or a hole-keeping copy), into a
    // new file root creates exclusively (O_EXCL|O_NOFOLLOW).
    await copyFileFromFd(input.fd, dst, { mode: opts.mode ?? 0o644 });
    return st.size;
  } finally {
    await input.close();
  }
}

/** Reads a small file of the VM user's (same checks as copyUserFile), at most `maxBytes`. */
export async function readUserFile(src: string, uid: number, maxBytes = 1024 * 1024): Promise<Buffer> {
  const { input, st } = await openUserFile(src, uid);
  try {
    if (st.size > maxBytes) throw new UserFileError(`${src} is larger than ${maxBytes} bytes: refused`);
    const buf = Buffer.alloc(st.size);
    const { bytesRead } = await input.read(buf, 0, st.size, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await input.close();
  }
}

/**
 * Removes `dir` (owned by `uid`, in a directory of root's): its contents as that user (find -P
 * never follows a symlink; -delete goes depth first), then the empty directory as root.
 */
export async function removeAsUser(dir: string, uid: number, gid: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn('/usr/bin/find', ['-P', dir, '-mindepth', '1', '-delete'], { uid, gid, stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: '/usr/bin:/bin' } });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new UserFileError(`deleting ${dir} as uid ${uid}: ${err.trim() || `exit ${code}`}`))));
  });
  // rmdir: fails (and keeps everything) if the user managed to leave anything behind.
  await rmdir(dir);
}
