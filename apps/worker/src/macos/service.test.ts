import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NotMacOSError, WORKER_BIN, installService, uninstallService } from './service.ts';
import type { RunCommand } from './run-command.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'fleet-svc-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('fleet-worker install / uninstall', () => {
  it('are macOS-only, with a clear message elsewhere', async () => {
    await expect(installService({ runArgs: [] }, { platform: 'linux' })).rejects.toThrow(NotMacOSError);
    await expect(installService({ runArgs: [] }, { platform: 'linux' })).rejects.toThrow(/only on macOS .* on linux run `fleet-worker run` under your service manager/);
    await expect(uninstallService({ platform: 'linux' })).rejects.toThrow(/fleet-worker uninstall is only on macOS/);
  });

  it('installs a daemon that runs `fleet-worker run …` with this node and checkout', async () => {
    const calls: string[][] = [];
    const run: RunCommand = async (c, a) => (calls.push([c, ...a]), { code: 0, stdout: '', stderr: '' });
    const lines = await installService(
      { runArgs: ['--driver', 'vz', '--data-dir', '/var/lib/fleet'], logFile: path.join(dir, 'w.log') },
      { platform: 'darwin', run, dir, isRoot: true, node: '/usr/local/bin/node' },
    );
    const plist = await readFile(path.join(dir, 'dev.fleet.worker.plist'), 'utf8');
    expect(plist).toContain(`<string>/usr/local/bin/node</string>\n\t\t<string>${WORKER_BIN}</string>\n\t\t<string>run</string>\n\t\t<string>--driver</string>\n\t\t<string>vz</string>`);
    expect(plist).toContain(`<key>WorkingDirectory</key>\n\t<string>${path.resolve(path.dirname(WORKER_BIN), '..')}</string>`);
    expect(lines[0]).toMatch(/^installed .*dev\.fleet\.worker\.plist \(starts at boot/);
    expect(calls.map((c) => c[1])).toEqual(['bootout', 'enable', 'bootstrap']);
    expect((await uninstallService({ platform: 'darwin', run, dir, isRoot: true }))[0]).toMatch(/^removed /);
  });
});

describe.runIf(process.platform !== 'darwin')('fleet-worker install / uninstall on a non-macOS host (CLI)', () => {
  it('print an "only on macOS" error and exit 2', async () => {
    const { runCli, EXIT } = await import('../cli.ts');
    for (const argv of [['install', '--driver', 'vz', '--data-dir', '/var/lib/fleet'], ['uninstall']]) {
      const out: string[] = [];
      const err: string[] = [];
      let code = -1;
      await runCli(['node', 'fleet-worker', ...argv], { out: (l) => out.push(l), err: (l) => err.push(l) }, (c) => (code = c));
      expect(code).toBe(EXIT.usage);
      expect(out).toEqual([]);
      expect(err.join('\n')).toMatch(new RegExp(`^fleet-worker ${argv[0]}: fleet-worker ${argv[0]} is only on macOS`));
    }
  });
});
