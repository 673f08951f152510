#!/usr/bin/env node
// Builds one bundled ESM program per binary (fleet, fleet-controller, fleet-worker)
// with esbuild, so the bins start without compiling TypeScript through tsx at run time.
//
//   node scripts/build.mjs            build what is stale (nothing when the sources are unchanged)
//   node scripts/build.mjs --force    build everything
//
// Output: apps/<app>/dist/ (ignored by git): <bin>.mjs, any further entry points of the app
// (<name>.mjs: the worker's VM host process) and their lazily loaded chunks (or, for
// the CLI, one CommonJS file <bin>.cjs: see below), and .build-stamp.json: every workspace source file the bundle was made from, with its
// mtime, size and SHA-1. The bin (apps/<app>/bin/*.js, through scripts/bin-launch.cjs)
// runs the bundle only when every one of those files is unchanged (same mtime and size,
// or else the same content); otherwise — or with FLEET_DEV=1 — it runs the TypeScript
// through tsx as before. Editing a source and running the bin without setup therefore
// never runs stale code; it is just slower until `bash scripts/setup.sh` (or this script).
//
// The CLI is one CommonJS file instead: the launcher runs it through vm.Script with a V8 code
// cache (<bin>.cjs.<hash>.v8cache, written on its first run), which Node 20 offers only for
// CommonJS; it also skips the ESM loader and the ESM facades of Node's built-ins (importing
// node:fs as ESM loads its stream classes). Start-up: bench/cli-startup.ts.
//
// Packages under node_modules are bundled too, except those that load files next to
// themselves at run time (native addons, wasm, worker threads): those stay external and
// are imported by absolute path. Workspace sources that use `import.meta.url` to find
// files next to themselves get their own file's URL (relative to the bundle, so the
// checkout can move), not the bundle's.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BUILD_VERSION = 3; // bump when this script's output changes for the same inputs

/** esbuild: a dependency of tsx (root devDependency), so no separate install. */
async function loadEsbuild() {
  try {
    return await import('esbuild');
  } catch {
    const tsxRequire = createRequire(realpathSync(path.join(ROOT, 'node_modules/tsx/package.json')));
    return await import(pathToFileURL(tsxRequire.resolve('esbuild')).href);
  }
}

// Packages kept out of the bundles: they find files next to themselves at run time
// (.node addons, wasm, worker-thread scripts) or are large and needed only by a few commands.
const EXTERNAL = [
  'better-sqlite3',
  'bindings',
  '@prisma/client',
  '@prisma/adapter-better-sqlite3',
  '@prisma/adapter-pg',
  '@prisma/driver-adapter-utils',
  '@prisma/schema-engine-wasm',
  '@prisma/client-runtime-utils',
  'pg',
  'ssh2',
  'cpu-features',
  'esbuild',
  'tsx',
  'vite',
];

export const TARGETS = [
  // undici (a pinned https controller) and yaml (`vm create -f x.yaml`) are imported lazily by a
  // few commands; kept out of the one-file bundle, every other start reads 0.6 MB less.
  { app: 'cli', bin: 'fleet', entry: 'apps/cli/src/main.ts', format: 'cjs', external: ['undici', 'yaml'] },
  // The migration child (apps/controller/bin/migrate-database.cjs): the controller migrates in a
  // short-lived process so that Prisma's schema engine never stays in it (issue 20: memory).
  { app: 'controller', bin: 'fleet-controller', entry: 'apps/controller/src/main.ts', entries: { 'migrate-database': 'prisma/src/migrate-child.ts' } },
  // The VM host process (one per VM, started by the qemu driver through vm-host/launch.mjs) is a
  // second entry of the worker's build: under tsx each one cost ~60 MiB more (bench/worker-memory.ts).
  { app: 'worker', bin: 'fleet-worker', entry: 'apps/worker/src/main.ts', entries: { 'vm-host': 'apps/worker/src/vm-host/main.ts' } },
];

function isExternal(spec, extra = []) {
  return [...EXTERNAL, ...extra].some((name) => spec === name || spec.startsWith(`${name}/`));
}

function sha1(buf) {
  return createHash('sha1').update(buf).digest('hex');
}

/**
 * Is every input recorded in the stamp unchanged? (The same rule the bins apply.) With a target,
 * each of its further entry points must have been built too (a build from before one was added
 * lacks it).
 */
export function stampFresh(outdir, target) {
  for (const name of Object.keys(target?.entries ?? {})) if (!existsSync(path.join(outdir, `${name}.mjs`))) return false;
  let stamp;
  try {
    stamp = JSON.parse(readFileSync(path.join(outdir, '.build-stamp.json'), 'utf8'));
  } catch {
    return false;
  }
  if (stamp.version !== BUILD_VERSION) return false;
  if (!existsSync(path.join(outdir, stamp.main))) return false;
  const base = path.resolve(outdir, stamp.root);
  for (const [rel, mtime, size, hash] of stamp.inputs) {
    let st;
    try {
      st = statSync(path.join(base, rel));
    } catch {
      return false;
    }
    if (st.mtimeMs === mtime && st.size === size) continue;
    if (st.size !== size || sha1(readFileSync(path.join(base, rel))) !== hash) return false;
  }
  return true;
}

function metaUrlPlugin(outdir, format, external) {
  // What import.meta.url of the bundle itself is, in its output format.
  const bundleUrl = format === 'cjs' ? '__fleetBundleUrl' : 'import.meta.url';
  return {
    name: 'fleet-workspace',
    setup(build) {
      // Keep listed packages external, imported by the absolute path Node would resolve
      // from the importing file (pnpm's strict layout: a bare name would not resolve from dist/).
      build.onResolve({ filter: /^[^./]/ }, async (args) => {
        if (args.path.startsWith('node:') || !isExternal(args.path, external)) return undefined;
        if (args.pluginData?.fleetExternal) return undefined;
        const r = await build.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer, pluginData: { fleetExternal: true } });
        if (r.errors.length > 0) return { errors: r.errors };
        if (format !== 'cjs') return { path: pathToFileURL(r.path).href, external: true };
        // A CommonJS bundle runs under vm.Script, where import() has no loader: a lazily
        // imported external becomes a require() that runs when the import would have.
        if (args.kind === 'dynamic-import') return { path: r.path, namespace: 'fleet-require' };
        return { path: r.path, external: true };
      });
      build.onResolve({ filter: /.*/, namespace: 'fleet-require' }, (args) => ({ path: args.path, external: true }));
      build.onLoad({ filter: /.*/, namespace: 'fleet-require' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: 'js' }));
      // Workspace sources: import.meta.url is the source file's own URL, relative to the bundle.
      build.onLoad({ filter: /\.(ts|mts|js|mjs)$/ }, (args) => {
        if (args.path.includes(`${path.sep}node_modules${path.sep}`)) return undefined;
        let text = readFileSync(args.path, 'utf8');
        if (text.includes('import.meta')) {
          const rel = path.relative(outdir, args.path).split(path.sep).join('/');
          const url = `new URL(${JSON.stringify(rel)}, ${bundleUrl}).href`;
          text = text
            .replaceAll('import.meta.url', url)
            .replaceAll('import.meta.dirname', `__fleetPath.dirname(__fleetUrl.fileURLToPath(${url}))`)
            .replaceAll('import.meta.filename', `__fleetUrl.fileURLToPath(${url})`);
        }
        const loader = /\.m?ts$/.test(args.path) ? 'ts' : 'js';
        return { contents: text, loader };
      });
    },
  };
}

function mainFile(target) {
  return `${target.bin}.${target.format === 'cjs' ? 'cjs' : 'mjs'}`;
}

function rank(name, target) {
  return name === '.build-stamp.json' ? 2 : name === mainFile(target) ? 1 : 0;
}

const ESM_BANNER = [
  "import { createRequire as __fleetCreateRequire } from 'node:module';",
  "import * as __fleetPath from 'node:path';",
  "import * as __fleetUrl from 'node:url';",
  'const require = __fleetCreateRequire(import.meta.url);',
].join('\n');
// One line, so that line numbers in stack traces stay those of the bundle.
const CJS_BANNER = "const __fleetPath = require('node:path'), __fleetUrl = require('node:url'), __fleetBundleUrl = __fleetUrl.pathToFileURL(__filename).href;";

async function buildTarget(esbuild, target) {
  const cjs = target.format === 'cjs';
  const outdir = path.join(ROOT, 'apps', target.app, 'dist');
  const tmp = `${outdir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  let result;
  try {
  result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: {
      [target.bin]: path.join(ROOT, target.entry),
      ...Object.fromEntries(Object.entries(target.entries ?? {}).map(([name, file]) => [name, path.join(ROOT, file)])),
    },
    outdir: tmp,
    bundle: true,
    splitting: cjs ? false : true,
    format: cjs ? 'cjs' : 'esm',
    platform: 'node',
    target: 'node20',
    outExtension: { '.js': cjs ? '.cjs' : '.mjs' },
    chunkNames: '[name]-[hash]',
    conditions: ['node'], // plus import/require by how each module is loaded, as Node does
    mainFields: ['main', 'module'],
    metafile: true,
    logLevel: 'warning',
    logOverride: { 'empty-import-meta': 'silent', 'require-resolve-not-external': 'silent' },
    legalComments: 'none',
    minifyWhitespace: true,
    minifySyntax: true,
    // CommonJS packages bundled into ESM call require() for Node built-ins.
    banner: { js: cjs ? CJS_BANNER : ESM_BANNER },
    plugins: [metaUrlPlugin(outdir, target.format, target.external)],
  });
  if (cjs) {
    // vm.Script gives a CommonJS bundle no loader for import(): none may be left in it.
    const out = readFileSync(path.join(tmp, mainFile(target)), 'utf8');
    if (/\bimport\(\s*["'`]/.test(out)) throw new Error(`${target.bin}: the CommonJS bundle still contains an import(): make it a require() (see metaUrlPlugin) or keep the target ESM`);
  }
  } catch (e) {
    // A failed build leaves nothing behind (the previous bundle stays in place).
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const inputs = [];
  for (const file of Object.keys(result.metafile.inputs)) {
    if (file.includes('node_modules/') || file.startsWith('(') || file.includes(':')) continue;
    const abs = path.join(ROOT, file);
    const st = statSync(abs);
    inputs.push([file, st.mtimeMs, st.size, sha1(readFileSync(abs))]);
  }
  inputs.sort((a, b) => a[0].localeCompare(b[0]));
  const hash = sha1(readFileSync(path.join(tmp, mainFile(target)))).slice(0, 16);
  writeFileSync(
    path.join(tmp, '.build-stamp.json'),
    JSON.stringify({
      version: BUILD_VERSION,
      main: mainFile(target),
      format: cjs ? 'cjs' : 'esm',
      // Names the bundle's V8 code cache, so that a cache never meets another build (V8 checks
      // only the source's length).
      hash,
      root: path.relative(outdir, ROOT) || '.',
      inputs,
    }),
  );
  // Into place without removing the previous build at once: a running controller or worker may
  // still import one of its (content-hashed) chunks lazily. Chunks first, then the entry, then
  // the stamp; files of older builds are removed after a day.
  mkdirSync(outdir, { recursive: true });
  const fresh = new Set(readdirSync(tmp));
  const order = [...fresh].sort((a, b) => rank(a, target) - rank(b, target));
  for (const name of order) renameSync(path.join(tmp, name), path.join(outdir, name));
  rmSync(tmp, { recursive: true, force: true });
  for (const name of readdirSync(outdir)) {
    const file = path.join(outdir, name);
    // A code cache is read only at start, so one of an older build can go at once.
    if (name.endsWith('.v8cache') && !name.includes(hash)) rmSync(file, { force: true });
    else if (!fresh.has(name) && !name.endsWith('.v8cache') && Date.now() - statSync(file).mtimeMs > 24 * 3600_000) rmSync(file, { force: true });
  }
  if (cjs) {
    // Write the code cache now (the launcher does it on a first run), so that users who may
    // not write to dist/ get it too.
    const bin = path.join(ROOT, 'apps', target.app, 'bin', `${target.bin}.js`);
    spawnSync(process.execPath, [bin, '--help'], { env: { ...process.env, FLEET_DEV: '0' }, stdio: 'ignore', timeout: 30_000 });
  }
  return inputs.length;
}

async function main() {
  const force = process.argv.includes('--force');
  const todo = TARGETS.filter((t) => force || !stampFresh(path.join(ROOT, 'apps', t.app, 'dist'), t));
  if (todo.length === 0) return;
  const esbuild = await loadEsbuild();
  const started = Date.now();
  for (const t of todo) {
    const n = await buildTarget(esbuild, t);
    process.stderr.write(`[build] apps/${t.app}/dist/${mainFile(t)} (${n} workspace sources)\n`);
  }
  process.stderr.write(`[build] done in ${Date.now() - started} ms\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
