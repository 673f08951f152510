// `fleet-controller run`: starts the controller and prints, on first start,
// the admin token and a bootstrap token for enrolling workers.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { defaultOptions } from './config.ts';
import { CONTROLLER_VERSION } from './version.ts';
import { applyControllerV8Flags } from './v8-flags.ts';
import { onShutdownSignals, takeLauncherEnv, watchLauncher } from './launched.ts';
// The controller itself, pino, the PKI and the database are imported by the command that
// needs them, so `--help` and `--version` start fast (issue 16).

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number 0-65535');
  return n;
}
function registriesPolicy(value: string): 'any' | 'known' {
  if (value !== 'any' && value !== 'known') throw new InvalidArgumentError('must be any or known');
  return value;
}

function ms(value: string): number {
  const m = /^(\d+)(ms|s|m)$/.exec(value);
  if (!m) throw new InvalidArgumentError('must be a duration with a unit, like 500ms, 30s or 3m');
  const unit = { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'];
  return Number(m[1]) * unit;
}
function hostPort(value: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(value);
  if (!m) throw new InvalidArgumentError('must be HOST:PORT');
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: port(m[2]!) };
}

const program = new Command('fleet-controller').version(CONTROLLER_VERSION).description('Fleet controller: REST API, scheduler and worker gRPC endpoint');

program
  .command('run')
  .description('run the controller')
  .option('--data-dir <dir>', 'database, CA and certificates live here', process.env.FLEET_DATA_DIR)
  .option('--database-url <url>', 'database URL (default: SQLite file in the data dir)', process.env.FLEET_DATABASE_URL)
  .option('--listen <host:port>', 'REST API listener', hostPort, { host: '127.0.0.1', port: 8080 })
  .option('--grpc-listen <host:port>', 'worker gRPC (TLS) listener', hostPort, { host: '0.0.0.0', port: 7443 })
  .option('--name <dns-or-ip...>', 'names/IPs workers use to reach this controller (added to the TLS certificate; the first is advertised)')
  .option('--tls-cert <file>', 'operator-provided server certificate (PEM)')
  .option('--tls-key <file>', 'operator-provided server key (PEM)')
  .option('--tls-ca <file>', 'CA that signed --tls-cert (PEM)')
  .option('--heartbeat-interval <duration>', 'how often workers send heartbeats', ms, 5_000)
  .option('--worker-offline-timeout <duration>', 'lostAfter: silence after which a worker is offline; its reschedule VMs fail and are re-placed, its wait VMs stay unknown', ms, 30_000)
  .option('--worker-fence-after <duration>', 'fenceAfter: how long a cut-off worker keeps reschedule VMs running (default: offline timeout minus max(2 s, 2 heartbeats, a quarter of it))', ms)
  .option('--scheduler-profile <profile>', 'pack or spread (default for a new fleet)', 'pack')
  .option('--api-tls <mode>', 'TLS on the REST API, WebSockets and dashboard: auto (on unless --listen is a loopback address), on, off', 'auto')
  .option('--api-hostname <dns-or-ip...>', 'names/IPs clients use to reach the REST API (added to its certificate)')
  .option('--api-cert <file>', 'operator-provided REST API certificate chain (PEM) instead of one from the controller CA')
  .option('--api-key <file>', 'key for --api-cert (PEM)')
  .option('--metrics-public', 'serve /metrics without a token (default: needs a token with the read role)')
  .option('--controller-name <name>', 'this controller among several on one PostgreSQL database (default: the host name)')
  .option('--registries <policy>', 'which registries VM images may name: any, or known (only those an admin added with fleet registry login)', registriesPolicy, 'any')
  .option('--leader-lease <duration>', 'leader lease (several controllers): a leader cut off from the database is replaced after about this long', ms, 3_000)
  .option('--advertise-api-url <url>', 'how the other controllers reach this REST API (sessions are relayed to the controller holding the worker stream; default: the API URL)')
  .option('--secrets-key-file <file>', 'key-encryption key for the secrets in the database (default: <data-dir>/secrets.key, created on first start; or FLEET_SECRETS_KEY)')
  .option('--secrets-key-command <command>', 'run through /bin/sh; prints the key-encryption key(s), one per line, current first (KMS-style hook)')
  .option('--log-level <level>', 'trace, debug, info, warn, error', process.env.FLEET_LOG_LEVEL ?? 'info')
  .action(async (o) => {
    // Started by the bin's launcher (bin/relaunch.cjs): its settings stay out of what we start,
    // and we do not outlive it. It forwards every signal it can catch; gone without a word, it was
    // killed (-9): the controller ends the same way, as if it had been the one killed.
    watchLauncher(takeLauncherEnv(process.env), () => process.kill(process.pid, 'SIGKILL'));
    // Before anything compiles Prisma's WebAssembly (v8-flags.ts says why).
    applyControllerV8Flags();
    const [{ startController }, { createLogger }, { enrollCommand }] = await Promise.all([
      import('./controller.ts'),
      import('./observability/logger.ts'),
      import('./api/routes/token-routes.ts'),
    ]);
    const log = createLogger(o.logLevel);
    if (o.apiTls !== 'auto' && o.apiTls !== 'on' && o.apiTls !== 'off') {
      console.error('fleet-controller: --api-tls must be auto, on or off');
      process.exit(2);
    }
    if (Boolean(o.apiCert) !== Boolean(o.apiKey)) {
      console.error('fleet-controller: --api-cert and --api-key go together');
      process.exit(2);
    }
    if (!(o.leaderLease >= 600 && o.leaderLease <= 120_000)) {
      console.error('fleet-controller: --leader-lease must be between 600ms and 2m');
      process.exit(2);
    }
    if (o.advertiseApiUrl !== undefined && !/^https?:\/\/[^\s/]+$/.test(o.advertiseApiUrl)) {
      console.error('fleet-controller: --advertise-api-url must look like https://host:port (no path)');
      process.exit(2);
    }
    if (o.controllerName !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(o.controllerName)) {
      console.error('fleet-controller: --controller-name: letters, digits, . _ - (at most 63)');
      process.exit(2);
    }
    if (o.schedulerProfile !== 'pack' && o.schedulerProfile !== 'spread') {
      console.error('fleet-controller: --scheduler-profile must be pack or spread');
      process.exit(2);
    }
    const c = await startController(
      {
        ...(o.dataDir ? { dataDir: o.dataDir } : {}),
        ...(o.databaseUrl ? { databaseUrl: o.databaseUrl } : {}),
        apiHost: o.listen.host,
        apiPort: o.listen.port,
        grpcHost: o.grpcListen.host,
        grpcPort: o.grpcListen.port,
        certificateNames: o.name ?? [],
        ...(o.tlsCert ? { tlsCertFile: o.tlsCert } : {}),
        ...(o.tlsKey ? { tlsKeyFile: o.tlsKey } : {}),
        ...(o.tlsCa ? { tlsCaFile: o.tlsCa } : {}),
        heartbeatIntervalMs: o.heartbeatInterval,
        workerOfflineTimeoutMs: o.workerOfflineTimeout,
        ...(o.workerFenceAfter !== undefined ? { workerFenceAfterMs: o.workerFenceAfter } : {}),
        defaultSchedulerProfile: o.schedulerProfile,
        ...(o.metricsPublic ? { metricsPublic: true } : {}),
        apiTls: o.apiTls,
        apiHostnames: o.apiHostname ?? [],
        ...(o.apiCert ? { apiCertFile: o.apiCert, apiKeyFile: o.apiKey } : {}),
        ...(process.env.FLEET_BOOTSTRAP_ADMIN_TOKEN ? { bootstrapAdminToken: process.env.FLEET_BOOTSTRAP_ADMIN_TOKEN } : {}),
        ...(o.controllerName ? { controllerName: o.controllerName } : {}),
        leaderLeaseMs: o.leaderLease,
        registries: o.registries,
        ...(o.advertiseApiUrl ? { advertiseApiUrl: o.advertiseApiUrl } : {}),
        ...(o.secretsKeyFile ? { secretsKeyFile: o.secretsKeyFile } : {}),
        ...(o.secretsKeyCommand ? { secretsKeyCommand: o.secretsKeyCommand } : {}),
        logLevel: o.logLevel,
      },
      log,
    );
    // The key is loaded: keep it out of the environment of anything this process starts.
    delete process.env.FLEET_SECRETS_KEY;
    delete process.env.FLEET_SECRETS_OLD_KEYS;
    const lines = [`Fleet controller ${CONTROLLER_VERSION}`, `  API:            ${c.apiUrl}  (OpenAPI: ${c.apiUrl}/v1/openapi.json)`, `  worker gRPC:    ${c.grpcAddress}`, `  CA fingerprint: ${c.caFingerprint}`];
    if (c.adminToken) {
      const boot = await c.tokens.createBootstrapToken({ name: 'initial', expiresInHours: 24 }, 'controller');
      lines.push(
        '',
        `  admin token (shown once; also saved to the data dir as admin.token):`,
        `    ${c.adminToken}`,
        `  log in:         fleet login ${c.apiUrl} --token ${c.adminToken}${c.apiUrl.startsWith('https:') ? ` --ca-fingerprint ${c.caFingerprint}` : ''}`,
        '',
        '  enroll a worker (bootstrap token valid 24h):',
        `    ${enrollCommand(c.grpcAddress, boot.token)}`,
      );
    }
    process.stdout.write(lines.join('\n') + '\n');
    const shutdown = async (signal: string) => {
      log.info({ signal }, 'shutting down');
      await c.stop();
      process.exit(0);
    };
    onShutdownSignals((signal) => void shutdown(signal));
  });

program
  .command('ca-fingerprint')
  .description("print the SHA-256 fingerprint of the controller's CA (compare it with what `fleet context add` shows)")
  .option('--data-dir <dir>', 'the controller data dir', process.env.FLEET_DATA_DIR)
  .action(async (o: { dataDir?: string }) => {
    const dataDir = o.dataDir ?? defaultOptions({}).dataDir;
    const file = path.join(dataDir, 'pki', 'ca.pem');
    let pem: string;
    try {
      pem = await readFile(file, 'utf8');
    } catch (err) {
      throw new Error(`cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); has a controller run with --data-dir ${dataDir}?`);
    }
    const { certificateFingerprint } = await import('@fleet/pki');
    process.stdout.write(certificateFingerprint(pem) + '\n');
  });

program
  .command('rotate-key')
  .description('make a new key-encryption key current and re-wrap every secret in the database under it, online (docs/operations.md, "Secrets at rest")')
  .option('--data-dir <dir>', 'the controller data dir (holds secrets.key)', process.env.FLEET_DATA_DIR)
  .option('--database-url <url>', 'database URL (default: SQLite file in the data dir)', process.env.FLEET_DATABASE_URL)
  .option('--new-key-file <file>', 'the new key (32 bytes: 64 hex digits or base64; mode 0600); default: a new random key')
  .option('--rewrap-only', 'no new key: re-wrap what is still under older keys (finish a rotation)')
  .option('--secrets-key-file <file>', 'the key file the controllers use, if not <data-dir>/secrets.key')
  .option('--secrets-key-command <command>', 'as for run: the command printing the keys (new key first, old ones after)')
  .option('--batch-size <n>', 'rows per batch', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 10_000) throw new InvalidArgumentError('must be 1-10000');
    return n;
  }, 200)
  .action(async (o: { dataDir?: string; databaseUrl?: string; newKeyFile?: string; rewrapOnly?: boolean; secretsKeyFile?: string; secretsKeyCommand?: string; batchSize: number }) => {
    const dataDir = o.dataDir ?? defaultOptions({}).dataDir;
    const { rotateKey } = await import('./secrets/rotate-key.ts');
    const r = await rotateKey({
      dataDir,
      ...(o.databaseUrl ? { databaseUrl: o.databaseUrl } : {}),
      ...(o.newKeyFile ? { newKeyFile: o.newKeyFile } : {}),
      ...(o.rewrapOnly ? { rewrapOnly: true } : {}),
      ...(o.secretsKeyFile ? { keyFile: o.secretsKeyFile } : {}),
      ...(o.secretsKeyCommand ? { keyCommand: o.secretsKeyCommand } : {}),
      batch: o.batchSize,
      say: (line) => process.stdout.write(line + '\n'),
    });
    const left = [...r.byKey].filter(([id]) => id !== r.current);
    process.stdout.write(
      [
        `re-wrapped the secrets of ${r.moved} of ${r.rows} VMs under key ${r.current}${r.previous && r.previous !== r.current ? ` (was ${r.previous})` : ''}`,
        left.length
          ? `still under other keys: ${left.map(([id, n]) => `${id}: ${n}`).join(', ')} — run rotate-key again before retiring them`
          : `every secret is under ${r.current}.${r.previousKeyFile ? ` Once every controller holds the new key, delete ${r.previousKeyFile}.` : ''}`,
      ].join('\n') + '\n',
    );
    if (left.length) process.exitCode = 3;
  });

program.parseAsync().catch((err: unknown) => {
  console.error(`fleet-controller: ${err instanceof Error ? err.message : String(err)}`);
  if (process.env.FLEET_DEBUG) console.error(err);
  process.exit(1);
});
