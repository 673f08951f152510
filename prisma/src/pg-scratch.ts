// A throwaway PostgreSQL server on loopback, for `migrate:new` (its shadow
// database) and for tests. Uses the PostgreSQL binaries of Debian's
// `postgresql` package (or FLEET_PG_BIN). Data lives in a temp directory that
// is removed on stop(). As root, the server runs as the `postgres` user.
// Optionally it also listens on other local addresses with trust auth for given
// subnets (end-to-end labs whose controllers run in network namespaces).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { appendFile, chown, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PrismaPg } from '@prisma/adapter-pg';

export interface ScratchPostgres {
  /** postgresql://fleet@127.0.0.1:<port>/postgres (trust auth, loopback only). */
  readonly url: string;
  /** The TCP port (the same on every listen address). */
  readonly port: number;
  /** A URL for another database on the same server. */
  urlFor(database: string): string;
  /** A URL reaching the server through `host` (one of `listenAddresses`), e.g. from a network namespace. */
  urlOn(host: string, database: string): string;
  /** CREATE DATABASE (a fresh, empty one) and return its URL. */
  createDatabase(name: string): Promise<string>;
  stop(): Promise<void>;
}

/** The directory holding initdb and postgres, or undefined if PostgreSQL is not installed. */
export function findPostgresBin(): string | undefined {
  const fromEnv = process.env['FLEET_PG_BIN'];
  if (fromEnv) return existsSync(path.join(fromEnv, 'initdb')) ? fromEnv : undefined;
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((v) => existsSync(path.join(root, v, 'bin', 'initdb')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return path.join(root, versions[0], 'bin');
  }
  const cfg = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  const dir = cfg.status === 0 ? cfg.stdout.trim() : '';
  return dir && existsSync(path.join(dir, 'initdb')) ? dir : undefined;
}

function postgresUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  const f = line?.split(':');
  if (!f || f.length < 4) throw new Error('running as root but there is no `postgres` user to run PostgreSQL as');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function canQuery(url: string): Promise<boolean> {
  const factory = new PrismaPg({ connectionString: url, max: 1, connectionTimeoutMillis: 1000 });
  try {
    const a = await factory.connect();
    try {
      await a.queryRaw({ sql: 'SELECT 1', args: [], argTypes: [] });
      return true;
    } finally {
      await a.dispose();
    }
  } catch {
    return false;
  }
}

export interface ScratchPostgresOptions {
  timeoutMs?: number;
  /**
   * Addresses to listen on besides 127.0.0.1 (each must already be configured on this host).
   * Nothing but loopback gets in unless `trustCidrs` admits it.
   */
  listenAddresses?: string[];
  /** Client subnets (CIDR) admitted with trust auth over TCP, besides loopback. */
  trustCidrs?: string[];
  /** max_connections (default 50). */
  maxConnections?: number;
}

export async function startScratchPostgres(opts: ScratchPostgresOptions = {}): Promise<ScratchPostgres> {
  const bin = findPostgresBin();
  if (!bin) throw new Error('PostgreSQL is not installed (no initdb found; `apt-get install postgresql`, or set FLEET_PG_BIN)');
  const user = postgresUser();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-pg-'));
  if (user) await chown(dir, user.uid, user.gid);
  const data = path.join(dir, 'data');
  const ids = user ? { uid: user.uid, gid: user.gid } : {};
  const init = spawnSync(
    path.join(bin, 'initdb'),
    ['-D', data, '-U', 'fleet', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions'],
    { encoding: 'utf8', cwd: dir, ...ids },
  );
  if (init.status !== 0) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`initdb failed (exit ${init.status}): ${init.stderr || init.stdout}`);
  }
  for (const cidr of opts.trustCidrs ?? []) {
    if (!/^[0-9a-fA-F:.]+\/\d{1,3}$/.test(cidr)) {
      await rm(dir, { recursive: true, force: true });
      throw new Error(`bad trust CIDR ${cidr}`);
    }
  }
  if (opts.trustCidrs?.length) {
    // initdb --auth=trust admits only local sockets and loopback; the lab's subnets are added
    // explicitly so that nothing else on the host's networks can log in.
    await appendFile(path.join(data, 'pg_hba.conf'), opts.trustCidrs.map((c) => `host all all ${c} trust\n`).join(''));
  }
  const listen = ['127.0.0.1', ...(opts.listenAddresses ?? [])].join(',');
  const port = await freePort();
  let output = '';
  const child: ChildProcess = spawn(
    path.join(bin, 'postgres'),
    [
      '-D', data, '-p', String(port), '-k', dir,
      '-c', `listen_addresses=${listen}`,
      '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
      '-c', `max_connections=${opts.maxConnections ?? 50}`,
    ],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], ...ids },
  );
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const urlFor = (db: string): string => `postgresql://fleet@127.0.0.1:${port}/${encodeURIComponent(db)}`;
  const urlOn = (host: string, db: string): string => `postgresql://fleet@${host.includes(':') ? `[${host}]` : host}:${port}/${encodeURIComponent(db)}`;
  const url = urlFor('postgres');
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT'); // fast shutdown
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  while (!(await canQuery(url))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`scratch PostgreSQL did not start on port ${port}:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    url,
    port,
    urlFor,
    urlOn,
    async createDatabase(name: string): Promise<string> {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
      const factory = new PrismaPg({ connectionString: url, max: 1 });
      const a = await factory.connect();
      try {
        await a.executeScript(`CREATE DATABASE "${name}"`);
      } finally {
        await a.dispose();
      }
      return urlFor(name);
    },
    stop,
  };
}
