// Producing migration SQL: the difference between what a migrations folder
// builds (replayed into a shadow database) and what the schema describes.
// Used by `migrate:new` and by the drift test.
import { randomUUID } from 'node:crypto';
import { PrismaBetterSqlite3 } from '@prisma/adapter-better-sqlite3';
import type {
  SqlDriverAdapter,
  SqlMigrationAwareDriverAdapterFactory,
} from '@prisma/driver-adapter-utils';
import { ManagedAdapterFactory, schemaEnginePgPool } from './adapters.ts';
import { loadPrismaPg } from './pg-driver.ts';
import { engineErrorMessage, NO_FILTER, readMigrationsDir, startSchemaEngine } from './engine.ts';
import { LAYOUT, readSchema, type Provider } from './providers.ts';

/**
 * PostgreSQL shadow databases: each connectToShadowDb() creates a fresh
 * database on the server at `serverUrl` and drops it when disposed.
 * (PrismaPg's own connectToShadowDb passes the new database name next to a
 * connectionString, which pg ignores in favour of the string's database.)
 */
class PgShadowFactory implements SqlMigrationAwareDriverAdapterFactory {
  readonly provider = 'postgres' as const;
  readonly adapterName = '@prisma/adapter-pg';
  constructor(private readonly serverUrl: string) {}

  async connect(): Promise<SqlDriverAdapter> {
    const PrismaPg = await loadPrismaPg();
    return new PrismaPg(await schemaEnginePgPool(this.serverUrl), { disposeExternalPool: true }).connect();
  }

  async connectToShadowDb(): Promise<SqlDriverAdapter> {
    const admin = await this.connect();
    const name = `fleet_shadow_${randomUUID().replaceAll('-', '')}`;
    try {
      await admin.executeScript(`CREATE DATABASE "${name}"`);
    } catch (err) {
      await admin.dispose();
      throw err;
    }
    const url = new URL(this.serverUrl);
    url.pathname = `/${name}`;
    const PrismaPg = await loadPrismaPg();
    const shadow = await new PrismaPg(await schemaEnginePgPool(url.toString()), { disposeExternalPool: true }).connect();
    const dispose = shadow.dispose.bind(shadow);
    shadow.dispose = async () => {
      try {
        await dispose();
        await admin.executeScript(`DROP DATABASE IF EXISTS "${name}"`);
      } finally {
        await admin.dispose();
      }
    };
    return shadow;
  }
}

const EMPTY_MIGRATION_RE = /^\s*(--[^\n]*\n?\s*)*$/;

/** True if a migration script has no statements (only comments / whitespace). */
export function isEmptyScript(sql: string): boolean {
  return EMPTY_MIGRATION_RE.test(sql);
}

export interface DiffOptions {
  /** Default: the provider's checked-in folder. */
  migrationsDir?: string;
  /** Default: the provider's schema derived from schema.prisma. */
  schema?: string;
  /**
   * PostgreSQL only (required): a server where throwaway shadow databases may
   * be created (CREATE DATABASE privilege). Nothing else on it is touched.
   */
  pgServerUrl?: string;
}

/**
 * The SQL that takes a database built by the migrations folder to the schema.
 * Returns '' when nothing is to be done.
 */
export async function diffMigrationsToSchema(provider: Provider, opts: DiffOptions = {}): Promise<string> {
  const migrationsDir = opts.migrationsDir ?? LAYOUT[provider].migrationsDir;
  const schema = opts.schema ?? readSchema(provider);
  // Always diff from the replayed folder (even an empty one), like `prisma migrate dev`:
  // the shadow database starts as the server makes it (e.g. with the public schema).
  const migrationsList = await readMigrationsDir(migrationsDir);
  // A folder without migrations yet has no lock file; the engine needs one to pick the connector.
  migrationsList.lockfile.content ??= migrationLockToml(provider);

  let inner: SqlMigrationAwareDriverAdapterFactory;
  if (provider === 'sqlite') {
    // The shadow database is a fresh in-memory SQLite database.
    inner = new PrismaBetterSqlite3({ url: ':memory:' });
  } else {
    // The engine talks to a database of the schema's provider even to diff from nothing.
    if (!opts.pgServerUrl) {
      throw new Error('diffing the PostgreSQL migrations needs a PostgreSQL server for a shadow database (pgServerUrl)');
    }
    inner = new PgShadowFactory(opts.pgServerUrl);
  }
  const factory = new ManagedAdapterFactory(inner);
  const files = [{ path: 'schema.prisma', content: schema }];
  const engine = await startSchemaEngine({ schema: files[0]!, adapterFactory: factory });
  try {
    const result = await engine.diff({
      from: { tag: 'migrations', ...migrationsList },
      to: { tag: 'schemaDatamodel', files },
      script: true,
      exitCode: null,
      filters: NO_FILTER,
    });
    const sql = result.stdout ?? '';
    return isEmptyScript(sql) ? '' : sql;
  } catch (err) {
    throw new Error(`diffing ${provider} migrations in ${migrationsDir} against the schema failed: ${engineErrorMessage(err, engine)}`, {
      cause: err,
    });
  } finally {
    engine.free();
    await factory.disposeAll();
  }
}

export function migrationLockToml(provider: Provider): string {
  return (
    '# Please do not edit this file manually\n' +
    '# It should be added in your version-control system (e.g., Git)\n' +
    `provider = "${provider}"\n`
  );
}
