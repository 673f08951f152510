// Builds the command line sent over an SSH exec channel. Arguments are quoted for a
// POSIX shell (the guest's login shell runs the string), so argv survives unchanged.
//
// Without a TTY the command is prefixed with a line on stderr that reports the shell's
// pid before it `exec`s the command (the pid stays the same): the worker strips that
// line and uses the pid to deliver signals (Ctrl-C) and timeouts with `kill`, which
// works on every sshd (Dropbear ignores the SSH "signal" channel request).

export const PID_MARKER = 'FLEET-SESSION-PID ';

export function shellQuote(arg: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

export interface RemoteCommandOptions {
  argv: string[];
  env: Record<string, string>;
  workdir: string;
  /** Report the pid on stderr first (exec without a TTY). */
  reportPid: boolean;
  /** Run argv as one shell string (ssh VM cmd...: like OpenSSH, args are joined by spaces). */
  shellString?: boolean;
}

export function remoteCommand(o: RemoteCommandOptions): string {
  const parts: string[] = [];
  if (o.reportPid) parts.push(`echo "${PID_MARKER}$$" >&2;`);
  if (o.workdir) parts.push(`cd ${shellQuote(o.workdir)} || exit 126;`);
  const envs = Object.entries(o.env).map(([k, v]) => `${k}=${shellQuote(v)}`);
  if (o.shellString) {
    // The user's string is shell code: export the variables, then run it in this shell.
    if (envs.length) parts.push(`export ${envs.join(' ')};`);
    parts.push(o.argv.join(' '));
  } else {
    parts.push('exec');
    if (envs.length) parts.push('env', ...envs);
    parts.push(...o.argv.map(shellQuote));
  }
  return parts.join(' ');
}

/** The `kill` command that signals the process group led by pid (or the pid alone). */
export function killCommand(pid: number, signal: string): string {
  const sig = signal.replace(/^SIG/, '');
  if (!/^[A-Z0-9]+$/.test(sig) || !Number.isInteger(pid) || pid <= 1) throw new Error('bad kill request');
  return `kill -s ${sig} -- -${pid} 2>/dev/null || kill -s ${sig} ${pid}`;
}

/**
 * Strips the pid line from the start of stderr. Feed chunks in order; returns the bytes
 * to pass on. `pid` is set once the line has been seen.
 */
export class PidLineParser {
  pid: number | undefined;
  private head: Buffer | null = Buffer.alloc(0);

  push(chunk: Buffer): Buffer {
    if (this.head === null) return chunk;
    this.head = Buffer.concat([this.head, chunk]);
    const nl = this.head.indexOf(0x0a);
    if (nl < 0) {
      if (this.head.length < 64) return Buffer.alloc(0);
      // Not our line after all (should not happen): give everything back.
      const all = this.head;
      this.head = null;
      return all;
    }
    const line = this.head.subarray(0, nl).toString('utf8');
    const rest = this.head.subarray(nl + 1);
    this.head = null;
    if (line.startsWith(PID_MARKER)) {
      const n = Number(line.slice(PID_MARKER.length).trim());
      if (Number.isInteger(n) && n > 1) this.pid = n;
      return rest;
    }
    return Buffer.concat([Buffer.from(line + '\n'), rest]);
  }
}
