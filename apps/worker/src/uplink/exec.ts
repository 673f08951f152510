// Running `ip`, `nft`, `sysctl`, `dnsmasq` — optionally inside a network namespace
// (`ip netns exec <ns> …`, used by the tests). Arguments are passed as an argv array,
// never through a shell.
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

/** Where each tool comes from on Debian (for "not installed" messages). */
export const DEBIAN_PACKAGE: Record<string, string> = {
  ip: 'iproute2',
  nft: 'nftables',
  dnsmasq: 'dnsmasq-base',
  sysctl: 'procps',
  dhcp_release: 'dnsmasq-utils',
  setpriv: 'util-linux',
};

const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/local/bin', '/usr/bin', '/bin'];
const resolved = new Map<string, string>();

/** Absolute path of a tool (PATH first, then the sbin directories a non-login root shell may lack). */
export function findBinary(name: string): string {
  const hit = resolved.get(name);
  if (hit) return hit;
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), ...SBIN_DIRS];
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      resolved.set(name, candidate);
      return candidate;
    } catch {
      /* next */
    }
  }
  const pkg = DEBIAN_PACKAGE[name];
  throw new Error(`\`${name}\` not found in PATH or ${SBIN_DIRS.join(':')}` + (pkg ? ` (Debian: apt-get install ${pkg})` : ''));
}

export class CommandError extends Error {
  constructor(
    readonly argv: string[],
    readonly code: number | null,
    readonly stderr: string,
    readonly stdout: string,
  ) {
    super(`\`${argv.join(' ')}\` failed (${code === null ? 'killed' : `exit ${code}`}): ${stderr.trim() || stdout.trim() || 'no output'}`);
    this.name = 'CommandError';
  }
}

export interface RunOptions {
  netns?: string | undefined;
  /** Written to the command's stdin. */
  input?: string;
  timeoutMs?: number;
}

/** Full argv for a tool (a name looked up with findBinary, or a path), wrapped in `ip netns exec <ns>` when a namespace is given. */
export function commandArgv(tool: string, args: string[], netns?: string): string[] {
  const bin = tool.includes('/') ? tool : findBinary(tool);
  return netns ? [findBinary('ip'), 'netns', 'exec', netns, bin, ...args] : [bin, ...args];
}

/** Runs a tool to completion; resolves with stdout, rejects with a CommandError carrying stderr. */
export function run(tool: string, args: string[], opts: RunOptions = {}): Promise<string> {
  const argv = commandArgv(tool, args, opts.netns);
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 15_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new CommandError(argv, code, stderr, stdout));
    });
    child.stdin.on('error', () => {
      /* the command may exit without reading stdin; its exit status tells the story */
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** Like run(), but resolves with null instead of rejecting when the command fails. */
export async function tryRun(tool: string, args: string[], opts: RunOptions = {}): Promise<string | null> {
  try {
    return await run(tool, args, opts);
  } catch (err) {
    if (err instanceof CommandError) return null;
    throw err;
  }
}

/** `ip -j …` parsed as JSON (an empty output is an empty list). */
export async function ipJson<T = unknown>(args: string[], netns?: string): Promise<T[]> {
  const out = await run('ip', ['-j', ...args], { netns });
  return out.trim() ? (JSON.parse(out) as T[]) : [];
}
