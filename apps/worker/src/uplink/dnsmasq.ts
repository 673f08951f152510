// Starts dnsmasq in the foreground and keeps it running: its output goes to the logger (or,
// detached, to a file so that it outlives the worker), and if it dies it is restarted with
// exponential backoff until stop() or detach() is called.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { readdir, readFile, readlink, stat, truncate } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { commandArgv } from './exec.ts';

export interface UplinkLog {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface DnsmasqSupervisorOptions {
  netns?: string | undefined;
  /** The dnsmasq executable (default: `dnsmasq` from PATH or /usr/sbin). */
  binary?: string;
  /** Arguments after the binary (the config file path, the marker `--interface=`). */
  args: string[];
  log: UplinkLog;
  /**
   * Write dnsmasq's output to this file and run it in its own session, so that it outlives
   * the worker (running VMs keep renewing their leases while the worker restarts). Without
   * it, dnsmasq is a plain child whose output goes to the logger.
   */
  outputFile?: string;
  /** First restart delay; doubles per quick failure up to maxBackoffMs. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** A run longer than this resets the backoff. */
  stableAfterMs?: number;
  /** How long start() waits for "started" before giving up. */
  startTimeoutMs?: number;
  /** How often an adopted dnsmasq (not our child) is checked for liveness. Default 2 s. */
  adoptedPollMs?: number;
}

const READY = /^dnsmasq(\[\d+\])?: started, version/;
/** The output file is cut back when a new dnsmasq starts and it has grown beyond this. */
const MAX_OUTPUT_BYTES = 8 * 1024 * 1024;

export class DnsmasqSupervisor {
  private child: ChildProcess | undefined;
  private adoptedPid: number | undefined;
  private adoptedTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private backoff: number;
  private restartTimer: NodeJS.Timeout | undefined;
  private exited: Promise<void> = Promise.resolve();
  /** Times dnsmasq was restarted after dying on its own. */
  restarts = 0;

  constructor(private readonly opts: DnsmasqSupervisorOptions) {
    this.backoff = opts.minBackoffMs ?? 250;
  }

  get pid(): number | undefined {
    return this.child?.pid ?? this.adoptedPid;
  }

  /** Starts dnsmasq and resolves once it reports "started" (rejects with its output if it exits first). */
  async start(): Promise<void> {
    this.stopping = false;
    await this.spawnOnce(true);
  }

  /**
   * Supervises a dnsmasq that is already running (started by an earlier worker process, found
   * by findDnsmasqProcesses): polled for liveness, restarted with the usual backoff if it dies.
   */
  adopt(pid: number): void {
    this.stopping = false;
    this.adoptedPid = pid;
    const poll = (): void => {
      this.adoptedTimer = setTimeout(() => {
        this.adoptedTimer = undefined;
        if (this.stopping || this.adoptedPid !== pid) return;
        if (isAlive(pid)) return poll();
        this.adoptedPid = undefined;
        this.opts.log.warn({ pid }, 'adopted dnsmasq died; restarting');
        this.restarts++;
        this.spawnOnce(false).catch((err: unknown) => this.opts.log.error({ err: String(err) }, 'dnsmasq restart failed'));
      }, this.opts.adoptedPollMs ?? 2000);
      this.adoptedTimer.unref();
    };
    poll();
  }

  /** Stops supervising but leaves dnsmasq running (the worker is going away; VMs stay). */
  detach(): void {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.adoptedTimer) clearTimeout(this.adoptedTimer);
    this.restartTimer = this.adoptedTimer = undefined;
    this.child?.unref();
  }

  private async prepareOutput(): Promise<{ fd: number; offset: number } | undefined> {
    const file = this.opts.outputFile;
    if (!file) return undefined;
    try {
      if ((await stat(file)).size > MAX_OUTPUT_BYTES) await truncate(file, 0);
    } catch {
      /* does not exist yet */
    }
    const fd = openSync(file, 'a', 0o600);
    return { fd, offset: fstatSync(fd).size };
  }

  private async spawnOnce(initial: boolean): Promise<void> {
    const { log } = this.opts;
    const argv = commandArgv(this.opts.binary ?? 'dnsmasq', this.opts.args, this.opts.netns);
    const output = await this.prepareOutput();
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: output ? ['ignore', output.fd, output.fd] : ['ignore', 'pipe', 'pipe'],
      detached: output !== undefined,
      env: { ...process.env, LC_ALL: 'C' },
    });
    if (output) closeSync(output.fd);
    this.child = child;
    const startedAt = Date.now();
    const recent: string[] = [];
    let ready = false;
    let timedOut = false;
    let tail: NodeJS.Timeout | undefined;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (!ready) {
          ready = true;
          timedOut = true;
          clearInterval(tail);
          reject(new Error(`dnsmasq did not report "started" within ${this.opts.startTimeoutMs ?? 10_000} ms: ${recent.join(' | ')}`));
          child.kill('SIGKILL');
        }
      }, this.opts.startTimeoutMs ?? 10_000);
      const onLine = (line: string) => {
        recent.push(line);
        if (recent.length > 20) recent.shift();
        if (/^dnsmasq-dhcp/.test(line)) log.debug({ dnsmasq: line, pid: child.pid }, 'dnsmasq');
        else log.info({ dnsmasq: line, pid: child.pid }, 'dnsmasq');
        if (!ready && READY.test(line)) {
          ready = true;
          clearTimeout(timer);
          clearInterval(tail);
          resolve();
        }
      };
      if (output) {
        // Read the output file from where this run started until dnsmasq says "started";
        // afterwards the file is for operators (no per-lease log lines in the worker log).
        let offset = output.offset;
        let partial = '';
        tail = setInterval(() => {
          try {
            const fd = openSync(this.opts.outputFile!, 'r');
            const buf = Buffer.alloc(64 * 1024);
            const n = readSync(fd, buf, 0, buf.length, offset);
            closeSync(fd);
            offset += n;
            const lines = (partial + buf.subarray(0, n).toString('utf8')).split('\n');
            partial = lines.pop() ?? '';
            for (const l of lines) onLine(l);
          } catch {
            /* file replaced: next tick */
          }
        }, 25);
      } else {
        createInterface({ input: child.stdout! }).on('line', onLine);
        createInterface({ input: child.stderr! }).on('line', onLine);
      }
      let exitedResolve!: () => void;
      this.exited = new Promise((r) => (exitedResolve = r));
      child.on('error', (err) => {
        log.error({ err: String(err) }, 'dnsmasq could not be started');
        if (!ready) {
          ready = true;
          clearTimeout(timer);
          clearInterval(tail);
          reject(err);
        }
      });
      child.on('close', (code, signal) => {
        // Let the tail read the last lines (the reason for a failed start).
        setTimeout(() => {
          exitedResolve();
          if (this.child === child) this.child = undefined;
          const failedStart = !ready || timedOut;
          if (!ready) {
            ready = true;
            clearTimeout(timer);
            clearInterval(tail);
            reject(new Error(`dnsmasq exited during start (${signal ?? `exit ${code}`}): ${recent.join(' | ') || 'no output'}`));
          }
          if (this.stopping) {
            if (!failedStart) log.info({ code, signal }, 'dnsmasq stopped');
            return;
          }
          if (failedStart && initial) return;
          const ranMs = Date.now() - startedAt;
          if (ranMs > (this.opts.stableAfterMs ?? 60_000)) this.backoff = this.opts.minBackoffMs ?? 250;
          const delay = this.backoff;
          this.backoff = Math.min(this.backoff * 2, this.opts.maxBackoffMs ?? 30_000);
          log.warn({ code, signal, ranMs, restartInMs: delay, lastOutput: recent.slice(-5) }, 'dnsmasq died; restarting');
          this.restartTimer = setTimeout(() => {
            this.restartTimer = undefined;
            if (this.stopping) return;
            this.restarts++;
            this.spawnOnce(false).catch((err: unknown) => {
              log.error({ err: String(err) }, 'dnsmasq restart failed');
            });
          }, delay);
        }, output ? 60 : 0);
      });
    });
  }

  /** Stops supervision and the process: SIGTERM, then SIGKILL after a grace period. Idempotent. */
  async stop(graceMs = 3000): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.adoptedTimer) clearTimeout(this.adoptedTimer);
    this.restartTimer = this.adoptedTimer = undefined;
    if (this.adoptedPid !== undefined) {
      const pid = this.adoptedPid;
      this.adoptedPid = undefined;
      await killAndWait([pid], graceMs);
    }
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(killer);
  }
}

/**
 * dnsmasq processes (any parent) whose command line carries `--interface=<bridge>` and that
 * run in the given network namespace (by inode; the caller's own namespace when none is given).
 * Used to find leftovers after a crash without trusting a pid file.
 */
export async function findDnsmasqProcesses(bridge: string, netns?: string): Promise<number[]> {
  let wantNs: string;
  try {
    wantNs = netns ? `net:[${(await stat(`/var/run/netns/${netns}`)).ino}]` : await readlink('/proc/self/ns/net');
  } catch {
    return [];
  }
  const marker = `--interface=${bridge}`;
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0');
      if (!argv[0] || !/(^|\/)dnsmasq$/.test(argv[0]) || !argv.includes(marker)) continue;
      if ((await readlink(`/proc/${entry}/ns/net`)) !== wantNs) continue;
      pids.push(Number(entry));
    } catch {
      /* the process went away */
    }
  }
  return pids;
}

/** True if the process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** SIGTERM, wait up to graceMs, then SIGKILL. Resolves when every pid is gone. */
export async function killAndWait(pids: number[], graceMs = 2000): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
  const deadline = Date.now() + graceMs;
  while (pids.some(isAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const pid of pids.filter(isAlive)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  const hard = Date.now() + 2000;
  while (pids.some(isAlive) && Date.now() < hard) await new Promise((r) => setTimeout(r, 20));
}
