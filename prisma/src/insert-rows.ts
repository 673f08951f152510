// Multi-row INSERTs for the hot paths (a group of created VMs' events, a scheduling pass's
// allocations), as one raw statement.
//
// Why not `createMany`: Prisma 7 never caches the query plan of a createMany (its SQL depends
// on the number of rows), so every call runs the query compiler (WebAssembly) again — about a
// millisecond each, the largest single item of the controller's CPU while creating VMs
// (BENCHMARKS.md, control plane). A raw statement goes to the driver adapter as it is, with
// the same argument conversion as Prisma's own writes (booleans, dates).
//
// The caller supplies every column that has a default computed by Prisma (`now()`, ids): the
// database's own defaults only cover literal ones.
import { quotedIdentifier } from './columns.ts';
import { sqlText } from './sql-text.ts';
import type { Provider } from './providers.ts';

export type SqlValue = string | number | boolean | Date | bigint | null;

/** What a Prisma client or transaction client offers for raw writes. */
export interface RawExecutor {
  $executeRawUnsafe(query: string, ...values: unknown[]): Promise<number>;
}

/** At most this many bound values per statement (SQLite allows 32,766, PostgreSQL 65,535). */
const MAX_VALUES_PER_STATEMENT = 30_000;


/** The INSERT statements (SQL and values) for `rows`, split to stay under the bound-value limit. */
export function insertStatements(provider: Provider, table: string, rows: readonly Record<string, SqlValue>[]): Array<{ sql: string; values: SqlValue[] }> {
  const first = rows[0];
  if (!first) return [];
  const columns = Object.keys(first);
  if (columns.length === 0) throw new Error(`insert into ${table}: rows have no columns`);
  for (const row of rows) {
    const keys = Object.keys(row);
    if (keys.length !== columns.length || keys.some((k, i) => k !== columns[i])) {
      throw new Error(`insert into ${table}: every row must have the columns ${columns.join(', ')} in that order`);
    }
  }
  const perStatement = Math.max(1, Math.floor(MAX_VALUES_PER_STATEMENT / columns.length));
  const columnsKey = columns.join(',');
  const out: Array<{ sql: string; values: SqlValue[] }> = [];
  for (let start = 0; start < rows.length; start += perStatement) {
    const chunk = rows.slice(start, start + perStatement);
    const values: SqlValue[] = [];
    for (const row of chunk) {
      for (const c of columns) {
        const value = row[c];
        // An optional field left out by a spread: name the column instead of failing in the driver.
        if (value === undefined) throw new Error(`insert into ${table}: column ${c} has no value (use null)`);
        values.push(value);
      }
    }
    const sql = sqlText(`insert:${provider}:${table}:${columnsKey}:${chunk.length}`, () => insertText(provider, table, columns, chunk.length));
    out.push({ sql, values });
  }
  return out;
}

function insertText(provider: Provider, table: string, columns: readonly string[], rowCount: number): string {
  let n = 0;
  const tuples = Array.from({ length: rowCount }, () => `(${columns.map(() => (provider === 'postgresql' ? `$${++n}` : '?')).join(', ')})`);
  return `INSERT INTO ${quotedIdentifier(table)} (${columns.map(quotedIdentifier).join(', ')}) VALUES ${tuples.join(', ')}`;
}

/** Inserts `rows` into `table` with as few statements as the bound-value limit allows. Returns the rows inserted. */
export async function insertRows(db: RawExecutor, provider: Provider, table: string, rows: readonly Record<string, SqlValue>[]): Promise<number> {
  let inserted = 0;
  for (const { sql, values } of insertStatements(provider, table, rows)) inserted += await db.$executeRawUnsafe(sql, ...values);
  return inserted;
}
