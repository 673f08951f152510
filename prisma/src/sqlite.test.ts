import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateDatabase, MigrationError, openDatabase, Prisma, type FleetDb } from './index.ts';
import { migrationStatus, resolveMigration } from './migrate.ts';
import { LAYOUT } from './providers.ts';

const require = createRequire(import.meta.url);
const tmp = mkdtempSync(path.join(os.tmpdir(), 'fleet-db-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const freshUrl = (): string => `file:${path.join(tmp, `db-${++n}`, 'fleet.db')}`;
const fileOf = (url: string): string => url.slice('file:'.length);

const checkedIn = readdirSync(LAYOUT.sqlite.migrationsDir)
  .filter((d) => /^\d{14}_/.test(d))
  .sort();

interface MigrationRow {
  migration_name: string;
  checksum: string;
  finished_at: string | null;
  rolled_back_at: string | null;
  applied_steps_count: number;
}

function migrationRows(url: string): MigrationRow[] {
  const db = new Database(fileOf(url), { readonly: true });
  try {
    return db.prepare('SELECT * FROM _prisma_migrations ORDER BY started_at').all() as MigrationRow[];
  } finally {
    db.close();
  }
}

/** A copy of the checked-in migrations folder that a test may change. */
function copyOfMigrations(): string {
  const dir = path.join(tmp, `migrations-${++n}`);
  cpSync(LAYOUT.sqlite.migrationsDir, dir, { recursive: true });
  return dir;
}

describe('migrateDatabase (SQLite)', () => {
  it('migrates a fresh database, creating its directory, and records the migrations', async () => {
    const url = freshUrl();
    const infos: string[] = [];
    const r = await migrateDatabase(url, { logger: { info: (m) => infos.push(m), warn: () => {} } });
    expect(r.applied).toEqual(checkedIn);
    expect(infos.some((m) => m.includes(checkedIn[0]!))).toBe(true);

    const rows = migrationRows(url);
    expect(rows.map((r) => r.migration_name)).toEqual(checkedIn);
    for (const row of rows) {
      expect(row.finished_at).not.toBeNull();
      expect(row.rolled_back_at).toBeNull();
      // Same checksum as `prisma migrate` records: SHA-256 of migration.sql.
      const sql = readFileSync(path.join(LAYOUT.sqlite.migrationsDir, row.migration_name, 'migration.sql'));
      expect(row.checksum).toBe(createHash('sha256').update(sql).digest('hex'));
    }
  });

  it('is a no-op on an up-to-date database', async () => {
    const url = freshUrl();
    await migrateDatabase(url);
    const again = await migrateDatabase(url);
    expect(again.applied).toEqual([]);
    expect(migrationRows(url)).toHaveLength(checkedIn.length);
  });

  it('leaves the database in WAL mode', async () => {
    const url = freshUrl();
    await migrateDatabase(url);
    const db = new Database(fileOf(url), { readonly: true });
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
  });

  it('refuses a database that has a migration this build does not know', async () => {
    const url = freshUrl();
    await migrateDatabase(url);
    const db = new Database(fileOf(url));
    db.prepare(
      `INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, logs, started_at, applied_steps_count)
       VALUES ('x', 'abc', CURRENT_TIMESTAMP, '29991231000000_from_the_future', NULL, CURRENT_TIMESTAMP, 1)`,
    ).run();
    db.close();
    const err = await migrateDatabase(url).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationError);
    expect((err as MigrationError).code).toBe('UNKNOWN_MIGRATION');
    expect((err as MigrationError).migrations).toEqual(['29991231000000_from_the_future']);
    expect((err as MigrationError).message).toMatch(/29991231000000_from_the_future.*does not know/);
  });

  it('refuses an applied migration whose file was edited afterwards', async () => {
    const url = freshUrl();
    const dir = copyOfMigrations();
    await migrateDatabase(url, { migrationsDir: dir });
    const file = path.join(dir, checkedIn[0]!, 'migration.sql');
    writeFileSync(file, readFileSync(file, 'utf8') + '\n-- edited\n');
    await expect(migrateDatabase(url, { migrationsDir: dir })).rejects.toMatchObject({
      name: 'MigrationError',
      code: 'EDITED_MIGRATION',
      migrations: [checkedIn[0]],
    });
  });

  it('reports a failing migration with context, then refuses to start until repaired', async () => {
    const url = freshUrl();
    const dir = copyOfMigrations();
    await migrateDatabase(url, { migrationsDir: dir });
    const bad = '29990101000000_broken';
    mkdirSync(path.join(dir, bad));
    writeFileSync(path.join(dir, bad, 'migration.sql'), 'ALTER TABLE "NoSuchTable" ADD COLUMN "x" TEXT;\n');

    const first = await migrateDatabase(url, { migrationsDir: dir }).then(() => undefined, (e: unknown) => e);
    expect(first).toBeInstanceOf(MigrationError);
    expect((first as MigrationError).code).toBe('APPLY_FAILED');
    expect((first as MigrationError).migrations).toEqual([bad]);
    expect((first as MigrationError).message).toContain(bad);
    expect((first as MigrationError).message).toContain('NoSuchTable');

    await expect(migrateDatabase(url, { migrationsDir: dir })).rejects.toMatchObject({
      code: 'FAILED_MIGRATION',
      migrations: [bad],
    });
    expect(await migrationStatus(url, { migrationsDir: dir })).toMatchObject({ failed: [bad], pending: [] });

    // The operator fixes the migration and marks the failed attempt rolled back: it is retried.
    writeFileSync(path.join(dir, bad, 'migration.sql'), 'CREATE TABLE "Scratch" ("id" TEXT NOT NULL PRIMARY KEY);\n');
    await resolveMigration(url, bad, 'rolled-back', { migrationsDir: dir });
    expect(await migrationStatus(url, { migrationsDir: dir })).toMatchObject({ failed: [], pending: [bad] });
    expect((await migrateDatabase(url, { migrationsDir: dir })).applied).toEqual([bad]);
    expect(await migrationStatus(url, { migrationsDir: dir })).toMatchObject({ failed: [], pending: [], unknown: [], edited: [] });
  });

  it('does not create a database just to report its status', async () => {
    const url = freshUrl();
    await expect(migrationStatus(url)).rejects.toThrow(/there is no database/);
  });

  it('explains unusable URLs', async () => {
    await expect(migrateDatabase('mysql://x')).rejects.toThrow(/unsupported database URL/);
    await expect(migrateDatabase('file::memory:')).rejects.toThrow(/in-memory/);
    expect(() => openDatabase({ url: 'file:x.db?mode=ro' })).toThrow(/query parameters/);
  });
});

describe('openDatabase (SQLite)', () => {
  let url: string;
  let db: FleetDb;
  beforeAll(async () => {
    url = freshUrl();
    await migrateDatabase(url);
    db = openDatabase({ url });
  });
  afterAll(async () => {
    await db.$disconnect();
  });

  it('sets WAL, foreign keys and the busy timeout on its connection', async () => {
    const [journal] = await db.$queryRawUnsafe<{ journal_mode: string }[]>('PRAGMA journal_mode');
    const [fk] = await db.$queryRawUnsafe<{ foreign_keys: bigint | number }[]>('PRAGMA foreign_keys');
    const [busy] = await db.$queryRawUnsafe<{ timeout: bigint | number }[]>('PRAGMA busy_timeout');
    expect(journal?.journal_mode).toBe('wal');
    expect(Number(fk?.foreign_keys)).toBe(1);
    expect(Number(busy?.timeout)).toBe(10_000);
  });

  it('commits durably by default (synchronous=FULL); NORMAL only when asked', async () => {
    const [sync] = await db.$queryRawUnsafe<{ synchronous: bigint | number }[]>('PRAGMA synchronous');
    expect(Number(sync?.synchronous)).toBe(2); // FULL
    const otherUrl = freshUrl();
    await migrateDatabase(otherUrl);
    const normal = openDatabase({ url: otherUrl, sqliteSynchronous: 'NORMAL' });
    try {
      const [s] = await normal.$queryRawUnsafe<{ synchronous: bigint | number }[]>('PRAGMA synchronous');
      expect(Number(s?.synchronous)).toBe(1); // NORMAL
    } finally {
      await normal.$disconnect();
    }
  });

  it('creates, reads, updates and relates workers and VMs', async () => {
    const worker = await db.worker.create({
      data: { id: 'w-1', name: 'mac-01', machineId: 'm-1', labels: JSON.stringify({ arch: 'arm64' }), vmSlots: 2 },
    });
    expect(worker).toMatchObject({ name: 'mac-01', status: 'offline', paused: false, vmSlots: 2 });
    expect(worker.createdAt).toBeInstanceOf(Date);

    const vm = await db.vm.create({
      data: { id: 'vm-1', name: 'build-1', state: 'pending', image: 'ghcr.io/x/y:1', cpus: 2, memoryMib: 4096 },
    });
    expect(vm).toMatchObject({ diskGib: 20, generation: 1, workerId: null, desiredPower: 'running' });

    await db.vm.update({ where: { id: 'vm-1' }, data: { state: 'scheduled', workerId: 'w-1', attempt: { increment: 1 } } });
    const withVms = await db.worker.findUniqueOrThrow({ where: { id: 'w-1' }, include: { vms: true } });
    expect(withVms.vms.map((v) => [v.name, v.attempt])).toEqual([['build-1', 1]]);

    const ev = await db.event.create({ data: { kind: 'vm.created', message: 'created', vmId: 'vm-1' } });
    expect(typeof ev.id).toBe('number');

    // onDelete: SetNull (Vm.worker) and Cascade (Allocation.worker) need foreign keys on.
    await db.allocation.create({ data: { id: 'a-1', vmId: 'vm-1', attempt: 1, workerId: 'w-1', cpus: 2, memoryMib: 4096 } });
    await db.worker.delete({ where: { id: 'w-1' } });
    expect((await db.vm.findUniqueOrThrow({ where: { id: 'vm-1' } })).workerId).toBeNull();
    expect(await db.allocation.count()).toBe(0);
  });

  it('reports a duplicate unique name as Prisma error P2002', async () => {
    await db.vm.create({ data: { id: 'vm-a', name: 'dup', state: 'pending', image: 'i', cpus: 1, memoryMib: 512 } });
    const err = await db.vm
      .create({ data: { id: 'vm-b', name: 'dup', state: 'pending', image: 'i', cpus: 1, memoryMib: 512 } })
      .then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(Prisma.PrismaClientKnownRequestError);
    expect((err as Prisma.PrismaClientKnownRequestError).code).toBe('P2002');
  });

  it('runs interactive transactions', async () => {
    await db.$transaction(async (tx) => {
      await tx.setting.create({ data: { key: 'scheduler', value: '{"profile":"spread"}' } });
      await tx.setting.update({ where: { key: 'scheduler' }, data: { value: '{"profile":"pack"}' } });
    });
    expect((await db.setting.findUniqueOrThrow({ where: { key: 'scheduler' } })).value).toBe('{"profile":"pack"}');
    await expect(
      db.$transaction(async (tx) => {
        await tx.setting.create({ data: { key: 'rolled-back', value: '1' } });
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    expect(await db.setting.findUnique({ where: { key: 'rolled-back' } })).toBeNull();
  });

  it('waits for another process holding the write lock instead of failing with SQLITE_BUSY', async () => {
    // A second process takes the write lock 20 times for 25 ms each while we write.
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const Database = require(${JSON.stringify(require.resolve('better-sqlite3'))});
         const db = new Database(process.argv[1], { timeout: 10000 });
         const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
         process.stdout.write('ready\\n');
         for (let i = 0; i < 20; i++) {
           db.prepare('BEGIN IMMEDIATE').run();
           db.prepare("INSERT INTO Event (at, kind, message) VALUES (CURRENT_TIMESTAMP, 'test', 'child')").run();
           sleep(25);
           db.prepare('COMMIT').run();
           sleep(5);
         }
         db.close();`,
        fileOf(url),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    const started = Date.now();
    let ours = 0;
    while (Date.now() - started < 600) {
      await db.$transaction(async (tx) => {
        await tx.event.create({ data: { kind: 'test', message: 'parent' } });
        await tx.event.count();
      });
      await db.event.create({ data: { kind: 'test', message: 'parent' } });
      ours += 2;
    }
    expect(await exited).toBe(0);
    expect(await db.event.count({ where: { kind: 'test', message: 'child' } })).toBe(20);
    expect(await db.event.count({ where: { kind: 'test', message: 'parent' } })).toBe(ours);
  });

  it('refuses a second client on the same SQLite file in the same process', async () => {
    const other = openDatabase({ url });
    try {
      await expect(other.setting.count()).rejects.toThrow(/already open in this process/);
    } finally {
      await other.$disconnect();
    }
    // Once the first client disconnects, another may open the file.
    await db.$disconnect();
    const third = openDatabase({ url });
    try {
      expect(await third.setting.count()).toBeGreaterThan(0);
    } finally {
      await third.$disconnect();
    }
  });
});

describe('migrateDatabase concurrency', () => {
  it('serialises concurrent calls on one file within a process', async () => {
    const url = freshUrl();
    const results = await Promise.all([migrateDatabase(url), migrateDatabase(url), migrateDatabase(url)]);
    expect(results.map((r) => r.applied.length)).toEqual([checkedIn.length, 0, 0]);
  });
});
