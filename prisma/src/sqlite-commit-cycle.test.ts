// The commit cycle (issue 20): plain-SQL transactions ready at the same moment share one COMMIT
// (one WAL fsync), each stays atomic and fails alone, and none is acknowledged before the COMMIT
// returned.
import { existsSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { directSql, directTransaction, directWrite, migrateDatabase, openDatabase, sqliteCommitCycle, type FleetDb } from './index.ts';
import { findPostgresBin, startScratchPostgres } from './pg-scratch.ts';
import { CommitCycle } from './sqlite-commit-cycle.ts';
import { ConnectionGate } from './sqlite-connection.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'fleet-commit-cycle-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const at = new Date('2026-12-07T07:00:00.000Z');
const insertSetting = 'INSERT INTO "Setting" ("key", "value", "updatedAt") VALUES (?, ?, ?)';

async function withSqlite(name: string, run: (db: FleetDb, file: string) => Promise<void>): Promise<void> {
  const file = path.join(tmp, name, 'fleet.db');
  const url = `file:${file}`;
  await migrateDatabase(url);
  const db = openDatabase({ url });
  try {
    await directSql(db).query('SELECT 1'); // connected: the cycle exists
    await run(db, file);
  } finally {
    await db.$disconnect();
  }
}

/** A connection that only records what it was asked to run (and can fail one statement). */
function fakeConnection(failOn?: string) {
  const log: string[] = [];
  let inTx = false;
  const conn = {
    gate: new ConnectionGate(),
    exec(sql: string) {
      if (sql === failOn) throw Object.assign(new Error(`${sql} failed`), { code: 'SQLITE_IOERR' });
      log.push(sql);
      if (sql === 'BEGIN') inTx = true;
      if (sql === 'COMMIT' || sql === 'ROLLBACK') inTx = false;
    },
    inTransaction: () => inTx,
  };
  return { conn, log };
}

describe('commit cycle', () => {
  it('commits the transactions asked for in one turn with one COMMIT, and acknowledges none before it', async () => {
    const { conn, log } = fakeConnection();
    const cycle = new CommitCycle(conn);
    const runs = [1, 2, 3].map((n) =>
      cycle.run(async () => {
        log.push(`work ${n}`);
        return n;
      }).then((v) => (log.push(`acknowledged ${v}`), v)),
    );
    expect(await Promise.all(runs)).toEqual([1, 2, 3]);
    expect(cycle.stats).toEqual({ cycles: 1, transactions: 3 });
    const commit = log.indexOf('COMMIT');
    expect(log.slice(0, commit + 1)).toEqual([
      'BEGIN',
      'SAVEPOINT fleet_cycle_unit', 'work 1', 'RELEASE SAVEPOINT fleet_cycle_unit',
      'SAVEPOINT fleet_cycle_unit', 'work 2', 'RELEASE SAVEPOINT fleet_cycle_unit',
      'SAVEPOINT fleet_cycle_unit', 'work 3', 'RELEASE SAVEPOINT fleet_cycle_unit',
      'COMMIT',
    ]);
    expect(log.slice(commit + 1).sort()).toEqual(['acknowledged 1', 'acknowledged 2', 'acknowledged 3']);
  });

  it('a failed COMMIT fails every transaction of the cycle; a failing transaction fails alone', async () => {
    const failing = fakeConnection('COMMIT');
    const cycle = new CommitCycle(failing.conn);
    const results = await Promise.allSettled([cycle.run(async () => 1), cycle.run(async () => 2)]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(failing.log.at(-1)).toBe('ROLLBACK');

    const { conn, log } = fakeConnection();
    const ok = new CommitCycle(conn);
    const mixed = await Promise.allSettled([
      ok.run(async () => 'a'),
      ok.run(async () => {
        throw new Error('duplicate');
      }),
      ok.run(async () => 'c'),
    ]);
    expect(mixed.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(log).toContain('ROLLBACK TO SAVEPOINT fleet_cycle_unit');
    expect(log.filter((s) => s === 'COMMIT')).toHaveLength(1);
  });

  it('an urgent transaction does not wait for the I/O callbacks of the turn', async () => {
    const order: string[] = [];
    setImmediate(() => order.push('I/O turn'));
    await new CommitCycle(fakeConnection().conn).run(async () => order.push('urgent transaction'), true);
    setImmediate(() => order.push('next I/O turn'));
    await new CommitCycle(fakeConnection().conn).run(async () => order.push('transaction'));
    expect(order).toEqual(['urgent transaction', 'I/O turn', 'next I/O turn', 'transaction']);
  });

  it('on SQLite: concurrent transactions share one COMMIT, a failing one is undone alone, and the rest is durable when acknowledged', async () => {
    await withSqlite('sqlite', async (db, file) => {
      const cycle = sqliteCommitCycle(db)!;
      const before = { ...cycle.stats };
      const results = await Promise.allSettled([
        directTransaction(db, async (sql) => {
          await sql.execute(insertSetting, ['a', '1', at]);
          await sql.execute(insertSetting, ['b', '1', at]);
        }),
        directTransaction(db, async (sql) => {
          await sql.execute(insertSetting, ['c', '1', at]);
          await sql.execute(insertSetting, ['a', 'duplicate', at]); // fails: its own first insert is undone too
        }),
        directWrite(db, (sql) => sql.execute(insertSetting, ['d', '1', at])),
      ]);
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
      expect(cycle.stats.cycles - before.cycles).toBe(1);
      expect(cycle.stats.transactions - before.transactions).toBe(3);
      // Acknowledged = committed in the file: another connection reads it (the WAL), with synchronous=FULL.
      const other = new Database(file, { readonly: true });
      try {
        expect(other.prepare('SELECT "key" FROM "Setting" ORDER BY "key"').all()).toEqual([{ key: 'a' }, { key: 'b' }, { key: 'd' }]);
      } finally {
        other.close();
      }
      expect(Number((await db.$queryRawUnsafe<Array<{ synchronous: bigint | number }>>('PRAGMA synchronous'))[0]!.synchronous)).toBe(2); // FULL
      // Read back through Prisma: what Prisma would have stored.
      expect(await db.setting.findUnique({ where: { key: 'd' } })).toEqual({ key: 'd', value: '1', updatedAt: at });
    });
  });

  it('on SQLite: a transaction that waits for something else past its time limit fails alone; the cycle commits the rest and the connection stays usable', async () => {
    await withSqlite('timeout', async (db) => {
      let lateStatement: Promise<unknown> | undefined;
      let release!: () => void;
      const never = new Promise<void>((r) => (release = r));
      const results = await Promise.allSettled([
        directTransaction(db, async (sql) => {
          await sql.execute(insertSetting, ['a', '1', at]);
        }),
        directTransaction(
          db,
          async (sql) => {
            await sql.execute(insertSetting, ['hung', '1', at]);
            await never; // e.g. a Prisma query, which would wait for this very cycle
            lateStatement = sql.execute(insertSetting, ['late', '1', at]);
            await lateStatement;
          },
          { timeoutMs: 200 },
        ),
      ]);
      expect(results[0]!.status).toBe('fulfilled');
      expect(results[1]!.status).toBe('rejected');
      expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/timed out after 200 ms/);
      // The hung work goes on later: its statements are refused, nothing of it is kept.
      release();
      await new Promise((r) => setTimeout(r, 10));
      await expect(lateStatement).rejects.toThrow(/already ended/);
      await directWrite(db, (sql) => sql.execute(insertSetting, ['b', '1', at]));
      const keys = (await directSql(db).query<{ key: string }>('SELECT "key" FROM "Setting" ORDER BY "key"')).map((r) => r.key);
      expect(keys).toEqual(['a', 'b']);
    });
  });

  it('on SQLite: a savepoint\'s journal past 64 KiB stays in memory (temp_store=MEMORY): no temporary file is created in a cycle', async () => {
    if (!existsSync('/proc/self/fd')) {
      console.warn('\n*** temp-file check SKIPPED: no /proc/self/fd on this system ***\n');
      return;
    }
    // SQLite's temporary files are deleted as soon as they are opened: an fd whose target ends in
    // "(deleted)" under the temp directory while the transaction runs is one.
    const deletedTempFds = (): string[] =>
      readdirSync('/proc/self/fd').flatMap((fd) => {
        try {
          const target = readlinkSync(`/proc/self/fd/${fd}`);
          return target.endsWith('(deleted)') && /etilqs_/.test(target) ? [target] : [];
        } catch {
          return [];
        }
      });
    await withSqlite('temp-store', async (db) => {
      const big = 'x'.repeat(2000);
      await directTransaction(db, async (sql) => {
        for (let i = 0; i < 200; i++) await sql.execute(insertSetting, [`seed-${i}`, big, at]);
      });
      const seen: string[] = [];
      // Two transactions in one cycle: each runs in a savepoint, and each rewrites ~400 KiB of pages.
      await Promise.all([0, 1].map((n) => directTransaction(db, async (sql) => {
        for (let i = 0; i < 200; i++) await sql.execute('UPDATE "Setting" SET "value" = ? WHERE "key" = ?', [`${n}${big}`, `seed-${i}`]);
        seen.push(...deletedTempFds());
      })));
      expect(sqliteCommitCycle(db)!.stats.cycles).toBeGreaterThan(0);
      expect(seen).toEqual([]);
      expect(Number((await db.$queryRawUnsafe<Array<{ temp_store: bigint | number }>>('PRAGMA temp_store'))[0]!.temp_store)).toBe(2); // MEMORY
    });
  });

  it('on SQLite: a Prisma query waits for the open cycle; a statement after the transaction ended is refused', async () => {
    await withSqlite('gate', async (db) => {
      let stale: Parameters<Parameters<typeof directTransaction>[1]>[0] | undefined;
      let prismaSaw: number | undefined;
      await directTransaction(db, async (sql) => {
        stale = sql;
        await sql.execute(insertSetting, ['x', '1', at]);
        // Asked for inside the transaction: it runs after the COMMIT, and sees the row.
        void db.setting.count().then((n) => (prismaSaw = n));
        await new Promise((r) => setTimeout(r, 20));
        expect(prismaSaw).toBeUndefined();
      });
      await new Promise((r) => setTimeout(r, 20));
      expect(prismaSaw).toBe(1);
      await expect(stale!.execute(insertSetting, ['y', '1', at])).rejects.toThrow(/already ended/);
    });
  });

  it.skipIf(findPostgresBin() === undefined)('on PostgreSQL: commits, rolls back on a failure, and reads back what Prisma reads', async () => {
    const pg = await startScratchPostgres();
    try {
      const url = await pg.createDatabase('commit_cycle');
      await migrateDatabase(url);
      const db = openDatabase({ url });
      try {
        await directTransaction(db, async (sql) => {
          await sql.execute(insertSetting, ['a', '1', at]);
        });
        await expect(
          directTransaction(db, async (sql) => {
            await sql.execute(insertSetting, ['b', '1', at]);
            await sql.execute(insertSetting, ['a', 'duplicate', at]);
          }),
        ).rejects.toThrow();
        await directWrite(db, (sql) => sql.execute(insertSetting, ['c', '1', at]));
        expect((await db.setting.findMany({ orderBy: { key: 'asc' } })).map((s) => [s.key, s.updatedAt])).toEqual([
          ['a', at],
          ['c', at],
        ]);
        expect(sqliteCommitCycle(db)).toBeUndefined();
      } finally {
        await db.$disconnect();
      }
    } finally {
      await pg.stop();
    }
  }, 120_000);
});
