// Several controllers may start at once on one PostgreSQL database (issue 13): only one of them
// migrates at a time, the others wait and then find nothing left to apply. SQLite has one
// controller per database (controller-lock.ts), so there is nothing to wait for.
import type pg from 'pg';
import { loadPg } from './pg-driver.ts';
import { providerOf } from './providers.ts';

/** Arbitrary, fixed: the advisory lock key of "a Fleet controller is migrating this database". */
const MIGRATION_LOCK_KEY = '7361001931002';

export async function withMigrationLock<T>(url: string, fn: () => Promise<T>): Promise<T> {
  if (providerOf(url) === 'sqlite') return fn();
  const c = new (await loadPg()).Client({ connectionString: url, application_name: 'fleet-controller-migrate' });
  c.on('error', () => undefined); // the lock goes with the session; fn's own connection reports failures
  await c.connect();
  try {
    await c.query('SELECT pg_advisory_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
    return await fn();
  } finally {
    await c.query('SELECT pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY]).catch(() => undefined);
    await c.end().catch(() => undefined);
  }
}
