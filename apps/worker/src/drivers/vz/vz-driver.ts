// The macOS driver (Apple Virtualization.framework). Same shape as the QEMU driver: every instance
// runs in its own detached VM host process (vm-host/darwin), here on the worker's ad-hoc-signed
// node copy (macos/codesign.ts), talking through the same control socket and status.jsonl, so a
// worker restart re-attaches to running VMs. Per instance:
//
//   <dataDir>/instances/<vmId>.<attempt>/
//     instance.json   what the worker asked for                                  — driver
//     bundle/         Tart bundle, an APFS clone of the image with a fresh MAC    — driver
//     vz-host.json    the host process's config, rewritten on every start         — driver
//     control.sock, status.jsonl, serial.log, host.log                            — host
//
// Images: spec.image names a Tart bundle under `imagesDir` (or is an absolute bundle path), or an
// .ipsw, which is installed once into `imagesDir/<name>` with progress reported as status
// messages. macOS guests take one of 2 slots (MacosSlots): no free slot → the start fails at once
// with a clear message, and VZErrorVirtualMachineLimitExceeded from the framework closes the host
// to macOS guests until one of ours stops. IP: the host's filter reports the DHCP lease; if none
// is known a while after the VM runs, /var/db/dhcpd_leases is consulted (newest unexpired lease
// for the MAC).
// Fencing (issue 12): with `fence`, the host process of every "reschedule" instance watches the
// worker's lease file and stops its VM hard when the lease runs out; `kill()` is the worker's own
// forced stop. A fenced instance ends "stopped" with a "fenced: …" message.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { chown, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DriverError,
  fenceConfigFor,
  fencedMessage,
  disconnectPolicyOf,
  instanceKey,
  type CreateInstanceRequest,
  type Driver,
  type DriverCapabilities,
  type InstanceRef,
  type ExportedImage,
  type InstanceSpec,
  type InstanceState,
  type InstanceStatus,
  type InstanceStatusListener,
  type UpdateInstanceRequest,
} from '../driver.ts';
import { StatusListeners, waitUntilRunning, writeInstanceRecord } from '../instance-status.ts';
import { CONTROL_SOCKET, STATUS_LOG } from '../../host-process/qemu-host-config.ts';
import { controlRequest, watchControl, type ControlWatch } from '../../host-process/control-client.ts';
import type { VzHostConfig, VzHostStatus } from '../../host-process/vz-host-config.ts';
import { leaseForMac } from '../../macos/dhcpd-leases.ts';
import { cloneBundle, type CloneFile } from '../../vz/clone.ts';
import type { InstallEvent, InstallRequest } from '../../vz/install.ts';
import { MacosSlots } from '../../vz/slots.ts';
import { readTartConfig, resourcesFor } from '../../vz/tart-bundle.ts';

export const VZ_DRIVER_NAME = 'vz';
export const VZ_HOST_CONFIG = 'vz-host.json';
const HOST_LAUNCH = fileURLToPath(new URL('../../vm-host/darwin/launch.mjs', import.meta.url));
const INSTALL_LAUNCH = fileURLToPath(new URL('../../vm-host/darwin/install-launch.mjs', import.meta.url));

/** Starts one VM host process for a config file; `exited` resolves when it ends. */
export type VzHostLauncher = (configFile: string, runDir: string) => { exited: Promise<void> } | Promise<{ exited: Promise<void> }>;
/** Installs macOS from an IPSW into a bundle dir, reporting events. */
export type VzInstaller = (req: InstallRequest, onEvent: (e: InstallEvent) => void) => Promise<void>;

export interface VzNetworkOptions {
  startAddress: string;
  endAddress: string;
  subnetMask: string;
  isolation?: boolean;
  /** bootpd lease time set by the host process (root). Default 600 s. */
  dhcpLeaseSeconds?: number;
}

export interface VzDriverOptions {
  /** Where instance dirs live. Keep it short: macOS limits Unix socket paths to 103 bytes. */
  dataDir: string;
  /** Where image bundles live (spec.image is a name in here, or an absolute path). */
  imagesDir: string;
  /** The ad-hoc-signed node copy (macos/codesign.ts prepareSignedNode). Needed unless `launcher` and `installer` are given. */
  signedNode?: string;
  /**
   * Makes/checks the signed node copy (prepareSignedNode). Run once when the driver loads (worker
   * start): a failure is logged with its exact remedy and fails every start with it.
   */
  prepareSignedNode?: () => Promise<string>;
  launcher?: VzHostLauncher;
  installer?: VzInstaller;
  network?: VzNetworkOptions;
  /** macOS guests at once (Apple's licence: 2). */
  macosSlots?: number;
  /** Give every clone a new machine identifier (ECID) too, not only a new MAC. Default false. */
  freshMachineIdentifier?: boolean;
  /** Needed with freshMachineIdentifier (the addon's newMachineIdentifier; the worker's own node may lack the entitlement, but this call needs none). */
  newMachineIdentifier?: () => Uint8Array;
  cloneFile?: CloneFile;
  /** VM host processes drop to this user once vmnet is up. */
  dropPrivileges?: { uid: number; gid: number };
  stopTimeoutMs?: number;
  startTimeoutMs?: number;
  /** dhcpd_leases fallback: file, delay after "running" before the first look, poll interval. */
  leaseFile?: string;
  leaseFallbackAfterMs?: number;
  leasePollMs?: number;
  log?: { info(o: object, m?: string): void; warn(o: object, m?: string): void };
  /** Client-side fencing: the worker's lease file, read by host processes of "reschedule" instances (graceMs default 2 s). */
  fence?: { leaseFile: string; graceMs?: number };
}

export const DEFAULT_VZ_NETWORK: VzNetworkOptions = { startAddress: '192.168.64.1', endAddress: '192.168.64.254', subnetMask: '255.255.255.0', dhcpLeaseSeconds: 600 };

interface InstanceRecord {
  vmId: string;
  attempt: number;
  name: string;
  generation: string;
  spec: InstanceSpec;
  guest: 'macos' | 'linux';
  mac: string;
}

interface Held {
  rec: InstanceRecord;
  dir: string;
  status: InstanceStatus;
  watch?: ControlWatch | undefined;
  stopping?: boolean;
  leaseTimer?: NodeJS.Timeout | undefined;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function dirName(ref: InstanceRef): string {
  return `${encodeURIComponent(ref.vmId).replace(/\./g, '%2E')}.${ref.attempt}`;
}

/** chown -R: the VM host process drops to this user and must own its run dir and bundle. */
async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  await chown(dir, uid, gid);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await chownTree(p, uid, gid);
    else await chown(p, uid, gid);
  }
}


function lastStatusLine(dir: string): { state: string; message?: string; failureKind?: string } | undefined {
  try {
    const lines = readFileSync(path.join(dir, STATUS_LOG), 'utf8').trim().split('\n');
    return JSON.parse(lines.at(-1)!) as { state: string; message?: string; failureKind?: string };
  } catch {
    return undefined;
  }
}

export class VzDriver implements Driver {
  readonly name = VZ_DRIVER_NAME;
  /** Registry images (issue 15): Tart images, cloned (APFS clonefile) from the worker's image cache. */
  readonly imageFormats = ['tart'] as const;
  readonly capabilities: DriverCapabilities;
  readonly slots: MacosSlots;
  private readonly held = new Map<string, Held>();
  private readonly listeners = new StatusListeners();
  private readonly instancesDir: string;
  private readonly installs = new Map<string, Promise<void>>();
  private loaded = false;
  private closed = false;

  constructor(private readonly opts: VzDriverOptions) {
    this.instancesDir = path.join(opts.dataDir, 'instances');
    if (Buffer.byteLength(path.join(this.instancesDir, 'x'.repeat(40), CONTROL_SOCKET)) > 103) {
      throw new DriverError(`vz driver data dir ${opts.dataDir} is too long for Unix socket paths (103 bytes on macOS); choose a shorter one`);
    }
    if (!opts.launcher && !opts.signedNode && !opts.prepareSignedNode) throw new DriverError('the vz driver needs the signed node copy (signedNode or prepareSignedNode) to run VM host processes');
    if (opts.freshMachineIdentifier && !opts.newMachineIdentifier) throw new DriverError('freshMachineIdentifier needs newMachineIdentifier');
    this.slots = new MacosSlots(opts.macosSlots ?? 2);
    this.capabilities = { guestOs: ['linux', 'macos'], maxMacosGuests: this.slots.capacity };
  }

  subscribe(listener: InstanceStatusListener): () => void {
    return this.listeners.subscribe(listener);
  }

  async list(): Promise<InstanceStatus[]> {
    await this.load();
    return [...this.held.values()].map((h) => ({ ...h.status }));
  }

  async create(r: CreateInstanceRequest): Promise<InstanceStatus> {
    await this.load();
    const key = instanceKey(r);
    const existing = this.held.get(key);
    if (existing) return { ...existing.status };
    if (r.spec.os && r.spec.os !== 'linux' && r.spec.os !== 'macos') throw new DriverError(`the vz driver runs "linux" and "macos" guests, not ${JSON.stringify(r.spec.os)}`);
    if (!r.spec.image && !r.spec.pulled) throw new DriverError('the vz driver needs spec.image (a Tart bundle name, an .ipsw, or a registry image)');
    const dir = path.join(this.instancesDir, dirName(r));
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // Held from the start, so install progress can be reported as status messages.
    const h: Held = {
      rec: { vmId: r.vmId, attempt: r.attempt, name: r.name, generation: r.generation, spec: r.spec, guest: r.spec.os === 'linux' ? 'linux' : 'macos', mac: '' },
      dir,
      status: { vmId: r.vmId, attempt: r.attempt, name: r.name, state: 'stopped', generation: r.generation, disconnectPolicy: disconnectPolicyOf(r.spec.disconnectPolicy) },
    };
    this.held.set(key, h);
    try {
      const image = await this.resolveImage(r.spec, h);
      const base = await readTartConfig(image);
      const guest = base.os === 'darwin' ? 'macos' : 'linux';
      if (r.spec.os && r.spec.os !== guest) throw new DriverError(`image ${r.spec.image} holds a ${guest} guest, but the VM asks for ${r.spec.os}`);
      // A create interrupted by a crash may have left a partial clone behind.
      await rm(path.join(dir, 'bundle'), { recursive: true, force: true });
      const cloned = await cloneBundle(image, path.join(dir, 'bundle'), {
        ...(this.opts.cloneFile ? { cloneFile: this.opts.cloneFile } : {}),
        ...(guest === 'macos' && this.opts.freshMachineIdentifier && this.opts.newMachineIdentifier ? { newMachineIdentifier: this.opts.newMachineIdentifier } : {}),
      });
      h.rec = { ...h.rec, guest, mac: cloned.config.macAddress };
      await writeInstanceRecord(dir, h.rec);
      return this.patch(h, { mac: h.rec.mac, message: undefined });
    } catch (e) {
      this.held.delete(key);
      await rm(dir, { recursive: true, force: true });
      throw e instanceof DriverError ? e : new DriverError(`create ${r.name}: ${(e as Error).message}`);
    }
  }

  async start(ref: InstanceRef): Promise<InstanceStatus> {
    const h = await this.get(ref);
    const key = instanceKey(ref);
    if (h.watch && (h.status.state === 'running' || h.status.state === 'starting')) return this.waitRunning(h);
    if (h.rec.guest === 'macos' && !this.slots.acquire(key)) {
      const why = `no macOS slot free on this host: ${this.slots.unavailableReason()}`;
      this.patch(h, { state: 'failed', message: why });
      throw new DriverError(`start ${h.rec.name}: ${why}`);
    }
    const bundleDir = path.join(h.dir, 'bundle');
    let cfg: VzHostConfig;
    try {
      const bundle = await readTartConfig(bundleDir);
      const res = resourcesFor(bundle, { cpus: h.rec.spec.cpus, memoryMib: h.rec.spec.memoryMib });
      const net = { ...DEFAULT_VZ_NETWORK, ...(this.opts.network ?? {}) };
      cfg = {
        vmId: h.rec.vmId,
        attempt: h.rec.attempt,
        name: h.rec.name,
        guest: h.rec.guest,
        bundleDir,
        runDir: h.dir,
        cpus: res.cpus,
        memoryBytes: res.memoryBytes,
        mac: bundle.macAddress,
        network: net,
        filter: { allow: h.rec.spec.network?.allow ?? [], block: h.rec.spec.network?.block ?? [], blockLocal: h.rec.spec.network?.blockLocal ?? false },
        ...(this.opts.stopTimeoutMs !== undefined ? { stopTimeoutMs: this.opts.stopTimeoutMs } : {}),
        ...(this.opts.dropPrivileges ? { dropPrivileges: this.opts.dropPrivileges } : {}),
        // "wait" VMs keep running while the worker is cut off; every other one is fenced.
        ...fenceConfigFor(h.rec.spec.disconnectPolicy, this.opts.fence),
      };
    } catch (e) {
      this.slots.release(key);
      this.patch(h, { state: 'failed', message: (e as Error).message });
      throw new DriverError(`start ${h.rec.name}: ${(e as Error).message}`);
    }
    await writeFile(path.join(h.dir, VZ_HOST_CONFIG), JSON.stringify(cfg, null, 2));
    await rm(path.join(h.dir, CONTROL_SOCKET), { force: true });
    await rm(path.join(h.dir, STATUS_LOG), { force: true });
    if (this.opts.dropPrivileges) {
      try {
        await chownTree(h.dir, this.opts.dropPrivileges.uid, this.opts.dropPrivileges.gid);
      } catch (e) {
        this.ended(h, 'failed', `cannot hand ${h.dir} to uid ${this.opts.dropPrivileges.uid}: ${(e as Error).message}`, 'setup');
        throw new DriverError(`start ${h.rec.name}: ${h.status.message}`);
      }
    }
    h.stopping = false;
    this.patch(h, { state: 'starting', ip: undefined, message: undefined });
    let exited: Promise<void>;
    try {
      ({ exited } = await (this.opts.launcher ?? this.spawnHost)(path.join(h.dir, VZ_HOST_CONFIG), h.dir));
    } catch (e) {
      this.ended(h, 'failed', (e as Error).message, 'setup');
      throw new DriverError(`start ${h.rec.name}: ${(e as Error).message}`);
    }
    let gone = false;
    void exited.then(() => (gone = true));
    const sock = path.join(h.dir, CONTROL_SOCKET);
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 60_000);
    while (!existsSync(sock)) {
      if (gone || Date.now() > deadline) {
        const last = lastStatusLine(h.dir);
        const why = last?.message ?? `VM host process ${gone ? 'exited' : 'did not answer'} (see ${path.join(h.dir, 'host.log')})`;
        this.ended(h, 'failed', why, last?.failureKind);
        throw new DriverError(`start ${h.rec.name}: ${why}`);
      }
      await sleep(25);
    }
    this.attach(h);
    return this.waitRunning(h);
  }

  async stop(ref: InstanceRef): Promise<InstanceStatus> {
    return this.halt(await this.get(ref), 'stop');
  }

  /** Forced stop: the host process stops the VM hard now (VZ stop, no ACPI request) and records `reason`. */
  async kill(ref: InstanceRef, reason?: string): Promise<InstanceStatus> {
    return this.halt(await this.get(ref), 'kill', reason);
  }

  async update(a: UpdateInstanceRequest): Promise<InstanceStatus> {
    const h = await this.get(a);
    if (h.status.state === 'running' || h.status.state === 'starting') {
      throw new DriverError(`update ${h.rec.name}: the instance must be stopped first (it is ${h.status.state})`);
    }
    h.rec = { ...h.rec, generation: a.generation, spec: a.spec };
    await writeInstanceRecord(h.dir, h.rec);
    return this.patch(h, { generation: a.generation, disconnectPolicy: disconnectPolicyOf(a.spec.disconnectPolicy) });
  }

  async remove(ref: InstanceRef): Promise<void> {
    await this.load();
    const key = instanceKey(ref);
    const h = this.held.get(key);
    if (!h) return;
    await this.halt(h, 'kill');
    clearTimeout(h.leaseTimer);
    this.held.delete(key);
    this.slots.release(key);
    await rm(h.dir, { recursive: true, force: true });
  }

  onMacosSlotLimit(listener: (slots: number, reason: string) => void): () => void {
    return this.slots.onChange((available) => {
      const held = this.slots.holders().length;
      const reason = this.slots.unavailableReason();
      // Blocked by the framework: offer only what runs; otherwise the configured capacity.
      const blocked = available === 0 && held < this.slots.capacity;
      listener(blocked ? held : this.slots.capacity, blocked ? (reason ?? 'the framework refused a macOS guest') : 'macOS slots available again');
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const h of this.held.values()) {
      h.watch?.close();
      clearTimeout(h.leaseTimer);
    }
    this.listeners.clear();
  }

  // ---- internals ----------------------------------------------------------------------

  private nodeReady: Promise<string> | undefined;

  /** The signed node path (prepared and checked once). */
  private signedNode(): Promise<string> {
    if (!this.nodeReady) {
      this.nodeReady = this.opts.prepareSignedNode ? this.opts.prepareSignedNode() : Promise.resolve(this.opts.signedNode!);
      this.nodeReady.catch((e: Error) => this.opts.log?.warn({ err: e.message }, 'the VM host node copy is not usable: macOS VMs cannot start'));
    }
    return this.nodeReady;
  }

  private spawnHost: VzHostLauncher = async (configFile, runDir) => {
    const node = await this.signedNode();
    const logFd = openSync(path.join(runDir, 'host.log'), 'a');
    const child = spawn(node, [HOST_LAUNCH, configFile], { detached: true, stdio: ['ignore', logFd, logFd] });
    closeSync(logFd);
    child.unref();
    return { exited: new Promise<void>((r) => child.once('exit', () => r())) };
  };

  private spawnInstaller: VzInstaller = async (req, onEvent) => {
    const node = await this.signedNode();
    return new Promise<void>((resolve, reject) => {
      const child = spawn(node, [INSTALL_LAUNCH, JSON.stringify(req)], { stdio: ['ignore', 'pipe', 'inherit'] });
      let buf = '';
      let error: string | undefined;
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (c: string) => {
        buf += c;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          try {
            const e = JSON.parse(line) as InstallEvent | { phase: 'error'; message: string };
            if (e.phase === 'error') error = e.message;
            else onEvent(e);
          } catch {
            /* not ours */
          }
        }
      });
      child.once('error', reject);
      child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(error ?? `installer exited with ${code}`))));
    });
  };

  /**
   * The image bundle for a spec: a Tart bundle named in imagesDir, or an .ipsw file there that is
   * installed once into a bundle beside it. Names only: a VM spec (from any API user with the
   * write role) must never make the worker clone or read other files on the host.
   */
  private async resolveImage(spec: InstanceSpec, h: Held): Promise<string> {
    if (spec.pulled) {
      // A registry image the worker pulled into its cache: cloned like a local bundle.
      if (spec.pulled.format !== 'tart' || !spec.pulled.bundleDir) throw new DriverError(`image ${spec.pulled.reference} is a ${spec.pulled.format} image; the vz driver runs Tart images`);
      return spec.pulled.bundleDir;
    }
    const image = spec.image;
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(image)) {
      throw new DriverError(`image ${JSON.stringify(image)}: name a Tart bundle or an .ipsw file in the worker's images dir (${this.opts.imagesDir}); paths are not accepted`);
    }
    if (!image.endsWith('.ipsw')) return path.join(this.opts.imagesDir, image);
    const ipsw = path.join(this.opts.imagesDir, image);
    const bundleDir = path.join(this.opts.imagesDir, path.basename(image, '.ipsw'));
    if (existsSync(path.join(bundleDir, 'config.json'))) return bundleDir;
    let p = this.installs.get(bundleDir);
    if (!p) {
      const req: InstallRequest = { ipsw, bundleDir, cpus: Math.max(4, spec.cpus), memoryMib: Math.max(8192, spec.memoryMib), diskGib: Math.max(64, spec.diskGib) };
      p = (this.opts.installer ?? this.spawnInstaller)(req, (e) => this.patch(h, { message: e.message }));
      this.installs.set(bundleDir, p);
      void p.finally(() => this.installs.delete(bundleDir)).catch(() => {});
    }
    await p.catch((e: Error) => {
      throw new DriverError(`installing ${path.basename(image)} failed: ${e.message}`);
    });
    return bundleDir;
  }

  /** ImagePush: a stopped instance's bundle is pushed as a Tart image (the packer reads it in place). */
  async exportImage(ref: InstanceRef): Promise<ExportedImage> {
    const h = await this.get(ref);
    if (h.status.state !== 'stopped' && h.status.state !== 'failed') throw new DriverError(`push ${h.rec.name}: the VM must be stopped first (it is ${h.status.state})`);
    const bundleDir = path.join(h.dir, 'bundle');
    if (!existsSync(path.join(bundleDir, 'config.json'))) throw new DriverError(`push ${h.rec.name}: the instance has no Tart bundle`);
    return { format: 'tart', bundleDir };
  }

  private async get(ref: InstanceRef): Promise<Held> {
    await this.load();
    const h = this.held.get(instanceKey(ref));
    if (!h) throw new DriverError(`no instance ${instanceKey(ref)} on this worker`);
    if (!h.rec.mac) throw new DriverError(`instance ${instanceKey(ref)} is still being created (${h.status.message ?? 'cloning its image'})`);
    return h;
  }

  private async load(): Promise<void> {
    if (this.loaded) return;
    this.loaded = true;
    // Worker start: make and check the signed node now, so a missing entitlement is reported at once.
    if (!this.opts.launcher) void this.signedNode().catch(() => {});
    let names: string[] = [];
    try {
      names = await readdir(this.instancesDir);
    } catch {
      return;
    }
    for (const n of names) {
      const dir = path.join(this.instancesDir, n);
      let rec: InstanceRecord;
      try {
        rec = JSON.parse(await readFile(path.join(dir, 'instance.json'), 'utf8')) as InstanceRecord;
      } catch {
        continue;
      }
      const h: Held = { rec, dir, status: { vmId: rec.vmId, attempt: rec.attempt, name: rec.name, state: 'stopped', generation: rec.generation, mac: rec.mac, disconnectPolicy: disconnectPolicyOf(rec.spec.disconnectPolicy) } };
      this.held.set(instanceKey(rec), h);
      const live = await controlRequest(path.join(dir, CONTROL_SOCKET), 'status', 2000).catch(() => undefined);
      if (live?.status) {
        if (rec.guest === 'macos' && live.status.state !== 'stopped' && live.status.state !== 'failed') this.slots.adopt(instanceKey(rec));
        this.fromHost(h, live.status, false);
        this.attach(h);
      } else {
        this.fromDeadHost(h, false);
      }
    }
  }

  private attach(h: Held): void {
    h.watch?.close();
    const w = watchControl(path.join(h.dir, CONTROL_SOCKET), (s) => this.fromHost(h, s, true));
    h.watch = w;
    void w.closed.then(() => {
      if (h.watch !== w || this.closed) return;
      h.watch = undefined;
      this.fromDeadHost(h, true);
    });
  }

  private fromHost(h: Held, s: VzHostStatus, emit: boolean): void {
    const state: InstanceState = s.state;
    if (state === 'stopped' || state === 'failed') return this.ended(h, state, s.message, s.failureKind, emit);
    const ip = state === 'running' ? (s.ip ?? (h.status.state === 'running' ? h.status.ip : undefined)) : undefined;
    this.patch(h, { state, ip, mac: s.mac, message: undefined }, emit);
    if (state === 'running' && !ip) this.scheduleLeaseFallback(h);
  }

  private fromDeadHost(h: Held, emit: boolean): void {
    const last = lastStatusLine(h.dir);
    if (!last) return this.ended(h, 'stopped', undefined, undefined, emit);
    if (last.state === 'failed') return this.ended(h, 'failed', last.message, last.failureKind, emit);
    if (last.state !== 'stopped' && !h.stopping) return this.ended(h, 'failed', `the VM host process died while the VM was ${last.state}`, undefined, emit);
    this.ended(h, 'stopped', last.state === 'stopped' ? fencedMessage(last.message) : undefined, undefined, emit);
  }

  /** An instance ended: frees (or, on the framework's limit error, closes) the macOS slots. */
  private ended(h: Held, state: 'stopped' | 'failed', message: string | undefined, failureKind: string | undefined, emit = true): void {
    const key = instanceKey(h.rec);
    clearTimeout(h.leaseTimer);
    h.leaseTimer = undefined;
    if (h.rec.guest === 'macos') {
      // Only the transition into "failed" closes the slots: the same failure seen again later
      // (e.g. from status.jsonl once the host exited) must not re-close them after one freed.
      if (state === 'failed' && failureKind === 'limit-exceeded') {
        if (h.status.state !== 'failed') this.slots.limitExceeded(key, message ?? 'VZErrorVirtualMachineLimitExceeded');
      } else {
        this.slots.release(key);
      }
    }
    this.patch(h, { state, ip: undefined, message: state === 'failed' ? message : fencedMessage(message) }, emit);
  }

  /** dhcpd_leases fallback while a running VM has no IP from the filter. */
  private scheduleLeaseFallback(h: Held): void {
    if (h.leaseTimer || this.closed) return;
    const poll = async (): Promise<void> => {
      h.leaseTimer = undefined;
      if (this.closed || h.status.state !== 'running' || h.status.ip || !h.rec.mac) return;
      const lease = await leaseForMac(h.rec.mac, this.opts.leaseFile ? { file: this.opts.leaseFile } : {});
      if (h.status.state !== 'running' || h.status.ip) return;
      if (lease) this.patch(h, { ip: lease.ip });
      else h.leaseTimer = setTimeout(() => void poll(), this.opts.leasePollMs ?? 2000);
    };
    h.leaseTimer = setTimeout(() => void poll(), this.opts.leaseFallbackAfterMs ?? 10_000);
  }

  private patch(h: Held, p: Partial<InstanceStatus>, emit = true): InstanceStatus {
    h.status = this.listeners.publish(h.status, p, emit);
    return { ...h.status };
  }

  private waitRunning(h: Held): Promise<InstanceStatus> {
    return waitUntilRunning(() => h.status, h.rec.name, this.opts.startTimeoutMs ?? 60_000);
  }

  private async halt(h: Held, how: 'stop' | 'kill', reason?: string): Promise<InstanceStatus> {
    const sock = path.join(h.dir, CONTROL_SOCKET);
    if (!h.watch) {
      if (!(await controlRequest(sock, 'status', 1000).catch(() => undefined))) {
        if (h.status.state !== 'failed') this.ended(h, 'stopped', h.status.state === 'stopped' ? h.status.message : undefined, undefined);
        return { ...h.status };
      }
      this.attach(h);
    }
    h.stopping = true;
    const w = h.watch!;
    await controlRequest(sock, how, 3000, reason ? { reason } : {}).catch(() => {});
    const limit = (this.opts.stopTimeoutMs ?? 30_000) + 5000;
    const timedOut = await Promise.race([w.closed.then(() => false), sleep(limit).then(() => true)]);
    if (timedOut) {
      await controlRequest(sock, 'kill').catch(() => {});
      await Promise.race([w.closed, sleep(5000)]);
    }
    await sleep(0);
    if (h.status.state !== 'failed' || how === 'stop' || reason) this.ended(h, 'stopped', reason, undefined);
    return { ...h.status };
  }
}
