// The controller's launcher (bin/relaunch.cjs) and the controller's side of it (launched.ts):
// which start-up settings are added (never over the operator's), that `run` is started again
// with them while other commands are not, and that signals and exit statuses pass through.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ADDED_ENV, onShutdownSignals, PARENT_FD_ENV, takeLauncherEnv, watchLauncher } from './launched.ts';

const require = createRequire(import.meta.url);
const RELAUNCH = require.resolve('../bin/relaunch.cjs');
const { startupSettings, underInspector, ADDED_ENV: CJS_ADDED_ENV, PARENT_FD_ENV: CJS_PARENT_FD_ENV } = require(RELAUNCH) as {
  startupSettings(execArgv: string[], env: Record<string, string | undefined>): { flags: string[]; env: Record<string, string> };
  underInspector(execArgv: string[], env: Record<string, string | undefined>): boolean;
  ADDED_ENV: string;
  PARENT_FD_ENV: string;
};

describe('startupSettings', () => {
  it('adds a small young generation, two malloc arenas and a 16 KiB mmap threshold when the operator chose none', () => {
    expect(startupSettings([], {})).toEqual({ flags: ['--max-semi-space-size=2'], env: { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '16384' } });
  });

  it("keeps the operator's young generation, from the command line or NODE_OPTIONS, in any spelling", () => {
    for (const given of [['--max-semi-space-size=16'], ['--max_semi_space_size', '8'], ['--min-semi-space-size=1'], ['--semi-space-growth-factor=4'], ['--max-heap-size=512']]) {
      expect(startupSettings(given, {}).flags).toEqual([]);
      expect(startupSettings([], { NODE_OPTIONS: `--inspect ${given.join(' ')}` }).flags).toEqual([]);
    }
    // Other flags are not a choice about it.
    expect(startupSettings(['--max-old-space-size=512'], { NODE_OPTIONS: '--enable-source-maps' }).flags).toEqual(['--max-semi-space-size=2']);
  });

  it("keeps the operator's malloc settings, as a variable or a glibc tunable", () => {
    const threshold = { MALLOC_MMAP_THRESHOLD_: '16384' };
    expect(startupSettings([], { MALLOC_ARENA_MAX: '8' }).env).toEqual(threshold);
    expect(startupSettings([], { MALLOC_ARENA_MAX: '' }).env).toEqual(threshold);
    expect(startupSettings([], { GLIBC_TUNABLES: 'glibc.malloc.tcache_count=0:glibc.malloc.arena_max=4' }).env).toEqual(threshold);
    expect(startupSettings([], { GLIBC_TUNABLES: 'glibc.malloc.tcache_count=0' }).env).toEqual({ MALLOC_ARENA_MAX: '2', ...threshold });
    expect(startupSettings([], { MALLOC_MMAP_THRESHOLD_: '131072', GLIBC_TUNABLES: 'glibc.malloc.arena_max=1' }).env).toEqual({});
    expect(startupSettings([], { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=65536' }).env).toEqual({ MALLOC_ARENA_MAX: '2' });
  });

  it('tells when node was asked for its inspector (the launcher then runs the controller in its own process)', () => {
    for (const f of ['--inspect', '--inspect=0', '--inspect-brk', '--inspect-brk=127.0.0.1:9300', '--inspect-wait']) {
      expect(underInspector([f], {})).toBe(true);
      expect(underInspector([], { NODE_OPTIONS: `--max-old-space-size=300 ${f}` })).toBe(true);
    }
    expect(underInspector(['--inspect-port=9300'], {})).toBe(false); // only the port: no inspector started
    expect(underInspector(['--max-semi-space-size=4'], { NODE_OPTIONS: '--enable-source-maps' })).toBe(false);
  });

  it('names its variables as launched.ts does', () => {
    expect(CJS_ADDED_ENV).toBe(ADDED_ENV);
    expect(CJS_PARENT_FD_ENV).toBe(PARENT_FD_ENV);
  });
});

describe('relaunch', () => {
  let dir: string;
  let bin: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'relaunch-'));
    bin = path.join(dir, 'bin.cjs');
    // A stand-in for the controller's bin: relaunch, else "the controller" reports what it got.
    writeFileSync(
      bin,
      `const { relaunch } = require(${JSON.stringify(RELAUNCH)});
if (!relaunch(__filename, process.argv.slice(2))) {
  const v8 = require('node:v8');
  const report = { pid: process.pid, ppid: process.ppid, args: process.argv.slice(2), execArgv: process.execArgv,
    arenaMax: process.env.MALLOC_ARENA_MAX ?? null, mmapThreshold: process.env.MALLOC_MMAP_THRESHOLD_ ?? null, added: process.env.${ADDED_ENV} ?? null, fd: process.env.${PARENT_FD_ENV} ?? null,
    newSpaceMiB: v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size / 1048576 };
  console.log(JSON.stringify(report));
  const mode = process.argv[3];
  if (mode === 'exit') process.exit(7);
  if (mode === 'wait') {
    process.on('SIGTERM', () => { console.log('got SIGTERM'); process.exit(3); });
    process.on('SIGUSR2', () => console.log('got SIGUSR2'));
    setInterval(() => {}, 1000);
  }
  if (mode === 'die') process.kill(process.pid, 'SIGKILL');
}
`,
    );
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const env = (extra: Record<string, string> = {}) => {
    const e: Record<string, string> = { ...(process.env as Record<string, string>), ...extra };
    for (const k of ['MALLOC_ARENA_MAX', 'MALLOC_MMAP_THRESHOLD_', 'GLIBC_TUNABLES', 'NODE_OPTIONS', 'FLEET_CONTROLLER_RELAUNCH']) if (!(k in extra)) delete e[k];
    return e;
  };
  const run = (args: string[], extra?: Record<string, string>, nodeArgs: string[] = []) => {
    const r = spawnSync(process.execPath, [...nodeArgs, bin, ...args], { env: env(extra), encoding: 'utf8' });
    return { status: r.status, signal: r.signal, report: JSON.parse(r.stdout.split('\n')[0]!), stdout: r.stdout, stderr: r.stderr };
  };

  it('starts `run` again with the settings, in a child process', () => {
    const r = run(['run', 'exit']);
    expect(r.status).toBe(7); // the child's exit status is the launcher's
    expect(r.report.execArgv).toEqual(['--max-semi-space-size=2']);
    expect(r.report.args).toEqual(['run', 'exit']);
    expect(r.report.arenaMax).toBe('2');
    expect(r.report.mmapThreshold).toBe('16384');
    expect(r.report.added).toBe('MALLOC_ARENA_MAX,MALLOC_MMAP_THRESHOLD_');
    expect(r.report.fd).toBe('3');
    expect(r.report.newSpaceMiB).toBeLessThanOrEqual(4);
  });

  it('runs other commands, and `run` with everything chosen, FLEET_CONTROLLER_RELAUNCH=0 or under --inspect, in its own process', () => {
    for (const [args, extra, nodeArgs] of [
      [['--version'], {}, []],
      [['ca-fingerprint'], {}, []],
      [['run'], { FLEET_CONTROLLER_RELAUNCH: '0' }, []],
      [['run'], {}, ['--inspect=127.0.0.1:0']],
      [['run'], { MALLOC_ARENA_MAX: '4', MALLOC_MMAP_THRESHOLD_: '65536' }, ['--max-semi-space-size=8']],
      [['run'], { GLIBC_TUNABLES: 'glibc.malloc.arena_max=4:glibc.malloc.mmap_threshold=65536', NODE_OPTIONS: '--max-semi-space-size=8' }, []],
    ] as const) {
      const r = run([...args], extra, [...nodeArgs]);
      expect(r.status).toBe(0);
      expect(r.report.added).toBeNull();
      expect(r.report.execArgv).toEqual(nodeArgs);
    }
  });

  it("adds only what the operator did not choose, and passes the operator's node flags on", () => {
    const r = run(['run'], {}, ['--max-semi-space-size=8', '--max-old-space-size=300']);
    expect(r.report.execArgv).toEqual(['--max-semi-space-size=8', '--max-old-space-size=300']);
    expect(r.report.arenaMax).toBe('2');
    const s = run(['run'], { MALLOC_ARENA_MAX: '6' });
    expect(s.report.execArgv).toEqual(['--max-semi-space-size=2']);
    expect(s.report.arenaMax).toBe('6');
    expect(s.report.added).toBe('MALLOC_MMAP_THRESHOLD_');
  });

  it('forwards signals to the controller and exits as it did', async () => {
    const child = spawn(process.execPath, [bin, 'run', 'wait'], { env: env(), stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const until = async (s: string) => {
      for (let i = 0; i < 200 && !out.includes(s); i++) await new Promise((r) => setTimeout(r, 25));
      expect(out).toContain(s);
    };
    await until('"pid"');
    const report = JSON.parse(out.split('\n')[0]!);
    expect(report.ppid).toBe(child.pid);
    child.kill('SIGUSR2');
    await until('got SIGUSR2');
    child.kill('SIGTERM');
    const [code, signal] = await new Promise<[number | null, string | null]>((r) => child.once('exit', (c, s) => r([c, s])));
    expect(out).toContain('got SIGTERM');
    expect([code, signal]).toEqual([3, null]);
  });

  it('dies of the signal that killed the controller', () => {
    const r = spawnSync(process.execPath, [bin, 'run', 'die'], { env: env(), encoding: 'utf8' });
    expect(r.signal).toBe('SIGKILL');
  });
});

describe('launched', () => {
  it("drops the launcher's variables and what it added, and returns the pipe's fd", () => {
    const env: NodeJS.ProcessEnv = { [ADDED_ENV]: 'MALLOC_ARENA_MAX,MALLOC_TRIM_THRESHOLD_', [PARENT_FD_ENV]: '3', MALLOC_ARENA_MAX: '2', MALLOC_TRIM_THRESHOLD_: '1', PATH: '/bin' };
    expect(takeLauncherEnv(env)).toBe(3);
    expect(env).toEqual({ PATH: '/bin' });
    expect(takeLauncherEnv({ MALLOC_ARENA_MAX: '8' })).toBeUndefined();
    const operator: NodeJS.ProcessEnv = { [ADDED_ENV]: '', [PARENT_FD_ENV]: '3', MALLOC_ARENA_MAX: '8' };
    takeLauncherEnv(operator);
    expect(operator).toEqual({ MALLOC_ARENA_MAX: '8' });
    expect(takeLauncherEnv({ [PARENT_FD_ENV]: '1' })).toBeUndefined();
  });

  it('tells when the launcher is gone', () => {
    // The controller's side in a process of its own: fd 3 is a pipe from its parent (this test),
    // which closes it as a killed launcher would.
    const script = `import { watchLauncher } from ${JSON.stringify(path.join(import.meta.dirname, 'launched.ts'))};
watchLauncher(3, () => { console.log('orphaned'); process.exit(0); });
setTimeout(() => { console.log('still here'); process.exit(1); }, 10000);
console.log('watching');`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('watching')) (child.stdio[3] as NodeJS.WritableStream & { destroy(): void }).destroy();
    });
    return new Promise<void>((resolve) => {
      child.once('exit', (code) => {
        expect(out).toContain('orphaned');
        expect(code).toBe(0);
        resolve();
      });
    });
  });

  it('does nothing without a launcher', () => {
    const orphaned = vi.fn();
    watchLauncher(undefined, orphaned);
    expect(orphaned).not.toHaveBeenCalled();
  });

  it('takes a repeated shutdown signal within the window for the same request, a later one as "now"', () => {
    const handlers = new Map<string, (s: NodeJS.Signals) => void>();
    const kill = vi.fn();
    const proc = {
      pid: 42,
      on: (s: string, h: (s: NodeJS.Signals) => void) => handlers.set(s, h),
      removeListener: (s: string) => handlers.delete(s),
      kill,
    } as unknown as NodeJS.Process;
    const shutdown = vi.fn();
    let now = 1_000_000;
    vi.spyOn(Date, 'now').mockImplementation(() => now);
    try {
      onShutdownSignals(shutdown, 1000, proc);
      handlers.get('SIGTERM')!('SIGTERM');
      expect(shutdown).toHaveBeenCalledWith('SIGTERM');
      now += 200;
      handlers.get('SIGTERM')!('SIGTERM'); // the same SIGTERM, through the launcher
      handlers.get('SIGINT')!('SIGINT');
      expect(shutdown).toHaveBeenCalledTimes(1);
      expect(kill).not.toHaveBeenCalled();
      now += 2000;
      handlers.get('SIGINT')!('SIGINT'); // the operator insists
      expect(kill).toHaveBeenCalledWith(42, 'SIGINT');
      expect(handlers.size).toBe(0);
    } finally {
      vi.restoreAllMocks();
    }
  });
});
