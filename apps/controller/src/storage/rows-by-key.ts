// Reading rows by a list of keys in plain SQL (@fleet/db direct-sql.ts), typed by the model's columns.
import { columnList, paddedLength, quotedIdentifier, rowsOf, sqlText, type ColumnKinds, type DirectSql } from '@fleet/db';

/** At most this many ids per IN list (well under both engines' bound-value limits; a power of two, see below). */
const IDS_PER_STATEMENT = 512;

/**
 * The rows of `table` whose `key` is one of `ids` (those that exist, in no particular order),
 * with these columns (all of `kinds` unless given).
 *
 * Each IN list is padded to a power of two by repeating its last id (which changes nothing it
 * matches), so the statement takes one of ten shapes, each prepared once and its text built once
 * (sql-text.ts), instead of one per number of ids (issue 20: pushes read their worker's VMs' keys).
 */
export async function rowsByKey<M, K extends keyof M & string = keyof M & string>(
  sql: DirectSql,
  table: string,
  kinds: ColumnKinds<M>,
  key: keyof M & string,
  ids: readonly string[],
  columns?: readonly K[],
): Promise<Array<Pick<M, K>>> {
  const shape = `rows-by-key:${table}:${key}:${columns ? columns.join(',') : '*'}`;
  const out: Array<Pick<M, K>> = [];
  for (let i = 0; i < ids.length; i += IDS_PER_STATEMENT) {
    const slice = ids.slice(i, i + IDS_PER_STATEMENT);
    const n = paddedLength(slice.length);
    const last = slice[slice.length - 1]!;
    while (slice.length < n) slice.push(last);
    const text = sqlText(`${shape}:${n}`, () => `SELECT ${columnList(kinds, columns)} FROM ${quotedIdentifier(table)} WHERE ${columnList(kinds, [key])} IN (${slice.map(() => '?').join(', ')})`);
    out.push(...rowsOf(kinds, await sql.query(text, slice), columns));
  }
  return out;
}
