// `pnpm --filter @fleet/db migrate:new <name> [--allow-empty]`
//
// Writes the next migration for both providers, offline, in Prisma's standard layout:
//   prisma/migrations/<timestamp>_<name>/migration.sql              (SQLite)
//   prisma/postgresql/migrations/<timestamp>_<name>/migration.sql   (PostgreSQL)
// plus migration_lock.toml in each folder. Each script is the difference
// between what that folder's existing migrations build (replayed into a shadow
// database) and schema.prisma today.
//
// The SQLite shadow database is in memory. The PostgreSQL one needs a server:
// FLEET_PG_SHADOW_URL (a server where this user may CREATE DATABASE), or else a
// throwaway server is started from Debian's `postgresql` binaries (a few seconds).
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MIGRATION_DIR_RE } from './engine.ts';
import { diffMigrationsToSchema, migrationLockToml } from './migrations.ts';
import { startScratchPostgres, type ScratchPostgres } from './pg-scratch.ts';
import { LAYOUT, PACKAGE_DIR, PROVIDERS, type Provider } from './providers.ts';

function timestamp(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

async function migrationNames(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return [];
  return (await readdir(dir, { withFileTypes: true }))
    .filter((e) => e.isDirectory() && MIGRATION_DIR_RE.test(e.name))
    .map((e) => e.name)
    .sort();
}

/** The next migration folder name: UTC timestamp, strictly after every existing one. */
export function nextMigrationName(name: string, existing: readonly string[], now = new Date()): string {
  let ts = timestamp(now);
  const last = existing[existing.length - 1]?.slice(0, 14);
  if (last && ts <= last) {
    // Same second (or a clock behind the history): one second after the last.
    const d = new Date(Date.UTC(+last.slice(0, 4), +last.slice(4, 6) - 1, +last.slice(6, 8), +last.slice(8, 10), +last.slice(10, 12), +last.slice(12, 14) + 1));
    ts = timestamp(d);
  }
  return `${ts}_${name}`;
}

export function normalizeName(raw: string): string {
  const name = raw.trim().replace(/[\s-]+/g, '_').toLowerCase();
  if (!/^[a-z0-9_]+$/.test(name) || name.length > 200) {
    throw new Error(`migration name "${raw}": use letters, digits and underscores`);
  }
  return name;
}

export interface NewMigrationResult {
  /** The folder name, e.g. 20250101120000_add_vm_notes; undefined if the schema had no changes. */
  name?: string;
  files: string[];
}

export async function newMigration(
  rawName: string,
  opts: { allowEmpty?: boolean; log?: (msg: string) => void; now?: Date } = {},
): Promise<NewMigrationResult> {
  const log = opts.log ?? (() => {});
  const name = normalizeName(rawName);

  const names = await Promise.all(PROVIDERS.map((p) => migrationNames(LAYOUT[p].migrationsDir)));
  const [sqliteNames = [], pgNames = []] = names;
  if (sqliteNames.join('\n') !== pgNames.join('\n')) {
    throw new Error(
      `the migrations folders are out of step:\n  sqlite:     ${sqliteNames.join(', ') || '(none)'}\n  postgresql: ${pgNames.join(', ') || '(none)'}\n` +
        'Every migration must exist for both providers with the same name.',
    );
  }

  let scratch: ScratchPostgres | undefined;
  const scripts = new Map<Provider, string>();
  try {
    for (const provider of PROVIDERS) {
      let pgServerUrl: string | undefined;
      if (provider === 'postgresql') {
        pgServerUrl = process.env['FLEET_PG_SHADOW_URL'];
        if (!pgServerUrl) {
          log('starting a throwaway PostgreSQL server for the shadow database');
          scratch = await startScratchPostgres();
          pgServerUrl = scratch.url;
        }
      }
      scripts.set(provider, await diffMigrationsToSchema(provider, pgServerUrl ? { pgServerUrl } : {}));
    }
  } finally {
    await scratch?.stop();
  }

  if (PROVIDERS.every((p) => scripts.get(p) === '') && !opts.allowEmpty) {
    log('schema.prisma matches the migrations: nothing to do (pass --allow-empty for a hand-written migration)');
    return { files: [] };
  }

  const folder = nextMigrationName(name, sqliteNames, opts.now);
  const files: string[] = [];
  for (const provider of PROVIDERS) {
    const { migrationsDir } = LAYOUT[provider];
    const dir = path.join(migrationsDir, folder);
    await mkdir(dir, { recursive: true });
    const sql = scripts.get(provider) || '-- This is an empty migration.\n';
    const file = path.join(dir, 'migration.sql');
    await writeFile(file, sql);
    files.push(file);
    const lock = path.join(migrationsDir, 'migration_lock.toml');
    if (!existsSync(lock)) {
      await writeFile(lock, migrationLockToml(provider));
      files.push(lock);
    }
  }
  for (const f of files) log(`wrote ${path.relative(PACKAGE_DIR, f)}`);
  return { name: folder, files };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const positional = args.filter((a) => !a.startsWith('--'));
  const unknown = args.filter((a) => a.startsWith('--') && a !== '--allow-empty');
  if (positional.length !== 1 || unknown.length > 0) {
    console.error('usage: pnpm --filter @fleet/db migrate:new <name> [--allow-empty]');
    process.exit(2);
  }
  await newMigration(positional[0]!, {
    allowEmpty: args.includes('--allow-empty'),
    log: (msg) => console.log(`@fleet/db: ${msg}`),
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
