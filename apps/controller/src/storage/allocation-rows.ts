// Delivery marks of allocations (the desired-state push, once per VM placed), in plain SQL
// (@fleet/db direct-sql.ts; issue 20: a Prisma statement per VM here was ~100 µs of CPU).
import type { DirectSql } from '@fleet/db';

export interface AllocationKey {
  vmId: string;
  attempt: number;
}

const MARK = 'UPDATE "Allocation" SET "deliveredAt" = ? WHERE "workerId" = ? AND "deliveredAt" IS NULL AND "vmId" = ? AND "attempt" = ?';
const COUNT = 'SELECT COUNT(*) AS "n" FROM "Allocation" WHERE "workerId" = ? AND "vmId" = ? AND "attempt" = ?';

/**
 * Marks these (vm, attempt) allocations of the worker delivered at `now` (those not marked yet)
 * and returns the keys whose allocation exists: marked now, or earlier (by another controller's
 * stream). A key without an allocation was deleted before it was ever sent. Idempotent.
 */
export async function markDelivered(sql: DirectSql, workerId: string, keys: readonly AllocationKey[], now: Date): Promise<AllocationKey[]> {
  const present: AllocationKey[] = [];
  for (const key of keys) {
    if ((await sql.execute(MARK, [now, workerId, key.vmId, key.attempt])) > 0) {
      present.push(key);
      continue;
    }
    const [row] = await sql.query<{ n: number | bigint }>(COUNT, [workerId, key.vmId, key.attempt]);
    if (row && Number(row.n) > 0) present.push(key);
  }
  return present;
}

/**
 * Serialises, until the transaction ends, every transaction that hands out or moves an address or
 * a MAC on these workers: the scheduler's placements, the network changes of stopped VMs
 * (VmService.update) and a worker's Hello (which may bring other address pools). Each checks inside
 * its transaction what the worker's instances hold (or, for the scheduler, that the worker's
 * `networkVersion` is still the one it planned with), so without this two of them on PostgreSQL
 * (READ COMMITTED, any controller) could both see the last address or a MAC free and both take it.
 * PostgreSQL: one transaction-scoped advisory lock per worker, taken in id order in one statement
 * (no deadlock between two takers). SQLite: nothing to do, its transactions never overlap (one
 * connection, one controller process per file).
 */
export async function lockWorkerNetworks(sql: DirectSql, workerIds: readonly string[]): Promise<void> {
  if (sql.provider !== 'postgresql') return;
  const ids = [...new Set(workerIds)].sort();
  if (ids.length === 0) return;
  // The sorted subquery (OFFSET 0 keeps it a subquery) feeds the locks one by one in that order;
  // counted, because a void column cannot be read back through Prisma.
  await sql.query(
    `SELECT COUNT(pg_advisory_xact_lock(hashtextextended(k, 0))) AS "n" FROM (SELECT k FROM (VALUES ${ids.map(() => '(?)').join(', ')}) AS v(k) ORDER BY k OFFSET 0) AS sorted`,
    ids.map((id) => `fleet.worker-network:${id}`),
  );
}

/** `workerId/mac` of every instance on these workers that holds one of these MACs (any attempt, any state). */
export async function macsHeldOn(sql: DirectSql, workerIds: readonly string[], macs: readonly string[]): Promise<Set<string>> {
  if (workerIds.length === 0 || macs.length === 0) return new Set();
  const rows = await sql.query<{ workerId: string; mac: string }>(
    `SELECT "workerId", "mac" FROM "Allocation" WHERE "workerId" IN (${workerIds.map(() => '?').join(', ')}) AND "mac" IN (${macs.map(() => '?').join(', ')})`,
    [...workerIds, ...macs],
  );
  return new Set(rows.map((r) => `${r.workerId}/${r.mac}`));
}
