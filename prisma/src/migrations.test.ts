import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { diffMigrationsToSchema, isEmptyScript } from './migrations.ts';
import { nextMigrationName, normalizeName } from './new-migration.ts';
import { LAYOUT, PROVIDERS, providerOf, readSchema, redactUrl, schemaFor, sqlitePath } from './providers.ts';

const HOW_TO_FIX = 'schema.prisma changed without a migration: run `pnpm --filter @fleet/db migrate:new <name>`. Missing SQL:\n';

describe('checked-in migrations', () => {
  const names = (dir: string): string[] =>
    readdirSync(dir)
      .filter((d) => /^\d{14}_/.test(d))
      .sort();

  it('exist for both providers, with the same names, in Prisma layout', () => {
    const sqlite = names(LAYOUT.sqlite.migrationsDir);
    expect(sqlite.length).toBeGreaterThan(0);
    expect(names(LAYOUT.postgresql.migrationsDir)).toEqual(sqlite);
    for (const p of PROVIDERS) {
      const dir = LAYOUT[p].migrationsDir;
      expect(readFileSync(path.join(dir, 'migration_lock.toml'), 'utf8')).toContain(`provider = "${p}"`);
      for (const n of sqlite) expect(existsSync(path.join(dir, n, 'migration.sql'))).toBe(true);
    }
  });

  it('build exactly what schema.prisma describes (SQLite)', async () => {
    const missing = await diffMigrationsToSchema('sqlite');
    expect(missing, HOW_TO_FIX + missing).toBe('');
  });
  // The PostgreSQL folder gets the same check in postgres.test.ts (it needs a server).
});

describe('providers', () => {
  it('derives the PostgreSQL schema by swapping the provider and client output only', () => {
    const sqlite = readSchema('sqlite');
    const pg = schemaFor('postgresql', sqlite);
    expect(pg).toContain('provider = "postgresql"');
    expect(pg).toContain('output       = "./client"');
    expect(pg).not.toContain('"sqlite"');
    const models = (s: string): string => s.slice(s.indexOf('\nmodel '));
    expect(models(pg)).toBe(models(sqlite));
  });

  it('recognises database URLs', () => {
    expect(providerOf('file:./x.db')).toBe('sqlite');
    expect(providerOf('postgresql://u:p@h:5432/db')).toBe('postgresql');
    expect(providerOf('postgres://u@h/db')).toBe('postgresql');
    expect(() => providerOf('mysql://h/db')).toThrow(/unsupported database URL/);
    expect(sqlitePath('file:/var/lib/fleet/fleet.db')).toBe('/var/lib/fleet/fleet.db');
    expect(sqlitePath('file:///var/lib/fleet/fleet.db')).toBe('/var/lib/fleet/fleet.db');
    expect(sqlitePath('file:data/fleet.db')).toBe(path.resolve('data/fleet.db'));
    expect(redactUrl('postgresql://fleet:s3cret@db:5432/fleet')).toBe('postgresql://fleet:***@db:5432/fleet');
  });
});

describe('migrate:new helpers', () => {
  it('names migrations like Prisma, always after the last one', () => {
    const now = new Date(Date.UTC(2025, 0, 2, 3, 4, 5));
    expect(nextMigrationName('add_x', [], now)).toBe('20250102030405_add_x');
    expect(nextMigrationName('add_x', ['20250102030405_init'], now)).toBe('20250102030406_add_x');
    expect(nextMigrationName('add_x', ['20301231235959_late'], now)).toBe('20310101000000_add_x');
    expect(normalizeName('Add VM notes')).toBe('add_vm_notes');
    expect(() => normalizeName('drop; table')).toThrow();
  });

  it('treats comment-only scripts as empty', () => {
    expect(isEmptyScript('-- This is an empty migration.\n')).toBe(true);
    expect(isEmptyScript('')).toBe(true);
    expect(isEmptyScript('-- AlterTable\nALTER TABLE "Vm" ADD COLUMN "x" TEXT;\n')).toBe(false);
  });
});
