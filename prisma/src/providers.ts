// Where things live, and how the PostgreSQL variant is derived from the one
// schema. `schema.prisma` (provider "sqlite") is the only schema anyone edits.
// The PostgreSQL schema is the same text with the datasource provider and the
// client output swapped; it is written to generated/ by `generate` and never
// checked in. Each provider has its own migrations folder with the same
// migration names, both produced by `migrate:new` from the same schema.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export type Provider = 'sqlite' | 'postgresql';
export const PROVIDERS: readonly Provider[] = ['sqlite', 'postgresql'];

/** The prisma/ package directory. */
export const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const SCHEMA_PATH = path.join(PACKAGE_DIR, 'schema.prisma');
export const GENERATED_DIR = path.join(PACKAGE_DIR, 'generated');

export interface ProviderLayout {
  provider: Provider;
  /** The schema file the engine and `prisma generate` read for this provider. */
  schemaPath: string;
  /** Checked-in migrations, Prisma's standard layout. */
  migrationsDir: string;
  /** Where `prisma generate` writes this provider's client. */
  clientDir: string;
}

export const LAYOUT: Readonly<Record<Provider, ProviderLayout>> = {
  sqlite: {
    provider: 'sqlite',
    schemaPath: SCHEMA_PATH,
    migrationsDir: path.join(PACKAGE_DIR, 'migrations'),
    clientDir: path.join(GENERATED_DIR, 'client'),
  },
  postgresql: {
    provider: 'postgresql',
    schemaPath: path.join(GENERATED_DIR, 'postgresql', 'schema.prisma'),
    migrationsDir: path.join(PACKAGE_DIR, 'postgresql', 'migrations'),
    clientDir: path.join(GENERATED_DIR, 'postgresql', 'client'),
  },
};

const DATASOURCE_PROVIDER_RE = /(datasource\s+\w+\s*\{[^}]*?provider\s*=\s*)"sqlite"/;
const GENERATOR_OUTPUT_RE = /(generator\s+client\s*\{[^}]*?output\s*=\s*)"[^"]*"/;

/**
 * The schema text for a provider, derived from schema.prisma's text.
 * Throws if schema.prisma no longer has the shape this derivation relies on.
 */
export function schemaFor(provider: Provider, sqliteSchema: string): string {
  if (!DATASOURCE_PROVIDER_RE.test(sqliteSchema)) {
    throw new Error('schema.prisma: expected `datasource db { provider = "sqlite" }`');
  }
  if (!GENERATOR_OUTPUT_RE.test(sqliteSchema)) {
    throw new Error('schema.prisma: expected `generator client { output = "..." }`');
  }
  if (provider === 'sqlite') return sqliteSchema;
  const header =
    '// GENERATED from prisma/schema.prisma by prisma/src/generate.ts: do not edit.\n' +
    '// Same models, datasource provider "postgresql".\n\n';
  return (
    header +
    sqliteSchema
      .replace(DATASOURCE_PROVIDER_RE, '$1"postgresql"')
      .replace(GENERATOR_OUTPUT_RE, '$1"./client"')
  );
}

export function readSchema(provider: Provider): string {
  return schemaFor(provider, readFileSync(SCHEMA_PATH, 'utf8'));
}

/** Which provider a database URL is for. */
export function providerOf(url: string): Provider {
  if (url.startsWith('file:')) return 'sqlite';
  if (/^postgres(ql)?:\/\//.test(url)) return 'postgresql';
  throw new Error(
    `unsupported database URL "${redactUrl(url)}": use file:<path> (SQLite) or postgresql://user:pass@host:port/db`,
  );
}

/**
 * The file path of a `file:` URL. Relative paths are relative to the process's
 * working directory. Query parameters are not supported (there is nothing to
 * configure: WAL and the busy timeout are always set).
 */
export function sqlitePath(url: string): string {
  if (!url.startsWith('file:')) throw new Error(`not a SQLite file: URL: ${url}`);
  if (url.includes('?')) {
    throw new Error(`SQLite URL "${url}": query parameters are not supported, use file:<path>`);
  }
  const p = url.startsWith('file://') ? fileURLToPath(url) : url.slice('file:'.length);
  if (p === '' || p === ':memory:') {
    throw new Error(
      `SQLite URL "${url}": an in-memory database is per connection and would be empty after migration; use a file (a temp dir in tests)`,
    );
  }
  return path.resolve(p);
}

/** A URL fit for logs and error messages: the password is replaced by "***". */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*:)[^@/]*@/i, '$1***@');
}
