// Secrets at rest with a real controller (issue 14): a VM created with a known password canary
// and its SSH key fetched through the API; then the database's raw bytes (SQLite: fleet.db, -wal,
// -shm; PostgreSQL: a pg_dump) must contain neither the password nor the private key's body.
// Also: the files the controller creates are 0600 in a 0700 dir, a too-open key stops the start,
// and plaintext rows left by an older Fleet are sealed and scrubbed from the file at start.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rename, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '@fleet/db';
import { findPostgresBin } from '../../../../prisma/src/pg-scratch.ts';
import { scratchPostgresForSuite } from '../../../../prisma/src/testing/scratch-postgres.ts';
import { startController, type ControllerHandle } from '../controller.ts';
import { generateVmKeyPair } from '../sessions/vm-access.ts';
import { kekId, staticKeyProvider } from './key-provider.ts';
import { rotateKey } from './rotate-key.ts';

const havePostgres = findPostgresBin() !== undefined;
if (!havePostgres) console.warn('secrets-at-rest.test.ts: PostgreSQL is not installed (apt-get install postgresql): skipping its pg_dump case');

const PASSWORD_CANARY = 'canary-PW-7f3a9c1e-do-not-store';
const TOKEN = 'fleet_admin_' + 'b'.repeat(40);

let root = '';
beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'fleet-at-rest-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function api<T = Record<string, unknown>>(c: ControllerHandle, method: string, p: string, body?: unknown): Promise<T> {
  const res = await fetch(`${c.apiUrl}${p}`, { method, headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
  const json = (await res.json()) as T;
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

const start = (dataDir: string, extra: { databaseUrl?: string } = {}) =>
  startController({ dataDir, apiPort: 0, grpcPort: 0, grpcHost: '127.0.0.1', bootstrapAdminToken: TOKEN, logLevel: 'silent', ...extra });

/** The private key's base64 body lines (what a leak would contain), at least 20 characters each. */
function keyBody(pem: string): string[] {
  const lines = pem.split('\n').filter((l) => l && !l.startsWith('-----'));
  expect(lines.length).toBeGreaterThan(0);
  return lines.filter((l) => l.length >= 20);
}

/** A VM with the password canary, and its SSH key (created by the ssh-access read). */
async function makeSecrets(c: ControllerHandle, name: string): Promise<string[]> {
  await api(c, 'POST', '/v1/vms', { name, image: 'img', password: PASSWORD_CANARY });
  const access = await api<{ privateKey: string }>(c, 'GET', `/v1/vms/${name}/ssh-access`);
  expect(access.privateKey).toMatch(/BEGIN OPENSSH PRIVATE KEY/);
  // Twice: the second read opens the stored (sealed) key.
  expect((await api<{ privateKey: string }>(c, 'GET', `/v1/vms/${name}/ssh-access`)).privateKey).toBe(access.privateKey);
  return [PASSWORD_CANARY, ...keyBody(access.privateKey)];
}

async function sqliteBytes(dataDir: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const f of ['fleet.db', 'fleet.db-wal', 'fleet.db-shm']) parts.push(await readFile(path.join(dataDir, f)).catch(() => Buffer.alloc(0)));
  return Buffer.concat(parts);
}

function expectNoCanary(dump: Buffer, canaries: string[], where: string): void {
  for (const canary of canaries) expect(dump.includes(Buffer.from(canary)), `${where} contains ${canary.slice(0, 12)}…`).toBe(false);
}

describe('secrets at rest (SQLite)', () => {
  it('the database file holds no password and no private key; files are created 0600 in a 0700 dir', async () => {
    const dataDir = path.join(root, 'sqlite');
    const c = await start(dataDir);
    let canaries: string[];
    try {
      canaries = await makeSecrets(c, 'canary-vm');
      // The sessions path (what the worker receives) still gets the plaintext.
      const vm = await c.db.vm.findUniqueOrThrow({ where: { name: 'canary-vm' } });
      const row = await c.db.vmAccess.findUniqueOrThrow({ where: { vmId: vm.id } });
      expect(await c.secrets.passwordOf(row)).toBe(PASSWORD_CANARY);
      expectNoCanary(await sqliteBytes(dataDir), canaries, 'the running controller’s SQLite files');
    } finally {
      await c.stop();
    }
    expectNoCanary(await sqliteBytes(dataDir), canaries, 'the SQLite files after stop');
    expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
    for (const f of ['fleet.db', 'secrets.key', 'admin.token', 'pki/ca-key.pem']) expect((await stat(path.join(dataDir, f))).mode & 0o777, f).toBe(0o600);
  });

  it('a too-open secrets.key stops the start with the chmod that fixes it', async () => {
    const dataDir = path.join(root, 'sqlite');
    await chmod(path.join(dataDir, 'secrets.key'), 0o644);
    await expect(start(dataDir)).rejects.toThrow(`Fix: chmod 600 ${path.join(dataDir, 'secrets.key')}`);
    await chmod(path.join(dataDir, 'secrets.key'), 0o600);
    await chmod(path.join(dataDir, 'pki', 'ca-key.pem'), 0o640);
    await expect(start(dataDir)).rejects.toThrow(`Fix: chmod 600 ${path.join(dataDir, 'pki', 'ca-key.pem')}`);
    await chmod(path.join(dataDir, 'pki', 'ca-key.pem'), 0o600);
  });

  it('plain text left by an older Fleet is sealed at start and scrubbed from the file', async () => {
    const dataDir = path.join(root, 'sqlite');
    // What an older controller stored: the VM's key and password in plain text.
    const legacy = generateVmKeyPair('legacy');
    const legacyPassword = 'legacy-PW-canary-0b1d';
    const c0 = await start(dataDir);
    await api(c0, 'POST', '/v1/vms', { name: 'legacy-vm', image: 'img' });
    const vmId = (await c0.db.vm.findUniqueOrThrow({ where: { name: 'legacy-vm' } })).id;
    await c0.stop();
    const db = openDatabase({ url: `file:${path.join(dataDir, 'fleet.db')}` });
    await db.vmAccess.create({ data: { vmId, publicKey: legacy.publicKey, privateKey: legacy.privateKey, password: legacyPassword } });
    await db.$disconnect();
    const canaries = [legacyPassword, ...keyBody(legacy.privateKey)];
    expect((await sqliteBytes(dataDir)).includes(Buffer.from(legacyPassword))).toBe(true);

    const c = await start(dataDir);
    try {
      const row = await c.db.vmAccess.findUniqueOrThrow({ where: { vmId } });
      expect(row.privateKey).toBe('');
      expect(row.password).toBeNull();
      expect(await c.secrets.passwordOf(row)).toBe(legacyPassword);
      expect((await api<{ privateKey: string }>(c, 'GET', '/v1/vms/legacy-vm/ssh-access')).privateKey).toBe(legacy.privateKey);
      expectNoCanary(await sqliteBytes(dataDir), canaries, 'the SQLite files after sealing legacy rows');
    } finally {
      await c.stop();
    }
  });
});

describe('the wrong key', () => {
  it('a controller whose key opens none of the stored secrets refuses to start (it would seal under a key no one else holds)', async () => {
    const dataDir = path.join(root, 'sqlite');
    const keyFile = path.join(dataDir, 'secrets.key');
    const kept = path.join(root, 'kept.key');
    await rename(keyFile, kept);
    // A fresh secrets.key is created, and the start is refused naming both key ids.
    await expect(start(dataDir)).rejects.toThrow(/sealed under key [0-9a-f]{16}, but this controller's key .* is [0-9a-f]{16}: give it the fleet's key/);
    await rename(kept, keyFile);
    const c = await start(dataDir);
    await c.stop();
  });
});

describe.skipIf(!havePostgres)('secrets at rest (PostgreSQL)', () => {
  const pg = scratchPostgresForSuite();

  it('a pg_dump of the database holds no password and no private key', async () => {
    const url = await pg.createDatabase('at_rest');
    const c = await start(path.join(root, 'pg'), { databaseUrl: url });
    let canaries: string[];
    try {
      canaries = await makeSecrets(c, 'canary-vm');
    } finally {
      await c.stop();
    }
    const { stdout } = await promisify(execFile)(path.join(findPostgresBin()!, 'pg_dump'), ['--dbname', url], { maxBuffer: 64 * 1024 * 1024, encoding: 'buffer' });
    expect(stdout.includes(Buffer.from('VmAccess'))).toBe(true);
    expect(stdout.includes(Buffer.from('fsec1.'))).toBe(true);
    expectNoCanary(stdout, canaries, 'pg_dump');
  }, 60_000);

  it('environment-style keys: a rolling rotation on PostgreSQL (new key current, old kept), rotate-key re-wraps, then the old key can go', async () => {
    const url = await pg.createDatabase('rotate_env');
    const k1 = randomBytes(32);
    const k2 = randomBytes(32);
    const dir = path.join(root, 'pg-env');
    const c1 = await startController({ dataDir: dir, databaseUrl: url, apiPort: 0, grpcPort: 0, grpcHost: '127.0.0.1', bootstrapAdminToken: TOKEN, logLevel: 'silent', secretsKeys: staticKeyProvider([k1]) });
    let key: string;
    try {
      await api(c1, 'POST', '/v1/vms', { name: 'env-vm', image: 'img', password: PASSWORD_CANARY });
      key = (await api<{ privateKey: string }>(c1, 'GET', '/v1/vms/env-vm/ssh-access')).privateKey;
    } finally {
      await c1.stop();
    }
    // Step 1: every controller restarted with the new key current and the old one kept.
    const c2 = await startController({ dataDir: dir, databaseUrl: url, apiPort: 0, grpcPort: 0, grpcHost: '127.0.0.1', bootstrapAdminToken: TOKEN, logLevel: 'silent', secretsKeys: staticKeyProvider([k2, k1]) });
    try {
      // Step 2: rotate-key with the same source re-wraps, while this controller runs.
      const r = await rotateKey({ dataDir: dir, databaseUrl: url, env: { FLEET_SECRETS_KEY: k2.toString('base64'), FLEET_SECRETS_OLD_KEYS: k1.toString('hex') } });
      expect(r).toMatchObject({ current: kekId(k2), moved: 1, rows: 1, previousKeyFile: null });
      expect(r.byKey).toEqual(new Map([[kekId(k2), 2]]));
      expect((await api<{ privateKey: string }>(c2, 'GET', '/v1/vms/env-vm/ssh-access')).privateKey).toBe(key);
    } finally {
      await c2.stop();
    }
    // Step 3: the old key dropped. A controller with only the old key is refused.
    await expect(startController({ dataDir: dir, databaseUrl: url, apiPort: 0, grpcPort: 0, grpcHost: '127.0.0.1', logLevel: 'silent', secretsKeys: staticKeyProvider([k1]) })).rejects.toThrow(/sealed under key/);
    const c3 = await startController({ dataDir: dir, databaseUrl: url, apiPort: 0, grpcPort: 0, grpcHost: '127.0.0.1', bootstrapAdminToken: TOKEN, logLevel: 'silent', secretsKeys: staticKeyProvider([k2]) });
    try {
      expect((await api<{ privateKey: string }>(c3, 'GET', '/v1/vms/env-vm/ssh-access')).privateKey).toBe(key);
      const vm = await c3.db.vm.findUniqueOrThrow({ where: { name: 'env-vm' } });
      expect(await c3.secrets.passwordOf(await c3.db.vmAccess.findUniqueOrThrow({ where: { vmId: vm.id } }))).toBe(PASSWORD_CANARY);
    } finally {
      await c3.stop();
    }
  }, 60_000);
});
