// Starts real controller and worker processes for end-to-end tests and talks to
// them the way operators do: the REST API over HTTP, workers over gRPC/TLS.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
// The bin wrappers register tsx inside the process itself, so a signal sent to
// the child reaches the program (tsx's own CLI would run it in a grandchild).
const CONTROLLER_MAIN = path.join(REPO_ROOT, 'apps/controller/bin/fleet-controller.js');
const WORKER_MAIN = path.join(REPO_ROOT, 'apps/worker/bin/fleet-worker.js');

export async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `fleet-e2e-${prefix}-`));
  // Traverse-only for others (issue 14): a qemu worker's VM users reach their run dirs in a data
  // dir inside by name; nothing here is listable and the data dirs keep their own modes.
  await chmod(dir, 0o711);
  return dir;
}

export interface RunningProcess {
  child: ChildProcess;
  output(): string;
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

export function startProcess(args: string[], env: Record<string, string> = {}): RunningProcess {
  return wrapChild(spawn(process.execPath, args, { cwd: REPO_ROOT, env: { ...process.env, FLEET_LOG_LEVEL: process.env.FLEET_LOG_LEVEL ?? 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] }));
}

/** A RunningProcess over a child spawned with piped stdout/stderr (collected, matchable). */
export function wrapChild(child: ChildProcess): RunningProcess {
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString();
    for (const w of waiters) w();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => {
    for (const w of waiters) w();
    resolve(code);
  }));
  return {
    child,
    output: () => out,
    exited,
    waitFor(pattern, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = out.match(pattern);
          if (m) {
            cleanup();
            resolve(m);
          } else if (child.exitCode !== null) {
            cleanup();
            reject(new Error(`process exited (${child.exitCode}) before printing ${pattern}:\n${out}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${pattern}; output so far:\n${out}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    async kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export interface ControllerProcess extends RunningProcess {
  apiUrl: string;
  grpcAddress: string;
  adminToken: string;
  dataDir: string;
  api: ApiClient;
}

export async function startControllerProcess(opts: { dataDir: string; adminToken?: string; offlineTimeout?: string; apiPort?: number; grpcPort?: number; extraArgs?: string[] }): Promise<ControllerProcess> {
  const adminToken = opts.adminToken ?? 'fleet_e2eadmin0001_' + 'A'.repeat(43);
  const proc = startProcess(
    [
      CONTROLLER_MAIN,
      'run',
      '--data-dir', opts.dataDir,
      '--listen', `127.0.0.1:${opts.apiPort ?? 0}`,
      '--grpc-listen', `127.0.0.1:${opts.grpcPort ?? 0}`,
      '--heartbeat-interval', '500ms',
      '--worker-offline-timeout', opts.offlineTimeout ?? '3s',
      ...(opts.extraArgs ?? []),
    ],
    { FLEET_BOOTSTRAP_ADMIN_TOKEN: adminToken },
  );
  const api = (await proc.waitFor(/API:\s+(https?:\/\/\S+)/))[1]!;
  const grpcAddress = (await proc.waitFor(/worker gRPC:\s+(\S+)/))[1]!;
  return Object.assign(proc, { apiUrl: api, grpcAddress, adminToken, dataDir: opts.dataDir, api: new ApiClient(api, adminToken) });
}

export interface WorkerProcess extends RunningProcess {
  name: string;
  dataDir: string;
}

export async function enrollWorker(opts: { controller: ControllerProcess; name: string; dataDir: string; token?: string; extraArgs?: string[] }): Promise<{ code: number | null; output: string }> {
  const token = opts.token ?? (await opts.controller.api.createBootstrapToken()).token;
  const p = startProcess([WORKER_MAIN, 'enroll', '--controller', opts.controller.grpcAddress, '--token', token, '--name', opts.name, '--data-dir', opts.dataDir, ...(opts.extraArgs ?? [])]);
  const code = await p.exited;
  return { code, output: p.output() };
}

export function runWorker(opts: {
  name: string;
  dataDir: string;
  labels?: string;
  cpus?: number;
  memoryMib?: number;
  vmSlots?: number;
  macosSlots?: number;
  speed?: number;
  /** Size of the synthetic driver's VM address pool. */
  natAddresses?: number;
}): WorkerProcess {
  const args = [WORKER_MAIN, 'run', '--data-dir', opts.dataDir, '--driver', 'synthetic', '--synthetic-speed', String(opts.speed ?? 0.05)];
  if (opts.labels) args.push('--labels', opts.labels);
  if (opts.cpus !== undefined) args.push('--cpus', String(opts.cpus));
  if (opts.memoryMib !== undefined) args.push('--memory-mib', String(opts.memoryMib));
  if (opts.vmSlots !== undefined) args.push('--vm-slots', String(opts.vmSlots));
  if (opts.macosSlots !== undefined) args.push('--macos-slots', String(opts.macosSlots));
  if (opts.natAddresses !== undefined) args.push('--synthetic-addresses', String(opts.natAddresses));
  return Object.assign(startProcess(args), { name: opts.name, dataDir: opts.dataDir });
}

export async function enrollAndRunWorker(controller: ControllerProcess, opts: Omit<Parameters<typeof runWorker>[0], 'dataDir'> & { dataDir?: string }): Promise<WorkerProcess> {
  const dataDir = opts.dataDir ?? (await tempDir(`worker-${opts.name}`));
  const enrolled = await enrollWorker({ controller, name: opts.name, dataDir });
  if (enrolled.code !== 0) throw new Error(`enroll ${opts.name} failed (${enrolled.code}):\n${enrolled.output}`);
  const w = runWorker({ ...opts, dataDir });
  await waitUntil(async () => (await controller.api.worker(opts.name))?.status === 'online', 30_000, `worker ${opts.name} online`);
  return w;
}

export async function waitUntil(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string, intervalMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      lastError = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ''}`);
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

// ------------------------------------------------------------------ REST client

export interface ApiResponse<T = unknown> {
  status: number;
  body: T;
}

export class ApiClient {
  constructor(
    readonly baseUrl: string,
    readonly token: string | null,
  ) {}

  withToken(token: string | null): ApiClient {
    return new ApiClient(this.baseUrl, token);
  }

  async request<T = any>(method: string, path: string, body?: unknown, rawBody?: string): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined || rawBody !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(this.baseUrl + path, { method, headers, body: rawBody ?? (body === undefined ? undefined : JSON.stringify(body)) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // leave as text
    }
    return { status: res.status, body: parsed as T };
  }

  async ok<T = any>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await this.request<T>(method, path, body);
    if (r.status >= 300) throw new Error(`${method} ${path} → ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body;
  }

  createBootstrapToken(input: Record<string, unknown> = {}): Promise<{ token: string; enrollCommand: string }> {
    return this.ok('POST', '/v1/bootstrap-tokens', input);
  }
  async worker(name: string): Promise<any | null> {
    const r = await this.request('GET', `/v1/workers/${name}`);
    return r.status === 404 ? null : r.body;
  }
  async vms(): Promise<any[]> {
    return (await this.ok<{ vms: any[] }>('GET', '/v1/vms')).vms;
  }
  async vm(name: string): Promise<any | null> {
    const r = await this.request('GET', `/v1/vms/${name}`);
    return r.status === 404 ? null : r.body;
  }
  createVm(spec: Record<string, unknown>): Promise<any> {
    return this.ok('POST', '/v1/vms', spec);
  }
}
