// `fleet ssh VM [cmd…]`: an interactive shell (PTY, raw mode, window resizes, the
// terminal restored on exit) or a command, through the controller. `--stdio` turns it
// into an OpenSSH ProxyCommand (bytes of the VM's port 22 on stdin/stdout), and
// `fleet ssh-config VM` writes what OpenSSH needs to use it (the VM's key, its host key
// as recorded by the fleet, a Host stanza) so that ssh, scp, rsync and IDE remotes work.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { ExitCode, ReportedError, UsageError } from '../errors.ts';
import type { Runtime } from '../runtime.ts';
import { validateName } from '../validate.ts';
import { durationMs, runSession, streamsOf } from './exec.ts';
import { stdioForward } from './port-forward.ts';

export function registerSshCommands(program: Command, rt: Runtime): void {
  program
    .command('ssh')
    .description('open a shell (or run a command with a PTY) in a VM, through the controller')
    .argument('<vm>', 'VM name')
    .argument('[command...]', 'command to run instead of a login shell (a shell string, as with ssh)')
    .option('-t, --tty', 'force a PTY even when stdin is not a terminal')
    .option('-T, --no-tty', 'no PTY (stdout and stderr stay separate)')
    .option('--stdio', "join stdin/stdout to the VM's SSH port (for OpenSSH ProxyCommand)")
    .option('--wait <duration>', 'how long to wait for the VM to boot and accept SSH (default 60s)')
    .addHelpText('after', '\nExamples:\n  fleet ssh web-1\n  fleet ssh web-1 uptime\n  ssh -o ProxyCommand="fleet ssh --stdio %h" fleet@web-1   (see fleet ssh-config)')
    .action(async (vm: string, command: string[], opts: { tty?: boolean; stdio?: boolean; wait?: string }, cmd: Command) => {
      validateName(vm, 'VM');
      const waitMs = durationMs(opts.wait, '--wait', 60_000);
      if (opts.stdio) {
        if (command.length) throw new UsageError('--stdio takes no command');
        const code = await stdioForward(rt, cmd, vm, 22, waitMs);
        if (code !== 0) throw new ReportedError(code as ExitCode);
        return;
      }
      const io = streamsOf(rt.io);
      // Like ssh: a PTY when stdin is a terminal (or -t), none with -T.
      const forced = cmd.getOptionValueSource('tty') === 'cli';
      const tty = forced ? opts.tty !== false : io.stdin.isTTY === true;
      const out = io.stdout as { rows?: number; columns?: number };
      const code = await runSession(rt, cmd, {
        vm,
        start: { kind: 'ssh', command, tty, rows: out.rows ?? 24, cols: out.columns ?? 80, waitMs, env: rt.io.env.TERM ? { TERM: rt.io.env.TERM } : {} },
        stdin: true,
        rawTerminal: tty,
      });
      if (code !== 0) throw new ReportedError(code as ExitCode);
    });

  program
    .command('ssh-config')
    .description("write the VM's SSH key and recorded host key for OpenSSH and print a Host stanza that reaches it via fleet")
    .argument('<vm>', 'VM name')
    .option('--dir <dir>', 'where to write the key and known_hosts (default: next to the CLI config)')
    .action(async (vm: string, opts: { dir?: string }, cmd: Command) => {
      validateName(vm, 'VM');
      const client = rt.client(cmd);
      const res = await client.request<{ username: string; privateKey: string; hostKey: string | null; fingerprint: string | null }>('GET', `/v1/vms/${encodeURIComponent(vm)}/ssh-access`);
      const access = res.data;
      if (!access || typeof access.privateKey !== 'string') throw new UsageError('the controller sent no SSH access data');
      const dir = opts.dir ?? path.join(path.dirname(rt.configPath()), 'ssh');
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const keyFile = path.join(dir, `${vm}.key`);
      writeFileSync(keyFile, access.privateKey.endsWith('\n') ? access.privateKey : access.privateKey + '\n', { mode: 0o600 });
      chmodSync(keyFile, 0o600);
      const knownHosts = path.join(dir, `${vm}.known_hosts`);
      if (access.hostKey) writeFileSync(knownHosts, `${vm} ${access.hostKey}\n`, { mode: 0o600 });
      rt.note(access.fingerprint ? `host key of ${vm} (recorded on first use): ${access.fingerprint}` : `no host key recorded yet for this boot of ${vm}`);
      const self = process.argv[1] ? `${JSON.stringify(process.execPath)} ${JSON.stringify(process.argv[1])}` : 'fleet';
      const g = rt.globals(cmd);
      const extra = [...(g.url ?? []).map((u) => `--url ${u}`), g.context ? `--context ${g.context}` : ''].filter(Boolean).join(' ');
      rt.out(
        [
          `Host ${vm}`,
          `  User ${access.username}`,
          `  IdentityFile ${keyFile}`,
          `  IdentitiesOnly yes`,
          `  ProxyCommand ${self}${extra ? ` ${extra}` : ''} ssh --stdio %n`,
          access.hostKey ? `  UserKnownHostsFile ${knownHosts}` : `  # no host key recorded yet for this boot: run "fleet exec ${vm} -- true" first, then re-run ssh-config`,
          access.hostKey ? '  StrictHostKeyChecking yes' : '  StrictHostKeyChecking accept-new',
        ].join('\n'),
      );
    });
}
