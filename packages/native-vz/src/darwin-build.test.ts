// CI check: the Linux build never compiles the macOS half. It reads binding.gyp (darwin sources
// only under OS=="mac"), then inspects what `pnpm install` actually built here: node-gyp's
// generated makefile and the object files under build/. A darwin source sneaking into a Linux
// build (or into an unconditional source list) fails this test.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const buildDir = path.join(pkgDir, 'build');

interface GypTarget {
  target_name: string;
  sources?: string[];
  conditions?: Array<[string, { sources?: string[]; xcode_settings?: Record<string, unknown>; link_settings?: { libraries?: string[] } }]>;
}

function readGyp(): { targets: GypTarget[] } {
  // binding.gyp is a Python literal; ours is kept JSON-compatible (double-quoted, no comments).
  return JSON.parse(readFileSync(path.join(pkgDir, 'binding.gyp'), 'utf8')) as { targets: GypTarget[] };
}

const isDarwinSource = (s: string): boolean => s.startsWith('src/darwin/') || /\.(mm|m)$/.test(s);

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

describe('binding.gyp keeps the macOS half out of Linux builds', () => {
  const target = readGyp().targets.find((t) => t.target_name === 'native_vz')!;

  it('lists darwin sources only under OS=="mac", and Linux sources only under OS=="linux"', () => {
    expect(target).toBeDefined();
    expect((target.sources ?? []).filter(isDarwinSource)).toEqual([]);
    const conds = target.conditions ?? [];
    const mac = conds.filter(([c]) => c.replace(/\s/g, '') === "OS=='mac'" || c.replace(/\s/g, '') === 'OS=="mac"');
    const linux = conds.filter(([c]) => c.replace(/\s/g, '') === "OS=='linux'" || c.replace(/\s/g, '') === 'OS=="linux"');
    expect(mac).toHaveLength(1);
    expect(linux).toHaveLength(1);
    for (const [cond, body] of conds) {
      if (mac.some(([c]) => c === cond)) continue;
      expect((body.sources ?? []).filter(isDarwinSource), `condition ${cond}`).toEqual([]);
    }
    const macSources = mac[0]![1].sources ?? [];
    expect(macSources.filter((s) => s.startsWith('src/linux/'))).toEqual([]);
    expect(macSources).toEqual(expect.arrayContaining(['src/darwin/vm.mm', 'src/darwin/vmnet.mm', 'src/darwin/addon.mm']));
    // The POSIX fd utilities are one file for both builds (their macOS parts are marked __APPLE__).
    expect(macSources).toContain('src/posix/fd_util.cc');
    expect(linux[0]![1].sources ?? []).toContain('src/posix/fd_util.cc');
  });

  it('names only darwin sources that exist, and builds them with ARC, macOS 13 and the VZ/vmnet frameworks', () => {
    const [, mac] = (target.conditions ?? []).find(([c]) => c.includes('mac'))!;
    for (const s of mac.sources ?? []) expect(existsSync(path.join(pkgDir, s)), s).toBe(true);
    // Every darwin source file on disk is in the list (nothing silently left out of the Mac build).
    const onDisk = readdirSync(path.join(pkgDir, 'src/darwin')).filter((f) => /\.(mm|cc)$/.test(f)).map((f) => `src/darwin/${f}`);
    expect([...(mac.sources ?? [])].filter((f) => f.startsWith('src/darwin/')).sort()).toEqual(onDisk.sort());
    expect(mac.xcode_settings).toMatchObject({ CLANG_ENABLE_OBJC_ARC: 'YES', MACOSX_DEPLOYMENT_TARGET: '13.0' });
    expect(mac.link_settings?.libraries).toEqual(expect.arrayContaining(['-framework Virtualization', '-framework vmnet', '-framework Foundation']));
  });
});

describe('macOS toolchain requirement: Xcode 15+ with the macOS 14 SDK (macOS 14 symbols behind @available, deployment target 13)', () => {
  it('the install script refuses an older SDK with the fix, and accepts 14 and later', async () => {
    // Imported by URL: the script has no type declarations (and importing it does not run the build).
    const script = pathToFileURL(path.join(pkgDir, 'scripts', 'build.mjs')).href;
    const { macSdkProblem, buildNeeds, MIN_MACOS_SDK } = (await import(script)) as {
      macSdkProblem: (v: string | null | undefined) => string | null;
      buildNeeds: (isMac: boolean) => string;
      MIN_MACOS_SDK: number;
    };
    expect(MIN_MACOS_SDK).toBe(14);
    const old = macSdkProblem('13.3\n');
    expect(old).toContain('Xcode 15 or later with the macOS 14 SDK');
    expect(old).toContain('the selected SDK is macOS 13.3');
    for (const v of ['14.0', '14.5\n', '15.2', '26.0']) expect(macSdkProblem(v), v).toBeNull();
    // An unreadable version is left to the compiler.
    for (const v of ['', undefined, null, 'garbage']) expect(macSdkProblem(v)).toBeNull();
    expect(buildNeeds(true)).toContain('Xcode 15 or later with the macOS 14 SDK');
    expect(buildNeeds(false)).toBe('Needs: g++ (C++17), make, python3, Node headers.');
  });

  it('no message or doc in this package claims an older SDK suffices', () => {
    for (const f of ['scripts/build.mjs', 'README.md', 'src/vz.ts']) {
      const text = readFileSync(path.join(pkgDir, f), 'utf8');
      expect(text, f).not.toMatch(/macOS 13\+? SDK|13\+ SDK/);
    }
    expect(readFileSync(path.join(pkgDir, 'README.md'), 'utf8')).toContain('Xcode 15 or later with the macOS 14 SDK');
  });
});

describe.runIf(process.platform === 'linux')('the Linux build that pnpm install produced', () => {
  it('compiled only src/linux and the shared src/posix (generated makefile and object files)', () => {
    if (!existsSync(path.join(buildDir, 'native_vz.target.mk'))) {
      throw new Error(`no node-gyp build under ${buildDir}: run \`pnpm install\` (or \`pnpm --filter @fleet/native-vz rebuild\`) first`);
    }
    const mk = readFileSync(path.join(buildDir, 'native_vz.target.mk'), 'utf8');
    const objs = [...mk.matchAll(/\$\(obj\)\.target\/\$\(TARGET\)\/(\S+)\.o/g)].map((m) => m[1]!);
    expect(objs.length).toBeGreaterThan(0);
    expect(objs.every((o) => o.startsWith('src/linux/') || o.startsWith('src/posix/'))).toBe(true);
    expect(mk).not.toMatch(/src\/darwin|\.mm\b|-framework/);

    const objDir = path.join(buildDir, 'Release', 'obj.target', 'native_vz');
    const built = walk(objDir).map((f) => path.relative(objDir, f)).filter((f) => f.endsWith('.o'));
    expect(built.length).toBeGreaterThan(0);
    expect(built.filter((f) => !f.startsWith(`src${path.sep}linux${path.sep}`) && !f.startsWith(`src${path.sep}posix${path.sep}`))).toEqual([]);
  });

  it('loads as the Linux addon, without any Virtualization.framework export', () => {
    const require = createRequire(import.meta.url);
    const addon = require(path.join(buildDir, 'Release', 'native_vz.node')) as Record<string, unknown>;
    expect(addon.platform).toBe('linux');
    for (const k of ['VirtualMachine', 'VmnetInterface', 'isSupported', 'loadRestoreImage']) expect(addon[k], k).toBeUndefined();
    expect(typeof addon.FramePort).toBe('function');
  });
});
