// `pnpm --filter @fleet/db generate` (run by scripts/setup.sh after pnpm install).
//
// Runs `prisma generate` for both clients, offline:
//   schema.prisma                         -> generated/client             (SQLite)
//   generated/postgresql/schema.prisma    -> generated/postgresql/client  (PostgreSQL)
// The PostgreSQL schema is derived from schema.prisma (see providers.ts).
//
// `prisma generate` insists on locating a schema-engine binary (and tries to
// download one), although generating a client never runs it. We point
// PRISMA_SCHEMA_ENGINE_BINARY at an existing file (this node binary) unless the
// caller set it, and disable Prisma's update check.
//
// Skips all work when generated/.stamp matches the hash of the inputs.
// Flags: --force (regenerate anyway), --check (exit 1 if not up to date).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { GENERATED_DIR, LAYOUT, PACKAGE_DIR, PROVIDERS, SCHEMA_PATH, schemaFor } from './providers.ts';

/** Bump when this script's output changes for the same inputs. */
const GENERATOR_REVISION = 2;
const STAMP_PATH = path.join(GENERATED_DIR, '.stamp');

const require = createRequire(import.meta.url);

function prismaCli(): { cli: string; version: string } {
  const pkgPath = require.resolve('prisma/package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { version: string };
  return { cli: path.join(path.dirname(pkgPath), 'build', 'index.js'), version: pkg.version };
}

export interface GenerateResult {
  generated: boolean;
  ms: number;
}

/** Inputs hash: schema text, Prisma version, this script's revision. */
async function inputsHash(prismaVersion: string): Promise<string> {
  const schema = await readFile(SCHEMA_PATH, 'utf8');
  const h = createHash('sha256');
  h.update(`rev=${GENERATOR_REVISION}\nprisma=${prismaVersion}\n`);
  for (const p of PROVIDERS) h.update(`--- ${p}\n${schemaFor(p, schema)}\n`);
  return h.digest('hex');
}

async function upToDate(hash: string): Promise<boolean> {
  try {
    const stamp = (await readFile(STAMP_PATH, 'utf8')).trim();
    return stamp === hash && PROVIDERS.every((p) => existsSync(path.join(LAYOUT[p].clientDir, 'client.ts')));
  } catch {
    return false;
  }
}

function runPrismaGenerate(cli: string, schemaPath: string): Promise<void> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    // Any existing file will do: `generate` checks for it but never runs it.
    PRISMA_SCHEMA_ENGINE_BINARY: process.env['PRISMA_SCHEMA_ENGINE_BINARY'] || process.execPath,
    CHECKPOINT_DISABLE: '1',
    PRISMA_HIDE_UPDATE_MESSAGE: '1',
    PRISMA_DISABLE_WARNINGS: '1',
  };
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, 'generate', '--schema', schemaPath], {
      cwd: PACKAGE_DIR,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`prisma generate --schema ${path.relative(PACKAGE_DIR, schemaPath)} failed (exit ${code}):\n${out}`));
    });
  });
}

/** The generated client's loader of the query compiler: a base64 string module, decoded at the first query. */
const BASE64_LOADER =
  /getQueryCompilerWasmModule: async \(\) => \{\s*const \{ wasm \} = await import\("(@prisma\/client\/runtime\/query_compiler_[a-z_]+\.[a-z]+\.wasm-base64\.mjs)"\)\s*return await decodeBase64AsWasm\(wasm\)\s*\},/;
export const QUERY_COMPILER_WASM = 'query_compiler.wasm';

/**
 * Issue 20: the client loads its query compiler (3.3 MB of wasm) from a 4.4 MB base64 string
 * module. An ES module's source stays in memory for the life of the process, and so does the
 * exported string: 8.8 MB of the controller's heap, for bytes needed once. Decode it here,
 * once, into <client>/internal/query_compiler.wasm, and make the client compile that file.
 * A client whose loader looks different (another Prisma version) is left as generated.
 */
async function wasmFromFile(clientDir: string, log: (msg: string) => void): Promise<void> {
  const classFile = path.join(clientDir, 'internal', 'class.ts');
  const text = await readFile(classFile, 'utf8');
  const m = BASE64_LOADER.exec(text);
  if (!m) {
    log(`${path.relative(PACKAGE_DIR, classFile)}: the query compiler loader is not the expected base64 import; left as generated`);
    return;
  }
  const clientRequire = createRequire(require.resolve('@prisma/client/package.json'));
  const { wasm } = (await import(pathToFileURL(clientRequire.resolve(m[1]!)).href)) as { wasm: string };
  await writeFile(path.join(clientDir, 'internal', QUERY_COMPILER_WASM), Buffer.from(wasm, 'base64'));
  const loader = [
    'getQueryCompilerWasmModule: async () => {',
    `    // Fleet (prisma/src/generate.ts): the bytes of ${m[1]}, decoded at generate time.`,
    "    const { readFile } = await import('node:fs/promises')",
    `    return new WebAssembly.Module(await readFile(new URL('./${QUERY_COMPILER_WASM}', import.meta.url)))`,
    '  },',
  ].join('\n');
  await writeFile(classFile, text.replace(BASE64_LOADER, loader));
}

export async function generate(opts: { force?: boolean; log?: (msg: string) => void } = {}): Promise<GenerateResult> {
  const log = opts.log ?? (() => {});
  const t0 = performance.now();
  const { cli, version } = prismaCli();
  const hash = await inputsHash(version);
  if (!opts.force && (await upToDate(hash))) {
    return { generated: false, ms: performance.now() - t0 };
  }
  await rm(STAMP_PATH, { force: true });
  const schema = await readFile(SCHEMA_PATH, 'utf8');
  const pg = LAYOUT.postgresql;
  await mkdir(path.dirname(pg.schemaPath), { recursive: true });
  await writeFile(pg.schemaPath, schemaFor('postgresql', schema));
  log(`generating Prisma ${version} clients for ${PROVIDERS.join(', ')}`);
  await Promise.all(PROVIDERS.map((p) => runPrismaGenerate(cli, LAYOUT[p].schemaPath)));
  for (const p of PROVIDERS) await wasmFromFile(LAYOUT[p].clientDir, log);
  await writeFile(STAMP_PATH, hash + '\n');
  return { generated: true, ms: performance.now() - t0 };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const log = (msg: string): void => console.log(`@fleet/db: ${msg}`);
  if (args.includes('--check')) {
    const { version } = prismaCli();
    const ok = await upToDate(await inputsHash(version));
    log(ok ? 'Prisma clients are up to date' : 'Prisma clients are stale: run `pnpm --filter @fleet/db generate`');
    process.exitCode = ok ? 0 : 1;
    return;
  }
  const r = await generate({ force: args.includes('--force'), log });
  log(
    r.generated
      ? `generated Prisma clients in ${Math.round(r.ms)} ms (prisma/generated/)`
      : `Prisma clients up to date (${Math.round(r.ms)} ms)`,
  );
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
