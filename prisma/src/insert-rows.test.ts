// Raw multi-row INSERTs must store what Prisma's own createMany stores: the rows read back
// through the Prisma client are equal, on SQLite and on PostgreSQL.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { insertRows, insertStatements, migrateDatabase, openDatabase, providerOfDb, type FleetDb } from './index.ts';
import { findPostgresBin, startScratchPostgres } from './pg-scratch.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'fleet-insert-rows-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const at = new Date('2026-12-06T18:59:01.041Z');
const events = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    at,
    kind: 'vm.created',
    level: 'info',
    message: `created vm-${i} “quoted” 'x'`,
    vmId: i % 2 ? `id-${i}` : null,
    vmName: `vm-${i}`,
    workerId: null,
    actor: 'controller',
    data: JSON.stringify({ i }),
  }));

async function roundTrip(db: FleetDb): Promise<void> {
  const provider = providerOfDb(db);
  await db.worker.create({ data: { id: 'w1', name: 'w1', machineId: 'm' } });
  expect(await insertRows(db, provider, 'Event', events(3))).toBe(3);
  await db.event.createMany({ data: events(3) });
  const rows = await db.event.findMany({ orderBy: { id: 'asc' } });
  const strip = ({ id: _id, ...rest }: (typeof rows)[number]) => rest;
  expect(rows.slice(0, 3).map(strip)).toEqual(rows.slice(3).map(strip));
  expect(rows[0]!.at.toISOString()).toBe(at.toISOString());

  // Booleans, integers and dates of an allocation, inside a transaction.
  await db.$transaction(async (tx) => {
    await insertRows(tx, provider, 'Allocation', [
      { id: 'a1', vmId: 'v1', attempt: 1, workerId: 'w1', cpus: 2, memoryMib: 512, macos: true, networkMode: 'nat', mac: '', createdAt: at },
      { id: 'a2', vmId: 'v2', attempt: 3, workerId: 'w1', cpus: 1, memoryMib: 256, macos: false, networkMode: 'none', mac: '02:00:00:00:00:01', createdAt: at },
    ]);
  });
  const allocations = await db.allocation.findMany({ orderBy: { id: 'asc' } });
  expect(allocations.map((a) => [a.id, a.attempt, a.cpus, a.macos, a.mac, a.createdAt.toISOString(), a.deliveredAt])).toEqual([
    ['a1', 1, 2, true, '', at.toISOString(), null],
    ['a2', 3, 1, false, '02:00:00:00:00:01', at.toISOString(), null],
  ]);

  // A failing row fails the whole statement (here: the unique (vmId, attempt)).
  await expect(
    insertRows(db, provider, 'Allocation', [{ id: 'a3', vmId: 'v1', attempt: 1, workerId: 'w1', cpus: 1, memoryMib: 1, macos: false, networkMode: 'nat', mac: '', createdAt: at }]),
  ).rejects.toThrow();
  expect(await db.allocation.count()).toBe(2);
}

async function roundTripOn(url: string): Promise<void> {
  await migrateDatabase(url);
  const db = openDatabase({ url });
  try {
    await roundTrip(db);
  } finally {
    await db.$disconnect();
  }
}

describe('insertRows', () => {
  it('stores on SQLite exactly what createMany stores', async () => {
    await roundTripOn(`file:${path.join(tmp, 'sqlite', 'fleet.db')}`);
  });

  it.skipIf(findPostgresBin() === undefined)('stores on PostgreSQL exactly what createMany stores', async () => {
    const pg = await startScratchPostgres();
    try {
      await roundTripOn(await pg.createDatabase('insert_rows'));
    } finally {
      await pg.stop();
    }
  }, 120_000);

  it('numbers PostgreSQL placeholders, splits large inserts and refuses odd identifiers or ragged rows', () => {
    const [pgStmt] = insertStatements('postgresql', 'Event', events(2));
    expect(pgStmt!.sql).toBe(
      'INSERT INTO "Event" ("at", "kind", "level", "message", "vmId", "vmName", "workerId", "actor", "data") VALUES ' +
        '($1, $2, $3, $4, $5, $6, $7, $8, $9), ($10, $11, $12, $13, $14, $15, $16, $17, $18)',
    );
    expect(pgStmt!.values).toHaveLength(18);
    expect(insertStatements('sqlite', 'Event', events(1))[0]!.sql).toContain('VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)');
    const many = insertStatements('sqlite', 'Event', events(7000));
    expect(many.length).toBe(3);
    expect(many.reduce((n, s) => n + s.values.length, 0)).toBe(7000 * 9);
    expect(many.every((s) => s.values.length <= 30_000)).toBe(true);
    expect(insertStatements('sqlite', 'Event', [])).toEqual([]);
    expect(() => insertStatements('sqlite', 'Event"; DROP TABLE x; --', events(1))).toThrow(/identifier/);
    expect(() => insertStatements('sqlite', 'Event', [{ a: 1 }, { b: 2 }])).toThrow(/every row/);
    expect(() => insertStatements('sqlite', 'Event', [{ a: 1, b: undefined as unknown as null }])).toThrow(/column b has no value/);
  });
});
