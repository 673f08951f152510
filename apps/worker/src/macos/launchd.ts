// `fleet-worker install` / `uninstall` on macOS: a launchd daemon so the worker starts at boot.
// It is a LaunchDaemon (system domain, runs as root) because vmnet needs root: VM host processes
// start as root, bring vmnet up, then drop to the VM user (docs/macos.md, "Root").
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { toPlist } from './plist.ts';
import { runCommand, type RunCommand } from './run-command.ts';

export const LAUNCHD_LABEL = 'dev.fleet.worker';
export const LAUNCH_DAEMONS_DIR = '/Library/LaunchDaemons';

export interface LaunchdSpec {
  label?: string;
  /** Absolute path of node (not the signed VM-host copy: the worker itself needs no entitlement). */
  node: string;
  /** Absolute path of the worker entry script (apps/worker/bin/fleet-worker.mjs or similar). */
  script: string;
  /** Arguments after the script, e.g. ['run', '--driver', 'vz', ...]. */
  args: string[];
  workingDirectory: string;
  /** stdout/stderr log file. */
  logFile: string;
  env?: Record<string, string>;
}

export function launchdPlistPath(label = LAUNCHD_LABEL, dir = LAUNCH_DAEMONS_DIR): string {
  return path.join(dir, `${label}.plist`);
}

export function launchdPlist(s: LaunchdSpec): string {
  for (const [k, v] of Object.entries({ node: s.node, script: s.script, workingDirectory: s.workingDirectory, logFile: s.logFile })) {
    if (!path.isAbsolute(v)) throw new Error(`launchd plist: ${k} must be an absolute path, not ${JSON.stringify(v)}`);
  }
  return toPlist({
    Label: s.label ?? LAUNCHD_LABEL,
    ProgramArguments: [s.node, s.script, ...s.args],
    WorkingDirectory: s.workingDirectory,
    EnvironmentVariables: { PATH: '/usr/local/bin:/opt/homebrew/bin:/usr/bin:/bin:/usr/sbin:/sbin', ...(s.env ?? {}) },
    RunAtLoad: true,
    // Restart after a crash or a non-zero exit, not after a clean `launchctl bootout`.
    KeepAlive: { SuccessfulExit: false },
    ThrottleInterval: 10,
    // VMs are user-facing work: don't let launchd throttle the worker like a background job.
    ProcessType: 'Interactive',
    StandardOutPath: s.logFile,
    StandardErrorPath: s.logFile,
  });
}

export interface LaunchdOps {
  run?: RunCommand;
  dir?: string;
  /** Whether we are root (default process.getuid() === 0). */
  isRoot?: boolean;
}

function needRoot(o: LaunchdOps, what: string): void {
  const root = o.isRoot ?? (typeof process.getuid === 'function' && process.getuid() === 0);
  if (!root) throw new Error(`${what} writes to ${o.dir ?? LAUNCH_DAEMONS_DIR} and talks to the system launchd domain: run it with sudo`);
}

/**
 * Writes the plist and (re)loads it: bootout (ignored if not loaded), enable, bootstrap. `enable`
 * comes before `bootstrap` because launchd refuses to bootstrap a label that is marked disabled
 * (e.g. after an earlier `launchctl disable`); enabling an unloaded label is allowed. Returns the
 * commands run.
 */
export async function installLaunchd(s: LaunchdSpec, o: LaunchdOps = {}): Promise<string[][]> {
  needRoot(o, 'fleet-worker install');
  const run = o.run ?? runCommand;
  const label = s.label ?? LAUNCHD_LABEL;
  const file = launchdPlistPath(label, o.dir);
  await mkdir(path.dirname(file), { recursive: true });
  await mkdir(path.dirname(s.logFile), { recursive: true });
  await writeFile(file, launchdPlist(s), { mode: 0o644 });
  const cmds = [
    ['bootout', `system/${label}`],
    ['enable', `system/${label}`],
    ['bootstrap', 'system', file],
  ];
  const done: string[][] = [];
  for (const [i, args] of cmds.entries()) {
    const r = await run('/bin/launchctl', args);
    done.push(['/bin/launchctl', ...args]);
    // bootout fails when the job was not loaded: that is the normal first install.
    if (r.code !== 0 && i > 0) throw new Error(`launchctl ${args.join(' ')} failed: ${r.stderr.trim() || `exit ${r.code}`}`);
  }
  return done;
}

/** Unloads the daemon (if loaded) and removes the plist. Idempotent. Returns the commands run. */
export async function uninstallLaunchd(o: LaunchdOps & { label?: string } = {}): Promise<string[][]> {
  needRoot(o, 'fleet-worker uninstall');
  const run = o.run ?? runCommand;
  const label = o.label ?? LAUNCHD_LABEL;
  await run('/bin/launchctl', ['bootout', `system/${label}`]);
  await rm(launchdPlistPath(label, o.dir), { force: true });
  return [['/bin/launchctl', 'bootout', `system/${label}`]];
}
