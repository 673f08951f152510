// Starts the real CNCF distribution registry (Debian's docker-registry) on 127.0.0.1 (or
// another local address) for tests, optionally with htpasswd auth and TLS from a throwaway CA.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, openSync, closeSync, promises as fsp } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface TestRegistry {
  /** "ADDRESS:PORT", e.g. "127.0.0.1:PORT" */
  host: string;
  /** PEM of the CA that signed the server certificate (TLS only). */
  caPem?: string;
  /** Directory holding only ca.crt, for skopeo's --cert-dir / --src-cert-dir (TLS only). */
  certDir?: string;
  /** Filesystem storage root of the registry. */
  dataDir: string;
  /** The registry's stdout+stderr, kept for debugging failed tests. */
  logFile: string;
  stop(): Promise<void>;
}

export interface TestRegistryOptions {
  auth?: { username: string; password: string };
  tls?: boolean;
  /** Use (and keep) this directory instead of a fresh temporary one. */
  dir?: string;
  /**
   * Local IPv4 address to listen on (default 127.0.0.1), e.g. the host end of a test's veth so
   * that processes in a network namespace reach the registry too. The TLS certificate names it.
   */
  address?: string;
}

const TOOLS = ['docker-registry', 'skopeo', 'htpasswd', 'openssl'] as const;

function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/bin', '/usr/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/**
 * Why registry tests cannot run here, or undefined when docker-registry, skopeo,
 * htpasswd and openssl are all installed (scripts/install-system-deps.sh installs them).
 */
export function registryToolsMissing(): string | undefined {
  const missing = TOOLS.filter((t) => !findExecutable(t));
  if (missing.length === 0) return undefined;
  return `registry integration tests skipped: ${missing.join(', ')} not installed (run scripts/install-system-deps.sh: packages docker-registry, skopeo, apache2-utils, openssl)`;
}

async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, address, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function run(cmd: string, args: string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, args, { cwd, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args[0] ?? ''} failed: ${e.stderr?.trim() || e.message}`, { cause: err });
  }
}

/** A CA and a server certificate for IP `address` / localhost, made with the openssl CLI. */
async function makeTls(dir: string, address: string): Promise<{ caPem: string; certFile: string; keyFile: string; certDir: string }> {
  await fsp.mkdir(dir, { recursive: true });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', '-new', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=Fleet test registry CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  await run('openssl', ['req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', `/CN=${address}`], dir);
  await fsp.writeFile(
    path.join(dir, 'server.ext'),
    `subjectAltName=IP:${address}${address === '127.0.0.1' ? '' : ',IP:127.0.0.1'},DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n`,
  );
  await run('openssl', ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', '0x' + randomBytes(12).toString('hex'),
    '-days', '2', '-out', 'server.crt', '-extfile', 'server.ext'], dir);
  const caPem = await fsp.readFile(path.join(dir, 'ca.crt'), 'utf8');
  // skopeo treats every *.key in a cert dir as a client key: give it ca.crt alone.
  const certDir = path.join(dir, 'trust');
  await fsp.mkdir(certDir, { recursive: true });
  await fsp.writeFile(path.join(certDir, 'ca.crt'), caPem);
  return { caPem, certFile: path.join(dir, 'server.crt'), keyFile: path.join(dir, 'server.key'), certDir };
}

/** One GET /v2/; resolves with the status, rejects on connection errors. */
function probe(host: string, caPem: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const opts = { host: host.slice(0, host.lastIndexOf(':')), port: Number(host.slice(host.lastIndexOf(':') + 1)), path: '/v2/', method: 'GET', timeout: 2000, agent: false as const };
    const req = caPem ? https.request({ ...opts, ca: caPem }) : http.request(opts);
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('probe timed out')));
    req.on('error', reject);
    req.end();
  });
}

async function tail(file: string): Promise<string> {
  const text = await fsp.readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-15).join('\n');
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Starts docker-registry on 127.0.0.1 (or `opts.address`) with a free port and waits until /v2/ answers. */
export async function startTestRegistry(opts: TestRegistryOptions = {}): Promise<TestRegistry> {
  const missing = registryToolsMissing();
  if (missing) throw new Error(missing);
  const address = opts.address ?? '127.0.0.1';
  if (!net.isIPv4(address)) throw new Error(`startTestRegistry: address must be an IPv4 address, got ${JSON.stringify(address)}`);
  const dir = opts.dir ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'fleet-test-registry-')));
  await fsp.mkdir(dir, { recursive: true });
  const dataDir = path.join(dir, 'data');
  await fsp.mkdir(dataDir, { recursive: true });
  const logFile = path.join(dir, 'registry.log');
  const tlsFiles = opts.tls ? await makeTls(path.join(dir, 'tls'), address) : undefined;
  let htpasswdFile: string | undefined;
  if (opts.auth) {
    // bcrypt (-B) is the only format the registry accepts.
    const line = await run('htpasswd', ['-Bbn', opts.auth.username, opts.auth.password], dir);
    htpasswdFile = path.join(dir, 'htpasswd');
    await fsp.writeFile(htpasswdFile, line.trim() + '\n', { mode: 0o600 });
  }

  const registryBin = findExecutable('docker-registry')!;
  // Another process can grab the port between our probe and the registry's bind: retry.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort(address);
    const host = `${address}:${port}`;
    const q = (s: string): string => JSON.stringify(s); // JSON strings are valid YAML scalars
    const config = [
      'version: 0.1',
      'log:',
      '  level: info',
      '  accesslog:',
      '    disabled: false',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${q(dataDir)}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      `  addr: ${q(host)}`,
      `  secret: ${q(randomBytes(16).toString('hex'))}`,
      ...(tlsFiles ? ['  tls:', `    certificate: ${q(tlsFiles.certFile)}`, `    key: ${q(tlsFiles.keyFile)}`] : []),
      ...(htpasswdFile ? ['auth:', '  htpasswd:', '    realm: fleet-test-registry', `    path: ${q(htpasswdFile)}`] : []),
      '',
    ].join('\n');
    const configFile = path.join(dir, 'config.yml');
    await fsp.writeFile(configFile, config);

    // REGISTRY_* variables would override the config file: do not inherit them.
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('REGISTRY_')) env[k] = v;
    const logFd = openSync(logFile, 'a');
    const child = spawn(registryBin, ['serve', configFile], { cwd: dir, env, stdio: ['ignore', logFd, logFd] });
    closeSync(logFd);
    let spawnError: Error | undefined;
    child.on('error', (err) => (spawnError = err));
    // Do not leave a registry running if the test process exits without stop().
    const killOnExit = (): void => void child.kill('SIGKILL');
    process.once('exit', killOnExit);
    child.once('exit', () => process.removeListener('exit', killOnExit));

    const stop = async (): Promise<void> => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited(child);
        clearTimeout(killer);
      }
      if (!opts.dir) await fsp.rm(dir, { recursive: true, force: true });
    };

    const deadline = Date.now() + 20_000;
    let ready = false;
    while (Date.now() < deadline) {
      if (spawnError || child.exitCode !== null || child.signalCode !== null) break;
      try {
        await probe(host, tlsFiles?.caPem);
        ready = true;
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    if (ready) {
      const reg: TestRegistry = { host, dataDir, logFile, stop };
      if (tlsFiles) {
        reg.caPem = tlsFiles.caPem;
        reg.certDir = tlsFiles.certDir;
      }
      return reg;
    }
    const log = await tail(logFile);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited(child);
    }
    if (attempt < 3 && /address already in use/i.test(log)) continue;
    if (!opts.dir) await fsp.rm(dir, { recursive: true, force: true });
    throw new Error(`docker-registry did not come up on ${host}${spawnError ? ` (${spawnError.message})` : ''}; last log lines:\n${log}`);
  }
}
