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
