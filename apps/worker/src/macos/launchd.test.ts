import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { installLaunchd, launchdPlist, launchdPlistPath, uninstallLaunchd, type LaunchdSpec } from './launchd.ts';
import type { RunCommand } from './run-command.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'fleet-launchd-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const spec = (): LaunchdSpec => ({
  node: '/opt/homebrew/bin/node',
  script: '/opt/fleet/apps/worker/bin/fleet-worker.mjs',
  args: ['run', '--driver', 'vz', '--name', 'mac-mini-1 & <2>'],
  workingDirectory: '/opt/fleet',
  logFile: path.join(dir, 'log', 'fleet-worker.log'),
  env: { FLEET_DATA_DIR: '/var/lib/fleet' },
});

describe('launchd plist', () => {
  it('is a LaunchDaemon that runs the worker at boot and restarts it after a crash', () => {
    const xml = launchdPlist(spec());
    expect(xml).toContain('<key>Label</key>\n\t<string>dev.fleet.worker</string>');
    expect(xml).toContain(
      '<key>ProgramArguments</key>\n\t<array>\n\t\t<string>/opt/homebrew/bin/node</string>\n\t\t<string>/opt/fleet/apps/worker/bin/fleet-worker.mjs</string>\n\t\t<string>run</string>\n\t\t<string>--driver</string>\n\t\t<string>vz</string>\n\t\t<string>--name</string>\n\t\t<string>mac-mini-1 &amp; &lt;2&gt;</string>\n\t</array>',
    );
    expect(xml).toContain('<key>RunAtLoad</key>\n\t<true/>');
    expect(xml).toContain('<key>KeepAlive</key>\n\t<dict>\n\t\t<key>SuccessfulExit</key>\n\t\t<false/>\n\t</dict>');
    expect(xml).toContain('<key>FLEET_DATA_DIR</key>\n\t\t<string>/var/lib/fleet</string>');
    expect(xml).toContain(`<key>StandardErrorPath</key>\n\t<string>${spec().logFile}</string>`);
    expect(() => launchdPlist({ ...spec(), node: 'node' })).toThrow(/node must be an absolute path/);
  });

  it('install writes the plist and bootstraps it in the system domain; uninstall boots it out and removes it', async () => {
    const calls: string[][] = [];
    const run: RunCommand = async (cmd, args) => {
      calls.push([cmd, ...args]);
      return args[0] === 'bootout' ? { code: 3, stdout: '', stderr: 'Boot-out failed: 3: No such process' } : { code: 0, stdout: '', stderr: '' };
    };
    const done = await installLaunchd(spec(), { run, dir, isRoot: true });
    const file = launchdPlistPath('dev.fleet.worker', dir);
    expect(await readFile(file, 'utf8')).toBe(launchdPlist(spec()));
    expect((await stat(file)).mode & 0o777).toBe(0o644);
    expect(done).toEqual([
      ['/bin/launchctl', 'bootout', 'system/dev.fleet.worker'],
      // enable before bootstrap: launchd will not bootstrap a label marked disabled.
      ['/bin/launchctl', 'enable', 'system/dev.fleet.worker'],
      ['/bin/launchctl', 'bootstrap', 'system', file],
    ]);
    expect(calls).toEqual(done);
    await uninstallLaunchd({ run, dir, isRoot: true });
    await expect(stat(file)).rejects.toThrow();
    await uninstallLaunchd({ run, dir, isRoot: true }); // idempotent
  });

  it('stops at a failed enable before bootstrapping', async () => {
    const calls: string[][] = [];
    const run: RunCommand = async (cmd, args) => {
      calls.push([cmd, ...args]);
      return args[0] === 'enable' ? { code: 1, stdout: '', stderr: 'Operation not permitted' } : { code: 0, stdout: '', stderr: '' };
    };
    await expect(installLaunchd(spec(), { run, dir, isRoot: true })).rejects.toThrow('launchctl enable system/dev.fleet.worker failed: Operation not permitted');
    expect(calls.map((c) => c[1])).toEqual(['bootout', 'enable']);
  });

  it('needs root and says so; a failed bootstrap is an error', async () => {
    await expect(installLaunchd(spec(), { dir, isRoot: false })).rejects.toThrow(/run it with sudo/);
    await expect(uninstallLaunchd({ dir, isRoot: false })).rejects.toThrow(/run it with sudo/);
    const run: RunCommand = async (_c, args) => (args[0] === 'bootstrap' ? { code: 5, stdout: '', stderr: 'Bootstrap failed: 5: Input/output error' } : { code: 0, stdout: '', stderr: '' });
    await expect(installLaunchd(spec(), { run, dir, isRoot: true })).rejects.toThrow('launchctl bootstrap system ' + launchdPlistPath('dev.fleet.worker', dir) + ' failed: Bootstrap failed: 5: Input/output error');
  });
});
