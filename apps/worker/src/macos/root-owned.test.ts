// What root will execute (the signed node copy the VM agents run on): only files that no other
// user could have replaced, still holding the content pinned when they were signed.
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { assertRootOwned, verifyPinned } from './root-owned.ts';

const UID = process.getuid!();
let base: string;
beforeEach(() => {
  base = mkdtempSync(path.join(os.tmpdir(), 'root-owned-'));
  chmodSync(base, 0o755);
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

describe('assertRootOwned / verifyPinned', () => {
  it('accepts a file whose every directory is the owner\'s and not group/other-writable, and checks the pin', async () => {
    mkdirSync(path.join(base, 'bin'), { mode: 0o755 });
    const f = path.join(base, 'bin', 'node');
    writeFileSync(f, 'NODE', { mode: 0o755 });
    expect(() => assertRootOwned(f, { stopAt: base, ownerUid: UID })).not.toThrow();
    const pin = createHash('sha256').update('NODE').digest('hex');
    await expect(verifyPinned(f, pin, { stopAt: base, ownerUid: UID })).resolves.toBeUndefined();
    writeFileSync(f, 'SWAPPED');
    await expect(verifyPinned(f, pin, { stopAt: base, ownerUid: UID })).rejects.toThrow(/changed since it was signed and pinned/);
  });

  it('refuses a group/other-writable directory or file on the way', () => {
    mkdirSync(path.join(base, 'open'), { mode: 0o777 });
    chmodSync(path.join(base, 'open'), 0o777);
    const f = path.join(base, 'open', 'node');
    writeFileSync(f, 'x', { mode: 0o755 });
    expect(() => assertRootOwned(f, { stopAt: base, ownerUid: UID })).toThrow(/open is writable by everyone/);
    chmodSync(path.join(base, 'open'), 0o755);
    chmodSync(f, 0o775);
    expect(() => assertRootOwned(f, { stopAt: base, ownerUid: UID })).toThrow(/writable by its group/);
  });

  it.runIf(UID === 0)('refuses a file or directory another user owns (root only)', () => {
    mkdirSync(path.join(base, 'user'), { mode: 0o755 });
    chownSync(path.join(base, 'user'), 65534, 65534);
    const f = path.join(base, 'user', 'node');
    writeFileSync(f, 'x', { mode: 0o755 });
    expect(() => assertRootOwned(f, { stopAt: base })).toThrow(/user is owned by uid 65534, not root/);
    // A symlink from a trusted place into the user's directory is resolved and refused the same way.
    symlinkSync(f, path.join(base, 'link'));
    expect(() => assertRootOwned(path.join(base, 'link'), { stopAt: base })).toThrow(/owned by uid 65534/);
  });
});
