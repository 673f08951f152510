// `fleet-worker` command line: enroll | run.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseCidr } from '@fleet/netfilter';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { parseControllerList } from './config/address.ts';
import { parseLabels } from './config/labels.ts';
import { NotEnrolledError, CredentialError } from './config/credentials.ts';
import { AVAILABLE_DRIVERS, DEFAULT_DRIVER, DEFAULT_NAT_NAME, DEFAULT_NAT_SUBNET } from './drivers/registry.ts';
import { DEFAULT_VM_UID_BASE, DEFAULT_VM_UID_COUNT } from './drivers/qemu-users.ts';
import type { EnrollmentErrorCode } from './enrollment/enroll.ts';
import { createLogger, LOG_LEVELS } from './logger.ts';
import { DEFAULT_LOG_FILE, NotMacOSError, installService, uninstallService } from './macos/service.ts';
import { WORKER_VERSION } from './version.ts';
// The worker, enrollment and doctor are imported by the command that runs them, so
// `--help` and `--version` start fast (issue 16).

/** Exit codes scripts can rely on (see README). */
export const EXIT = {
  ok: 0,
  error: 1,
  usage: 2,
  refused: 3,
  protocol: 4,
  unreachable: 5,
  fingerprint: 6,
} as const;

const ENROLL_EXIT: Record<EnrollmentErrorCode, number> = {
  'already-enrolled': EXIT.usage,
  'bad-token': EXIT.usage,
  invalid: EXIT.usage,
  refused: EXIT.refused,
  'name-taken': EXIT.refused,
  unreachable: EXIT.unreachable,
  'fingerprint-mismatch': EXIT.fingerprint,
  failed: EXIT.error,
};

export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

const defaultIo: CliIo = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('expected a non-negative integer');
  return n;
}

function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError('expected a number >= 0');
  return n;
}

/** `--controller`, repeatable, each value possibly comma-separated: the addresses in order, checked. */
function controllersOption(value: string, previous: string[] | undefined): string[] {
  try {
    return [...new Set([...(previous ?? []), ...parseControllerList(value)])];
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function labelsOption(value: string): Record<string, string> {
  try {
    return parseLabels(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function cidrList(value: string): string[] {
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  for (const item of items) {
    const parsed = parseCidr(item);
    if (!parsed.ok) throw new InvalidArgumentError(`${item}: ${parsed.error}`);
  }
  return items;
}

/** OpenSSH public keys from a file: one per line, comments and blank lines skipped. */
export function readAuthorizedKeys(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`--authorized-keys: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  const keys = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  for (const k of keys) {
    if (!/^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( .*)?$/.test(k)) {
      throw new Error(`--authorized-keys: ${file} has a line that is not an OpenSSH public key: ${k.slice(0, 40)}...`);
    }
  }
  return keys;
}

const logLevelOption = (): Option =>
  new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).env('FLEET_LOG_LEVEL').default('info');

/** Builds the program; `exit` receives the exit code of the command that ran. */
export function buildProgram(io: CliIo = defaultIo, exit: (code: number) => void = (code) => process.exit(code)): Command {
  const program = new Command('fleet-worker')
    .description('Fleet worker: runs VMs on this host for a Fleet controller')
    .version(WORKER_VERSION)
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) })
    .exitOverride()
    .showHelpAfterError();

  program
    .command('enroll')
    .description('enroll this host with a controller using a bootstrap token; stores an mTLS client certificate in the data dir')
    .requiredOption(
      '--controller <host:port>',
      'controller gRPC address (TLS), e.g. fleet.example.com:7443; repeat it or separate with commas for several controllers (tried in order)',
      controllersOption,
    )
    .addOption(new Option('--token <token>', 'bootstrap token printed by the controller / `fleet token create`').env('FLEET_BOOTSTRAP_TOKEN').makeOptionMandatory())
    .option('--name <name>', 'worker name, unique in the fleet (default: host name)')
    .addOption(new Option('--data-dir <dir>', 'where the credential is stored (default ~/.fleet-worker; as root on Linux /var/lib/fleet-worker unless ~/.fleet-worker exists)').env('FLEET_WORKER_DATA_DIR'))
    .option('--force', 'replace an existing enrollment in the data dir', false)
    .addOption(new Option('--machine-id <id>', 'override the detected machine id (tests, many workers on one host)').hideHelp())
    .addOption(logLevelOption().default('warn'))
    .action(async (opts: { controller: string[]; token: string; name?: string; dataDir?: string; force: boolean; machineId?: string; logLevel: string }) => {
      const logger = createLogger(opts.logLevel);
      const { enrollWorker, EnrollmentError } = await import('./enrollment/enroll.ts');
      try {
        const result = await enrollWorker({
          controller: opts.controller,
          token: opts.token,
          force: opts.force,
          logger,
          ...(opts.name !== undefined ? { name: opts.name } : {}),
          ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir } : {}),
          ...(opts.machineId !== undefined ? { machineId: opts.machineId } : {}),
        });
        io.out(`Enrolled worker "${result.name}" (${result.workerId}) with controller ${result.controller}.`);
        if (result.controllers.length > 1) io.out(`Controllers known: ${result.controllers.join(', ')}.`);
        io.out(`Credentials stored in ${result.dataDir}.`);
        io.out(`Start it with: fleet-worker run${opts.dataDir !== undefined ? ` --data-dir ${result.dataDir}` : ''}`);
        exit(EXIT.ok);
      } catch (error) {
        if (error instanceof EnrollmentError) {
          io.err(`fleet-worker enroll: ${error.message}`);
          exit(ENROLL_EXIT[error.code]);
          return;
        }
        io.err(`fleet-worker enroll: ${(error as Error).message}`);
        exit(EXIT.error);
      }
    });

  program
    .command('run')
    .description('connect to the controller and run the VMs it assigns (until SIGINT/SIGTERM)')
    .addOption(new Option('--data-dir <dir>', 'data dir holding the enrollment (default ~/.fleet-worker; as root on Linux /var/lib/fleet-worker unless ~/.fleet-worker exists)').env('FLEET_WORKER_DATA_DIR'))
    .option('--controller <host:port>', 'override the controller addresses stored at enrollment (repeat it or separate with commas for several, dialed in order)', controllersOption)
    .option('--labels <k=v,...>', 'labels the scheduler can select on', labelsOption)
    .option('--cpus <n>', 'CPUs offered to VMs (default: logical CPUs)', nonNegativeInt)
    .option('--memory-mib <n>', 'memory offered to VMs in MiB (default: total memory)', nonNegativeInt)
    .option('--vm-slots <n>', 'VMs run at once (default: one per logical CPU)', nonNegativeInt)
    .option('--macos-slots <n>', 'macOS guests at once (default: 2 where the driver runs macOS, else 0)', nonNegativeInt)
    .addOption(new Option('--driver <name>', 'VM runtime').choices(AVAILABLE_DRIVERS).default(DEFAULT_DRIVER))
    .addOption(
      new Option('--synthetic-speed <factor>', 'synthetic driver: multiplier on its delays (1 = realistic, 0.1 = 10x faster, 0 = instant)')
        .argParser(nonNegativeNumber)
        .default(1),
    )
    .option('--synthetic-addresses <n>', 'synthetic driver: size of its fake VM address pool (default 129536; one address per VM held)', nonNegativeInt)
    .option('--nat-subnet <cidr>', `qemu driver: the VMs' NAT subnet (default ${DEFAULT_NAT_SUBNET}; a clash with an existing route is refused)`)
    .option('--host-only-subnet <cidr>', "qemu driver: also offer a host-only network on this subnet (e.g. 192.168.128.0/24): its VMs reach this worker and nothing beyond; off by default (a clash with an existing route is refused)")
    .option('--host-only-name <name>', 'qemu driver: name of the host-only bridge and its nftables table (default fleet1)')
    .option('--nat-name <name>', `qemu driver: name of the NAT bridge and its nftables table (default ${DEFAULT_NAT_NAME})`)
    .option('--uplink <ifname>', "qemu driver: masquerade out of this interface (default: the default route's device)")
    .addOption(
      new Option('--vm-link <kind>', "qemu driver: how each VM's frames reach the bridge: tap (one write per frame; measured fastest) or veth (AF_PACKET on a veth in a per-VM namespace)")
        .choices(['tap', 'veth'])
        .default('tap'),
    )
    .addOption(
      new Option('--vm-framing <kind>', "qemu driver: how frames travel between QEMU and the VM host process: vnet (QEMU on a TAP with virtio-net headers alone in a per-VM namespace, so TSO and checksum offloads cross the pump; the default, TAP uplink only), stream (length-prefixed plain frames on a stream socket, -netdev stream; the default with --vm-link veth) or dgram (one datagram per frame, -netdev dgram)")
        .choices(['vnet', 'stream', 'dgram']),
    )
    .option('--authorized-keys <file>', 'qemu driver: OpenSSH public keys (one per line) every guest of the built-in image accepts')
    .option('--global-prefixes <cidr,...>', 'qemu driver: prefixes VMs may reach as if they were public, e.g. a lab network standing in for the Internet', cidrList)
    .option('--images-dir <dir>', 'qemu driver: where operator disk images named in a VM spec are found (default <data-dir>/images)')
    .addOption(new Option('--accel <mode>', 'qemu driver: accelerator (auto probes KVM once with a timeout)').choices(['auto', 'tcg', 'kvm']).default('auto'))
    .option(
      '--vm-uid-base <uid>',
      `qemu driver: each VM's host process and QEMU run as their own uid/gid from this base (numeric, no /etc/passwd entry; default ${DEFAULT_VM_UID_BASE}; 0 = run them as root, not recommended)`,
      nonNegativeInt,
    )
    .option('--vm-user <name>', 'vz driver (macOS): the user every VM and IPSW install runs as, in its GUI login session (enable automatic login for it; docs/macos.md). Required with --driver vz')
    .option('--image-cache-dir <dir>', 'where images pulled from registries are cached (default <data-dir>/image-cache)')
    .option('--image-cache-limit <size>', 'evict least-recently-used unused images above this size, e.g. 200GiB, 500G, 0 = no limit (default 0)', byteSize)
    .option('--vm-uid-count <n>', `qemu driver: size of the VM uid range (default ${DEFAULT_VM_UID_COUNT}; one uid per VM instance on this worker)`, nonNegativeInt)
    .addOption(logLevelOption())
    .action(
      async (opts: {
        dataDir?: string;
        controller?: string[];
        labels?: Record<string, string>;
        cpus?: number;
        memoryMib?: number;
        vmSlots?: number;
        macosSlots?: number;
        driver: string;
        syntheticSpeed: number;
        syntheticAddresses?: number;
        natSubnet?: string;
        natName?: string;
        hostOnlySubnet?: string;
        vmLink?: 'tap' | 'veth';
        vmFraming?: 'dgram' | 'stream' | 'vnet';
        hostOnlyName?: string;
        uplink?: string;
        authorizedKeys?: string;
        imagesDir?: string;
        globalPrefixes?: string[];
        accel: 'auto' | 'tcg' | 'kvm';
        vmUidBase?: number;
        vmUidCount?: number;
        vmUser?: string;
        imageCacheDir?: string;
        imageCacheLimit?: number;
        logLevel: string;
      }) => {
        const logger = createLogger(opts.logLevel);
        let handle;
        try {
          const keys = opts.authorizedKeys !== undefined ? readAuthorizedKeys(opts.authorizedKeys) : undefined;
          const { startWorker } = await import('./worker.ts');
          handle = await startWorker({
            logger,
            driver: opts.driver,
            synthetic: { speed: opts.syntheticSpeed, ...(opts.syntheticAddresses !== undefined ? { natAddresses: opts.syntheticAddresses } : {}) },
            qemu: {
              accel: opts.accel,
              ...(opts.natSubnet !== undefined ? { natSubnet: opts.natSubnet } : {}),
              ...(opts.natName !== undefined ? { natName: opts.natName } : {}),
              ...(opts.hostOnlySubnet !== undefined ? { hostOnlySubnet: opts.hostOnlySubnet } : {}),
              ...(opts.vmLink !== undefined ? { vmLink: opts.vmLink } : {}),
              ...(opts.vmFraming !== undefined ? { vmFraming: opts.vmFraming } : {}),
              ...(opts.hostOnlyName !== undefined ? { hostOnlyName: opts.hostOnlyName } : {}),
              ...(opts.uplink !== undefined ? { uplinkInterface: opts.uplink } : {}),
              ...(keys !== undefined ? { authorizedKeys: keys } : {}),
              ...(opts.imagesDir !== undefined ? { imagesDir: path.resolve(opts.imagesDir) } : {}),
              ...(opts.globalPrefixes !== undefined ? { globalPrefixes: opts.globalPrefixes } : {}),
              vmUsers: opts.vmUidBase === 0 ? null : { base: opts.vmUidBase ?? DEFAULT_VM_UID_BASE, count: opts.vmUidCount ?? DEFAULT_VM_UID_COUNT },
              ...(opts.vmUser !== undefined ? { vzVmUser: opts.vmUser } : {}),
            },
            imageCache: {
              ...(opts.imageCacheDir !== undefined ? { dir: path.resolve(opts.imageCacheDir) } : {}),
              ...(opts.imageCacheLimit !== undefined ? { limitBytes: opts.imageCacheLimit } : {}),
            },
            labels: opts.labels ?? {},
            capacity: {
              ...(opts.cpus !== undefined ? { cpus: opts.cpus } : {}),
              ...(opts.memoryMib !== undefined ? { memoryMib: opts.memoryMib } : {}),
              ...(opts.vmSlots !== undefined ? { vmSlots: opts.vmSlots } : {}),
              ...(opts.macosSlots !== undefined ? { macosSlots: opts.macosSlots } : {}),
            },
            ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir } : {}),
            ...(opts.controller !== undefined ? { controller: opts.controller } : {}),
          });
        } catch (error) {
          io.err(`fleet-worker run: ${(error as Error).message}`);
          exit(error instanceof NotEnrolledError || error instanceof CredentialError ? EXIT.usage : EXIT.error);
          return;
        }
        const worker = handle;
        let signalled = 0;
        const onSignal = (signal: NodeJS.Signals): void => {
          signalled++;
          if (signalled > 1) exit(130);
          logger.info({ signal }, 'stopping');
          void worker.stop();
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        const outcome = await worker.done;
        await worker.stop();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        if (outcome.kind === 'fatal') {
          io.err(`fleet-worker run: ${outcome.message}`);
          logger.flush();
          exit(outcome.reason === 'protocol-unsupported' ? EXIT.protocol : EXIT.refused);
          return;
        }
        logger.flush();
        exit(EXIT.ok);
      },
    );

  program
    .command('doctor')
    .description('check this host before `fleet-worker run`: Node.js, enrollment, certificate, controller (TLS), driver prerequisites')
    .addOption(new Option('--data-dir <dir>', 'data dir holding the enrollment (default ~/.fleet-worker; as root on Linux /var/lib/fleet-worker unless ~/.fleet-worker exists)').env('FLEET_WORKER_DATA_DIR'))
    .addOption(new Option('--driver <name>', 'check the prerequisites of this VM runtime (default: what `run` defaults to)').choices(AVAILABLE_DRIVERS).default(DEFAULT_DRIVER))
    .option('--vm-user <name>', 'vz driver (macOS): the VM user `run --vm-user` names; checks its GUI login session')
    .option('--json', 'print {ok, checks: [{name, status, detail, fix?}]}', false)
    .action(async (opts: { dataDir?: string; driver: string; vmUser?: string; json: boolean }) => {
      const [{ runDoctor }, { formatReport }] = await Promise.all([import('./doctor/doctor.ts'), import('./doctor/check.ts')]);
      const report = await runDoctor({ driver: opts.driver, ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir } : {}), ...(opts.vmUser !== undefined ? { vmUsers: [opts.vmUser] } : {}) });
      if (opts.json) io.out(JSON.stringify(report, null, 2));
      else for (const line of formatReport(report)) io.out(line);
      exit(report.ok ? EXIT.ok : EXIT.error);
    });

  // macOS: the worker as a launchd daemon (vmnet needs root). Elsewhere: a clear error, exit 2.
  program
    .command('install')
    .description('macOS: install a launchd daemon that runs `fleet-worker run [run-options...]` at boot (sudo; see docs/macos.md)')
    .argument('[run-options...]', 'options for `fleet-worker run`, e.g. --driver vz --data-dir /var/lib/fleet')
    .option('--log-file <file>', 'daemon stdout/stderr', DEFAULT_LOG_FILE)
    .allowUnknownOption()
    .action(async (runArgs: string[], opts: { logFile: string }) => {
      try {
        for (const line of await installService({ runArgs, logFile: path.resolve(opts.logFile) })) io.out(line);
        exit(EXIT.ok);
      } catch (error) {
        io.err(`fleet-worker install: ${(error as Error).message}`);
        exit(error instanceof NotMacOSError ? EXIT.usage : EXIT.error);
      }
    });
  program
    .command('uninstall')
    .description('macOS: remove the launchd daemon installed by `fleet-worker install` (sudo)')
    .action(async () => {
      try {
        for (const line of await uninstallService()) io.out(line);
        exit(EXIT.ok);
      } catch (error) {
        io.err(`fleet-worker uninstall: ${(error as Error).message}`);
        exit(error instanceof NotMacOSError ? EXIT.usage : EXIT.error);
      }
    });

  return program;
}

/** Runs the CLI; resolves with the exit code (also passed to `exit`). */
export async function runCli(argv: string[], io: CliIo = defaultIo, exit: (code: number) => void = (code) => process.exit(code)): Promise<void> {
  const program = buildProgram(io, exit);
  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help / --version exit 0; usage errors 2.
      exit(error.exitCode === 0 ? EXIT.ok : EXIT.usage);
      return;
    }
    io.err(`fleet-worker: ${(error as Error).message}`);
    exit(EXIT.error);
  }
}

/** "200GiB", "500G", "1.5TiB", "1048576": bytes (powers of 1024). */
export function byteSize(value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(value);
  if (!m) throw new InvalidArgumentError(`${JSON.stringify(value)} is not a size (e.g. 200GiB, 500G, 0)`);
  const n = Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase());
  if (!Number.isSafeInteger(Math.round(n))) throw new InvalidArgumentError(`${JSON.stringify(value)} is too large`);
  return Math.round(n);
}
