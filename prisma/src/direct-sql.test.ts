// Direct SQL must be indistinguishable from Prisma's own statements for what it stores and
// reads, and as safe on SQLite's one shared connection: inside a transaction it is part of it,
// outside it never runs inside another flow's transaction, and after its transaction ended it
// runs nowhere.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ALLOCATION_COLUMNS,
  classifyStorageError,
  columnList,
  directSql,
  directSqlIn,
  directTransaction,
  migrateDatabase,
  numberedPlaceholders,
  openDatabase,
  rowsOf,
  VM_COLUMNS,
  type FleetDb,
  type Vm,
} from './index.ts';
import { findPostgresBin, startScratchPostgres } from './pg-scratch.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'fleet-direct-sql-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const at = new Date('2026-12-06T21:59:01.041Z');

function vmRow(id: string, name: string): Vm {
  return {
    id,
    name,
    state: 'pending',
    reason: 'waiting “for” the scheduler',
    image: 'ubuntu',
    imageDigest: '',
    pullProgress: '',
    os: 'linux',
    driver: '',
    cpus: 2,
    memoryMib: 4096,
    diskGib: 20,
    username: '',
    labels: '{"a":"b"}',
    selector: '{}',
    network: '{}',
    networkMode: 'nat',
    customMac: '',
    priority: -3,
    restartPolicy: 'never',
    disconnectPolicy: 'reschedule',
    restartCount: 0,
    restartAt: null,
    attempt: 0,
    generation: 1,
    observedGeneration: 0,
    desiredPower: 'running',
    workerId: null,
    ip: null,
    mac: null,
    createdBy: 'token:ci',
    createdAt: at,
    updatedAt: at,
    scheduledAt: null,
    runningAt: new Date(at.getTime() + 1),
    deleteRequestedAt: null,
  };
}

const insertVm = `INSERT INTO "Vm" (${columnList(VM_COLUMNS)}) VALUES (${Object.keys(VM_COLUMNS)
  .map(() => '?')
  .join(', ')})`;

async function roundTrip(db: FleetDb): Promise<void> {
  const sql = directSql(db);
  // Written directly, read through Prisma; written by Prisma, read directly: the same rows.
  const direct = vmRow('v1', 'direct');
  expect(await sql.execute(insertVm, Object.values(direct) as never)).toBe(1);
  await db.vm.create({ data: vmRow('v2', 'prisma') });
  const viaPrisma = await db.vm.findMany({ orderBy: { id: 'asc' } });
  const viaDirect = rowsOf(VM_COLUMNS, await sql.query(`SELECT ${columnList(VM_COLUMNS)} FROM "Vm" ORDER BY "id"`));
  expect(viaDirect).toEqual(viaPrisma);
  expect(viaPrisma[0]).toEqual(direct);
  expect({ ...viaPrisma[1], id: 'v1', name: 'direct' }).toEqual(direct);

  // Booleans and a subset of columns.
  await db.worker.create({ data: { id: 'w1', name: 'w1', machineId: 'm' } });
  await db.allocation.create({ data: { id: 'a1', vmId: 'v1', attempt: 1, workerId: 'w1', cpus: 2, memoryMib: 512, macos: true, createdAt: at } });
  const [a] = rowsOf(ALLOCATION_COLUMNS, await sql.query(`SELECT ${columnList(ALLOCATION_COLUMNS, ['id', 'macos', 'createdAt', 'deliveredAt'])} FROM "Allocation"`), ['id', 'macos', 'createdAt', 'deliveredAt']);
  expect(a).toEqual({ id: 'a1', macos: true, createdAt: at, deliveredAt: null });
  expect(await sql.execute('UPDATE "Allocation" SET "deliveredAt" = ?, "macos" = ? WHERE "id" = ? AND "deliveredAt" IS NULL', [at, false, 'a1'])).toBe(1);
  expect(await sql.execute('UPDATE "Allocation" SET "deliveredAt" = ? WHERE "id" = ? AND "deliveredAt" IS NULL', [at, 'a1'])).toBe(0);
  expect(await db.allocation.findUnique({ where: { id: 'a1' }, select: { macos: true, deliveredAt: true } })).toEqual({ macos: false, deliveredAt: at });

  // Inside a transaction: part of it (rolled back with it).
  await expect(
    db.$transaction(async (tx) => {
      const inTx = directSqlIn(db, tx);
      await inTx.execute('UPDATE "Vm" SET "state" = ? WHERE "id" = ?', ['scheduled', 'v1']);
      expect(rowsOf(VM_COLUMNS, await inTx.query('SELECT "state" FROM "Vm" WHERE "id" = ?', ['v1']), ['state'])).toEqual([{ state: 'scheduled' }]);
      throw new Error('roll back');
    }),
  ).rejects.toThrow('roll back');
  expect((await db.vm.findUnique({ where: { id: 'v1' } }))!.state).toBe('pending');

  // A unique violation is the driver's own error, recognisable by its code.
  const dup = await sql.execute(insertVm, Object.values(vmRow('v3', 'direct')) as never).catch((e: unknown) => e);
  expect(dup).toBeInstanceOf(Error);
  expect(JSON.stringify({ code: (dup as { code?: unknown }).code, meta: (dup as { meta?: unknown }).meta })).toMatch(/SQLITE_CONSTRAINT_UNIQUE|UniqueConstraintViolation/);
}

async function withDb(url: string, run: (db: FleetDb) => Promise<void>): Promise<void> {
  await migrateDatabase(url);
  const db = openDatabase({ url });
  try {
    await run(db);
  } finally {
    await db.$disconnect();
  }
}

describe('direct SQL', () => {
  it('stores and reads on SQLite exactly what Prisma stores and reads', async () => {
    await withDb(`file:${path.join(tmp, 'rt', 'fleet.db')}`, roundTrip);
  });

  it.skipIf(findPostgresBin() === undefined)('stores and reads on PostgreSQL exactly what Prisma stores and reads', async () => {
    const pg = await startScratchPostgres();
    try {
      await withDb(await pg.createDatabase('direct_sql'), roundTrip);
    } finally {
      await pg.stop();
    }
  }, 120_000);

  it('on SQLite, reads rows as objects also after Prisma read with the same SQL (the shared prepared statement)', async () => {
    await withDb(`file:${path.join(tmp, 'shared', 'fleet.db')}`, async (db) => {
      const sql = 'SELECT 7 AS "seven"';
      // Prisma's adapter reads through the connection's statement cache and switches the statement to arrays.
      expect((await db.$queryRawUnsafe<Array<{ seven: bigint }>>(sql)).map((r) => Number(r.seven))).toEqual([7]);
      expect((await directSql(db).query<{ seven: bigint | number }>(sql)).map((r) => Number(r.seven))).toEqual([7]);
      expect(await directTransaction(db, async (tx) => (await tx.query<{ seven: bigint | number }>(sql)).map((r) => Number(r.seven)))).toEqual([7]);
    });
  });

  it('on SQLite, a statement outside a transaction waits for the open one and survives its rollback', async () => {
    await withDb(`file:${path.join(tmp, 'gate', 'fleet.db')}`, async (db) => {
      await db.vm.create({ data: vmRow('v1', 'one') });
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let entered!: () => void;
      const inside = new Promise<void>((r) => (entered = r));
      const tx = db
        .$transaction(async (t) => {
          await t.vm.update({ where: { id: 'v1' }, data: { reason: 'in the transaction' } });
          entered();
          await held;
          throw new Error('roll back');
        })
        .catch((e: unknown) => e);
      await inside;
      let done = false;
      const outside = directSql(db)
        .execute('UPDATE "Vm" SET "state" = ? WHERE "id" = ?', ['stopped', 'v1'])
        .then((n) => ((done = true), n));
      await new Promise((r) => setTimeout(r, 50));
      expect(done).toBe(false); // waiting for the transaction, not run inside it
      release();
      expect(await tx).toBeInstanceOf(Error);
      expect(await outside).toBe(1);
      const row = await db.vm.findUnique({ where: { id: 'v1' } });
      expect([row!.state, row!.reason]).toEqual(['stopped', vmRow('v1', 'one').reason]);
    });
  });

  it('on SQLite, refuses a statement of a transaction that has ended, and reports storage faults by their code', async () => {
    await withDb(`file:${path.join(tmp, 'stale', 'fleet.db')}`, async (db) => {
      await db.vm.create({ data: vmRow('v1', 'one') });
      let stale: ReturnType<typeof directSqlIn> | undefined;
      await db.$transaction(async (tx) => {
        stale = directSqlIn(db, tx);
      });
      await expect(stale!.execute('UPDATE "Vm" SET "state" = ? WHERE "id" = ?', ['stopped', 'v1'])).rejects.toThrow(/already ended/);
      expect((await db.vm.findUnique({ where: { id: 'v1' } }))!.state).toBe('pending');
      expect(() => directSqlIn(db, db)).toThrow(/no transaction is open/);

      await db.$executeRawUnsafe('PRAGMA query_only = 1');
      const err = await directSql(db)
        .execute('UPDATE "Vm" SET "state" = ? WHERE "id" = ?', ['stopped', 'v1'])
        .catch((e: unknown) => e);
      await db.$executeRawUnsafe('PRAGMA query_only = 0');
      expect(classifyStorageError(err)?.kind).toBe('read-only');
    });
  });

  it('numbers placeholders for PostgreSQL and refuses names that are not columns', () => {
    expect(numberedPlaceholders('UPDATE "Vm" SET "a" = ? WHERE "id" = ? AND "b" IN (?, ?)')).toBe('UPDATE "Vm" SET "a" = $1 WHERE "id" = $2 AND "b" IN ($3, $4)');
    expect(() => columnList(VM_COLUMNS, ['id', 'nope' as never])).toThrow(/not a column/);
    expect(() => rowsOf(VM_COLUMNS, [{ cpus: 'two' }], ['cpus'])).toThrow(/cpus: unexpected string/);
  });
});
