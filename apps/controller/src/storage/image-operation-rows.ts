// Image operations in plain SQL (@fleet/db direct-sql.ts) where a statement runs once per
// desired-state push (issue 20): through Prisma that read was ~0.45 ms a push, and nearly every
// push finds no operation at all.
import type { DirectSql } from '@fleet/db';

/** Whether `workerId` has an operation in one of `states` (an indexed probe: ImageOperation(workerId, state)). */
export async function hasImageOperationIn(sql: DirectSql, workerId: string, states: readonly string[]): Promise<boolean> {
  if (states.length === 0) return false;
  const rows = await sql.query(`SELECT 1 AS "found" FROM "ImageOperation" WHERE "workerId" = ? AND "state" IN (${states.map(() => '?').join(', ')}) LIMIT 1`, [workerId, ...states]);
  return rows.length > 0;
}
