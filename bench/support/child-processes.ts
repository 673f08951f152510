// The node processes a benchmark starts (a controller, synthetic-worker swarms): never left behind.
//
// A benchmark that ends in any way (done, an exception, Ctrl-C, `timeout`, the shell reading its
// output gone: the next console.log then dies of EPIPE) kills what it started, and their children
// (the controller bin's launcher runs the controller as its child), with SIGKILL: a leftover
// controller and 1,000 synthetic workers would load the machine for every later measurement.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface BenchChild {
  child: ChildProcess;
  /** What it printed so far (stdout and stderr, the last `keepOutput` characters). */
  out(): string;
  /** Resolves with the first match of `re` in its output; fails if it exits or `ms` pass first. */
  waitFor(re: RegExp, ms: number): Promise<RegExpMatchArray>;
  /** SIGTERM, then SIGKILL (and a line on stderr) if it has not exited 30 s later. */
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();

function childPidsOf(pid: number | undefined): number[] {
  if (!pid) return [];
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone already
  }
}

/** SIGKILL to `child` and its children (a hung one cannot notice its parent died). */
function killTree(child: ChildProcess): void {
  for (const pid of childPidsOf(child.pid)) killQuietly(pid);
  child.kill('SIGKILL');
}

function killAll(): void {
  for (const c of running) killTree(c);
  running.clear();
}

// Installed when a benchmark imports this module, before it prints anything.
{
  // Every way out runs 'exit' (an uncaught exception included); signals end the process first.
  process.on('exit', killAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1)));
  }
  // Whoever read the report is gone: stop, rather than measure for nobody.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => process.exit(1));
}

/** Starts `node <args>` in `cwd` with FLEET_LOG_LEVEL=warn and `env`, output captured. */
export function startNode(args: string[], opts: { cwd: string; env?: Record<string, string>; keepOutput?: number }): BenchChild {
  const label = args.filter((a) => !a.startsWith('-')).slice(0, 2).join(' ');
  const keep = opts.keepOutput ?? Infinity;
  const child = spawn(process.execPath, args, { cwd: opts.cwd, env: { ...process.env, FLEET_LOG_LEVEL: 'warn', ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let out = '';
  const append = (d: Buffer) => {
    out += d;
    if (out.length > keep) out = out.slice(-keep);
  };
  child.stdout!.on('data', append);
  child.stderr!.on('data', append);
  return {
    child,
    out: () => out,
    async waitFor(re, ms) {
      const end = Date.now() + ms;
      for (;;) {
        const m = out.match(re);
        if (m) return m;
        if (child.exitCode !== null) throw new Error(`${label} exited ${child.exitCode}:\n${out.slice(-3000)}`);
        if (Date.now() > end) throw new Error(`timeout waiting for ${re} from ${label}:\n${out.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => {
        console.error(`${label} did not exit 30 s after SIGTERM: killing it`);
        killTree(child);
      }, 30_000);
      await new Promise((r) => child.once('exit', r));
      clearTimeout(killer);
    },
  };
}
