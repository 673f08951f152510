// One SQLite connection shared by a controller's concurrent flows: what a caller is told
// about its write must be what is on disk, whatever another flow's transaction does.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateDatabase, openDatabase, type FleetDb } from './index.ts';
import { cacheStatements, ConnectionGate } from './sqlite-connection.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'fleet-sqlite-conn-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('queries outside a transaction on the shared SQLite connection', () => {
  let db: FleetDb;
  beforeAll(async () => {
    const url = `file:${path.join(tmp, 'gate', 'fleet.db')}`;
    await migrateDatabase(url);
    db = openDatabase({ url });
    return () => db.$disconnect();
  });

  it('an acknowledged write survives another flow rolling its transaction back', async () => {
    await db.event.deleteMany();
    const failing = db
      .$transaction(async (tx) => {
        await tx.event.create({ data: { kind: 'in-tx', message: 'rolled back' } });
        await sleep(50);
        throw new Error('planned rollback');
      })
      .catch((err: Error) => err.message);
    await sleep(10); // the transaction is open and waiting between its statements
    await db.event.create({ data: { kind: 'outside', message: 'acknowledged' } });
    expect(await failing).toBe('planned rollback');
    const kinds = (await db.event.findMany()).map((e) => e.kind);
    expect(kinds).toEqual(['outside']);
  });

  it('a read outside never sees another transaction’s uncommitted rows', async () => {
    await db.event.deleteMany();
    let seenDuring = -1;
    const failing = db
      .$transaction(async (tx) => {
        await tx.event.create({ data: { kind: 'uncommitted', message: 'x' } });
        await sleep(50);
        throw new Error('planned rollback');
      })
      .catch(() => undefined);
    await sleep(10);
    seenDuring = await db.event.count({ where: { kind: 'uncommitted' } });
    await failing;
    expect(seenDuring).toBe(0);
  });

  it('interleaved transactions and plain writes all keep their writes', async () => {
    await db.event.deleteMany();
    const work = [
      db.$transaction(async (tx) => {
        await tx.event.create({ data: { kind: 't1', message: 'a' } });
        await sleep(20);
      }),
      db.event.create({ data: { kind: 'plain', message: 'b' } }),
      db.$transaction(async (tx) => {
        await tx.event.create({ data: { kind: 't2', message: 'c' } });
      }),
    ];
    await Promise.all(work);
    expect((await db.event.findMany()).map((e) => e.kind).sort()).toEqual(['plain', 't1', 't2']);
  });
});

describe('ConnectionGate', () => {
  it('hands the gate over first-in first-out and releases each holder only once', async () => {
    const gate = new ConnectionGate();
    const order: string[] = [];
    const first = await gate.acquire();
    const second = gate.acquire().then((release) => (order.push('second'), release));
    const third = gate.acquire().then((release) => (order.push('third'), release));
    first();
    first(); // a second call must not release the next holder
    const r2 = await second;
    await sleep(5);
    expect(order).toEqual(['second']);
    r2();
    (await third)();
    expect(order).toEqual(['second', 'third']);
    expect(gate.held).toBe(false);
  });
});

describe('cacheStatements', () => {
  it('reuses one prepared statement per SQL text, with fresh arguments each time, and evicts the least recently used', () => {
    const conn = new Database(':memory:');
    conn.exec('CREATE TABLE t (a INTEGER, b TEXT)');
    const cache = cacheStatements(conn, 2);
    const insert = 'INSERT INTO t (a, b) VALUES (?, ?)';
    (conn.prepare(insert) as unknown as { bind(a: unknown[]): { run(): unknown } }).bind([1, 'one']).run();
    (conn.prepare(insert) as unknown as { bind(a: unknown[]): { run(): unknown } }).bind([2, 'two']).run();
    expect(cache.size).toBe(1);
    const select = conn.prepare('SELECT a, b FROM t WHERE a >= ? ORDER BY a') as unknown as {
      bind(a: unknown[]): { reader: boolean; columns(): { name: string }[]; raw(): { all(): unknown[] } };
    };
    const bound = select.bind([1]);
    expect(bound.reader).toBe(true);
    expect(bound.columns().map((c) => c.name)).toEqual(['a', 'b']);
    expect(bound.columns().map((c) => c.name)).toEqual(['a', 'b']); // again, from the cache
    expect(bound.raw().all()).toEqual([[1, 'one'], [2, 'two']]);
    conn.prepare('SELECT 1');
    expect([...cache.keys()]).toEqual(['SELECT a, b FROM t WHERE a >= ? ORDER BY a', 'SELECT 1']);
    expect(() => (conn.prepare('INSERT INTO t VALUES (?)') as unknown as { bind(a: unknown[]): { run(): unknown } }).bind([1, 2]).run()).toThrow();
    conn.close();
  });
});
