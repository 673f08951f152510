// The plain-SQL statements of the create-to-running path (VMs, allocations, tokens, worker
// heartbeats, the image-operation probe of a push) must behave exactly like the Prisma
// statements they replaced: the same stored row, the same guard, the same reads. On SQLite and,
// where it is installed, on PostgreSQL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { directSql, directSqlIn, migrateDatabase, openDatabase, type FleetDb } from '@fleet/db';
import { findPostgresBin, startScratchPostgres, type ScratchPostgres } from '@fleet/db/pg-scratch';
import { insertVm, newVmRow, readVms, updateVmIf, vmsOfWorker, type NewVm } from './vm-rows.ts';
import { markDelivered } from './allocation-rows.ts';
import { rowsByKey } from './rows-by-key.ts';
import { renewWorkerLease } from './worker-rows.ts';
import { hasImageOperationIn } from './image-operation-rows.ts';
import { tempDb, type TempDb } from './testing.ts';
import { API_TOKEN_COLUMNS } from '@fleet/db';

const havePostgres = findPostgresBin() !== undefined;
if (!havePostgres) console.warn('vm-rows.test.ts: PostgreSQL is not installed (apt-get install postgresql): skipping its case');

const fields = (id: string, name: string): NewVm => ({
  id,
  name,
  state: 'pending',
  reason: 'waiting for the scheduler',
  image: 'ubuntu',
  imageDigest: 'sha256:abc',
  os: 'linux',
  driver: '',
  cpus: 2,
  memoryMib: 4096,
  diskGib: 20,
  username: 'me',
  labels: '{"team":"ci"}',
  selector: '{}',
  network: '{}',
  networkMode: 'nat',
  customMac: '',
  priority: 5,
  restartPolicy: 'on-failure',
  disconnectPolicy: 'wait',
  desiredPower: 'running',
  createdBy: 'token:ci',
});

async function behaves(db: FleetDb): Promise<void> {
  const sql = directSql(db);
  // The row a direct insert stores is the row Prisma's create stores from the same fields
  // (the schema's defaults for everything else).
  const now = new Date('2026-12-06T22:00:00.123Z');
  await db.$transaction(async (tx) => insertVm(directSqlIn(db, tx), newVmRow(fields('v1', 'direct'), now)));
  const viaPrisma = await db.vm.create({ data: { ...fields('v2', 'prisma'), createdAt: now, updatedAt: now } });
  const stored = await db.vm.findUniqueOrThrow({ where: { id: 'v1' } });
  expect(stored).toEqual({ ...viaPrisma, id: 'v1', name: 'direct' });
  expect(stored).toEqual(newVmRow(fields('v1', 'direct'), now));
  expect((await readVms(sql, ['v2', 'v1', 'missing'])).sort((a, b) => a.id.localeCompare(b.id))).toEqual([stored, viaPrisma]);

  // The guard: only from the state and attempt it was read in.
  await db.worker.create({ data: { id: 'w1', name: 'w1', machineId: 'm' } });
  const change = { state: 'scheduled', workerId: 'w1', attempt: 1, scheduledAt: now, runningAt: null, ip: null, updatedAt: now };
  expect(await updateVmIf(sql, { id: 'v1', state: 'running', attempt: 0 }, change)).toBe(false);
  expect(await updateVmIf(sql, { id: 'v1', state: 'pending', attempt: 1 }, change)).toBe(false);
  expect(await updateVmIf(sql, { id: 'v1', state: 'pending', attempt: 0 }, change)).toBe(true);
  expect(await updateVmIf(sql, { id: 'v1', state: 'pending', attempt: 0 }, change)).toBe(false); // once
  expect(await db.vm.findUniqueOrThrow({ where: { id: 'v1' } })).toEqual({ ...stored, ...change });
  // Another set of columns on the same row: its own statement (the texts are kept by column set).
  expect(await updateVmIf(sql, { id: 'v1', state: 'scheduled', attempt: 1 }, { reason: 'again' })).toBe(true);
  expect(await db.vm.findUniqueOrThrow({ where: { id: 'v1' } })).toEqual({ ...stored, ...change, reason: 'again' });
  await expect(updateVmIf(sql, { id: 'v1', state: 'scheduled', attempt: 1 }, {})).rejects.toThrow(/nothing to change/);
  await expect(updateVmIf(sql, { id: 'v1', state: 'scheduled', attempt: 1 }, { ip: undefined })).rejects.toThrow(/ip has no value/);

  // A worker's VMs in the given states, oldest first, only the columns asked for.
  await db.vm.update({ where: { id: 'v2' }, data: { state: 'running', workerId: 'w1', attempt: 1, createdAt: new Date(now.getTime() - 1000) } });
  await db.vm.create({ data: { ...fields('v3', 'elsewhere'), state: 'running' } });
  expect(await vmsOfWorker(sql, 'w1', ['scheduled', 'running'], ['id', 'attempt', 'createdAt'])).toEqual([
    { id: 'v2', attempt: 1, createdAt: new Date(now.getTime() - 1000) },
    { id: 'v1', attempt: 1, createdAt: now },
  ]);
  expect(await vmsOfWorker(sql, 'w1', ['stopped'], ['id'])).toEqual([]);

  // Delivery marks: marked once, "present" whether marked now or before, absent when gone.
  await db.allocation.create({ data: { id: 'a1', vmId: 'v1', attempt: 1, workerId: 'w1', cpus: 2, memoryMib: 4096 } });
  await db.allocation.create({ data: { id: 'a2', vmId: 'v2', attempt: 1, workerId: 'w1', cpus: 2, memoryMib: 4096, deliveredAt: now } });
  const later = new Date(now.getTime() + 5000);
  const keys = [
    { vmId: 'v1', attempt: 1 },
    { vmId: 'v2', attempt: 1 },
    { vmId: 'v1', attempt: 2 },
  ];
  expect(await db.$transaction(async (tx) => markDelivered(directSqlIn(db, tx), 'w1', keys, later))).toEqual(keys.slice(0, 2));
  expect((await db.allocation.findMany({ orderBy: { id: 'asc' } })).map((a) => a.deliveredAt)).toEqual([later, now]);
  expect(await markDelivered(sql, 'w1', keys, new Date())).toEqual(keys.slice(0, 2));
  expect((await db.allocation.findUniqueOrThrow({ where: { id: 'a1' } })).deliveredAt).toEqual(later); // not moved again
  expect(await markDelivered(sql, 'other-worker', keys, new Date())).toEqual([]);

  // Rows by key: typed, a subset of columns, and many keys over several statements.
  await db.apiToken.create({ data: { id: 't1', name: 'ci', secretHash: 'h', roles: 'admin', expiresAt: now } });
  expect(await rowsByKey(sql, 'ApiToken', API_TOKEN_COLUMNS, 'id', ['t1'])).toEqual([await db.apiToken.findUniqueOrThrow({ where: { id: 't1' } })]);
  const many = Array.from({ length: 1203 }, (_, i) => `t${i}`);
  expect(await rowsByKey(sql, 'ApiToken', API_TOKEN_COLUMNS, 'id', many, ['name', 'expiresAt'])).toEqual([{ name: 'ci', expiresAt: now }]);
  await expect(rowsByKey(sql, 'Api"Token', API_TOKEN_COLUMNS, 'id', ['t1'])).rejects.toThrow(/not a plain SQL identifier/);
  // Lists padded to a power of two (the last id repeated) match each row once, whatever their length.
  await db.apiToken.create({ data: { id: 't2', name: 'ops', secretHash: 'h2', roles: 'read' } });
  for (let n = 1; n <= 9; n++) {
    const ids = ['t2', ...Array.from({ length: n - 1 }, (_, i) => `missing-${i}`)].reverse(); // 't2' last: the one repeated
    expect((await rowsByKey(sql, 'ApiToken', API_TOKEN_COLUMNS, 'id', ids, ['id'])).map((r) => r.id)).toEqual(['t2']);
  }
  expect((await rowsByKey(sql, 'ApiToken', API_TOKEN_COLUMNS, 'id', ['t1', 't2', 't2'], ['id'])).map((r) => r.id).sort()).toEqual(['t1', 't2']);

  // A heartbeat renews an online worker's row exactly as Prisma's updateMany did; not a lost one.
  await db.worker.update({ where: { id: 'w1' }, data: { status: 'online', connected: false } });
  await db.worker.create({ data: { id: 'w2', name: 'w2', machineId: 'm2', status: 'lost' } });
  const heard = new Date(now.getTime() + 7000);
  const version = new Date(now.getTime() + 7001);
  const before = await db.worker.findUniqueOrThrow({ where: { id: 'w1' } });
  expect(await db.$transaction(async (tx) => renewWorkerLease(directSqlIn(db, tx), 'w1', heard, 'ctl-a', version))).toBe(true);
  expect(await db.worker.findUniqueOrThrow({ where: { id: 'w1' } })).toEqual({ ...before, lastSeenAt: heard, connected: true, controllerId: 'ctl-a', updatedAt: version });
  const lost = await db.worker.findUniqueOrThrow({ where: { id: 'w2' } });
  expect(await renewWorkerLease(sql, 'w2', heard, 'ctl-a', version)).toBe(false);
  expect(await renewWorkerLease(sql, 'missing', heard, 'ctl-a', version)).toBe(false);
  expect(await db.worker.findUniqueOrThrow({ where: { id: 'w2' } })).toEqual(lost);

  // The image-operation probe of a push: only the worker's operations in the given states.
  expect(await hasImageOperationIn(sql, 'w1', ['pending', 'running'])).toBe(false);
  await db.imageOperation.create({ data: { id: 'op1', kind: 'prefetch', workerId: 'w1', reference: 'r/x:1', state: 'succeeded' } });
  expect(await hasImageOperationIn(sql, 'w1', ['pending', 'running'])).toBe(false);
  await db.imageOperation.create({ data: { id: 'op2', kind: 'prefetch', workerId: 'w2', reference: 'r/x:1', state: 'pending' } });
  expect(await hasImageOperationIn(sql, 'w1', ['pending', 'running'])).toBe(false);
  expect(await hasImageOperationIn(sql, 'w2', ['pending', 'running'])).toBe(true);
  expect(await hasImageOperationIn(sql, 'w2', [])).toBe(false);
}

describe('VM rows in plain SQL', () => {
  let sqlite: TempDb;
  beforeAll(async () => {
    sqlite = await tempDb();
  });
  afterAll(async () => {
    await sqlite.close();
  });

  it('SQLite: stores, guards and reads what the Prisma statements did', async () => {
    await behaves(sqlite.db);
  });

  describe.skipIf(!havePostgres)('PostgreSQL', () => {
    let pg: ScratchPostgres;
    let db: FleetDb;
    beforeAll(async () => {
      pg = await startScratchPostgres();
      const url = await pg.createDatabase('vm_rows');
      await migrateDatabase(url);
      db = openDatabase({ url });
    }, 120_000);
    afterAll(async () => {
      await db?.$disconnect();
      await pg?.stop();
    });

    it('stores, guards and reads what the Prisma statements did', async () => {
      await behaves(db);
    });
  });
});
