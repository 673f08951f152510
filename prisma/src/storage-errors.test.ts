// The storage-error classifier against real failures: each error below is produced by
// SQLite or PostgreSQL and surfaces through the real Prisma client and driver adapters
// (or the raw driver), never written by hand.
import { execFileSync, execSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, chmodSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { classifyStorageError, describeStorageFault, migrateDatabase, openDatabase, type FleetDb } from './index.ts';
import { findPostgresBin, startScratchPostgres, type ScratchPostgres } from './pg-scratch.ts';
import { scratchPostgresForSuite } from './testing/scratch-postgres.ts';

const isRoot = process.getuid?.() === 0;
const havePostgres = findPostgresBin() !== undefined;
if (!havePostgres) console.warn('storage-errors.test.ts: PostgreSQL is not installed (apt-get install postgresql): skipping its cases');
if (!isRoot) console.warn('storage-errors.test.ts: not root: skipping the cases that need a full tmpfs');

const tmp = mkdtempSync(path.join(os.tmpdir(), 'fleet-storage-errors-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const freshUrl = async (): Promise<string> => {
  const url = `file:${path.join(tmp, `db-${++n}`, 'fleet.db')}`;
  await migrateDatabase(url);
  return url;
};
const failure = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => {
      throw new Error('expected a failure');
    },
    (e: unknown) => e,
  );
async function withDb<T>(url: string, fn: (db: FleetDb) => Promise<T>, opts: { busyTimeoutMs?: number } = {}): Promise<T> {
  const db = openDatabase({ url, ...opts });
  try {
    return await fn(db);
  } finally {
    await db.$disconnect();
  }
}
const bigEvent = () => ({ kind: 'x', message: 'y'.repeat(3000) });

describe('classifyStorageError: SQLite', () => {
  it('SQLITE_FULL (max_page_count reached) through Prisma is disk-full', async () => {
    const url = await freshUrl();
    const err = await withDb(url, async (db) => {
      const [pages] = await db.$queryRawUnsafe<{ page_count: bigint | number }[]>('PRAGMA page_count');
      await db.$queryRawUnsafe(`PRAGMA max_page_count = ${Number(pages!.page_count)}`);
      const single = await failure((async () => { for (let i = 0; i < 100; i++) await db.event.create({ data: bigEvent() }); })());
      const inTx = await failure(db.$transaction(async (tx) => { for (let i = 0; i < 100; i++) await tx.event.create({ data: bigEvent() }); }));
      return { single, inTx };
    });
    for (const e of [err.single, err.inTx]) {
      expect(e).toMatchObject({ name: 'PrismaClientKnownRequestError', code: 'P2039' });
      expect(classifyStorageError(e)).toEqual({ kind: 'disk-full', code: 'SQLITE_FULL', message: 'database or disk is full' });
    }
    expect(describeStorageFault(classifyStorageError(err.single)!)).toBe('the disk is full (SQLITE_FULL: database or disk is full)');
  });

  it('SQLITE_FULL from the better-sqlite3 driver itself', async () => {
    const url = await freshUrl();
    const raw = new Database(url.slice('file:'.length));
    try {
      raw.pragma(`max_page_count = ${raw.pragma('page_count', { simple: true }) as number}`);
      const err = (() => {
        try {
          for (let i = 0; i < 100; i++) raw.prepare('INSERT INTO Event (kind, message) VALUES (?, ?)').run('x', 'y'.repeat(3000));
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err).toMatchObject({ name: 'SqliteError', code: 'SQLITE_FULL' });
      expect(classifyStorageError(err)?.kind).toBe('disk-full');
    } finally {
      raw.close();
    }
  });

  it.skipIf(!isRoot)('a full file system: SQLITE_FULL, also as the bare DriverAdapterError of a failed COMMIT; writes work again once space is freed', async () => {
    const mnt = path.join(tmp, `tmpfs-${++n}`);
    mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
    try {
      const url = `file:${mnt}/fleet.db`;
      await migrateDatabase(url);
      await withDb(url, async (db) => {
        await db.setting.create({ data: { key: 'k', value: '1' } });
        try {
          execSync(`dd if=/dev/zero of=${mnt}/filler bs=64k 2>/dev/null`);
        } catch {
          /* dd stops when the file system is full */
        }
        const single = await failure((async () => { for (let i = 0; i < 200; i++) await db.event.create({ data: bigEvent() }); })());
        const commit = await failure(db.$transaction(async (tx) => { await tx.event.create({ data: { kind: 'x', message: 'z'.repeat(9000) } }); }));
        expect(classifyStorageError(single)).toMatchObject({ kind: 'disk-full', code: 'SQLITE_FULL' });
        expect(commit).toMatchObject({ name: 'DriverAdapterError' });
        expect(classifyStorageError(commit)).toMatchObject({ kind: 'disk-full', code: 'SQLITE_FULL' });
        expect(await db.setting.count()).toBe(1); // reads still work
        rmSync(`${mnt}/filler`);
        await db.$transaction(async (tx) => { await tx.event.create({ data: { kind: 'x', message: 'after' } }); });
        expect(await db.event.count()).toBe(1); // the failed writes left nothing behind
      });
    } finally {
      execFileSync('umount', [mnt]);
    }
  });

  it('SQLITE_READONLY is read-only', async () => {
    const url = await freshUrl();
    const err = await withDb(url, async (db) => {
      await db.$queryRawUnsafe('PRAGMA query_only = 1');
      return failure(db.setting.upsert({ where: { key: 'a' }, create: { key: 'a', value: '1' }, update: { value: '2' } }));
    });
    expect(classifyStorageError(err)).toEqual({ kind: 'read-only', code: 'SQLITE_READONLY', message: 'attempt to write a readonly database' });
  });

  it('SQLITE_BUSY after the busy timeout (Prisma maps it to P1008) is locked', async () => {
    const url = await freshUrl();
    const other = new Database(url.slice('file:'.length));
    try {
      const errs = await withDb(
        url,
        async (db) => {
          await db.setting.count();
          other.exec('BEGIN IMMEDIATE');
          const single = await failure(db.setting.create({ data: { key: 'a', value: '1' } }));
          const inTx = await failure(db.$transaction(async (tx) => tx.setting.create({ data: { key: 'a', value: '1' } })));
          other.exec('ROLLBACK');
          return [single, inTx];
        },
        { busyTimeoutMs: 50 },
      );
      for (const e of errs) {
        expect(e).toMatchObject({ code: 'P1008' });
        expect(classifyStorageError(e)).toEqual({ kind: 'locked', code: 'SQLITE_BUSY', message: 'database is locked' });
      }
    } finally {
      other.close();
    }
  });

  it('SQLITE_IOERR_* is an I/O error', async () => {
    const url = await freshUrl();
    const fifo = path.join(tmp, `fifo-${++n}`);
    execFileSync('mkfifo', [fifo]);
    // VACUUM INTO a FIFO: SQLite cannot read its header back (a real EIO-class failure of the VFS).
    const err = await withDb(url, (db) => failure(db.$executeRawUnsafe(`VACUUM INTO '${fifo}'`)));
    expect(err).toMatchObject({ code: 'P2010' });
    expect(classifyStorageError(err)).toMatchObject({ kind: 'io-error', code: 'SQLITE_IOERR_READ' });
  });

  it('SQLITE_CANTOPEN (the connection cannot be opened) is cannot-open', async () => {
    const dir = path.join(tmp, `a-directory-${++n}`);
    mkdirSync(dir);
    const err = await withDb(`file:${dir}`, (db) => failure(db.setting.count()));
    expect(err).toMatchObject({ code: 'SQLITE_CANTOPEN' });
    expect(classifyStorageError(err)).toMatchObject({ kind: 'cannot-open', code: 'SQLITE_CANTOPEN' });
  });

  it('request errors and bugs are not storage faults', async () => {
    const url = await freshUrl();
    const errs = await withDb(url, async (db) => {
      await db.setting.create({ data: { key: 'a', value: '1' } });
      return [
        await failure(db.setting.create({ data: { key: 'a', value: '1' } })), // P2002
        await failure(db.$transaction(async (tx) => tx.setting.create({ data: { key: 'a', value: '1' } }))), // P2002 in a transaction
        await failure(db.setting.update({ where: { key: 'missing' }, data: { value: '2' } })), // P2025
        await failure(db.vm.create({ data: { id: 'v', name: 'v', state: 'pending', image: 'i', cpus: 1, memoryMib: 1, workerId: 'no-such-worker' } })), // P2003
        await failure(db.setting.create({ data: { key: 1 as unknown as string, value: '1' } })), // validation
        await failure(db.$queryRawUnsafe('SELECT * FROM no_such_table')), // P2010 no such table
      ];
    });
    expect(errs.map((e) => (e as { code?: string }).code)).toEqual(['P2002', 'P2002', 'P2025', 'P2003', undefined, 'P2010']);
    for (const e of errs) expect(classifyStorageError(e)).toBeNull();
    expect(classifyStorageError(new Error('boom'))).toBeNull();
    expect(classifyStorageError(new TypeError("Cannot read properties of undefined (reading 'id')"))).toBeNull();
    expect(classifyStorageError(undefined)).toBeNull();
    expect(classifyStorageError('SQLITE_FULL')).toBeNull();
  });
});

describe.skipIf(!havePostgres)('classifyStorageError: PostgreSQL', () => {
  const server = scratchPostgresForSuite();
  let m = 0;
  const freshPg = async (): Promise<string> => {
    const url = await server.createDatabase(`fleet_storage_${++m}`);
    await migrateDatabase(url);
    return url;
  };

  it('a backend terminated by the administrator (57P01) is connection-lost; the pool recovers', async () => {
    const url = await freshPg();
    const db = openDatabase({ url, poolSize: 2 });
    try {
      const err = await failure(db.$queryRawUnsafe('SELECT pg_terminate_backend(pg_backend_pid())'));
      expect(err).toMatchObject({ code: 'P2010' });
      expect(classifyStorageError(err)).toEqual({ kind: 'connection-lost', code: '57P01', message: 'terminating connection due to administrator command' });
      expect(await db.setting.count()).toBe(0);
    } finally {
      await db.$disconnect();
    }
  });

  it('a read-only database (25006, as on a standby) is read-only', async () => {
    const url = await freshPg();
    const name = new URL(url).pathname.slice(1);
    const admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
    await admin.query(`ALTER DATABASE "${name}" SET default_transaction_read_only = on`);
    await admin.end();
    const db = openDatabase({ url, poolSize: 1 });
    try {
      const errs = [
        await failure(db.setting.create({ data: { key: 'a', value: '1' } })),
        await failure(db.$transaction(async (tx) => tx.setting.create({ data: { key: 'a', value: '1' } }))),
      ];
      for (const e of errs) expect(classifyStorageError(e)).toEqual({ kind: 'read-only', code: '25006', message: 'cannot execute INSERT in a read-only transaction' });
    } finally {
      await db.$disconnect();
    }
  });

  it('a unique violation is not a storage fault', async () => {
    const db = openDatabase({ url: await freshPg(), poolSize: 1 });
    try {
      await db.setting.create({ data: { key: 'a', value: '1' } });
      const err = await failure(db.setting.create({ data: { key: 'a', value: '1' } }));
      expect(err).toMatchObject({ code: 'P2002' });
      expect(classifyStorageError(err)).toBeNull();
    } finally {
      await db.$disconnect();
    }
  });

  it('a backend killed mid-query ("Connection terminated unexpectedly", no code) is connection-lost', async () => {
    const url = await freshPg();
    const db = openDatabase({ url, poolSize: 1 });
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    try {
      const sleeping = failure(db.$queryRawUnsafe('SELECT pg_sleep(5)'));
      let pid: number | undefined;
      for (let i = 0; i < 50 && !pid; i++) {
        await new Promise((r) => setTimeout(r, 50));
        const r = await admin.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)' AND pid <> pg_backend_pid()`);
        pid = r.rows[0]?.pid;
      }
      expect(pid).toBeDefined();
      process.kill(pid!, 'SIGKILL'); // the postmaster then resets every backend (crash recovery)
      const err = await sleeping;
      expect((err as Error).message).toMatch(/Connection terminated unexpectedly/);
      expect(classifyStorageError(err)).toMatchObject({ kind: 'connection-lost', code: 'pg-connection' });
    } finally {
      await admin.end().catch(() => undefined);
      await db.$disconnect();
    }
    // The server recovers by itself; wait for it so the next cases start clean.
    const probe = openDatabase({ url, poolSize: 1 });
    try {
      for (let i = 0; i < 100; i++) {
        if (await probe.setting.count().then(() => true, () => false)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await probe.$disconnect();
    }
  });

  it.skipIf(!isRoot)('a full disk (53100) is disk-full', async () => {
    const mnt = path.join(tmp, `pg-tmpfs-${++n}`);
    mkdirSync(mnt);
    chmodSync(tmp, 0o755);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=120m,mode=1777', 'tmpfs', mnt]);
    const saved = process.env['TMPDIR'];
    process.env['TMPDIR'] = mnt; // the scratch server's data directory goes on the small tmpfs
    let small: ScratchPostgres | undefined;
    try {
      small = await startScratchPostgres();
      const url = await small.createDatabase('full');
      await migrateDatabase(url);
      const db = openDatabase({ url, poolSize: 1 });
      try {
        try {
          execSync(`dd if=/dev/zero of=${mnt}/filler bs=1M 2>/dev/null`);
        } catch {
          /* full */
        }
        const batch = () => db.event.createMany({ data: Array.from({ length: 50 }, () => ({ kind: 'x', message: 'y'.repeat(5000) })) });
        const err = await failure((async () => { for (let i = 0; i < 400; i++) await batch(); })());
        expect(classifyStorageError(err)).toMatchObject({ kind: 'disk-full', code: '53100' });
        rmSync(`${mnt}/filler`);
        await db.setting.create({ data: { key: 'after', value: '1' } });
      } finally {
        await db.$disconnect();
      }
    } finally {
      if (saved === undefined) delete process.env['TMPDIR'];
      else process.env['TMPDIR'] = saved;
      await small?.stop();
      execFileSync('umount', [mnt]);
    }
  }, 60_000);

  // Last: these stop the server.
  it('a server shutting down (57P03) is unreachable, a stopped one (P1001, ECONNREFUSED) too', async () => {
    const url = await freshPg();
    // A "smart" shutdown (SIGTERM to the postmaster) waits for open sessions and refuses new ones.
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    const dataDir = (await holder.query<{ data_directory: string }>('SHOW data_directory')).rows[0]!.data_directory;
    const postmasterPid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    process.kill(postmasterPid, 'SIGTERM');
    const db = openDatabase({ url, poolSize: 1 });
    try {
      let err: unknown;
      for (let i = 0; i < 50; i++) {
        err = await failure(db.setting.count()).catch(() => undefined);
        if ((err as { meta?: { driverAdapterError?: { cause?: { code?: string } } } })?.meta?.driverAdapterError?.cause?.code === '57P03') break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(classifyStorageError(err)).toEqual({ kind: 'unreachable', code: '57P03', message: 'the database system is shutting down' });
      await holder.end();
      await server.stop();
      const refused = await failure(db.setting.count());
      expect(refused).toMatchObject({ code: 'P1001' });
      expect(classifyStorageError(refused)).toMatchObject({ kind: 'unreachable', code: 'P1001' });
      const inTx = await failure(db.$transaction(async (tx) => tx.setting.count()));
      expect(classifyStorageError(inTx)).toMatchObject({ kind: 'unreachable' });
      // pg's own socket error underneath Prisma's mapping.
      const rawClient = new pg.Client({ connectionString: url });
      const raw = await failure(rawClient.connect());
      expect(raw).toMatchObject({ code: 'ECONNREFUSED' });
      expect(classifyStorageError(raw)).toMatchObject({ kind: 'unreachable', code: 'ECONNREFUSED' });
    } finally {
      await holder.end().catch(() => undefined);
      await db.$disconnect();
    }
  });
});
