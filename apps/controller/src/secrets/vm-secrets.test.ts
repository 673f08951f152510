// The VmAccess secrets on a real database: legacy plaintext rows sealed (idempotently), and a
// rotation re-wrapping every row while old and new envelopes both keep opening.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase } from '@fleet/db';
import { tempDb, type TempDb } from '../storage/testing.ts';
import { generateVmKeyPair, ensureVmAccess } from '../sessions/vm-access.ts';
import { SecretBox } from './secret-box.ts';
import { FileKeyProvider, kekId, staticKeyProvider } from './key-provider.ts';
import { VmSecrets } from './vm-secrets.ts';
import { rotateKey } from './rotate-key.ts';

let t: TempDb;
beforeEach(async () => {
  t = await tempDb();
});
afterEach(async () => {
  await t.close();
});

async function legacyRow(vmId: string, password: string | null): Promise<string> {
  const pair = generateVmKeyPair(vmId);
  await t.db.vmAccess.create({ data: { vmId, publicKey: pair.publicKey, privateKey: pair.privateKey, password } });
  return pair.privateKey;
}

describe('VmSecrets', () => {
  it('seals plaintext rows written by an older Fleet, empties the plaintext columns, and is idempotent', async () => {
    const secrets = new VmSecrets(new SecretBox(staticKeyProvider([randomBytes(32)])));
    const keys = new Map<string, string>();
    for (let i = 0; i < 5; i++) {
      const id = `vm-${i}`;
      keys.set(id, await legacyRow(id, i % 2 ? `pw-canary-${i}` : null));
    }
    expect(await secrets.sealLegacyRows(t.db, 2)).toBe(5);
    expect(await secrets.sealLegacyRows(t.db)).toBe(0);
    for (const r of await t.db.vmAccess.findMany()) {
      expect(r.privateKey).toBe('');
      expect(r.password).toBeNull();
      expect(r.privateKeySealed).toMatch(/^fsec1\./);
      expect(await secrets.privateKeyOf(r)).toBe(keys.get(r.vmId));
      const i = Number(r.vmId.slice(3));
      expect(await secrets.passwordOf(r)).toBe(i % 2 ? `pw-canary-${i}` : null);
      expect(r.passwordSealed === null).toBe(i % 2 === 0);
    }
  });

  it('new rows are sealed; an envelope copied onto another VM does not open there', async () => {
    const secrets = VmSecrets.ephemeral();
    const [a, b] = [randomUUID(), randomUUID()];
    const rows = await ensureVmAccess(t.db, secrets, [
      { id: a, name: 'a' },
      { id: b, name: 'b' },
    ]);
    const ra = rows.get(a)!;
    expect(ra.privateKey).toBe('');
    expect(await secrets.privateKeyOf(ra)).toMatch(/BEGIN OPENSSH PRIVATE KEY/);
    await t.db.vmAccess.update({ where: { vmId: b }, data: { privateKeySealed: ra.privateKeySealed } });
    const rb = await t.db.vmAccess.findUniqueOrThrow({ where: { vmId: b } });
    await expect(secrets.privateKeyOf(rb)).rejects.toThrow(/failed authentication/);
  });

  it('rewrapAll moves every row to the new KEK in batches; during the rotation old and new envelopes open', async () => {
    const k1 = randomBytes(32);
    const k2 = randomBytes(32);
    const before = new VmSecrets(new SecretBox(staticKeyProvider([k1])));
    const ids = Array.from({ length: 25 }, (_, i) => `vm-${String(i).padStart(2, '0')}`);
    await ensureVmAccess(t.db, before, ids.map((id) => ({ id, name: id })));
    for (const id of ids.slice(0, 10)) await t.db.vmAccess.update({ where: { vmId: id }, data: await before.passwordColumns(id, `pw-${id}`) });
    const plain = new Map<string, string>();
    for (const r of await t.db.vmAccess.findMany()) plain.set(r.vmId, await before.privateKeyOf(r));

    // The controller holds both keys (it reloaded its keyring); rotate-key makes k2 current.
    const during = new VmSecrets(new SecretBox(staticKeyProvider([k2, k1])));
    const batches: number[] = [];
    // (A half re-wrapped table, both kinds of envelope opening, is the next case.)
    const r = await during.rewrapAll(t.db, {
      batch: 7,
      onBatch: (m) => batches.push(m),
    });
    expect(r).toEqual({ rows: 25, moved: 25 });
    expect(batches).toEqual([7, 14, 21, 25]);
    expect(await during.envelopesByKek(t.db)).toEqual(new Map([[kekId(k2), 35]]));
    const after = new VmSecrets(new SecretBox(staticKeyProvider([k2])));
    for (const row of await t.db.vmAccess.findMany()) {
      expect(await after.privateKeyOf(row)).toBe(plain.get(row.vmId));
      expect(await after.passwordOf(row)).toBe(ids.slice(0, 10).includes(row.vmId) ? `pw-${row.vmId}` : null);
      // The old keyring alone can no longer open it.
      await expect(before.privateKeyOf(row)).rejects.toThrow(/does not hold/);
    }
    expect((await during.rewrapAll(t.db)).moved).toBe(0);
  });

  it('a mixed table (half rotated) opens with the keyring holding both keys', async () => {
    const k1 = randomBytes(32);
    const k2 = randomBytes(32);
    const old = new VmSecrets(new SecretBox(staticKeyProvider([k1])));
    await ensureVmAccess(t.db, old, [{ id: 'x', name: 'x' }]);
    const fresh = new VmSecrets(new SecretBox(staticKeyProvider([k2, k1])));
    await ensureVmAccess(t.db, fresh, [{ id: 'y', name: 'y' }]);
    const byKek = await fresh.envelopesByKek(t.db);
    expect(byKek).toEqual(new Map([[kekId(k1), 1], [kekId(k2), 1]]));
    for (const row of await t.db.vmAccess.findMany()) expect(await fresh.privateKeyOf(row)).toMatch(/PRIVATE KEY/);
  });
});

describe('rotateKey (key file source)', () => {
  it('makes a new key current, keeps the old one as <file>.<id>.old, re-wraps every row; a running controller keeps opening', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'fleet-rotate-'));
    try {
      const url = `file:${path.join(dataDir, 'fleet.db')}`;
      const { migrateDatabase } = await import('@fleet/db');
      await migrateDatabase(url);
      // "The running controller": its own client and keyring on the data dir.
      const running = new VmSecrets(new SecretBox(await FileKeyProvider.load(path.join(dataDir, 'secrets.key'), { create: true })));
      const db = openDatabase({ url });
      try {
        const oldId = running.box.keys.current().id;
        const ids = Array.from({ length: 12 }, (_, i) => `vm-${i}`);
        await ensureVmAccess(db, running, ids.map((id) => ({ id, name: id })));
        await db.vmAccess.update({ where: { vmId: 'vm-3' }, data: await running.passwordColumns('vm-3', 'canary-pw') });
        const lines: string[] = [];
        const r = await rotateKey({ dataDir, env: {}, db, batch: 5, say: (l) => lines.push(l) });
        expect(r.previous).toBe(oldId);
        expect(r.current).not.toBe(oldId);
        expect(r.moved).toBe(12);
        expect(r.byKey).toEqual(new Map([[r.current, 13]]));
        expect(r.previousKeyFile).toBe(path.join(dataDir, `secrets.key.${oldId}.old`));
        expect(lines.join('\n')).toContain(`new key ${r.current} is current`);
        // The running controller has not reloaded yet: the new KEK id makes it reload, and it opens.
        for (const row of await db.vmAccess.findMany()) expect(await running.privateKeyOf(row)).toMatch(/PRIVATE KEY/);
        expect(running.box.keys.current().id).toBe(r.current);
        expect(await running.passwordOf(await db.vmAccess.findUniqueOrThrow({ where: { vmId: 'vm-3' } }))).toBe('canary-pw');
        // New secrets are sealed under the new key.
        await ensureVmAccess(db, running, [{ id: 'vm-new', name: 'vm-new' }]);
        expect(running.box.kekIdOf((await db.vmAccess.findUniqueOrThrow({ where: { vmId: 'vm-new' } })).privateKeySealed!)).toBe(r.current);
        // --new-key-file staged beside the key (secrets.key.next): becomes current, the staged copy goes.
        const { writeKeyFile } = await import('./key-provider.ts');
        const staged = path.join(dataDir, 'secrets.key.next');
        const k3 = randomBytes(32);
        await writeKeyFile(staged, k3);
        const r2 = await rotateKey({ dataDir, env: {}, db, newKeyFile: staged });
        expect(r2.current).toBe(kekId(k3));
        expect(r2.byKey).toEqual(new Map([[kekId(k3), 14]]));
        const { existsSync } = await import('node:fs');
        expect(existsSync(staged)).toBe(false);
        // --rewrap-only: no new key, nothing left to move.
        const r3 = await rotateKey({ dataDir, env: {}, db, rewrapOnly: true });
        expect(r3.current).toBe(kekId(k3));
        expect(r3.moved).toBe(0);
      } finally {
        await db.$disconnect();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
