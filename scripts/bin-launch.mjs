// Shared by apps/*/bin/*.js: runs a binary from its bundle (apps/<app>/dist/, made by
// scripts/build.mjs during setup) when the bundle is up to date, else from the TypeScript
// sources through tsx. Plain JavaScript, no dependencies: this runs on every start.
//
// Up to date = every workspace source file the bundle was built from (listed in
// dist/.build-stamp.json) still has the recorded mtime and size, or else the recorded
// SHA-1. A missing, older-format or stale bundle, or FLEET_DEV=1, runs the sources
// through tsx: a source edited after setup is never run from an old bundle.
// FLEET_DEV=0 runs an existing bundle without that check (benchmarks, or measuring the check).
import module from 'node:module';
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const BUILD_VERSION = 2; // must match scripts/build.mjs

function bundleIsFresh(distDir, check) {
  let stamp;
  try {
    stamp = JSON.parse(readFileSync(`${distDir}/.build-stamp.json`, 'utf8'));
  } catch {
    return null;
  }
  if (stamp.version !== BUILD_VERSION) return null;
  if (!check) return `${distDir}/${stamp.main}`;
  const base = `${distDir}/${stamp.root}`;
  for (const [rel, mtime, size, hash] of stamp.inputs) {
    const file = `${base}/${rel}`;
    const st = statSync(file, { throwIfNoEntry: false });
    if (!st || st.size !== size) return null;
    if (st.mtimeMs === mtime) continue;
    // Touched (a checkout, an editor's save without changes): compare the content.
    if (process.getBuiltinModule('node:crypto').createHash('sha1').update(readFileSync(file)).digest('hex') !== hash) return null;
  }
  return `${distDir}/${stamp.main}`;
}

/**
 * @param {URL} distUrl the app's dist/ folder
 * @param {URL} sourceUrl the TypeScript entry point (src/main.ts)
 */
export async function launch(distUrl, sourceUrl) {
  // Node >= 22.1: cache compiled code between runs (a no-op when NODE_DISABLE_COMPILE_CACHE is set).
  module.enableCompileCache?.();
  const dev = process.env.FLEET_DEV;
  const bundle = dev === '1' ? null : bundleIsFresh(fileURLToPath(distUrl).replace(/\/$/, ''), dev !== '0');
  if (bundle) {
    await import(bundle);
    return;
  }
  const { register } = await import('tsx/esm/api');
  register();
  await import(sourceUrl.href);
}
