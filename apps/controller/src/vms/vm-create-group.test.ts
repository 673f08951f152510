// Group commit of VM creates (issue 20) against a real SQLite database: concurrent creates
// share one transaction, a failing create fails alone, and nothing is acknowledged before the
// group's COMMIT returned.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { migrateDatabase, openDatabase } from '@fleet/db';
import { findPostgresBin } from '@fleet/db/pg-scratch';
import { scratchPostgresForSuite } from '@fleet/db/testing/scratch-postgres';
import { EventLog } from '../events/event-log.ts';
import { FleetBus, type ScheduleHint } from '../fleet-bus.ts';
import { Metrics } from '../observability/metrics.ts';
import { VmSecrets } from '../secrets/vm-secrets.ts';
import { tempDb, type TempDb } from '../storage/testing.ts';
import { VmService } from './vm-service.ts';

let t: TempDb;
let bus: FleetBus;
let vms: VmService;

beforeEach(async () => {
  t = await tempDb();
  bus = new FleetBus();
  vms = new VmService(t.db, new EventLog(t.db), bus, new Metrics({ defaultMetrics: false }), VmSecrets.ephemeral());
});
afterEach(async () => {
  await t.close();
});

const spec = (name: string) => ({ name, image: 'img', cpus: 1, memoryMib: 512 });

describe('VmService.create: group commit', () => {
  it('commits concurrent creates in one transaction; a duplicate name fails alone and the others commit', async () => {
    await vms.create(spec('taken'), 'test');
    const groups0 = vms.createCommits.groups;
    const hints: ScheduleHint[] = [];
    bus.onScheduleRequest((h) => hints.push(h ?? {}));

    const results = await Promise.allSettled([
      vms.create(spec('a'), 'test'),
      vms.create(spec('taken'), 'test'), // exists already
      vms.create(spec('b'), 'test'),
      vms.create(spec('b'), 'test'), // duplicate inside the group: the second one fails
      vms.create(spec('c'), 'test'),
    ]);

    // One group: tried without savepoints, rolled back (duplicates), committed with one savepoint per create.
    expect(vms.createCommits.groups - groups0).toBe(1);
    expect(vms.createCommits.retried).toBe(1);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled']);
    for (const i of [1, 3]) {
      const r = results[i] as PromiseRejectedResult;
      expect(r.reason).toMatchObject({ statusCode: 409, message: expect.stringContaining('already exists') });
    }
    const rows = await t.db.vm.findMany({ orderBy: { name: 'asc' } });
    expect(rows.map((v) => v.name)).toEqual(['a', 'b', 'c', 'taken']);
    // Each committed create has exactly its own event; the failed ones left nothing behind.
    const created = await t.db.event.findMany({ where: { kind: 'vm.created' } });
    expect(created.map((e) => e.vmName).sort()).toEqual(['a', 'b', 'c', 'taken']);
    // The scheduler hears of each committed VM, with the row it can queue.
    expect(hints.flatMap((h) => h.created ?? []).map((v) => v.name).sort()).toEqual(['a', 'b', 'c']);
  });

  it('a create whose own statements fail (inTransaction throws) is rolled back alone', async () => {
    const results = await Promise.allSettled([
      vms.create(spec('ok-1'), 'test'),
      vms.create(spec('bad'), 'test', {
        inTransaction: async () => {
          throw new Error('link refused');
        },
      }),
      vms.create(spec('ok-2'), 'test'),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ message: 'link refused' });
    expect((await t.db.vm.findMany({ orderBy: { name: 'asc' } })).map((v) => v.name)).toEqual(['ok-1', 'ok-2']);
    expect(await t.db.event.count({ where: { vmName: 'bad' } })).toBe(0);
  });

  it('acknowledges nothing before COMMIT: a failing COMMIT fails every create of the group', async () => {
    const settled: string[] = [];
    const track = (name: string, p: Promise<unknown>) =>
      p.then(
        () => settled.push(`${name}:ok`),
        (err: unknown) => {
          settled.push(`${name}:failed`);
          throw err;
        },
      );
    const results = await Promise.allSettled([
      track('a', vms.create(spec('a'), 'test')),
      // Its statements succeed, but it leaves a deferred foreign-key violation (an allocation on
      // a worker that does not exist) that SQLite reports only at COMMIT: the COMMIT fails.
      track(
        'b',
        vms.create(spec('b'), 'test', {
          inTransaction: async (sql, vm) => {
            await sql.execute('PRAGMA defer_foreign_keys = ON');
            await sql.execute('INSERT INTO "Allocation" ("id", "vmId", "attempt", "workerId", "cpus", "memoryMib") VALUES (?, ?, 1, ?, 1, 512)', [
              crypto.randomUUID(),
              vm.id,
              'no-such-worker',
            ]);
          },
        }),
      ),
      track('c', vms.create(spec('c'), 'test')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect(settled.sort()).toEqual(['a:failed', 'b:failed', 'c:failed']);
    expect(String((results[0] as PromiseRejectedResult).reason)).toMatch(/FOREIGN KEY|constraint/i);
    expect(await t.db.vm.count()).toBe(0);
    expect(await t.db.event.count({ where: { kind: 'vm.created' } })).toBe(0);

    // The committer is not stuck: the next group commits.
    await vms.create(spec('after'), 'test');
    expect((await t.db.vm.findMany()).map((v) => v.name)).toEqual(['after']);
  });

  it('creates that arrive while a group commits form the next group', async () => {
    // The first group is held open inside its transaction until the others are queued.
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    let inside!: () => void;
    const entered = new Promise<void>((r) => (inside = r));
    const first = vms.create(spec('first'), 'test', {
      inTransaction: async () => {
        inside();
        await gate;
      },
    });
    await entered;
    const later = Promise.all(['x', 'y', 'z'].map((n) => vms.create(spec(n), 'test')));
    await new Promise((r) => setTimeout(r, 20)); // the three are queued behind the open group
    open();
    await first;
    expect((await later).map((v) => v.name)).toEqual(['x', 'y', 'z']);
    // Nothing failed: no retry with savepoints; both groups ran in plain SQL (no Prisma transaction).
    expect(vms.createCommits).toEqual({ groups: 2, writes: 4, retried: 0, prismaGroups: 0 });
  });
});

// The same path on PostgreSQL, where a failing statement aborts the whole transaction until it is
// rolled back to a savepoint: the optimistic attempt fails as a whole, the retry isolates the
// duplicate, the others commit.
describe.skipIf(findPostgresBin() === undefined)('VmService.create: group commit on PostgreSQL', () => {
  const pg = scratchPostgresForSuite();

  it('a duplicate name fails alone and the others commit; a failing COMMIT fails the whole group', async () => {
    const url = await pg.createDatabase('group_commit');
    await migrateDatabase(url);
    const db = openDatabase({ url, poolSize: 4 });
    try {
      const pgVms = new VmService(db, new EventLog(db), new FleetBus(), new Metrics({ defaultMetrics: false }), VmSecrets.ephemeral());
      await pgVms.create(spec('taken'), 'test');
      const results = await Promise.allSettled([pgVms.create(spec('a'), 'test'), pgVms.create(spec('taken'), 'test'), pgVms.create(spec('b'), 'test')]);
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
      expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ statusCode: 409 });
      expect((await db.vm.findMany({ orderBy: { name: 'asc' } })).map((v) => v.name)).toEqual(['a', 'b', 'taken']);
      expect(pgVms.createCommits.retried).toBe(1);

      // A deferred constraint violated by one create: PostgreSQL refuses the COMMIT; none of the group exists.
      await db.$executeRawUnsafe('ALTER TABLE "Allocation" DROP CONSTRAINT IF EXISTS "Allocation_workerId_fkey"');
      await db.$executeRawUnsafe('ALTER TABLE "Allocation" ADD CONSTRAINT "Allocation_workerId_fkey" FOREIGN KEY ("workerId") REFERENCES "Worker"("id") ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED');
      const failing = await Promise.allSettled([
        pgVms.create(spec('c'), 'test'),
        pgVms.create(spec('d'), 'test', {
          inTransaction: async (sql, vm) => {
            await sql.execute('INSERT INTO "Allocation" ("id", "vmId", "attempt", "workerId", "cpus", "memoryMib") VALUES (?, ?, 1, ?, 1, 512)', [crypto.randomUUID(), vm.id, 'no-such-worker']);
          },
        }),
      ]);
      expect(failing.map((r) => r.status)).toEqual(['rejected', 'rejected']);
      expect(await db.vm.count({ where: { name: { in: ['c', 'd'] } } })).toBe(0);
    } finally {
      await db.$disconnect();
    }
  }, 60_000);
});
