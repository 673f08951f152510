// `fleet exec VM [flags] -- cmd args…`: runs a command in a VM through the controller
// (no route to the VM needed). stdout and stderr stay separate, stdin is streamed,
// the remote exit code is the CLI's, Ctrl-C is forwarded as SIGINT.
import type { Command } from 'commander';
import { ExitCode, ReportedError, UsageError } from '../errors.ts';
import type { Io } from '../io.ts';
import { parseDuration } from '../output/durations.ts';
import type { Runtime } from '../runtime.ts';
import { collect, validateName } from '../validate.ts';
import { exitCodeOf, pipeOutput, SessionSocket, type SessionOutcome, type SessionStart } from './session-socket.ts';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    const k = eq < 0 ? p : p.slice(0, eq);
    if (eq < 0 || !ENV_NAME.test(k)) throw new UsageError(`invalid --env "${p}": use NAME=VALUE`);
    env[k] = p.slice(eq + 1);
  }
  return env;
}

export function durationMs(value: string | undefined, flag: string, dflt: number): number {
  if (value === undefined) return dflt;
  const ms = parseDuration(value, flag);
  if (ms < 0) throw new UsageError(`invalid ${flag} "${value}"`);
  return ms;
}

export interface TerminalStreams {
  stdin: NodeJS.ReadStream | undefined;
  stdout: NodeJS.WriteStream | undefined;
}

/** The real process streams behind an Io, when it has them (tests may pass plain buffers). */
export function streamsOf(io: Io): { stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (b: boolean) => unknown }; stdout: NodeJS.WritableStream & { isTTY?: boolean; rows?: number; columns?: number }; stderr: NodeJS.WritableStream } {
  const asWritable = (s: unknown, name: string): NodeJS.WritableStream => {
    if (s && typeof (s as NodeJS.WritableStream).once === 'function') return s as NodeJS.WritableStream;
    throw new UsageError(`${name} is not a stream`);
  };
  if (!io.stdin) throw new UsageError('no stdin');
  return { stdin: io.stdin as never, stdout: asWritable(io.stdout, 'stdout') as never, stderr: asWritable(io.stderr, 'stderr') };
}

export interface RunSessionOptions {
  vm: string;
  start: SessionStart;
  /** Forward local stdin (false: send EOF at once). */
  stdin: boolean;
  /** Local terminal in raw mode + SIGWINCH resizes. */
  rawTerminal: boolean;
  quietProgress?: boolean;
  /** Print the session id (reconnectable sessions). */
  announceSession?: boolean;
}

/** Runs one interactive or batch session against the real process streams; returns the exit code. */
export async function runSession(rt: Runtime, cmd: Command, o: RunSessionOptions): Promise<number> {
  const target = rt.target(cmd);
  if (!target.url) throw new UsageError('no controller configured: run "fleet login URL --token T", or pass --url / set FLEET_URL');
  const io = streamsOf(rt.io);
  const session = SessionSocket.open(target.url, target.token, o.vm, { start: o.start });
  let started = false;
  session.on('progress', (stage, message) => {
    if (!o.quietProgress) rt.note(`fleet: ${o.vm}: ${message} [${stage}]`);
  });
  pipeOutput(session, 'stdout', io.stdout);
  pipeOutput(session, 'stderr', io.stderr);

  const stdin = io.stdin;
  let raw = false;
  const restore: Array<() => void> = [];
  const onData = (d: Buffer | string) => {
    if (!session.write(typeof d === 'string' ? Buffer.from(d) : d)) {
      stdin.pause();
      session.once('drain', () => stdin.resume());
    }
  };
  session.on('started', (id) => {
    started = true;
    if (o.announceSession) rt.note(`fleet: session ${id} (re-attach with: fleet exec --attach ${id} ${o.vm})`);
    if (o.rawTerminal && stdin.isTTY && typeof stdin.setRawMode === 'function') {
      stdin.setRawMode(true);
      raw = true;
      restore.push(() => stdin.setRawMode?.(false));
    }
    if (o.rawTerminal && io.stdout.isTTY) {
      const onResize = () => session.resize(io.stdout.rows ?? 24, io.stdout.columns ?? 80);
      process.on('SIGWINCH', onResize);
      restore.push(() => process.off('SIGWINCH', onResize));
    }
  });
  if (o.stdin) {
    stdin.on('data', onData);
    const onEnd = () => session.eof();
    stdin.once('end', onEnd);
    restore.push(() => {
      stdin.off('data', onData);
      stdin.off('end', onEnd);
      stdin.pause();
    });
  } else session.eof();

  // Ctrl-C: forwarded once as SIGINT (a second one exits the CLI, see main.ts).
  const onAbort = () => session.signal('INT');
  rt.signal?.addEventListener('abort', onAbort, { once: true });
  restore.push(() => rt.signal?.removeEventListener('abort', onAbort));

  let outcome: SessionOutcome;
  try {
    outcome = await session.outcome;
  } finally {
    for (const r of restore.reverse()) r();
    if (raw) stdin.setRawMode?.(false);
    // A TTY stdin that was read keeps the process alive: let go of it.
    const unref = (stdin as unknown as { unref?: () => void }).unref;
    if (typeof unref === 'function') unref.call(stdin);
  }
  // Everything written before the exit frame must reach the terminal / pipe before we return.
  await Promise.all([flush(io.stdout), flush(io.stderr)]);
  if (outcome.kind === 'error') {
    rt.warn(`${o.vm}: ${outcome.message}${outcome.stage ? ` (stage: ${outcome.stage})` : ''}`);
  }
  return exitCodeOf(outcome, started);
}

function flush(s: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve) => {
    if ((s as { writableNeedDrain?: boolean }).writableNeedDrain) s.once('drain', () => resolve());
    else resolve();
  });
}

export function registerExecCommand(program: Command, rt: Runtime): void {
  program
    .command('exec')
    .description('run a command in a VM (through the controller; no route to the VM needed)')
    .argument('<vm>', 'VM name')
    .argument('[command...]', 'the command and its arguments (put them after --)')
    .option('-t, --tty', 'allocate a pseudo-terminal (interactive programs; stdout and stderr merge)')
    .option('-n, --no-stdin', 'do not forward standard input (the command reads EOF)')
    .option('-e, --env <K=V>', 'set an environment variable (repeatable)', collect, [])
    .option('-w, --workdir <dir>', 'working directory in the VM')
    .option('--timeout <duration>', 'terminate the command after this long (exit code 124)')
    .option('--wait <duration>', 'how long to wait for the VM to boot and accept SSH (default 60s)')
    .option('--retain <duration>', 'keep the command running this long if this client disconnects; re-attach with --attach')
    .option('--attach <session-id>', 're-attach to a retained session and replay its output (no command)')
    .addHelpText('after', '\nExamples:\n  fleet exec web-1 -- uname -a\n  tar c . | fleet exec web-1 -- tar x -C /srv\n  fleet exec web-1 --tty -- top\n\nThe remote exit code is the exit code of fleet exec; 124 = --timeout hit, 255 = the session broke.')
    .action(async (vm: string, command: string[], opts: { tty?: boolean; stdin: boolean; env: string[]; workdir?: string; timeout?: string; wait?: string; retain?: string; attach?: string }, cmd: Command) => {
      validateName(vm, 'VM');
      if (opts.attach) {
        const code = await attachSession(rt, cmd, vm, opts.attach);
        if (code !== ExitCode.OK) throw new ReportedError(code as ExitCode);
        return;
      }
      if (command.length === 0) throw new UsageError('missing command: fleet exec VM -- cmd args…');
      const io = rt.io.stdout as { rows?: number; columns?: number };
      const code = await runSession(rt, cmd, {
        vm,
        start: {
          kind: 'exec',
          command,
          tty: opts.tty === true,
          rows: io.rows ?? 24,
          cols: io.columns ?? 80,
          env: parseEnv(opts.env),
          ...(opts.workdir ? { workdir: opts.workdir } : {}),
          waitMs: durationMs(opts.wait, '--wait', 60_000),
          timeoutMs: durationMs(opts.timeout, '--timeout', 0),
          retainMs: durationMs(opts.retain, '--retain', 0),
        },
        stdin: opts.stdin,
        rawTerminal: opts.tty === true,
        announceSession: opts.retain !== undefined,
      });
      if (code !== 0) throw new ReportedError(code as ExitCode);
    });
}

/** Re-attaches to a retained exec session, replaying its output from the start. */
async function attachSession(rt: Runtime, cmd: Command, vm: string, sessionId: string): Promise<number> {
  const target = rt.target(cmd);
  if (!target.url) throw new UsageError('no controller configured');
  const io = streamsOf(rt.io);
  const session = SessionSocket.open(target.url, target.token, vm, { attach: { sessionId, stdoutOffset: 0, stderrOffset: 0 } });
  let started = false;
  session.on('started', (_id, info) => {
    started = true;
    if (info.replayFrom && (info.replayFrom.stdout > 0 || info.replayFrom.stderr > 0)) {
      rt.warn(`output before stdout byte ${info.replayFrom.stdout} / stderr byte ${info.replayFrom.stderr} is no longer held and was not replayed`);
    }
  });
  pipeOutput(session, 'stdout', io.stdout);
  pipeOutput(session, 'stderr', io.stderr);
  const onAbort = () => session.signal('INT');
  rt.signal?.addEventListener('abort', onAbort, { once: true });
  const outcome = await session.outcome.finally(() => rt.signal?.removeEventListener('abort', onAbort));
  await Promise.all([flush(io.stdout), flush(io.stderr)]);
  if (outcome.kind === 'error') rt.warn(`${vm}: ${outcome.message}`);
  return exitCodeOf(outcome, started);
}
