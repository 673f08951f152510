// The leader lease on a real PostgreSQL server: one holder at a time, takeover when the holder
// stops, is killed, or lets its lease expire, and a deposed holder's fenced writes refused.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateDatabase } from './migrate.ts';
import { startLeaderLease, isNotLeaderError, type FenceClient, type LeaderLease } from './leader-lease.ts';
import { findPostgresBin, startScratchPostgres, type ScratchPostgres } from './pg-scratch.ts';

const LEASE_MODULE = fileURLToPath(new URL('./leader-lease.ts', import.meta.url));
const havePostgres = findPostgresBin() !== undefined;
if (!havePostgres) console.warn('leader-lease.test.ts: PostgreSQL is not installed (apt-get install postgresql): skipping');

async function until(what: string, cond: () => boolean, timeoutMs = 5_000): Promise<number> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - t0;
}

/** Runs `fn` inside a transaction on its own connection, with the FenceClient shape Prisma offers. */
async function inTransaction(url: string, fn: (tx: FenceClient) => Promise<void>): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('BEGIN');
    await fn({ $queryRawUnsafe: async <T,>(q: string, ...v: unknown[]) => (await c.query(q, v)).rows as T });
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    await c.end();
  }
}

describe.skipIf(!havePostgres)('leader lease on PostgreSQL', () => {
  let server: ScratchPostgres;
  const open: LeaderLease[] = [];
  const lease = async (url: string, id: string, ttlMs = 1_500): Promise<LeaderLease> => {
    const l = await startLeaderLease({ url, holderId: id, holderName: id, ttlMs, pollMs: 100 });
    open.push(l);
    return l;
  };
  beforeAll(async () => {
    server = await startScratchPostgres();
  }, 60_000);
  afterAll(async () => {
    for (const l of open) await l.stop();
    await server?.stop();
  });

  it('one holder at a time; the others name it; a stopped holder hands over at once with a new token', async () => {
    const url = await server.createDatabase('lease_handover');
    await migrateDatabase(url);
    const a = await lease(url, 'ctl-a');
    const b = await lease(url, 'ctl-b');
    expect(a.isLeader()).toBe(true);
    expect(b.isLeader()).toBe(false);
    expect(b.leader()).toEqual({ id: 'ctl-a', name: 'ctl-a' });
    await inTransaction(url, (tx) => a.fence(tx));
    await expect(inTransaction(url, (tx) => b.fence(tx))).rejects.toSatisfy(isNotLeaderError);
    const changes: boolean[] = [];
    b.onChange((leader) => changes.push(leader));
    const tokenA = a.token();
    await a.stop();
    const took = await until('b to lead', () => b.isLeader());
    expect(took).toBeLessThan(1_000);
    expect(changes).toEqual([true]);
    expect(b.token()).toBe(tokenA + 1);
    // The old holder's term is over for good: its fenced writes fail.
    await expect(inTransaction(url, (tx) => a.fence(tx))).rejects.toSatisfy(isNotLeaderError);
  }, 30_000);

  it('a holder killed with SIGKILL is replaced without waiting for its lease to expire', async () => {
    const url = await server.createDatabase('lease_kill');
    await migrateDatabase(url);
    const ttlMs = 20_000; // far longer than the takeover may take: only the gone session allows it
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '-e', `import(${JSON.stringify(LEASE_MODULE)}).then(async (m) => { const l = await m.startLeaderLease({ url: ${JSON.stringify(url)}, holderId: 'ctl-child', ttlMs: ${ttlMs} }); console.log(l.isLeader() ? 'leading' : 'following'); setInterval(() => {}, 1000); })`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const first = await new Promise<string>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => resolve(d.toString().trim()));
      child.once('exit', (c) => reject(new Error(`lease holder exited ${c}`)));
    });
    expect(first).toBe('leading');
    const b = await lease(url, 'ctl-b', ttlMs);
    expect(b.isLeader()).toBe(false);
    expect(b.leader()?.id).toBe('ctl-child');
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    const took = await until('b to lead after the kill', () => b.isLeader(), 5_000);
    expect(took).toBeLessThan(2_000);
  }, 30_000);

  it('a holder that stops renewing loses the lease at expiry; its writes are fenced even before it notices', async () => {
    const url = await server.createDatabase('lease_expiry');
    await migrateDatabase(url);
    // a renews every 10 s, so it cannot win the race for the expired lease against b (every 100 ms).
    const a = await lease(url, 'ctl-a', 30_000);
    const b = await lease(url, 'ctl-b', 1_500);
    expect(a.isLeader()).toBe(true);
    // Make the lease look expired to the database (as if a's renewals stopped reaching it) while
    // a still counts its lease as valid: b takes over, and a's next fenced write is refused.
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query(`UPDATE "ControllerLease" SET "expiresAt" = now() - interval '1 minute', "backendPid" = 0`);
    // As soon as b holds the lease, a's fence fails whatever a believes.
    await until('b to lead', () => b.isLeader());
    await expect(inTransaction(url, (tx) => a.fence(tx))).rejects.toSatisfy(isNotLeaderError);
    expect(a.isLeader()).toBe(true); // its own clock still says so
    await until('a to notice at its next renewal', () => !a.isLeader(), 12_000);
    const row = await admin.query<{ holderId: string }>(`SELECT "holderId" FROM "ControllerLease"`);
    expect(row.rows[0]?.holderId).toBe('ctl-b');
    await admin.end();
  }, 30_000);
});
