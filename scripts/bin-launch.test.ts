// The launcher every bin goes through (scripts/bin-launch.cjs): it runs the bundle only while
// every source it was built from is unchanged, and a CommonJS bundle with a V8 code cache that
// it writes itself and survives being corrupted or missing.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const LAUNCHER = fileURLToPath(new URL('./bin-launch.cjs', import.meta.url));
const BUILD_VERSION = Number(/const BUILD_VERSION = (\d+);/.exec(readFileSync(LAUNCHER, 'utf8'))?.[1]);

let app: string;
beforeEach(() => {
  app = mkdtempSync(path.join(os.tmpdir(), 'bin-launch-'));
  mkdirSync(path.join(app, 'bin'));
  mkdirSync(path.join(app, 'src'));
  mkdirSync(path.join(app, 'dist'));
  // As in apps/*: the package is ESM, its bin/ CommonJS.
  writeFileSync(path.join(app, 'package.json'), '{"type":"module"}');
  writeFileSync(path.join(app, 'bin/package.json'), '{"type":"commonjs"}');
  writeFileSync(path.join(app, 'bin/app.js'), `require(${JSON.stringify(LAUNCHER)}).launch(require('node:path').join(__dirname, '../dist'), require('node:path').join(__dirname, '../src/main.ts'));\n`);
  writeFileSync(path.join(app, 'src/main.ts'), "const from: string = 'sources';\nconsole.log(from, process.argv.slice(2).join(' '));\n");
});
afterEach(() => rmSync(app, { recursive: true, force: true }));

function stamp(format: 'cjs' | 'esm', main: string): void {
  const file = path.join(app, 'src/main.ts');
  const st = statSync(file);
  const hash = createHash('sha1').update(readFileSync(file)).digest('hex');
  const bundleHash = createHash('sha1').update(readFileSync(path.join(app, 'dist', main))).digest('hex').slice(0, 16);
  writeFileSync(
    path.join(app, 'dist/.build-stamp.json'),
    JSON.stringify({ version: BUILD_VERSION, main, format, hash: bundleHash, root: '..', inputs: [['src/main.ts', st.mtimeMs, st.size, hash]] }),
  );
}

function runApp(env: Record<string, string> = {}): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync(process.execPath, [path.join(app, 'bin/app.js'), 'a', 'b'], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 30_000 });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

function caches(): string[] {
  return readdirSync(path.join(app, 'dist')).filter((n) => n.endsWith('.v8cache'));
}

describe('bin-launch', () => {
  it('runs a fresh CommonJS bundle with its arguments, writes its code cache once and then uses it', () => {
    writeFileSync(path.join(app, 'dist/app.cjs'), "console.log('bundle', process.argv.slice(2).join(' '), typeof require, __filename.endsWith('app.cjs'));\n");
    stamp('cjs', 'app.cjs');
    expect(runApp()).toMatchObject({ status: 0, stdout: 'bundle a b function true\n' });
    expect(caches()).toHaveLength(1);
    const [cache] = caches();
    const before = statSync(path.join(app, 'dist', cache!)).mtimeMs;
    expect(runApp().stdout).toBe('bundle a b function true\n');
    // Accepted, so not rewritten.
    expect(statSync(path.join(app, 'dist', cache!)).mtimeMs).toBe(before);
  });

  it('a corrupt code cache is rejected, the bundle still runs and the cache is rewritten', () => {
    writeFileSync(path.join(app, 'dist/app.cjs'), "console.log('bundle');\n");
    stamp('cjs', 'app.cjs');
    runApp();
    const file = path.join(app, 'dist', caches()[0]!);
    writeFileSync(file, 'garbage');
    expect(runApp()).toMatchObject({ status: 0, stdout: 'bundle\n' });
    expect(readFileSync(file).length).toBeGreaterThan(100);
  });

  it('an unwritable dist/ only means no code cache', () => {
    if (process.getuid?.() === 0) {
      // root writes anyway: make the cache's name a directory instead, so that the write fails
      writeFileSync(path.join(app, 'dist/app.cjs'), "console.log('bundle');\n");
      stamp('cjs', 'app.cjs');
      const hash = JSON.parse(readFileSync(path.join(app, 'dist/.build-stamp.json'), 'utf8')).hash as string;
      mkdirSync(path.join(app, 'dist', `app.cjs.${hash}.v8cache`));
    } else {
      writeFileSync(path.join(app, 'dist/app.cjs'), "console.log('bundle');\n");
      stamp('cjs', 'app.cjs');
    }
    expect(runApp()).toMatchObject({ status: 0, stdout: 'bundle\n', stderr: '' });
    expect(readdirSync(path.join(app, 'dist')).filter((n) => /\.v8cache\.\d+$/.test(n))).toEqual([]);
  });

  it('runs an ES module bundle', () => {
    writeFileSync(path.join(app, 'dist/app.mjs'), "console.log('esm bundle', typeof import.meta.url);\n");
    stamp('esm', 'app.mjs');
    expect(runApp()).toMatchObject({ status: 0, stdout: 'esm bundle string\n' });
  });

  it('a source changed since the build runs the sources, not the stale bundle; touched but unchanged still runs the bundle', () => {
    writeFileSync(path.join(app, 'dist/app.cjs'), "console.log('bundle');\n");
    stamp('cjs', 'app.cjs');
    const src = path.join(app, 'src/main.ts');
    utimesSync(src, new Date(), new Date(Date.now() + 5_000)); // touched: same content
    expect(runApp().stdout).toBe('bundle\n');
    writeFileSync(src, "const from: string = 'edited';\nconsole.log(from, process.argv.slice(2).join(' '));\n");
    expect(runApp().stdout).toBe('edited a b\n');
  });

  it('FLEET_DEV=1 runs the sources; FLEET_DEV=0 runs the bundle without checking', () => {
    writeFileSync(path.join(app, 'dist/app.cjs'), "console.log('bundle');\n");
    stamp('cjs', 'app.cjs');
    expect(runApp({ FLEET_DEV: '1' }).stdout).toBe('sources a b\n');
    writeFileSync(path.join(app, 'src/main.ts'), "console.log('edited');\n");
    expect(runApp({ FLEET_DEV: '0' }).stdout).toBe('bundle\n');
  });

  it('runs another entry point of the build when asked (the VM host process); without its file, the sources', () => {
    writeFileSync(path.join(app, 'dist/app.mjs'), "console.log('main bundle');\n");
    stamp('esm', 'app.mjs');
    writeFileSync(path.join(app, 'bin/host.mjs'), `import { createRequire } from 'node:module';\nawait createRequire(import.meta.url)(${JSON.stringify(LAUNCHER)}).launch(${JSON.stringify(path.join(app, 'dist'))}, ${JSON.stringify(path.join(app, 'src/main.ts'))}, 'host.mjs');\n`);
    const runHost = () => spawnSync(process.execPath, [path.join(app, 'bin/host.mjs'), 'c'], { env: { PATH: process.env.PATH ?? '' }, encoding: 'utf8', timeout: 30_000 }).stdout;
    // A build from before the entry existed: its stamp is fresh, but there is no host.mjs.
    expect(runHost()).toBe('sources c\n');
    writeFileSync(path.join(app, 'dist/host.mjs'), "console.log('host bundle', process.argv.slice(2).join(' '));\n");
    expect(runHost()).toBe('host bundle c\n');
    writeFileSync(path.join(app, 'src/main.ts'), "console.log('edited');\n");
    expect(runHost()).toBe('edited\n');
  });

  it('a stamp of another build format runs the sources', () => {
    writeFileSync(path.join(app, 'dist/app.cjs'), "console.log('bundle');\n");
    stamp('cjs', 'app.cjs');
    const s = JSON.parse(readFileSync(path.join(app, 'dist/.build-stamp.json'), 'utf8')) as { version: number };
    writeFileSync(path.join(app, 'dist/.build-stamp.json'), JSON.stringify({ ...s, version: s.version - 1 }));
    expect(runApp().stdout).toBe('sources a b\n');
  });
});
