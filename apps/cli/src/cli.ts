// Program wiring: global flags, the command tree, and the mapping of every
// outcome to an exit code. `run()` never calls process.exit, so tests call it
// in-process with their own streams and environment.
import { Command, CommanderError } from 'commander';
import { registerBootstrapTokenCommands } from './commands/bootstrap-token.ts';
import { registerContextCommands } from './commands/context.ts';
import { registerControllerCommands } from './commands/controller.ts';
import { registerEventCommands } from './commands/events.ts';
import { registerSchedulerCommands } from './commands/scheduler.ts';
import { registerTokenCommands } from './commands/token.ts';
import { registerAccountCommands } from './commands/account.ts';
import { registerVersionCommand } from './commands/version.ts';
import { registerCompletionCommand } from './commands/completion.ts';
import { registerVmCommands } from './commands/vm/index.ts';
import { registerWorkerCommands } from './commands/worker.ts';
import { registerExecCommand } from './commands/exec.ts';
import { registerSshCommands } from './commands/ssh.ts';
import { registerPortForwardCommand } from './commands/port-forward.ts';
import { registerVncCommand } from './commands/vnc.ts';
import { registerCpCommand } from './commands/cp.ts';
import { registerImageCommands } from './commands/image.ts';
import { registerRegistryCommands } from './commands/registry.ts';
import { EXIT_CODES_HELP, ExitCode, ReportedError, describeError } from './errors.ts';
import type { Io } from './io.ts';
import { Runtime } from './runtime.ts';
import { CLI_VERSION } from './version.ts';

const ENVIRONMENT_HELP = `Environment:
  FLEET_URL       controller URL, or several separated by commas (overrides the context; --url overrides it)
  FLEET_TOKEN     API token (overrides the context; --token overrides it)
  FLEET_CONTEXT   context to use instead of the current one (--context overrides it)
  FLEET_CONFIG    config file (default $XDG_CONFIG_HOME/fleet/config.json or ~/.config/fleet/config.json)
  FLEET_DEBUG=1   print stack traces with errors
  NO_COLOR        no colours (neither are there when stdout is not a terminal)`;

const EXAMPLES_HELP = `Examples:
  fleet login http://127.0.0.1:8080 --token fleet_abc_s3cr3t --context local
  fleet vm create web-1 --image ubuntu:24.04 --cpus 2 --memory 4G --label team=web --wait
  fleet vm list --wide
  fleet vm logs web-1 --follow
  fleet vm delete web-1 --wait`;

export function buildProgram(rt: Runtime): Command {
  const program = new Command('fleet');
  program
    .description('Fleet: manage VMs on a fleet of Mac hosts')
    .usage('[global options] <command> [options]')
    .option('-o, --output <format>', 'output format: json (the API objects; NDJSON for streams), wide (more columns) or name (one name per line, for list and get)')
    .option('--json', 'the same as -o json')
    .option('--context <name>', 'use this saved context instead of the current one')
    .option('--url <url>', 'controller URL (overrides FLEET_URL and the context); repeat it or separate with commas for several controllers, tried in order', (value: string, previous: string[] | undefined) => [...(previous ?? []), value])
    .option('--token <token>', 'API token (overrides FLEET_TOKEN and the context)')
    .option('--request-timeout <duration>', 'give up on a request after this long (default 30s)')
    .helpCommand('help [command]', 'show help for a command')
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => rt.io.stdout.write(s),
      writeErr: (s) => rt.io.stderr.write(s),
      outputError: (s, write) => write(`fleet: ${s.replace(/^error: /, '')}`),
      getOutHelpWidth: () => 100,
      getErrHelpWidth: () => 100,
    })
    .addHelpText('after', `\n${EXAMPLES_HELP}\n\n${ENVIRONMENT_HELP}\n\n${EXIT_CODES_HELP}\n`);

  registerContextCommands(program, rt);
  registerVmCommands(program, rt);
  registerWorkerCommands(program, rt);
  registerImageCommands(program, rt);
  registerRegistryCommands(program, rt);
  registerControllerCommands(program, rt);
  registerTokenCommands(program, rt);
  registerAccountCommands(program, rt);
  registerBootstrapTokenCommands(program, rt);
  registerEventCommands(program, rt);
  registerSchedulerCommands(program, rt);
  registerExecCommand(program, rt);
  registerSshCommands(program, rt);
  registerPortForwardCommand(program, rt);
  registerVncCommand(program, rt);
  registerCpCommand(program, rt);
  registerVersionCommand(program, rt);
  registerCompletionCommand(program, rt);
  return program;
}

/** Runs `fleet` with `argv` (without node and the script) and returns the exit code. */
export async function run(argv: string[], io: Io): Promise<number> {
  const rt = new Runtime(io);
  const program = buildProgram(rt);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return ExitCode.OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed the help or the usage error.
      if (err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return ExitCode.OK;
      return ExitCode.USAGE;
    }
    if (err instanceof ReportedError) return err.exitCode;
    const { exitCode, message } = describeError(err);
    io.stderr.write(`fleet: ${message}\n`);
    if (io.env.FLEET_DEBUG === '1' && err instanceof Error && err.stack) {
      io.stderr.write(`${err.stack}\n`);
      if (err.cause) io.stderr.write(`caused by: ${err.cause instanceof Error ? (err.cause.stack ?? err.cause.message) : String(err.cause)}\n`);
    }
    return exitCode;
  }
}

export { CLI_VERSION };
