// PostgreSQL, for real, on a throwaway loopback server started from Debian's
// `postgresql` binaries. Skipped (with a note) where PostgreSQL is not installed.
import { describe, expect, it } from 'vitest';
import { PrismaPg } from '@prisma/adapter-pg';
import { migrateDatabase, MigrationError, openDatabase, Prisma, type FleetDb } from './index.ts';
import { diffMigrationsToSchema } from './migrations.ts';
import { findPostgresBin } from './pg-scratch.ts';
import { scratchPostgresForSuite } from './testing/scratch-postgres.ts';
import { LAYOUT } from './providers.ts';
import { readdirSync } from 'node:fs';

const havePostgres = findPostgresBin() !== undefined;
if (!havePostgres) console.warn('postgres.test.ts: PostgreSQL is not installed (apt-get install postgresql): skipping');

const checkedIn = readdirSync(LAYOUT.postgresql.migrationsDir)
  .filter((d) => /^\d{14}_/.test(d))
  .sort();

async function sql<T>(url: string, query: string): Promise<T[]> {
  const a = await new PrismaPg({ connectionString: url, max: 1 }).connect();
  try {
    const r = await a.queryRaw({ sql: query, args: [], argTypes: [] });
    return r.rows.map((row) => Object.fromEntries(r.columnNames.map((c, i) => [c, row[i]])) as T);
  } finally {
    await a.dispose();
  }
}

describe.skipIf(!havePostgres)('PostgreSQL', () => {
  const pg = scratchPostgresForSuite();
  let n = 0;
  const freshUrl = (): Promise<string> => pg.createDatabase(`fleet_test_${++n}`);

  it('checked-in migrations build exactly what schema.prisma describes', async () => {
    const missing = await diffMigrationsToSchema('postgresql', { pgServerUrl: pg.url });
    expect(missing, 'schema.prisma changed without a migration: run `pnpm --filter @fleet/db migrate:new <name>`. Missing SQL:\n' + missing).toBe('');
  });

  it('migrates a fresh database, records it, and is a no-op the second time', async () => {
    const url = await freshUrl();
    expect((await migrateDatabase(url)).applied).toEqual(checkedIn);
    expect((await migrateDatabase(url)).applied).toEqual([]);
    const rows = await sql<{ migration_name: string; finished_at: unknown }>(
      url,
      'SELECT migration_name, finished_at FROM _prisma_migrations ORDER BY started_at',
    );
    expect(rows.map((r) => r.migration_name)).toEqual(checkedIn);
    expect(rows.every((r) => r.finished_at !== null)).toBe(true);
  });

  it('refuses a database with a migration this build does not know', async () => {
    const url = await freshUrl();
    await migrateDatabase(url);
    await sql(
      url,
      `INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, started_at, applied_steps_count)
       VALUES ('x', 'abc', now(), '29991231000000_from_the_future', now(), 1)`,
    );
    const err = await migrateDatabase(url).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationError);
    expect(err).toMatchObject({ code: 'UNKNOWN_MIGRATION', migrations: ['29991231000000_from_the_future'] });
  });

  it('serves the same client API through the pg adapter', async () => {
    const url = await freshUrl();
    await migrateDatabase(url);
    const db: FleetDb = openDatabase({ url, poolSize: 4 });
    try {
      await db.worker.create({ data: { id: 'w-1', name: 'mac-01', machineId: 'm' } });
      await db.vm.create({
        data: { id: 'vm-1', name: 'build-1', state: 'pending', image: 'i', cpus: 2, memoryMib: 2048, workerId: 'w-1' },
      });
      const w = await db.worker.findUniqueOrThrow({ where: { id: 'w-1' }, include: { vms: true } });
      expect(w.vms.map((v) => v.name)).toEqual(['build-1']);
      const err = await db.vm
        .create({ data: { id: 'vm-2', name: 'build-1', state: 'pending', image: 'i', cpus: 1, memoryMib: 1 } })
        .then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(Prisma.PrismaClientKnownRequestError);
      expect((err as Prisma.PrismaClientKnownRequestError).code).toBe('P2002');
      const ev = await db.event.create({ data: { kind: 'vm.created', message: 'x' } });
      expect(typeof ev.id).toBe('number');
      await db.$transaction(async (tx) => {
        await tx.vm.update({ where: { id: 'vm-1' }, data: { attempt: { increment: 1 } } });
      });
      await db.worker.delete({ where: { id: 'w-1' } });
      expect((await db.vm.findUniqueOrThrow({ where: { id: 'vm-1' } })).workerId).toBeNull();
    } finally {
      await db.$disconnect();
    }
  });
});
