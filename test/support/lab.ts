// Helpers for end-to-end tests that build a lab of network namespaces and run real VMs in it.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { REPO_ROOT, wrapChild, type RunningProcess } from './fleet-processes.ts';

export function has(bin: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/** Why real VMs in namespaces cannot run here ('' when they can): root, Linux, the tools. */
export function realVmsMissing(extraBins: string[] = []): string {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'not running as root';
  for (const b of ['ip', 'qemu-system-x86_64', 'dnsmasq', 'nft', ...extraBins]) if (!has(b)) return `${b} not installed`;
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun missing';
  return '';
}

/** Prints the loud skip banner of a test file that needs real VMs. */
export function warnSkipped(file: string, why: string, what: string): void {
  console.warn(`\n!!!!!!!! SKIPPING ${file}: ${why}. ${what} NOT tested on this machine; run the e2e suite as root on Linux with qemu-system-x86. !!!!!!!!\n`);
}

export const ipCmd = (...args: string[]): void => void execFileSync('ip', args, { stdio: 'pipe' });

/** Starts `node <args>` inside a namespace (`ip netns exec` execs node: the pid is node's). */
export function startInNetns(netns: string, args: string[], env: Record<string, string> = {}): RunningProcess {
  return wrapChild(
    spawn('ip', ['netns', 'exec', netns, process.execPath, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, FLEET_LOG_LEVEL: process.env.FLEET_LOG_LEVEL ?? 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
}

/** SIGKILLs every process whose command line mentions `marker` (VM host processes and QEMU run detached). */
export function killProcessesMentioning(marker: string): void {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (Number(pid) !== process.pid && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** Deletes namespaces and links; missing ones are fine. */
export function removeNetworks(opts: { namespaces?: string[]; links?: string[] }): void {
  for (const ns of opts.namespaces ?? []) {
    try {
      ipCmd('netns', 'del', ns);
    } catch {
      /* never created */
    }
  }
  for (const l of opts.links ?? []) {
    try {
      ipCmd('link', 'del', l);
    } catch {
      /* went with its namespace */
    }
  }
}
