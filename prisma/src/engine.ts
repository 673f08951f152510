// Prisma's schema engine (migrations, diffs) compiled to WebAssembly, driven
// through a driver adapter. Works offline: no schema-engine binary download.
//
// The package's own entry (`schema_engine.js`) does `import * as wasm from
// "./schema_engine_bg.wasm"`, an ESM WebAssembly import that Node 20 only
// accepts with --experimental-wasm-modules. We load the JS glue
// (`schema_engine_bg.js`) ourselves, compile the .wasm with the WebAssembly
// API and hand the instance to the glue. The instance is created once per
// process and reused.
//
// The glue is imported only when an engine is first needed, not with this module: the
// controller imports @fleet/db (and so this file) but migrates in a child process
// (migrate-process.ts), and must never load the schema engine itself (issue 20: memory).
import { readdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import type {
  MigrationDirectory,
  MigrationList,
  SchemaContainer,
  SchemaEngine,
  SchemaFilter,
} from '@prisma/schema-engine-wasm/schema_engine_bg';
import {
  bindMigrationAwareSqlAdapterFactory,
  type SqlMigrationAwareDriverAdapterFactory,
} from '@prisma/driver-adapter-utils';

export type { MigrationList, SchemaContainer, SchemaEngine };

const require = createRequire(import.meta.url);

// The project's lib settings (ES2023, no DOM) do not declare the WebAssembly
// JS API, so describe the one call we make.
interface WasmApi {
  instantiate(
    bytes: Uint8Array,
    imports: Record<string, Record<string, unknown>>,
  ): Promise<{ instance: { exports: Record<string, unknown> } }>;
}
const wasmApi = (): WasmApi => (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

type Glue = typeof import('@prisma/schema-engine-wasm/schema_engine_bg');

let ready: Promise<Glue> | undefined;
/** Set once this process has started loading the schema engine (see schemaEngineLoaded). */
let loaded = false;

/** Compile and instantiate the schema engine's WebAssembly module (once); resolves to its glue. */
export function loadSchemaEngineWasm(): Promise<Glue> {
  ready ??= (async () => {
    loaded = true;
    const glue = await import('@prisma/schema-engine-wasm/schema_engine_bg');
    const gluePath = require.resolve('@prisma/schema-engine-wasm/schema_engine_bg');
    const wasmPath = path.join(path.dirname(gluePath), 'schema_engine_bg.wasm');
    const bytes = await readFile(wasmPath);
    // The module imports every glue function from "./schema_engine_bg.js".
    const { instance } = await wasmApi().instantiate(bytes, { './schema_engine_bg.js': { ...glue } });
    glue.__wbg_set_wasm(instance.exports);
    const start = instance.exports['__wbindgen_start'];
    if (typeof start === 'function') start();
    return glue;
  })();
  ready.catch(() => {
    ready = undefined;
  });
  return ready;
}

/**
 * Whether this process ever loaded (or began to load) the schema engine. Its wasm instance
 * cannot be released again (wasm-bindgen's glue keeps views of its memory), so a process that
 * must stay small, the controller, checks this (tests) after migrating in a child process.
 */
export function schemaEngineLoaded(): boolean {
  return loaded;
}

/** The engine reports its log lines as JSON strings. */
export type EngineLog = (line: string) => void;

/**
 * Start a schema engine bound to a migration-aware driver adapter factory.
 * Call `engine.free()` when done.
 */
export async function startSchemaEngine(opts: {
  schema: SchemaContainer;
  adapterFactory: SqlMigrationAwareDriverAdapterFactory;
  log?: EngineLog;
}): Promise<SchemaEngine> {
  const glue = await loadSchemaEngineWasm();
  const log: EngineLog = opts.log ?? (() => {});
  const bound = bindMigrationAwareSqlAdapterFactory(opts.adapterFactory);
  let engine: SchemaEngine;
  try {
    engine = await glue.SchemaEngine.new(
      { datamodels: [[opts.schema.path, opts.schema.content]] },
      (line: unknown) => log(String(line)),
      bound,
    );
  } catch (err) {
    throw new Error(resolveParkedErrors(rawEngineErrorMessage(err), bound.errorRegistry), { cause: err });
  }
  registries.set(engine, bound.errorRegistry);
  return engine;
}

/** Errors thrown by adapter code are parked in the bound factory's registry; the engine only says "External error id#N". */
const registries = new WeakMap<SchemaEngine, ErrorRegistry>();

export const NO_FILTER: SchemaFilter = { externalTables: [], externalEnums: [] };

/** Prisma's standard migration folder name: 14-digit UTC timestamp + "_" + name. */
export const MIGRATION_DIR_RE = /^\d{14}_[A-Za-z0-9_]+$/;

/**
 * Read a migrations folder (Prisma's standard layout: `<dir>/<timestamp>_<name>/migration.sql`
 * and `<dir>/migration_lock.toml`) into the shape the schema engine expects.
 * A missing folder is an empty list.
 */
export async function readMigrationsDir(baseDir: string): Promise<MigrationList> {
  let entries: string[] = [];
  try {
    entries = (await readdir(baseDir, { withFileTypes: true }))
      .filter((e) => e.isDirectory() && MIGRATION_DIR_RE.test(e.name))
      .map((e) => e.name)
      .sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const migrationDirectories: MigrationDirectory[] = await Promise.all(
    entries.map(async (name): Promise<MigrationDirectory> => {
      const file = path.join(baseDir, name, 'migration.sql');
      try {
        return {
          path: name,
          migrationFile: { path: 'migration.sql', content: { tag: 'ok', value: await readFile(file, 'utf8') } },
        };
      } catch (err) {
        return {
          path: name,
          migrationFile: { path: 'migration.sql', content: { tag: 'error', value: String(err) } },
        };
      }
    }),
  );
  let lockContent: string | null = null;
  try {
    lockContent = await readFile(path.join(baseDir, 'migration_lock.toml'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return {
    baseDir,
    lockfile: { path: 'migration_lock.toml', content: lockContent },
    shadowDbInitScript: '',
    migrationDirectories,
  };
}

/**
 * Errors from the engine arrive as plain objects or Error instances carrying a
 * message (and sometimes a Prisma error code such as P3009). Turn them into text.
 */
export function engineErrorMessage(err: unknown, engine?: SchemaEngine): string {
  const text = rawEngineErrorMessage(err);
  const registry = engine && registries.get(engine);
  return registry ? resolveParkedErrors(text, registry) : text;
}

type ErrorRegistry = { consumeError(id: number): { error: unknown } | undefined };

function resolveParkedErrors(text: string, registry: ErrorRegistry): string {
  return text.replace(/External error id#(\d+)/g, (whole, id: string) => {
    const parked = registry.consumeError(Number(id))?.error;
    return parked === undefined ? whole : rawEngineErrorMessage(parked);
  });
}

function rawEngineErrorMessage(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && /^P\d{4}$/.test(code) && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  if (typeof err === 'object' && err !== null) {
    const o = err as Record<string, unknown>;
    const code = typeof o['error_code'] === 'string' ? `${o['error_code']}: ` : '';
    if (typeof o['message'] === 'string') return code + o['message'];
    try {
      return JSON.stringify(err);
    } catch {
      return String(err);
    }
  }
  return String(err);
}
