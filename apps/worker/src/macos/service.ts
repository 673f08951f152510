// `fleet-worker install` / `fleet-worker uninstall`: the worker as a launchd daemon (macOS only).
// The daemon runs `fleet-worker run <args>` with the node that ran `install`, from this checkout.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LAUNCHD_LABEL, installLaunchd, launchdPlistPath, uninstallLaunchd, type LaunchdOps } from './launchd.ts';

export const WORKER_BIN = fileURLToPath(new URL('../../bin/fleet-worker.js', import.meta.url));
export const DEFAULT_LOG_FILE = '/var/log/fleet-worker.log';

/** Thrown on any platform but macOS; the CLI exits 2 with its message. */
export class NotMacOSError extends Error {
  override readonly name = 'NotMacOSError';
}

function requireMac(platform: NodeJS.Platform, command: string): void {
  if (platform !== 'darwin') {
    throw new NotMacOSError(`fleet-worker ${command} is only on macOS (it manages a launchd daemon); on ${platform} run \`fleet-worker run\` under your service manager (e.g. a systemd unit)`);
  }
}

export interface ServiceInstallOptions {
  /** Arguments of `fleet-worker run` for the daemon, e.g. ['--driver', 'vz', '--data-dir', '/var/lib/fleet']. */
  runArgs: string[];
  logFile?: string;
  env?: Record<string, string>;
}

export interface ServiceDeps extends LaunchdOps {
  platform?: NodeJS.Platform;
  node?: string;
  script?: string;
  cwd?: string;
}

/** Installs and loads the daemon. Returns lines to print. */
export async function installService(o: ServiceInstallOptions, d: ServiceDeps = {}): Promise<string[]> {
  requireMac(d.platform ?? process.platform, 'install');
  const script = d.script ?? WORKER_BIN;
  const ran = await installLaunchd(
    {
      node: d.node ?? process.execPath,
      script,
      args: ['run', ...o.runArgs],
      workingDirectory: d.cwd ?? path.resolve(path.dirname(script), '..'),
      logFile: o.logFile ?? DEFAULT_LOG_FILE,
      ...(o.env ? { env: o.env } : {}),
    },
    d,
  );
  return [
    `installed ${launchdPlistPath(LAUNCHD_LABEL, d.dir)} (starts at boot, restarted after a crash)`,
    ...ran.map((c) => `ran: ${c.join(' ')}`),
    `logs: ${o.logFile ?? DEFAULT_LOG_FILE}`,
  ];
}

/** Unloads and removes the daemon (idempotent). Returns lines to print. */
export async function uninstallService(d: ServiceDeps = {}): Promise<string[]> {
  requireMac(d.platform ?? process.platform, 'uninstall');
  await uninstallLaunchd(d);
  return [`removed ${launchdPlistPath(LAUNCHD_LABEL, d.dir)} (VMs keep running until stopped; the worker no longer starts at boot)`];
}
