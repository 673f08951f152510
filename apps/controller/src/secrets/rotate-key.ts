// `fleet-controller rotate-key`: a new key-encryption key, and every VM secret's data key
// re-wrapped under it, in place and online (the controllers keep running: they hold the old key
// until it is retired, and reload the keyring when an envelope names a key they do not hold).
//
// Key file source (the default): the current key moves to `<file>.<old id>.old` (still part of
// the keyring), the new one (generated, or --new-key-file) becomes `<file>`, then the pass runs.
// Environment or command source: the operator has already made the new key current there (and
// kept the old one among FLEET_SECRETS_OLD_KEYS / the command's later lines); the pass re-wraps.
import { randomBytes } from 'node:crypto';
import { readFile, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { openDatabase, type FleetDb } from '@fleet/db';
import { DEFAULT_KEY_FILE, FileKeyProvider, KEY_FILE_CHECK_MS, kekId, loadKeyProvider, parseKey, writeKeyFile, type KeyProvider } from './key-provider.ts';
import { tooOpenMessage } from './file-modes.ts';
import { SecretBox } from './secret-box.ts';
import { VmSecrets } from './vm-secrets.ts';
import { RegistrySecrets, mergeKekCounts } from './registry-secrets.ts';
import { FLEET_SECRETS_KEY_SETTING } from '../settings.ts';

export interface RotateKeyOptions {
  dataDir: string;
  databaseUrl?: string;
  keyFile?: string;
  keyCommand?: string;
  newKeyFile?: string;
  /** Only re-wrap under the current key (finish a rotation; no new key). */
  rewrapOnly?: boolean;
  env?: NodeJS.ProcessEnv;
  batch?: number;
  /** An open client on the database (tests: one SQLite client per file per process); default: one of its own. */
  db?: FleetDb;
  /** Progress lines for the operator. */
  say?: (line: string) => void;
}

export interface RotateKeyResult {
  previous: string | null;
  current: string;
  rows: number;
  moved: number;
  /** Envelopes per KEK id after the pass (VM secrets and registry passwords): only `current` when done. */
  byKey: Map<string, number>;
  /** Registry passwords (issue 15): rows with one, and how many were re-wrapped. */
  registries: { rows: number; moved: number };
  /** Where the previous key was kept (key file source). */
  previousKeyFile: string | null;
}

export async function rotateKey(o: RotateKeyOptions): Promise<RotateKeyResult> {
  const say = o.say ?? (() => {});
  if (!o.db && !o.databaseUrl) {
    // Never let SQLite create an empty database here (and the key switch before it fails).
    const file = path.join(o.dataDir, 'fleet.db');
    if (!(await stat(file).catch(() => null))) throw new Error(`no database at ${file}: is --data-dir right? (PostgreSQL: pass --database-url)`);
  }
  const env = o.env ?? process.env;
  const external = Boolean(o.keyCommand || env.FLEET_SECRETS_KEY);
  let keys: KeyProvider;
  let previous: string | null = null;
  let previousKeyFile: string | null = null;
  if (external) {
    if (o.newKeyFile) throw new Error('--new-key-file works with a key file; with FLEET_SECRETS_KEY or --secrets-key-command, make the new key current there (old one kept as an older key) and run rotate-key to re-wrap');
    keys = await loadKeyProvider({ dataDir: o.dataDir, ...(o.keyCommand ? { keyCommand: o.keyCommand } : {}), env });
  } else if (o.rewrapOnly) {
    if (o.newKeyFile) throw new Error('--rewrap-only and --new-key-file exclude each other');
    keys = await FileKeyProvider.load(path.resolve(o.keyFile ?? path.join(o.dataDir, DEFAULT_KEY_FILE)));
  } else {
    const file = path.resolve(o.keyFile ?? path.join(o.dataDir, DEFAULT_KEY_FILE));
    const before = await FileKeyProvider.load(file);
    const old = before.current();
    previous = old.id;
    let next: Buffer;
    if (o.newKeyFile) {
      const st = await stat(o.newKeyFile);
      if ((st.mode & 0o077) !== 0) throw new Error(tooOpenMessage(o.newKeyFile, st.mode, 'a key-encryption key'));
      next = parseKey(await readFile(o.newKeyFile), o.newKeyFile);
    } else {
      next = randomBytes(32);
    }
    if (kekId(next) === old.id) {
      say(`key ${old.id} is already current: re-wrapping what is still under older keys`);
    } else {
      // Keep the old key in the keyring first, then switch: at no moment is a key in use absent.
      previousKeyFile = `${file}.${old.id}.old`;
      await writeKeyFile(previousKeyFile, old.key);
      await writeKeyFile(file, next);
      say(`new key ${kekId(next)} is current in ${file}; the previous key ${old.id} is kept in ${previousKeyFile}`);
      // A staged sibling (e.g. secrets.key.next) is now the current key: one copy is enough.
      if (o.newKeyFile && path.dirname(path.resolve(o.newKeyFile)) === path.dirname(file) && path.basename(o.newKeyFile).startsWith(path.basename(file) + '.')) {
        await unlink(o.newKeyFile);
      }
    }
    keys = await FileKeyProvider.load(file);
  }
  const db = o.db ?? openDatabase({ url: o.databaseUrl ?? `file:${path.join(o.dataDir, 'fleet.db')}` });
  try {
    const box = new SecretBox(keys);
    const secrets = new VmSecrets(box);
    const registrySecrets = new RegistrySecrets(box);
    const current = keys.current().id;
    // The fleet's key from now on: a controller started without it refuses (settings.ts).
    await db.setting.upsert({ where: { key: FLEET_SECRETS_KEY_SETTING }, create: { key: FLEET_SECRETS_KEY_SETTING, value: JSON.stringify(current) }, update: { value: JSON.stringify(current) } });
    if (keys instanceof FileKeyProvider) {
      // Running controllers look at their key file at most every KEY_FILE_CHECK_MS before sealing:
      // let each of them see the switch (and commit what it sealed just before) ahead of the pass.
      await new Promise((r) => setTimeout(r, KEY_FILE_CHECK_MS + 1000));
    }
    let rows = 0;
    let moved = 0;
    let byKey = new Map<string, number>();
    const registries = { rows: 0, moved: 0 };
    // A controller that sealed with the old key just before it noticed the switch may leave a
    // row behind the pass's cursor: a second pass picks it up.
    for (let pass = 1; pass <= 3; pass++) {
      const r = await secrets.rewrapAll(db, { ...(o.batch ? { batch: o.batch } : {}), onBatch: (m) => say(`  re-wrapped the secrets of ${moved + m} VMs so far`) });
      rows = r.rows;
      moved += r.moved;
      const g = await registrySecrets.rewrapAll(db, { ...(o.batch ? { batch: o.batch } : {}) });
      registries.rows = g.rows;
      registries.moved += g.moved;
      if (g.moved > 0) say(`  re-wrapped the passwords of ${registries.moved} registries`);
      byKey = mergeKekCounts(await secrets.envelopesByKek(db), await registrySecrets.envelopesByKek(db));
      if ([...byKey.keys()].every((id) => id === current)) break;
    }
    return { previous, current, rows, moved, byKey, registries, previousKeyFile };
  } finally {
    if (!o.db) await db.$disconnect();
  }
}
