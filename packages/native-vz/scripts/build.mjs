#!/usr/bin/env node
// Install script for @fleet/native-vz: checks the build toolchain, then runs `node-gyp rebuild`.
// A missing compiler, make, python3 or Node headers fails the install with a message that says
// what to install, instead of node-gyp's long stack of errors (or an attempt to download headers).
//
//   node scripts/build.mjs            (what `pnpm install` runs)
//   FLEET_NATIVE_VZ_SKIP_BUILD=1 ...  (skip, e.g. in a container that never touches VMs)
//
// macOS: the sources use macOS 14 APIs (VZMacKeyboardConfiguration, save/restore) behind
// @available, with a macOS 13 deployment target, so they need the macOS 14 SDK or newer to
// compile: Xcode 15 or later, or its Command Line Tools. The helpers below are exported for tests.
import { spawnSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The oldest macOS SDK the darwin sources compile against. */
export const MIN_MACOS_SDK = 14;
export const MACOS_TOOLCHAIN = 'Xcode 15 or later with the macOS 14 SDK (or newer), or its Command Line Tools';

/**
 * What is wrong with this macOS SDK version (`xcrun --sdk macosx --show-sdk-version`, e.g.
 * "14.5"), or null if it will do. An unreadable version is not a reason to refuse: the compiler
 * will say.
 */
export function macSdkProblem(version) {
  const major = Number(String(version ?? '').trim().split('.')[0]);
  if (!Number.isInteger(major) || major <= 0) return null;
  if (major >= MIN_MACOS_SDK) return null;
  return `${MACOS_TOOLCHAIN}: the selected SDK is macOS ${String(version).trim()}, which lacks macOS 14 symbols; install Xcode 15+ (or its Command Line Tools: xcode-select --install, softwareupdate) and select it with xcode-select -s`;
}

/** The hint printed when node-gyp fails. */
export function buildNeeds(isMac) {
  return isMac
    ? `Needs: ${MACOS_TOOLCHAIN} (clang, macOS 13 deployment target), make, python3, Node headers. The macOS sources have not been compiled by their authors yet: see docs/macos.md.`
    : 'Needs: g++ (C++17), make, python3, Node headers.';
}

const invokedDirectly = (() => {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
})();
if (invokedDirectly) main();

function main() {
  const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const require = createRequire(path.join(pkgDir, 'package.json'));
  const tag = '@fleet/native-vz';

  function fail(lines) {
    console.error(`\n${tag}: cannot build the native addon.\n  ${lines.join('\n  ')}\n`);
    process.exit(1);
  }

  if (process.env.FLEET_NATIVE_VZ_SKIP_BUILD === '1') {
    console.warn(`${tag}: FLEET_NATIVE_VZ_SKIP_BUILD=1, not building (importing the package will fail).`);
    process.exit(0);
  }

  const isMac = process.platform === 'darwin';
  if (!isMac && process.platform !== 'linux') {
    console.warn(`${tag}: unsupported platform ${process.platform}; skipping the native build.`);
    process.exit(0);
  }

  function has(cmd, args = ['--version']) {
    const r = spawnSync(cmd, args, { stdio: 'ignore' });
    return r.status === 0;
  }

  const missing = [];
  if (isMac) {
    // macOS half: Objective-C++ against the macOS SDK (Virtualization, vmnet) with Apple's clang.
    if (!has('xcrun', ['--sdk', 'macosx', '--show-sdk-path'])) {
      missing.push(`${MACOS_TOOLCHAIN} (macOS SDK, clang): xcode-select --install`);
    } else {
      const sdk = spawnSync('xcrun', ['--sdk', 'macosx', '--show-sdk-version'], { encoding: 'utf8' });
      const problem = sdk.status === 0 ? macSdkProblem(sdk.stdout) : null;
      if (problem) missing.push(problem);
    }
    if (!has('make')) missing.push('make: xcode-select --install');
    if (!has(process.env.PYTHON || 'python3')) missing.push('python3 (node-gyp needs it): xcode-select --install, or brew install python');
  } else {
    const cxx = process.env.CXX || 'g++';
    if (!has(cxx)) missing.push(`a C++17 compiler (${cxx}): apt-get install g++   (or set CXX)`);
    if (!has('make')) missing.push('make: apt-get install make');
    if (!has(process.env.PYTHON || 'python3')) missing.push('python3 (node-gyp needs it): apt-get install python3');
  }

  // Node headers: an explicit nodedir, or headers next to this node binary (Debian/NodeSource
  // packages: /usr/include/node), or node-gyp's cache. Without them node-gyp tries to download
  // them, which fails offline with an unhelpful error.
  const nodedirCandidates = [
    process.env.npm_config_nodedir,
    process.env.NODEDIR,
    path.resolve(path.dirname(process.execPath), '..'),
  ].filter((d) => typeof d === 'string' && d.length > 0);
  const nodedir = nodedirCandidates.find((d) => existsSync(path.join(d, 'include', 'node', 'node_api.h')));
  const version = process.versions.node;
  const cacheDirs = [
    process.env.npm_config_devdir,
    path.join(process.env.HOME ?? '', '.cache', 'node-gyp', version),
    path.join(process.env.XDG_CACHE_HOME ?? '', 'node-gyp', version),
  ].filter((d) => typeof d === 'string' && d.length > 0);
  const cached = cacheDirs.some((d) => existsSync(path.join(d, 'include', 'node', 'node_api.h')));
  if (!nodedir && !cached) {
    missing.push(
      `Node.js ${version} headers (node_api.h): install your distribution's Node headers (Debian/NodeSource: they ship in /usr/include/node), ` +
        `or run \`npx node-gyp install\` once with network access, or set npm_config_nodedir to a Node source/headers tree`,
    );
  }

  let gypBin;
  let addonApi;
  try {
    gypBin = require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    missing.push('the node-gyp package (a dependency of this package): run pnpm install again');
  }
  try {
    addonApi = require('node-addon-api');
  } catch {
    missing.push('the node-addon-api package (a dependency of this package): run pnpm install again');
  }
  if (missing.length > 0) fail(['Missing:', ...missing.map((m) => `  - ${m}`)]);
  void addonApi;

  const args = [gypBin, 'rebuild'];
  if (nodedir) args.push(`--nodedir=${nodedir}`);
  console.log(`${tag}: node-gyp rebuild${nodedir ? ` (headers from ${nodedir}/include/node)` : ''}`);
  const r = spawnSync(process.execPath, args, { cwd: pkgDir, stdio: 'inherit' });
  if (r.status !== 0) {
    fail([
      `node-gyp rebuild exited with ${r.status ?? r.signal}. See the compiler output above.`,
      buildNeeds(isMac),
    ]);
  }
}
