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

/**
 * A LAN of network namespaces: a bridge in `hub`, and for each host a namespace joined to it by a
 * veth (`p<key>` on the hub, `eth0` inside, the given /24 address, default route on eth0). This
 * process joins the LAN too, through `rootVeth` with `rootAddr`, and it is checked that the lab's
 * addresses are reached through that link only — never through the machine's own default route.
 */
export function buildLan(opts: { hub: string; hosts: Record<string, { ns: string; addr: string }>; rootVeth: string; rootAddr: string }): void {
  const { hub, hosts, rootVeth, rootAddr } = opts;
  ipCmd('netns', 'add', hub);
  ipCmd('-n', hub, 'link', 'add', 'lan', 'type', 'bridge');
  ipCmd('-n', hub, 'link', 'set', 'lan', 'up');
  for (const [key, { ns, addr }] of Object.entries(hosts)) {
    ipCmd('netns', 'add', ns);
    ipCmd('-n', ns, 'link', 'set', 'lo', 'up');
    ipCmd('link', 'add', `p${key}`, 'netns', hub, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ipCmd('-n', hub, 'link', 'set', `p${key}`, 'master', 'lan', 'up');
    ipCmd('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
    ipCmd('-n', ns, 'link', 'set', 'eth0', 'up');
    ipCmd('-n', ns, 'route', 'add', 'default', 'dev', 'eth0');
  }
  ipCmd('link', 'add', rootVeth, 'type', 'veth', 'peer', 'name', 'proot', 'netns', hub);
  ipCmd('-n', hub, 'link', 'set', 'proot', 'master', 'lan', 'up');
  ipCmd('addr', 'add', `${rootAddr}/24`, 'dev', rootVeth);
  ipCmd('link', 'set', rootVeth, 'up');
  for (const { addr } of Object.values(hosts)) {
    const route = execFileSync('ip', ['route', 'get', addr], { encoding: 'utf8' });
    if (!route.includes(`dev ${rootVeth}`)) throw new Error(`the route to the lab's ${addr} does not go through ${rootVeth}: ${route.trim()}`);
  }
}
