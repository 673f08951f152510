// KEK sources: the data dir's key file (created 0600, refused when too open, with the fix), the
// environment, the command hook, and a file keyring picking up a rotation done by another process.
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileKeyProvider, kekId, loadKeyProvider, parseKey, writeKeyFile } from './key-provider.ts';
import { checkDataDirModes, createPrivateFile } from './file-modes.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-keys-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('key sources', () => {
  it('creates <data-dir>/secrets.key on first start: 32 random bytes, mode 0600; the same key after', async () => {
    const a = await loadKeyProvider({ dataDir: dir, create: true, env: {} });
    const st = await stat(path.join(dir, 'secrets.key'));
    expect(st.mode & 0o777).toBe(0o600);
    expect(parseKey(await readFile(path.join(dir, 'secrets.key')), 'f')).toHaveLength(32);
    const b = await loadKeyProvider({ dataDir: dir, create: true, env: {} });
    expect(b.current().id).toBe(a.current().id);
    expect(a.current().id).toMatch(/^[0-9a-f]{16}$/);
  });

  it('without create, a missing key file is an error that says what to do', async () => {
    await expect(loadKeyProvider({ dataDir: dir, env: {} })).rejects.toThrow(/does not exist.*restore it/);
  });

  it('refuses a key file its group or others can read, naming the chmod', async () => {
    await loadKeyProvider({ dataDir: dir, create: true, env: {} });
    const file = path.join(dir, 'secrets.key');
    await chmod(file, 0o644);
    await expect(loadKeyProvider({ dataDir: dir, create: true, env: {} })).rejects.toThrow(`has mode 0644: its group or other users can access it. Fix: chmod 600 ${file}`);
    // A too-open old key of the keyring too.
    await chmod(file, 0o600);
    await writeFile(path.join(dir, 'secrets.key.abc.old'), randomBytes(32).toString('hex'), { mode: 0o640 });
    await expect(loadKeyProvider({ dataDir: dir, env: {} })).rejects.toThrow(/secrets\.key\.abc\.old .*Fix: chmod 600/);
  });

  it('FLEET_SECRETS_KEY (hex or base64) with FLEET_SECRETS_OLD_KEYS; bad keys are refused', async () => {
    const cur = randomBytes(32);
    const old = randomBytes(32);
    const p = await loadKeyProvider({ dataDir: dir, env: { FLEET_SECRETS_KEY: cur.toString('hex'), FLEET_SECRETS_OLD_KEYS: old.toString('base64') } });
    expect(p.current().id).toBe(kekId(cur));
    expect(p.byId(kekId(old))?.equals(old)).toBe(true);
    await expect(loadKeyProvider({ dataDir: dir, env: { FLEET_SECRETS_KEY: 'short' } })).rejects.toThrow(/not a 32-byte key/);
    await expect(loadKeyProvider({ dataDir: dir, keyFile: 'x', env: { FLEET_SECRETS_KEY: cur.toString('hex') } })).rejects.toThrow(/choose one source/);
  });

  it('--secrets-key-command: one key per line, current first; failures are explained', async () => {
    const cur = randomBytes(32);
    const old = randomBytes(32);
    const p = await loadKeyProvider({ dataDir: dir, keyCommand: `printf '%s\\n%s\\n' ${cur.toString('hex')} ${old.toString('base64')}`, env: {} });
    expect(p.current().id).toBe(kekId(cur));
    expect(p.ids()).toEqual([kekId(cur), kekId(old)]);
    await expect(loadKeyProvider({ dataDir: dir, keyCommand: 'echo vault sealed >&2; exit 3', env: {} })).rejects.toThrow(/--secrets-key-command failed.*vault sealed/);
    await expect(loadKeyProvider({ dataDir: dir, keyCommand: 'true', env: {} })).rejects.toThrow(/printed no key/);
  });

  it('a file keyring notices a rotation made by another process (looking at most every checkEveryMs)', async () => {
    const file = path.join(dir, 'secrets.key');
    const p = await FileKeyProvider.load(file, { create: true, checkEveryMs: 300 });
    const first = p.current();
    const next = randomBytes(32);
    await writeKeyFile(`${file}.${first.id}.old`, first.key);
    await writeKeyFile(file, next);
    await p.refresh();
    expect(p.current().id).toBe(first.id); // looked less than checkEveryMs ago (at load)
    await new Promise((r) => setTimeout(r, 320));
    await p.refresh();
    expect(p.current().id).toBe(kekId(next));
    expect(p.byId(first.id)?.equals(first.key)).toBe(true);
  });
});

describe('data dir file modes', () => {
  it('creates the database file 0600 and reports what is too open, keys as fatal', async () => {
    const db = path.join(dir, 'fleet.db');
    await createPrivateFile(db);
    expect((await stat(db)).mode & 0o777).toBe(0o600);
    await chmod(dir, 0o700);
    expect(await checkDataDirModes(dir, { sqliteFile: db })).toEqual([]);
    await chmod(db, 0o644);
    await writeFile(path.join(dir, 'admin.token'), 't', { mode: 0o644 });
    await writeFile(path.join(dir, 'fleet.db-wal'), '', { mode: 0o644 });
    const { mkdir } = await import('node:fs/promises');
    await mkdir(path.join(dir, 'pki'));
    await writeFile(path.join(dir, 'pki', 'ca-key.pem'), 'k', { mode: 0o640 });
    await writeFile(path.join(dir, 'pki', 'ca.pem'), 'c', { mode: 0o644 });
    const found = await checkDataDirModes(dir, { sqliteFile: db });
    expect(found.map((f) => [path.basename(f.file), f.mode, f.fatal])).toEqual([
      ['fleet.db', '0644', false],
      ['fleet.db-wal', '0644', false],
      ['admin.token', '0644', false],
      ['ca-key.pem', '0640', true],
    ]);
    expect(found[0]!.message).toContain(`Fix: chmod 600 ${db}`);
    await chmod(dir, 0o755);
    expect((await checkDataDirModes(dir))[0]!.message).toContain(`Fix: chmod 700 ${dir}`);
  });
});
