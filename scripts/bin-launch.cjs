// Shared by apps/*/bin/*.js: runs a binary from its bundle (apps/<app>/dist/, made by
// scripts/build.mjs during setup) when the bundle is up to date, else from the TypeScript
// sources through tsx. Plain JavaScript, no dependencies: this runs on every start.
//
// Up to date = every workspace source file the bundle was built from (listed in
// dist/.build-stamp.json) still has the recorded mtime and size, or else the recorded
// SHA-1. A missing, older-format or stale bundle, or FLEET_DEV=1, runs the sources
// through tsx: a source edited after setup is never run from an old bundle.
// FLEET_DEV=0 runs an existing bundle without that check (benchmarks, or measuring the check).
//
// A CommonJS bundle (the CLI) runs through vm.Script with a V8 code cache next to it
// (<main>.<hash>.v8cache), written at exit when it was missing or rejected, so later starts
// skip parsing and compiling what earlier runs compiled. Not writable (another user's
// checkout): it runs without one.
//
// CommonJS, like the bins (apps/*/bin/package.json): the ESM loader and the ESM facades of
// built-ins (importing node:fs as ESM loads its stream classes) cost ~7 ms of every start.
'use strict';
const Module = require('node:module');
const { readFileSync, renameSync, rmSync, statSync, writeFileSync } = require('node:fs');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const vm = require('node:vm');

const BUILD_VERSION = 3; // must match scripts/build.mjs

function bundleIsFresh(distDir, check) {
  let stamp;
  try {
    stamp = JSON.parse(readFileSync(`${distDir}/.build-stamp.json`, 'utf8'));
  } catch {
    return null;
  }
  if (stamp.version !== BUILD_VERSION) return null;
  const bundle = { file: `${distDir}/${stamp.main}`, format: stamp.format, hash: stamp.hash };
  if (!check) return bundle;
  const base = `${distDir}/${stamp.root}`;
  for (const [rel, mtime, size, hash] of stamp.inputs) {
    const file = `${base}/${rel}`;
    const st = statSync(file, { throwIfNoEntry: false });
    if (!st || st.size !== size) return null;
    if (st.mtimeMs === mtime) continue;
    // Touched (a checkout, an editor's save without changes): compare the content.
    if (require('node:crypto').createHash('sha1').update(readFileSync(file)).digest('hex') !== hash) return null;
  }
  return bundle;
}

/** Runs a CommonJS bundle as the main program, with its V8 code cache. */
function runCommonJs(file, hash) {
  const cacheFile = `${file}.${hash}.v8cache`;
  let cachedData;
  try {
    cachedData = readFileSync(cacheFile);
  } catch {
    cachedData = undefined;
  }
  // The wrapper stays on the bundle's first line, so its line numbers are the bundle's.
  const source = `(function (exports, require, module, __filename, __dirname) { ${readFileSync(file, 'utf8')}\n})`;
  const script = new vm.Script(source, { filename: file, cachedData });
  if (cachedData === undefined || script.cachedDataRejected) {
    process.once('exit', () => {
      const tmp = `${cacheFile}.${process.pid}`;
      try {
        writeFileSync(tmp, script.createCachedData());
        renameSync(tmp, cacheFile);
      } catch {
        // Not ours to write: start without a cache.
        rmSync(tmp, { force: true });
      }
    });
  }
  const exports = {};
  const wrapper = script.runInThisContext();
  wrapper.call(exports, exports, Module.createRequire(file), { exports, filename: file, id: '.' }, file, path.dirname(file));
}

/**
 * @param {string} distDir the app's dist/ folder
 * @param {string} sourceFile the TypeScript entry point (src/main.ts)
 * @param {string} [entry] another entry point of the same (ESM) build to run instead of its main
 *   one, e.g. the worker's VM host process (dist/vm-host.mjs); sourceFile is then that entry's source
 */
async function launch(distDir, sourceFile, entry) {
  // Node >= 22.1: cache compiled code between runs (a no-op when NODE_DISABLE_COMPILE_CACHE is set).
  Module.enableCompileCache?.();
  const dev = process.env.FLEET_DEV;
  let bundle = dev === '1' ? null : bundleIsFresh(distDir, dev !== '0');
  if (bundle && entry !== undefined) {
    // The build's stamp covers every entry's sources; a build from before the entry existed lacks its file.
    const file = `${distDir}/${entry}`;
    bundle = bundle.format === 'esm' && statSync(file, { throwIfNoEntry: false }) ? { ...bundle, file } : null;
  }
  if (bundle?.format === 'cjs') {
    runCommonJs(bundle.file, bundle.hash);
    return;
  }
  if (bundle) {
    await import(pathToFileURL(bundle.file).href);
    return;
  }
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(sourceFile).href);
}

module.exports = { launch };
