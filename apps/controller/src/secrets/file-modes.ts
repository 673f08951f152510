// File modes of the controller's data dir (issue 14): everything in it is for the controller's
// user only. Created with the narrowest mode, checked at every start: a key that others can read
// stops the start (it would be a leak already); a database, token or directory that is too open
// is a loud warning naming the chmod that fixes it (older versions created fleet.db 0644).
import { open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';

const octal = (mode: number) => '0' + (mode & 0o777).toString(8).padStart(3, '0');

export function tooOpenMessage(file: string, mode: number, what: string, want = 0o600): string {
  return `${file} holds ${what} but has mode ${octal(mode)}: its group or other users can access it. Fix: chmod ${octal(want).slice(1)} ${file}`;
}

export interface ModeFinding {
  file: string;
  mode: string;
  fatal: boolean;
  message: string;
}

/** The findings for a data dir; fatal ones are keys. Missing files are fine (not created yet). */
export async function checkDataDirModes(dataDir: string, opts: { sqliteFile?: string } = {}): Promise<ModeFinding[]> {
  const out: ModeFinding[] = [];
  const check = async (file: string, what: string, fatal: boolean, want = 0o600) => {
    const st = await stat(file).catch(() => null);
    if (!st || (st.mode & 0o077) === 0) return;
    out.push({ file, mode: octal(st.mode), fatal, message: tooOpenMessage(file, st.mode, what, want) });
  };
  await check(dataDir, 'the controller data dir', false, 0o700);
  if (opts.sqliteFile) {
    for (const suffix of ['', '-wal', '-shm']) await check(opts.sqliteFile + suffix, 'the controller database', false);
  }
  await check(path.join(dataDir, 'admin.token'), 'an admin API token', false);
  const pki = path.join(dataDir, 'pki');
  for (const n of (await readdir(pki).catch(() => [] as string[])).filter((n) => n.endsWith('-key.pem'))) {
    await check(path.join(pki, n), 'a private key', true);
  }
  // secrets.key and its keyring siblings are checked (fatally) by key-provider.ts as they are read.
  return out;
}

/**
 * Creates an empty SQLite database file with mode 0600 if it does not exist, before SQLite does
 * (SQLite would create it with 0644 under the usual umask). SQLite gives its -wal and -shm files
 * the database file's mode, so they follow.
 */
export async function createPrivateFile(file: string): Promise<void> {
  try {
    const h = await open(file, 'wx', 0o600);
    await h.close();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}
