// Reading rows by a list of keys in plain SQL (@fleet/db direct-sql.ts), typed by the model's columns.
import { columnList, quotedIdentifier, rowsOf, type ColumnKinds, type DirectSql } from '@fleet/db';

/** At most this many ids per IN list (well under both engines' bound-value limits). */
const IDS_PER_STATEMENT = 500;

/**
 * The rows of `table` whose `key` is one of `ids` (those that exist, in no particular order),
 * with these columns (all of `kinds` unless given).
 */
export async function rowsByKey<M, K extends keyof M & string = keyof M & string>(
  sql: DirectSql,
  table: string,
  kinds: ColumnKinds<M>,
  key: keyof M & string,
  ids: readonly string[],
  columns?: readonly K[],
): Promise<Array<Pick<M, K>>> {
  const select = `SELECT ${columnList(kinds, columns)} FROM ${quotedIdentifier(table)} WHERE ${columnList(kinds, [key])} IN `;
  const out: Array<Pick<M, K>> = [];
  for (let i = 0; i < ids.length; i += IDS_PER_STATEMENT) {
    const slice = ids.slice(i, i + IDS_PER_STATEMENT);
    out.push(...rowsOf(kinds, await sql.query(`${select}(${slice.map(() => '?').join(', ')})`, slice), columns));
  }
  return out;
}
