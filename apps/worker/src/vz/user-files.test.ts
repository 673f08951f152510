// Root reading and deleting in a hostile VM user's directory (issue 17): symlinks, hard links to
// root's files and foreign files are refused; deletion runs as the user, so a planted symlink
// never makes root delete anything outside.
import { chmodSync, chownSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { copyUserFile, removeAsUser } from './user-files.ts';

const ROOT = process.getuid?.() === 0;
const U = 65534;
let base: string;
let userDir: string;

beforeEach(() => {
  base = mkdtempSync(path.join(os.tmpdir(), 'user-files-'));
  chmodSync(base, 0o711);
  userDir = path.join(base, 'bundle');
  mkdirSync(userDir, { mode: 0o700 });
  if (ROOT) chownSync(userDir, U, U);
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

function userFile(name: string, content: string): string {
  const f = path.join(userDir, name);
  writeFileSync(f, content);
  if (ROOT) chownSync(f, U, U);
  return f;
}

describe.skipIf(!ROOT)('files of a VM user, read and removed by root', () => {
  if (!ROOT) console.warn('user-files.test: skipped (needs root to own files as another uid)');

  it('copies the user\'s own regular file', async () => {
    userFile('disk.img', 'the disk');
    const dst = path.join(base, 'out.img');
    expect(await copyUserFile(path.join(userDir, 'disk.img'), dst, U)).toBe(8);
    expect(readFileSync(dst, 'utf8')).toBe('the disk');
  });

  it('refuses a symlink, a hard link to root\'s file, a file of another uid, and never overwrites', async () => {
    const secret = path.join(base, 'root-only');
    writeFileSync(secret, 'root secret', { mode: 0o600 });
    symlinkSync(secret, path.join(userDir, 'link.img'));
    await expect(copyUserFile(path.join(userDir, 'link.img'), path.join(base, 'a'), U)).rejects.toThrow(/symbolic link/);
    linkSync(secret, path.join(userDir, 'hard.img'));
    await expect(copyUserFile(path.join(userDir, 'hard.img'), path.join(base, 'b'), U)).rejects.toThrow(/belongs to uid 0|hard links/);
    writeFileSync(path.join(userDir, 'foreign.img'), 'x');
    await expect(copyUserFile(path.join(userDir, 'foreign.img'), path.join(base, 'c'), U)).rejects.toThrow(/belongs to uid 0/);
    userFile('ok.img', 'ok');
    writeFileSync(path.join(base, 'exists'), 'keep');
    await expect(copyUserFile(path.join(userDir, 'ok.img'), path.join(base, 'exists'), U)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(readFileSync(path.join(base, 'exists'), 'utf8')).toBe('keep');
    expect(existsSync(path.join(base, 'a'))).toBe(false);
  });

  it('removes the user\'s directory as the user: a symlink to root\'s directory inside it deletes nothing of root\'s', async () => {
    const precious = path.join(base, 'precious');
    mkdirSync(precious);
    writeFileSync(path.join(precious, 'keep'), 'keep');
    symlinkSync(precious, path.join(userDir, 'escape'));
    userFile('disk.img', 'd');
    await removeAsUser(userDir, U, U);
    expect(existsSync(userDir)).toBe(false);
    expect(readFileSync(path.join(precious, 'keep'), 'utf8')).toBe('keep');
  });
});
