// ensureVmAccess under concurrency: many callers (desired-state pushes, sessions) for the
// same new VMs end with one row (one key pair) per VM and no error, on SQLite and, where
// it is installed, on PostgreSQL (where Prisma's read-then-insert upsert used to fail with
// a unique-constraint error on VmAccess).
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { migrateDatabase, openDatabase, type FleetDb } from '@fleet/db';
import { findPostgresBin } from '@fleet/db/pg-scratch';
import { scratchPostgresForSuite } from '@fleet/db/testing/scratch-postgres';
import ssh2 from 'ssh2';
import { ensureVmAccess, generateVmKeyPair, vmPublicKeys } from './vm-access.ts';
import { tempDb, type TempDb } from '../storage/testing.ts';
import { VmSecrets } from '../secrets/vm-secrets.ts';

const secrets = VmSecrets.ephemeral();

const havePostgres = findPostgresBin() !== undefined;
if (!havePostgres) console.warn('vm-access.test.ts: PostgreSQL is not installed (apt-get install postgresql): skipping its case');

async function race(db: FleetDb, callers: number): Promise<void> {
  const vms = Array.from({ length: 4 }, (_, i) => ({ id: randomUUID(), name: `vm-${i}` }));
  // Every caller asks for an overlapping subset, in its own order; half of them the way a
  // desired-state push asks (public keys only, its own insert path), half the way a session does.
  const asks = Array.from({ length: callers }, (_, c) => (c % 3 === 0 ? vms : c % 3 === 1 ? [vms[c % 4]!] : [...vms].reverse()));
  const results = await Promise.allSettled(
    asks.map(async (a, c) =>
      c % 2 === 0
        ? ensureVmAccess(db, secrets, a)
        : new Map([...(await vmPublicKeys(db, secrets, a))].map(([vmId, publicKey]) => [vmId, { publicKey }])),
    ),
  );
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  expect(failed.map((f) => String(f.reason))).toEqual([]);
  const rows = await db.vmAccess.findMany({ where: { vmId: { in: vms.map((v) => v.id) } } });
  expect(rows).toHaveLength(vms.length);
  const key = new Map(rows.map((r) => [r.vmId, r.publicKey]));
  for (const [i, r] of results.entries()) {
    const got = (r as PromiseFulfilledResult<Map<string, { publicKey: string }>>).value;
    expect([...got.keys()].sort()).toEqual(asks[i]!.map((v) => v.id).sort());
    for (const [vmId, access] of got) expect(access.publicKey).toBe(key.get(vmId)); // everyone got the stored key pair
  }
  // Existing rows are returned as they are.
  const again = await ensureVmAccess(db, secrets, vms);
  for (const v of vms) expect(again.get(v.id)!.publicKey).toBe(key.get(v.id));
}

describe('ensureVmAccess', () => {
  it('SQLite: 60 concurrent callers, one row per VM, no error', async () => {
    const t: TempDb = await tempDb();
    try {
      for (let round = 0; round < 3; round++) await race(t.db, 60);
    } finally {
      await t.close();
    }
  });

  describe.skipIf(!havePostgres)('PostgreSQL', () => {
    const pg = scratchPostgresForSuite();

    it('40 concurrent callers on a pool of 10 connections, one row per VM, no error', async () => {
      const url = await pg.createDatabase('vm_access_race');
      await migrateDatabase(url);
      const db = openDatabase({ url, poolSize: 10 });
      try {
        for (let round = 0; round < 3; round++) await race(db, 40);
      } finally {
        await db.$disconnect();
      }
    });
  });
});

describe('generateVmKeyPair', () => {
  it('makes a distinct OpenSSH ed25519 pair per call whose halves belong together', () => {
    const [a, b] = [generateVmKeyPair('vm-a'), generateVmKeyPair('vm-b')];
    expect(a.publicKey).toMatch(/^ssh-ed25519 \S+ fleet-vm-vm-a$/);
    expect(a.publicKey).not.toBe(b.publicKey);
    const parsed = ssh2.utils.parseKey(a.privateKey);
    if (parsed instanceof Error || Array.isArray(parsed)) throw new Error('the private key does not parse');
    expect(parsed.type).toBe('ssh-ed25519');
    expect(parsed.getPublicSSH().toString('base64')).toBe(a.publicKey.split(' ')[1]);
  });
});
