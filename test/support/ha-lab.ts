// A lab for several controllers on one PostgreSQL database (issue 13): every controller and every
// worker is a real process in a network namespace of its own, on one LAN; PostgreSQL runs in this
// (the root) namespace and listens on loopback and on the lab address of this process only, with
// trust auth for the lab subnet alone. Used by test/ha-controllers.test.ts and bench/ha-failover.ts.
//
//   hub bridge ── c1 (10.x.0.11) ── c2 (.12) ── c3 (.13)       controllers: REST :8080 (plain HTTP), gRPC :7443
//        │     └─ w1 (10.x.0.21) ── w2 (.22)                   synthetic workers
//        └── root namespace 10.x.0.2: this process (API client) and PostgreSQL
//
// Faults: kill9() (SIGKILL the controller process), restart() (same data dir, same addresses),
// partitionFromDatabase() (an nftables table in the controller's namespace drops its packets to
// and from PostgreSQL's port only: clients and workers still reach it), heal().
//
// Every address the lab dials is one of its own (buildLan checks the routes go through the lab's
// veth); PostgreSQL's trust rule admits the lab subnet and loopback, nothing else.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { findPostgresBin, startScratchPostgres, type ScratchPostgres } from '@fleet/db/pg-scratch';
import { REPO_ROOT, removeDir, tempDir, waitUntil, type RunningProcess } from './fleet-processes.ts';
import { buildLan, has, removeNetworks, startInNetns } from './lab.ts';

export const CONTROLLER_MAIN = path.join(REPO_ROOT, 'apps/controller/bin/fleet-controller.js');
export const WORKER_MAIN = path.join(REPO_ROOT, 'apps/worker/bin/fleet-worker.js');
export const API_PORT = 8080;
export const GRPC_PORT = 7443;
const NFT_TABLE = 'fleet_ha_partition';

/** Why this lab cannot run here ('' when it can): root, Linux, ip, nft, PostgreSQL's binaries. */
export function haLabMissing(): string {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'not running as root (network namespaces and nftables need it)';
  for (const b of ['ip', 'nft']) if (!has(b)) return `${b} not installed`;
  if (!findPostgresBin()) return 'PostgreSQL binaries not installed (apt-get install postgresql, or set FLEET_PG_BIN)';
  return '';
}

/**
 * Whether `fleet-controller run` takes the flags of several controllers (--controller-name,
 * --leader-lease, --advertise-api-url). Until it does the lab starts controllers without them,
 * so that one-controller paths still run (a second one then refuses: one controller per database).
 */
export function controllerHasHaFlags(): boolean {
  const r = spawnSync(process.execPath, [CONTROLLER_MAIN, 'run', '--help'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 });
  const help = `${r.stdout}${r.stderr}`;
  return help.includes('--leader-lease') && help.includes('--controller-name') && help.includes('--advertise-api-url');
}

// ------------------------------------------------------------------ a REST client with deadlines

export interface HttpResult<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

/**
 * Talks to one controller. Every request has a deadline: a controller cut off from its database may
 * hold a request open, and a test must see that as an outcome, not hang on it.
 */
export class HaApi {
  constructor(
    readonly baseUrl: string,
    readonly token: string,
  ) {}

  async request<T = any>(method: string, urlPath: string, opts: { body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<HttpResult<T>> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}`, ...(opts.headers ?? {}) };
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(this.baseUrl + urlPath, {
      method,
      headers,
      ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
      signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000),
    });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      // not JSON (metrics): keep the text
    }
    return { status: res.status, body: body as T, headers: res.headers };
  }

  async ok<T = any>(method: string, urlPath: string, body?: unknown, timeoutMs?: number): Promise<T> {
    const r = await this.request<T>(method, urlPath, { ...(body !== undefined ? { body } : {}), ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
    if (r.status >= 300) throw new Error(`${method} ${this.baseUrl}${urlPath} → ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body;
  }

  vms(): Promise<any[]> {
    return this.ok<{ vms: any[] }>('GET', '/v1/vms').then((b) => b.vms);
  }
  async vm(name: string): Promise<any | null> {
    const r = await this.request('GET', `/v1/vms/${name}`);
    if (r.status === 404) return null;
    if (r.status >= 300) throw new Error(`GET /v1/vms/${name} → ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body;
  }
  workers(): Promise<any[]> {
    return this.ok<{ workers?: any[]; items?: any[] }>('GET', '/v1/workers').then((b) => b.workers ?? b.items ?? []);
  }
  /** /v1/controllers as listed: also incarnations that stopped (a restarted controller has a new id). */
  controllers(): Promise<ControllerRow[]> {
    return this.ok<{ items: ControllerRow[] }>('GET', '/v1/controllers').then((b) => b.items);
  }
  /** The controllers running now: rows not marked `alive: false`. */
  async liveControllers(): Promise<ControllerRow[]> {
    return (await this.controllers()).filter((r) => r.alive !== false);
  }
  async events(vmName: string): Promise<any[]> {
    return (await this.ok<{ events: any[] }>('GET', `/v1/vms/${vmName}/events?limit=500`)).events;
  }
  async metrics(): Promise<string> {
    const r = await this.request<string>('GET', '/metrics');
    if (r.status !== 200) throw new Error(`GET /metrics → ${r.status}`);
    return String(r.body);
  }
}

export interface ControllerRow {
  id: string;
  name: string;
  apiUrl: string;
  grpcAddress: string;
  role: 'leader' | 'follower';
  lastSeenAt: string;
  connectedWorkers: number;
  version: string;
  /** Beyond the contract: false for an incarnation no longer refreshing its row. */
  alive?: boolean;
}

export interface Health {
  /** The HTTP status: 200 ok, 503 degraded (the body says why). */
  httpStatus: number;
  status: 'ok' | 'degraded';
  checks: Record<string, unknown>;
  controller?: { id: string; name: string; role: 'leader' | 'follower'; leader: string | null };
}

/** A Prometheus sample value: the first series of that name carrying every given label, or undefined. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? ([0-9.eE+-]+)$`, 'gm'))) {
    const have = m[1] ?? '';
    if (Object.entries(labels).every(([k, v]) => have.split(',').includes(`${k}="${v}"`))) return Number(m[2]);
  }
  return undefined;
}

// ------------------------------------------------------------------ the lab

export interface HaController {
  /** c1, c2, ... : also its --controller-name. */
  name: string;
  ns: string;
  addr: string;
  apiUrl: string;
  grpcAddress: string;
  dataDir: string;
  api: HaApi;
  /** The running process (undefined while killed). */
  proc: RunningProcess | undefined;
  /** Whether its packets to PostgreSQL are dropped right now. */
  partitioned: boolean;
  /** Output of earlier incarnations (before restarts), for diagnosis. */
  pastOutput: string;
}

export interface HaWorker {
  name: string;
  ns: string;
  addr: string;
  dataDir: string;
  proc: RunningProcess | undefined;
}

export interface HaLabOptions {
  /** Keeps names apart when labs could coexist (namespaces, the root veth). */
  id: string;
  /** The lab's /24 as its first three octets, e.g. '10.96.0'. Must not be routed on this host. */
  subnet: string;
  controllers?: number;
  workers?: number;
  /** --leader-lease (default 3s, the controller's own default). */
  leaderLease?: string;
  heartbeatInterval?: string;
  workerOfflineTimeout?: string;
  /** Extra `fleet-worker run` arguments (capacity). */
  workerArgs?: string[];
  /** The synthetic driver's delay multiplier (0.05: create 10 ms, boot 50–150 ms). */
  syntheticSpeed?: number;
  /** Start only this many controllers at first (the rest with startController later). Default: all. */
  startControllers?: number;
  /** false: never pass the several-controller flags (see controllerHasHaFlags). Default: detected. */
  haFlags?: boolean;
}

export const ADMIN_TOKEN = 'fleet_e2ehacontrol1_' + 'H'.repeat(43);

export class HaLab {
  readonly controllers: HaController[] = [];
  readonly workers: HaWorker[] = [];
  readonly haFlags: boolean;
  pg: ScratchPostgres | undefined;
  databaseUrl = '';
  tmp = '';
  private readonly hub: string;
  private readonly rootVeth: string;
  readonly rootAddr: string;
  private built = false;
  private cleanedUp = false;

  private constructor(readonly opts: HaLabOptions) {
    this.hub = `hah${opts.id}`;
    this.rootVeth = `har${opts.id}`;
    this.rootAddr = `${opts.subnet}.2`;
    this.haFlags = opts.haFlags ?? controllerHasHaFlags();
    const nc = opts.controllers ?? 3;
    const nw = opts.workers ?? 2;
    for (let i = 1; i <= nc; i++) {
      const addr = `${opts.subnet}.${10 + i}`;
      const apiUrl = `http://${addr}:${API_PORT}`;
      this.controllers.push({ name: `c${i}`, ns: `hac${i}-${opts.id}`, addr, apiUrl, grpcAddress: `${addr}:${GRPC_PORT}`, dataDir: '', api: new HaApi(apiUrl, ADMIN_TOKEN), proc: undefined, partitioned: false, pastOutput: '' });
    }
    for (let i = 1; i <= nw; i++) this.workers.push({ name: `w${i}`, ns: `haw${i}-${opts.id}`, addr: `${opts.subnet}.${20 + i}`, dataDir: '', proc: undefined });
  }

  /**
   * Builds the LAN, starts PostgreSQL, the controllers (the first creates the CA; the others get a
   * copy of it before they start), enrolls the workers through the first controller and runs them.
   * On any failure everything started so far is removed before the error is thrown.
   */
  static async start(opts: HaLabOptions): Promise<HaLab> {
    const lab = new HaLab(opts);
    try {
      await lab.setUp();
      return lab;
    } catch (err) {
      const dump = lab.dump();
      await lab.cleanup();
      throw new Error(`${err instanceof Error ? err.message : String(err)}\n${dump}`, { cause: err });
    }
  }

  private async setUp(): Promise<void> {
    this.tmp = await tempDir(`ha-${this.opts.id}`);
    // Leftovers of an earlier run killed before its cleanup (same pid modulo 1000) would clash.
    removeNetworks({ namespaces: [...this.controllers.map((c) => c.ns), ...this.workers.map((w) => w.ns), this.hub], links: [this.rootVeth] });
    const hosts: Record<string, { ns: string; addr: string }> = {};
    for (const c of this.controllers) hosts[c.name] = { ns: c.ns, addr: c.addr };
    for (const w of this.workers) hosts[w.name] = { ns: w.ns, addr: w.addr };
    this.built = true;
    buildLan({ hub: this.hub, hosts, rootVeth: this.rootVeth, rootAddr: this.rootAddr });

    // Three controllers hold ~13 connections each (pool of 10, the lease session, LISTEN, the
    // lock), plus the ones a killed controller leaves until the server notices: room for all.
    this.pg = await startScratchPostgres({ listenAddresses: [this.rootAddr], trustCidrs: [`${this.opts.subnet}.0/24`], maxConnections: 300 });
    await this.pg.createDatabase('fleet');
    this.databaseUrl = this.pg.urlOn(this.rootAddr, 'fleet');

    for (const c of this.controllers) {
      c.dataDir = path.join(this.tmp, c.name);
      mkdirSync(c.dataDir, { recursive: true, mode: 0o700 });
    }
    for (const w of this.workers) w.dataDir = path.join(this.tmp, w.name);

    const first = this.controllers[0]!;
    await this.startController(first);
    const count = this.opts.startControllers ?? this.controllers.length;
    for (const c of this.controllers.slice(1, count)) await this.startController(c);
    // Enrollment and Welcome hand a worker the controllers the first one has seen alive in its
    // registry (refreshed every few seconds): wait until it has seen them all, so every worker
    // starts with the whole list (one that joins later is announced in lease renewals, within ~5 s).
    if (this.haFlags) {
      await waitUntil(async () => (await first.api.liveControllers()).length >= count, 30_000, `${first.name} seeing all ${count} controllers`, 200);
    }

    for (const w of this.workers) await this.enrollWorker(w, first);
    for (const w of this.workers) this.runWorker(w);
    await waitUntil(async () => {
      const ws = await first.api.workers();
      return this.workers.every((w) => ws.some((x) => x.name === w.name && x.status === 'online'));
    }, 60_000, 'every worker online', 200);
  }

  controllerArgs(c: HaController): string[] {
    const o = this.opts;
    return [
      CONTROLLER_MAIN, 'run',
      '--data-dir', c.dataDir,
      '--database-url', this.databaseUrl,
      '--listen', `${c.addr}:${API_PORT}`,
      '--grpc-listen', `${c.addr}:${GRPC_PORT}`,
      '--name', c.addr,
      '--api-tls', 'off',
      '--heartbeat-interval', o.heartbeatInterval ?? '1s',
      '--worker-offline-timeout', o.workerOfflineTimeout ?? '8s',
      ...(this.haFlags ? ['--controller-name', c.name, '--leader-lease', o.leaderLease ?? '3s', '--advertise-api-url', c.apiUrl] : []),
    ];
  }

  /** Starts (or restarts) a controller and waits until its API answers /v1/health. */
  async startController(c: HaController): Promise<void> {
    if (c.proc && c.proc.child.exitCode === null && c.proc.child.signalCode === null) throw new Error(`${c.name} is already running`);
    if (c !== this.controllers[0]) this.copyCa(c);
    if (c.proc) c.pastOutput += c.proc.output() + `\n----- ${c.name} restarted -----\n`;
    const proc = startInNetns(c.ns, this.controllerArgs(c), { FLEET_BOOTSTRAP_ADMIN_TOKEN: ADMIN_TOKEN });
    c.proc = proc;
    await proc.waitFor(/worker gRPC:\s+(\S+)/, 90_000);
    await waitUntil(async () => (await this.health(c)) !== null, 30_000, `${c.name} answering /v1/health`, 100);
  }

  /** Every controller of a fleet uses the fleet's one CA (workers pin it); each issues its own server certificate. */
  private copyCa(c: HaController): void {
    const from = path.join(this.controllers[0]!.dataDir, 'pki');
    const to = path.join(c.dataDir, 'pki');
    mkdirSync(to, { recursive: true, mode: 0o700 });
    for (const f of ['ca.pem', 'ca-key.pem']) {
      if (!existsSync(path.join(from, f))) throw new Error(`${path.join(from, f)} missing: start the first controller before the others`);
      cpSync(path.join(from, f), path.join(to, f));
    }
    // And the fleet's secrets key (every controller opens every VM's sealed credentials).
    cpSync(path.join(this.controllers[0]!.dataDir, 'secrets.key'), path.join(c.dataDir, 'secrets.key'));
  }

  private async enrollWorker(w: HaWorker, via: HaController): Promise<void> {
    const { token } = await via.api.ok<{ token: string }>('POST', '/v1/bootstrap-tokens', {});
    const p = startInNetns(w.ns, [WORKER_MAIN, 'enroll', '--controller', via.grpcAddress, '--token', token, '--name', w.name, '--data-dir', w.dataDir]);
    const code = await p.exited;
    if (code !== 0) throw new Error(`enroll ${w.name} through ${via.name} failed (${code}):\n${p.output()}`);
  }

  runWorker(w: HaWorker): void {
    w.proc = startInNetns(w.ns, [
      WORKER_MAIN, 'run', '--data-dir', w.dataDir, '--driver', 'synthetic', '--synthetic-speed', String(this.opts.syntheticSpeed ?? 0.05),
      '--labels', `host=${w.name}`,
      ...(this.opts.workerArgs ?? ['--cpus', '256', '--memory-mib', '262144', '--vm-slots', '250']),
    ]);
  }

  /** The controllers whose process runs right now. */
  running(): HaController[] {
    return this.controllers.filter((c) => c.proc && c.proc.child.exitCode === null && c.proc.child.signalCode === null);
  }

  byName(name: string): HaController {
    const c = this.controllers.find((x) => x.name === name);
    if (!c) throw new Error(`no controller ${name}`);
    return c;
  }

  /** GET /v1/health of one controller (its own view of its role), or null when it does not answer within 1.5 s. */
  async health(c: HaController, timeoutMs = 1_500): Promise<Health | null> {
    try {
      const res = await fetch(`${c.apiUrl}/v1/health`, { signal: AbortSignal.timeout(timeoutMs) });
      const body = (await res.json()) as Omit<Health, 'httpStatus'>;
      return { httpStatus: res.status, ...body };
    } catch {
      return null;
    }
  }

  /**
   * The leader as the controllers themselves say (/v1/health of each, in parallel): the one
   * controller among `among` (default: the running ones) claiming role leader, or undefined when
   * none or several do.
   */
  async leader(among: HaController[] = this.running()): Promise<HaController | undefined> {
    const views = await Promise.all(among.map(async (c) => ({ c, h: await this.health(c) })));
    const claiming = views.filter((v) => v.h?.controller?.role === 'leader');
    return claiming.length === 1 ? claiming[0]!.c : undefined;
  }

  /** Every running controller's own view: name → { role, leader, status } (null: no answer). */
  async views(): Promise<Record<string, { role?: string; leader?: string | null; status?: string; httpStatus?: number } | null>> {
    const out: Record<string, { role?: string; leader?: string | null; status?: string; httpStatus?: number } | null> = {};
    await Promise.all(this.running().map(async (c) => {
      const h = await this.health(c);
      out[c.name] = h ? { role: h.controller?.role, leader: h.controller?.leader ?? null, status: h.status, httpStatus: h.httpStatus } : null;
    }));
    return out;
  }

  /**
   * Waits until exactly one controller among `among` claims leadership and satisfies `accept`;
   * returns it and when it was first seen (Date.now()).
   */
  async waitForLeader(opts: { among?: () => HaController[]; accept?: (c: HaController) => boolean; timeoutMs?: number; pollMs?: number } = {}): Promise<{ leader: HaController; at: number }> {
    const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
    let last: unknown = null;
    for (;;) {
      const l = await this.leader(opts.among ? opts.among() : this.running());
      if (l && (!opts.accept || opts.accept(l))) return { leader: l, at: Date.now() };
      if (Date.now() > deadline) {
        last = await this.views();
        throw new Error(`no (acceptable) leader within ${opts.timeoutMs ?? 30_000} ms; the controllers say ${JSON.stringify(last)}`);
      }
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 50));
    }
  }

  /** SIGKILL the controller process (its sockets close; nothing of it runs on). Returns the kill time. */
  async kill9(c: HaController): Promise<number> {
    const p = c.proc;
    if (!p) throw new Error(`${c.name} is not running`);
    const at = Date.now();
    await p.kill('SIGKILL');
    return at;
  }

  /** Stops a controller the orderly way (SIGTERM: it hands leadership back and closes its streams). */
  async stop(c: HaController): Promise<void> {
    if (c.proc && c.proc.child.exitCode === null && c.proc.child.signalCode === null) {
      const killer = setTimeout(() => c.proc?.child.kill('SIGKILL'), 15_000);
      await c.proc.kill('SIGTERM');
      clearTimeout(killer);
    }
  }

  /** Starts a killed (or stopped) controller again on its data dir and addresses. */
  async restart(c: HaController): Promise<void> {
    if (c.proc && c.proc.child.exitCode === null && c.proc.child.signalCode === null) await c.proc.kill('SIGTERM');
    await this.startController(c);
  }

  /**
   * Cuts the controller off from PostgreSQL (both directions, PostgreSQL's port only, established
   * connections included): it stays reachable by clients and workers. Returns when the rule is in.
   */
  partitionFromDatabase(c: HaController): number {
    const port = this.pg!.port;
    const rules = [
      `add table inet ${NFT_TABLE}`,
      `add chain inet ${NFT_TABLE} out { type filter hook output priority 0; policy accept; }`,
      `add chain inet ${NFT_TABLE} in { type filter hook input priority 0; policy accept; }`,
      `add rule inet ${NFT_TABLE} out ip daddr ${this.rootAddr} tcp dport ${port} drop`,
      `add rule inet ${NFT_TABLE} in ip saddr ${this.rootAddr} tcp sport ${port} drop`,
    ].join('\n');
    execFileSync('ip', ['netns', 'exec', c.ns, 'nft', '-f', '-'], { input: rules, stdio: ['pipe', 'pipe', 'pipe'] });
    c.partitioned = true;
    return Date.now();
  }

  heal(c: HaController): number {
    execFileSync('ip', ['netns', 'exec', c.ns, 'nft', 'delete', 'table', 'inet', NFT_TABLE], { stdio: 'pipe' });
    c.partitioned = false;
    return Date.now();
  }

  /** What the worker's synthetic driver holds (its state file, rewritten within 100 ms of a change). */
  instances(w: HaWorker): { vmId: string; attempt: number; name: string; state: string }[] {
    try {
      const parsed = JSON.parse(readFileSync(path.join(w.dataDir, 'synthetic', 'instances.json'), 'utf8')) as { instances?: { vmId: string; attempt: number; name: string; state: string }[] };
      return parsed.instances ?? [];
    } catch {
      return []; // not written yet, or mid-rename
    }
  }

  /** Tail of every process's output, for a failure message. */
  dump(chars = 4_000): string {
    const parts: string[] = [];
    for (const c of this.controllers) {
      const out = c.pastOutput + (c.proc?.output() ?? '');
      parts.push(`===== controller ${c.name} (${c.addr})${c.partitioned ? ' [partitioned]' : ''} =====\n${out.slice(-chars)}`);
    }
    for (const w of this.workers) parts.push(`===== worker ${w.name} (${w.addr}) =====\n${(w.proc?.output() ?? '').slice(-chars)}`);
    return parts.join('\n');
  }

  /** Kills every process, removes the namespaces (and so the nftables rules), PostgreSQL and the temp dirs. Safe to call twice. */
  async cleanup(): Promise<void> {
    if (this.cleanedUp) return;
    this.cleanedUp = true;
    const procs = [...this.controllers.map((c) => c.proc), ...this.workers.map((w) => w.proc)].filter((p): p is RunningProcess => p !== undefined);
    await Promise.all(procs.map((p) => Promise.race([p.kill('SIGKILL'), new Promise((r) => setTimeout(r, 3_000))])));
    // FLEET_HA_LOGS=<dir>: every process's whole output is kept there for a post-mortem.
    const keep = process.env['FLEET_HA_LOGS'];
    if (keep) {
      mkdirSync(keep, { recursive: true });
      for (const c of this.controllers) writeFileSync(path.join(keep, `${this.opts.id}-${c.name}.log`), c.pastOutput + (c.proc?.output() ?? ''));
      for (const w of this.workers) writeFileSync(path.join(keep, `${this.opts.id}-${w.name}.log`), w.proc?.output() ?? '');
    }
    if (this.built) {
      removeNetworks({ namespaces: [...this.controllers.map((c) => c.ns), ...this.workers.map((w) => w.ns), this.hub], links: [this.rootVeth] });
    }
    await this.pg?.stop().catch(() => undefined);
    if (this.tmp) await removeDir(this.tmp);
  }
}

/**
 * Samples what the workers' synthetic drivers hold every `intervalMs` and records every moment a VM
 * had two live instances (starting or running) at once: two attempts, or two workers. The workers'
 * own view, whatever the API says.
 */
export class LiveInstanceSampler {
  readonly violations: string[] = [];
  samples = 0;
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly lab: HaLab, private readonly intervalMs = 250) {}
  start(): this {
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    return this;
  }
  sample(): void {
    this.samples++;
    const live = new Map<string, string[]>();
    for (const w of this.lab.workers) {
      for (const i of this.lab.instances(w)) {
        if (i.state !== 'running' && i.state !== 'starting') continue;
        live.set(i.vmId, [...(live.get(i.vmId) ?? []), `${i.name} attempt ${i.attempt} on ${w.name}`]);
      }
    }
    for (const [vmId, where] of live) if (where.length > 1) this.violations.push(`${new Date().toISOString()} ${vmId}: ${where.join(' and ')}`);
  }
  stop(): void {
    clearInterval(this.timer);
  }
}

/** True when `err` is a connection-level failure (refused, reset, timed out): worth another controller. */
export function isConnectionError(err: unknown): boolean {
  const e = err as { name?: string; cause?: { code?: string; name?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return true;
  const code = e?.cause?.code ?? '';
  return e?.name === 'TypeError' || /^(ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|EPIPE|UND_ERR_)/.test(code);
}


export interface CreateOutcome {
  name: string;
  ok: boolean;
  status: number;
  body: any;
  /** The requests sent (1 = no retry). */
  attempts: number;
  /** What each try got, runs collapsed: "c1:ECONNRESET", "c2:ECONNREFUSED×3", "c3:201". */
  tries: string[];
  replayed: boolean;
  /** Date.now() when the answer came (accepted or refused). */
  answeredAt: number;
}

/**
 * POST /v1/vms the way a careful client does with several controllers: one Idempotency-Key for the
 * VM; a connection error (refused, reset, timed out), a 5xx or "the first request with this key is
 * still running" (409 idempotency_key_in_flight) is retried against the next controller with the
 * same key, for up to `deadlineMs`. Anything else is the outcome. `startAt` picks the first
 * controller (round-robin).
 */
export async function createWithFailover(lab: HaLab, spec: Record<string, unknown>, startAt: number, key: string = randomUUID(), deadlineMs = 30_000): Promise<CreateOutcome> {
  const tries: string[] = [];
  const note = (t: string) => {
    const last = tries[tries.length - 1];
    const m = last ? /^(.*?)(?:×(\d+))?$/.exec(last) : null;
    if (m && m[1] === t) tries[tries.length - 1] = `${t}×${Number(m[2] ?? 1) + 1}`;
    else tries.push(t);
  };
  const n = lab.controllers.length;
  const deadline = Date.now() + deadlineMs;
  let attempts = 0;
  for (let i = 0; Date.now() < deadline; i++) {
    const c = lab.controllers[(startAt + i) % n]!;
    attempts++;
    let r: HttpResult;
    try {
      r = await c.api.request('POST', '/v1/vms', { body: spec, headers: { 'idempotency-key': key }, timeoutMs: 8_000 });
    } catch (err) {
      if (!isConnectionError(err)) throw err;
      note(`${c.name}:${(err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name}`);
      await new Promise((res) => setTimeout(res, 50));
      continue;
    }
    note(`${c.name}:${r.status}`);
    const retryable = r.status >= 500 || (r.status === 409 && r.body?.error?.code === 'idempotency_key_in_flight');
    if (retryable) {
      await new Promise((res) => setTimeout(res, 200));
      continue;
    }
    return { name: String(spec.name), ok: r.status === 201, status: r.status, body: r.body, attempts, tries, replayed: r.headers.get('idempotent-replayed') === 'true', answeredAt: Date.now() };
  }
  return { name: String(spec.name), ok: false, status: 0, body: null, attempts, tries, replayed: false, answeredAt: Date.now() };
}
