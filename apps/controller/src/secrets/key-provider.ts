// Where the key-encryption keys (KEKs) come from. Kept out of the database on purpose: a copy of
// the database (a backup, a pg_dump) without the KEK opens no secret.
//
// Three sources, one small interface (a keyring: the current KEK, which seals, plus older ones
// that still open envelopes during a rotation):
//   - a key file (default `<data-dir>/secrets.key`, created on first start, mode 0600); every
//     `secrets.key.*` file beside it (`secrets.key.<id>.old` after a rotation, `secrets.key.next`
//     staged before one) is part of the keyring;
//   - the environment: FLEET_SECRETS_KEY (current), FLEET_SECRETS_OLD_KEYS (comma-separated);
//   - a command (KMS-style hook): run through /bin/sh, prints one key per line, current first.
// A key is 32 bytes, written as 64 hex digits or base64 (a file may also hold the 32 raw bytes).
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdir, open, readFile, readdir, rename, stat, writeFile, chmod } from 'node:fs/promises';
import path from 'node:path';
import { tooOpenMessage } from './file-modes.ts';

export interface Kek {
  /** Fingerprint of the key (16 hex digits), recorded in every envelope it wraps. */
  id: string;
  key: Buffer;
}

export interface KeyProvider {
  /** The KEK new envelopes are sealed (and rotations re-wrapped) under. */
  current(): Kek;
  /** Any KEK of the keyring by id (current or older), or undefined. */
  byId(id: string): Buffer | undefined;
  ids(): string[];
  /**
   * Re-reads the source if it may have changed (a rotation by another process); with `force`,
   * re-reads it now (an envelope named a key we do not hold). Absent: the source never changes.
   */
  refresh?(force?: boolean): Promise<void>;
  /** For logs and errors: where the keys come from (never the keys). */
  readonly describe: string;
}

export const KEY_BYTES = 32;
export const DEFAULT_KEY_FILE = 'secrets.key';

/** The KEK id: a domain-separated fingerprint, safe to show (it reveals nothing of a random key). */
export function kekId(key: Buffer): string {
  return createHash('sha256').update('fleet-kek-id/v1\0').update(key).digest().subarray(0, 8).toString('hex');
}

/** A key as text (64 hex digits or base64 of 32 bytes) or as the 32 raw bytes of a file. */
export function parseKey(raw: Buffer | string, where: string): Buffer {
  if (Buffer.isBuffer(raw) && raw.length === KEY_BYTES && !/^[\x20-\x7e\s]*$/.test(raw.toString('latin1'))) return Buffer.from(raw);
  const text = (Buffer.isBuffer(raw) ? raw.toString('utf8') : raw).trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(text)) {
    const key = Buffer.from(text, text.includes('-') || text.includes('_') ? 'base64url' : 'base64');
    if (key.length === KEY_BYTES) return key;
  }
  throw new Error(`${where}: not a 32-byte key (expected 64 hex digits or base64 of 32 bytes, e.g. from \`openssl rand -base64 32\`)`);
}

class Keyring implements KeyProvider {
  private keys = new Map<string, Buffer>();
  private cur!: Kek;
  constructor(
    readonly describe: string,
    keys: Buffer[],
  ) {
    this.set(keys);
  }
  protected set(keys: Buffer[]): void {
    if (keys.length === 0) throw new Error(`${this.describe}: no key`);
    const map = new Map<string, Buffer>();
    for (const k of keys) map.set(kekId(k), k);
    this.keys = map;
    this.cur = { id: kekId(keys[0]!), key: keys[0]! };
  }
  current(): Kek {
    return this.cur;
  }
  byId(id: string): Buffer | undefined {
    return this.keys.get(id);
  }
  ids(): string[] {
    return [...this.keys.keys()];
  }
}

/** A fixed keyring (environment, tests). */
export function staticKeyProvider(keys: Buffer[], describe = 'static keys'): KeyProvider {
  return new Keyring(describe, keys);
}

export function envKeyProvider(env: NodeJS.ProcessEnv = process.env): KeyProvider | null {
  const cur = env.FLEET_SECRETS_KEY;
  if (!cur) return null;
  const old = (env.FLEET_SECRETS_OLD_KEYS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  return new Keyring('FLEET_SECRETS_KEY', [parseKey(cur, 'FLEET_SECRETS_KEY'), ...old.map((k, i) => parseKey(k, `FLEET_SECRETS_OLD_KEYS[${i}]`))]);
}

/** Refuses a key file that its group or others can access, naming the fix. */
async function readKeyFile(file: string): Promise<Buffer> {
  const st = await stat(file);
  if (!st.isFile()) throw new Error(`${file} is not a file`);
  if ((st.mode & 0o077) !== 0) throw new Error(tooOpenMessage(file, st.mode, 'a key-encryption key'));
  return parseKey(await readFile(file), file);
}

/** Writes a new key file (base64 text) with mode 0600, atomically (temp file + rename). */
export async function writeKeyFile(file: string, key: Buffer, opts: { exclusive?: boolean } = {}): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  if (opts.exclusive) {
    // First start: never overwrite a key someone else just created (a second process on the dir).
    const h = await open(file, 'wx', 0o600);
    try {
      await h.writeFile(key.toString('base64') + '\n');
      await h.sync();
    } finally {
      await h.close();
    }
    return;
  }
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, key.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  await chmod(tmp, 0o600);
  await rename(tmp, file);
}

/**
 * How often a file keyring looks for a rotation before sealing (at most). Checking at every seal
 * was a `stat` per created VM (2–3 % of the controller's CPU, issue 20); a seal under the old key
 * in the second after a rotation is still safe: the old key stays in the keyring until the
 * operator deletes it, and rotate-key counts (and a second run re-wraps) such envelopes first.
 */
export const KEY_FILE_CHECK_MS = 1000;

export class FileKeyProvider extends Keyring {
  private stamp = '';
  private checkedAt = Date.now();
  private constructor(
    readonly file: string,
    keys: Buffer[],
    stamp: string,
    private readonly checkEveryMs: number,
  ) {
    super(`key file ${file}`, keys);
    this.stamp = stamp;
  }

  /** The keyring of `file` (and its `<file>.*` siblings); `create`: make the file if it is missing. */
  static async load(file: string, opts: { create?: boolean; checkEveryMs?: number } = {}): Promise<FileKeyProvider> {
    if (opts.create) {
      try {
        await writeKeyFile(file, randomBytes(KEY_BYTES), { exclusive: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    const { keys, stamp } = await FileKeyProvider.read(file);
    return new FileKeyProvider(file, keys, stamp, opts.checkEveryMs ?? KEY_FILE_CHECK_MS);
  }

  private static async read(file: string): Promise<{ keys: Buffer[]; stamp: string }> {
    let current: Buffer;
    try {
      current = await readKeyFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`the secrets key file ${file} does not exist (it is created on the first start of a data dir; restore it from where you keep it, or point --secrets-key-file at it)`);
      throw err;
    }
    const dir = path.dirname(file);
    const base = path.basename(file);
    const siblings = (await readdir(dir)).filter((n) => n.startsWith(base + '.') && !n.includes('.tmp-')).sort();
    const others: Buffer[] = [];
    for (const n of siblings) others.push(await readKeyFile(path.join(dir, n)));
    const st = await stat(file);
    return { keys: [current, ...others], stamp: `${st.ino}:${st.mtimeMs}:${siblings.join(',')}` };
  }

  async refresh(force = false): Promise<void> {
    if (!force) {
      // Before a seal: has the key file been replaced (a rotation)? At most every checkEveryMs.
      const now = Date.now();
      if (now - this.checkedAt < this.checkEveryMs) return;
      this.checkedAt = now;
      const st = await stat(this.file).catch(() => null);
      if (!st || this.stamp.startsWith(`${st.ino}:${st.mtimeMs}:`)) return;
    }
    const { keys, stamp } = await FileKeyProvider.read(this.file);
    this.set(keys);
    this.stamp = stamp;
  }
}

/**
 * The KMS-style hook. Contract: `/bin/sh -c <command>` exits 0 within 10 s and prints one key per
 * line on stdout (64 hex digits or base64 of 32 bytes): the current key first, then older keys
 * that must still open secrets. It is run at start and again (at most every 5 s) when an
 * envelope names a key the controller does not hold. Its stderr is shown in errors.
 */
export class CommandKeyProvider extends Keyring {
  private lastRun = Date.now();
  private constructor(
    readonly command: string,
    keys: Buffer[],
  ) {
    super(`--secrets-key-command`, keys);
  }

  static async load(command: string): Promise<CommandKeyProvider> {
    return new CommandKeyProvider(command, await CommandKeyProvider.run(command));
  }

  private static run(command: string): Promise<Buffer[]> {
    return new Promise((resolve, reject) => {
      execFile('/bin/sh', ['-c', command], { timeout: 10_000, maxBuffer: 64 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`--secrets-key-command failed (${(err as NodeJS.ErrnoException).code ?? err.message})${stderr.trim() ? `: ${stderr.trim().slice(0, 500)}` : ''}`));
          return;
        }
        try {
          const lines = stdout.split('\n').map((l) => l.trim()).filter(Boolean);
          if (lines.length === 0) throw new Error('--secrets-key-command printed no key');
          resolve(lines.map((l, i) => parseKey(l, `--secrets-key-command output line ${i + 1}`)));
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  async refresh(force = false): Promise<void> {
    if (!force || Date.now() - this.lastRun < 5_000) return;
    this.lastRun = Date.now();
    this.set(await CommandKeyProvider.run(this.command));
  }
}

export interface KeySourceOptions {
  dataDir: string;
  /** --secrets-key-file: a key file elsewhere than the data dir (it must exist). */
  keyFile?: string;
  /** --secrets-key-command */
  keyCommand?: string;
  env?: NodeJS.ProcessEnv;
  /** Create `<data-dir>/secrets.key` if no source is configured and it is missing (the controller, not rotate-key). */
  create?: boolean;
}

/** The configured source: the command, else the environment, else the key file (default in the data dir). */
export async function loadKeyProvider(o: KeySourceOptions): Promise<KeyProvider> {
  const set = [o.keyCommand ? '--secrets-key-command' : '', (o.env ?? process.env).FLEET_SECRETS_KEY ? 'FLEET_SECRETS_KEY' : '', o.keyFile ? '--secrets-key-file' : ''].filter(Boolean);
  if (set.length > 1) throw new Error(`choose one source of the secrets key, not ${set.join(' and ')}`);
  if (o.keyCommand) return CommandKeyProvider.load(o.keyCommand);
  const env = envKeyProvider(o.env ?? process.env);
  if (env) return env;
  if (o.keyFile) return FileKeyProvider.load(path.resolve(o.keyFile));
  return FileKeyProvider.load(path.join(o.dataDir, DEFAULT_KEY_FILE), { create: o.create ?? false });
}
