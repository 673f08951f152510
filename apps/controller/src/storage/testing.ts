// For tests: a migrated temporary SQLite database, and real storage failures on it.
// `PRAGMA query_only` makes every write fail with a real SQLITE_READONLY (reads keep
// working, as on a full disk) until it is switched off again.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { migrateDatabase, openDatabase, type FleetDb } from '@fleet/db';

export interface TempDb {
  db: FleetDb;
  url: string;
  close(): Promise<void>;
}

export async function tempDb(opts: { busyTimeoutMs?: number } = {}): Promise<TempDb> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-ctl-test-'));
  const url = `file:${path.join(dir, 'fleet.db')}`;
  await migrateDatabase(url);
  const db = openDatabase({ url, ...opts });
  return {
    db,
    url,
    async close() {
      await db.$disconnect();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Writes fail with SQLITE_READONLY while on. */
export async function refuseWrites(db: FleetDb, on: boolean): Promise<void> {
  await db.$queryRawUnsafe(`PRAGMA query_only = ${on ? 1 : 0}`);
}

/** A real storage error: a write refused by SQLite (SQLITE_READONLY) through the Prisma client. */
export async function realStorageError(db: FleetDb): Promise<unknown> {
  await refuseWrites(db, true);
  try {
    await db.setting.upsert({ where: { key: 'test.write' }, create: { key: 'test.write', value: '1' }, update: { value: '2' } });
  } catch (err) {
    return err;
  } finally {
    await refuseWrites(db, false);
  }
  throw new Error('expected the write to fail');
}
