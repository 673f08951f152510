// Worker rows in plain SQL (@fleet/db direct-sql.ts) where a statement runs per heartbeat
// (issue 20: at 1,000 workers, ~200 a second; through Prisma each was ~0.15 ms of CPU).

import type { DirectSql } from '@fleet/db';

const RENEW = 'UPDATE "Worker" SET "lastSeenAt" = ?, "connected" = ?, "controllerId" = ?, "updatedAt" = ? WHERE "id" = ? AND "status" = ?';

/**
 * Records that an online worker was heard from at `at`, through `controllerId` (re-asserting
 * `connected` heals a flag cleared while that controller looked dead). Returns false when the
 * worker's row is not `online` (lost, deleted): nothing is renewed then.
 */
export async function renewWorkerLease(sql: DirectSql, workerId: string, at: Date, controllerId: string, now: Date): Promise<boolean> {
  return (await sql.execute(RENEW, [at, true, controllerId, now, workerId, 'online'])) > 0;
}

/**
 * Of `ids`, the workers a placement may still use (online and not paused, i.e. drained), each with
 * its `networkVersion` (the scheduler compares it with its view's). Plain SQL: the scheduler's
 * placement transaction runs without Prisma (issue 20).
 */
export async function usableWorkers(sql: DirectSql, ids: readonly string[]): Promise<Map<string, number>> {
  if (ids.length === 0) return new Map();
  const rows = await sql.query<{ id: string; networkVersion: number | bigint }>(
    `SELECT "id", "networkVersion" FROM "Worker" WHERE "id" IN (${ids.map(() => '?').join(', ')}) AND "status" = ? AND "paused" = ?`,
    [...ids, 'online', false],
  );
  return new Map(rows.map((r) => [r.id, Number(r.networkVersion)]));
}

/** Moves the worker's `networkVersion` (see the schema): a placement planned before this transaction leaves that worker alone. */
export async function bumpNetworkVersion(sql: DirectSql, workerId: string): Promise<void> {
  await sql.execute('UPDATE "Worker" SET "networkVersion" = "networkVersion" + 1 WHERE "id" = ?', [workerId]);
}
