// `fleet vnc VM`: the VM's screen (issue 19) on a local port, for any VNC viewer. Every viewer
// connection is its own `vnc` session through the controller to the VM's worker (QEMU's VNC
// server on a Unix socket of the VM host process, or a macOS guest's Screen Sharing), like
// `fleet port-forward`. Listens on 127.0.0.1 only unless told otherwise: the local port is the
// VM's console, without a password of its own.
import { spawn } from 'node:child_process';
import type { Command } from 'commander';
import { UsageError } from '../errors.ts';
import type { Runtime } from '../runtime.ts';
import { validateName } from '../validate.ts';
import { durationMs } from './exec.ts';
import { listenAndForward } from './port-forward.ts';

/** The system's "open this URL" command (a VNC viewer registered for vnc://). */
export function openerFor(platform: NodeJS.Platform): string {
  return platform === 'darwin' ? 'open' : platform === 'win32' ? 'explorer' : 'xdg-open';
}

export function registerVncCommand(program: Command, rt: Runtime): void {
  program
    .command('vnc')
    .description("show a VM's screen: a local VNC port to point a viewer at (through the controller and the VM's worker)")
    .argument('<vm>', 'VM name')
    .option('--port <port>', 'local port (default: any free port)', '0')
    .option('--address <ip>', 'local address to listen on (the console has no password of its own: keep it local)', '127.0.0.1')
    .option('--open', 'launch the system VNC viewer on the URL (open on macOS, xdg-open elsewhere)')
    .option('--wait <duration>', 'how long each connection waits for the VM and its console (default 60s)')
    .addHelpText('after', '\nExamples:\n  fleet vnc ci-mac-1 --open\n  fleet vnc web-1 --port 5901   # then: vncviewer 127.0.0.1:5901')
    .action(async (vm: string, opts: { port: string; address: string; open?: boolean; wait?: string }, cmd: Command) => {
      validateName(vm, 'VM');
      const port = Number(opts.port);
      if (!/^\d{1,5}$/.test(opts.port) || port > 65535) throw new UsageError(`invalid --port "${opts.port}": a port number, 0 = any free port`);
      const waitMs = durationMs(opts.wait, '--wait', 60_000);
      await listenAndForward(rt, cmd, vm, { kind: 'vnc', waitMs }, {
        address: opts.address,
        port,
        label: `${vm} console`,
        onListening: (p) => {
          const host = opts.address.includes(':') ? `[${opts.address}]` : opts.address;
          const url = `vnc://${host}:${p}`;
          // The URL alone on stdout (scripts read it); the rest is a note on stderr.
          rt.io.stdout.write(`${url}\n`);
          rt.note(`${vm}'s screen at ${url} (Ctrl-C to stop)`);
          if (opts.open) {
            const opener = rt.io.env.FLEET_VNC_OPENER || openerFor(process.platform);
            const child = spawn(opener, [url], { stdio: 'ignore', detached: true });
            child.once('error', (e) => rt.warn(`cannot launch a VNC viewer with ${opener}: ${e.message}; open ${url} yourself`));
            child.unref();
          }
        },
      });
    });
}
