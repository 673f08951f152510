// `fleet port-forward VM [LOCAL:]REMOTE`: a local TCP listener whose every connection
// is its own session (its own WebSocket and its own HTTP/2 stream to the worker), so
// one slow connection never holds up another. `--stdio` joins stdin/stdout to one
// connection instead (an OpenSSH ProxyCommand: fleet port-forward --stdio VM 22).
import net from 'node:net';
import type { Command } from 'commander';
import { ExitCode, ReportedError, UsageError } from '../errors.ts';
import type { Runtime } from '../runtime.ts';
import { validateName } from '../validate.ts';
import { durationMs, streamsOf } from './exec.ts';
import { exitCodeOf, SessionSocket, type SessionStart } from './session-socket.ts';

export function parsePortSpec(spec: string): { local: number; remote: number } {
  const m = /^(?:(\d{1,5}):)?(\d{1,5})$/.exec(spec);
  const local = m ? Number(m[1] ?? m[2]) : NaN;
  const remote = m ? Number(m[2]) : NaN;
  if (!m || remote < 1 || remote > 65535 || local < 0 || local > 65535) throw new UsageError(`invalid port "${spec}": use [LOCAL:]REMOTE, e.g. 8080:80 (LOCAL 0 = any free port)`);
  return { local, remote };
}

/** Joins a duplex byte stream to a port-forward session, with backpressure both ways. */
export function bridge(session: SessionSocket, input: NodeJS.ReadableStream, output: NodeJS.WritableStream, onInputEnd: () => void = () => session.eof()): void {
  input.on('data', (d: Buffer | string) => {
    if (!session.write(typeof d === 'string' ? Buffer.from(d) : d)) {
      input.pause();
      session.once('drain', () => input.resume());
    }
  });
  input.once('end', onInputEnd);
  session.on('stdout', (d) => {
    if (!output.write(d)) {
      session.pause();
      output.once('drain', () => session.resume());
    }
  });
}

export async function stdioForward(rt: Runtime, cmd: Command, vm: string, port: number, waitMs: number): Promise<number> {
  const target = rt.target(cmd);
  if (!target.url) throw new UsageError('no controller configured: run "fleet login URL --token T", or pass --url / set FLEET_URL');
  const io = streamsOf(rt.io);
  const session = SessionSocket.open(target.url, target.token, vm, { start: { kind: 'port-forward', port, waitMs } });
  let started = false;
  session.on('started', () => (started = true));
  bridge(session, io.stdin, io.stdout);
  const outcome = await session.outcome;
  io.stdin.pause();
  const unref = (io.stdin as unknown as { unref?: () => void }).unref;
  if (typeof unref === 'function') unref.call(io.stdin);
  if (outcome.kind === 'error') rt.warn(`${vm}: ${outcome.message}${outcome.stage ? ` (stage: ${outcome.stage})` : ''}`);
  return outcome.kind === 'exit' ? 0 : exitCodeOf(outcome, started);
}

export function registerPortForwardCommand(program: Command, rt: Runtime): void {
  program
    .command('port-forward')
    .description("forward a local TCP port to a port of a VM (through the controller and the VM's worker)")
    .argument('<vm>', 'VM name')
    .argument('<ports>', '[LOCAL:]REMOTE, e.g. 8080:80; LOCAL 0 picks a free port')
    .option('--address <ip>', 'local address to listen on', '127.0.0.1')
    .option('--stdio', 'forward stdin/stdout to the remote port instead of listening (OpenSSH ProxyCommand)')
    .option('--wait <duration>', 'how long each connection waits for the VM and its port (default 30s)')
    .addHelpText('after', '\nExamples:\n  fleet port-forward web-1 8080:80\n  ssh -o ProxyCommand="fleet port-forward --stdio %h 22" fleet@web-1')
    .action(async (vm: string, ports: string, opts: { address: string; stdio?: boolean; wait?: string }, cmd: Command) => {
      validateName(vm, 'VM');
      const { local, remote } = parsePortSpec(ports);
      const waitMs = durationMs(opts.wait, '--wait', 30_000);
      if (opts.stdio) {
        const code = await stdioForward(rt, cmd, vm, remote, waitMs);
        if (code !== 0) throw new ReportedError(code as ExitCode);
        return;
      }
      await listenAndForward(rt, cmd, vm, { kind: 'port-forward', port: remote, waitMs }, { address: opts.address, port: local, label: `${vm}:${remote}`, onListening: (p) => rt.note(`Forwarding ${opts.address}:${p} -> ${vm}:${remote} (Ctrl-C to stop)`) });
    });
}

/**
 * A local TCP listener whose every connection is its own session (port-forward, vnc): its own
 * WebSocket and HTTP/2 stream to the worker, so one slow connection never holds up another.
 * Returns when the command is interrupted (Ctrl-C).
 */
export async function listenAndForward(
  rt: Runtime,
  cmd: Command,
  vm: string,
  start: SessionStart,
  o: { address: string; port: number; label: string; onListening: (port: number) => void },
): Promise<void> {
  const target = rt.target(cmd);
  if (!target.url) throw new UsageError('no controller configured: run "fleet login URL --token T", or pass --url / set FLEET_URL');
  const url = target.url;
  let active = 0;
  // allowHalfOpen: a client's FIN (request sent) is passed on as EOF while the reply still
  // flows back; the local socket is ended once the session is over.
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    active++;
    sock.setNoDelay(true);
    const session = SessionSocket.open(url, target.token, vm, { start });
    bridge(session, sock, sock, () => session.eof());
    let localClosed = false;
    const closeLocal = () => {
      localClosed = true;
      session.close();
    };
    sock.on('error', closeLocal);
    sock.on('close', closeLocal);
    void session.outcome
      .then(
        (out) => {
          if (out.kind === 'error' && !localClosed) rt.warn(`${o.label}: ${out.message}`);
          sock.end();
        },
        (err: Error) => {
          rt.warn(`${o.label}: ${err.message}`);
          sock.destroy();
        },
      )
      .finally(() => active--);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new UsageError(`cannot listen on ${o.address}:${o.port}: ${e.message}`)));
    server.listen(o.port, o.address, () => resolve());
  });
  o.onListening((server.address() as net.AddressInfo).port);
  await new Promise<void>((resolve) => {
    if (rt.signal?.aborted) return resolve();
    rt.signal?.addEventListener('abort', () => resolve(), { once: true });
  });
  server.close();
  if (active > 0) rt.note(`closing ${active} open connection(s)`);
}
