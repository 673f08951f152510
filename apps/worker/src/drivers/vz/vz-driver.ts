// The macOS driver (Apple Virtualization.framework). Same shape as the QEMU driver: every instance
// runs in its own detached VM host process (vm-host/darwin), talking through the same control
// socket and status.jsonl, so a worker restart re-attaches to running VMs. Issue 17: that host is
// the root half (vmnet, the filter, the pump) and runs on the worker's own node; the VM itself runs
// in an unprivileged agent as the VM user, in that user's GUI session (a LaunchAgent), on the
// signed node copy (macos/codesign.ts: root-owned, SHA-256 pinned). Per instance:
//
//   <dataDir>/instances/<vmId>.<attempt>/        root 0711
//     instance.json   what the worker asked for                                  — driver (root)
//     vz-host.json    the host's config, rewritten on every start (0600)          — driver (root)
//     control.sock, status.jsonl, host.log, agent.sock, <label>.plist             — host (root)
//     bundle/         Tart bundle (VM user, 0700): a clone of the image made by root before
//                     it is handed over; afterwards root reads it only by fd (vz/user-files.ts)
//     logs/           serial.log, agent.log (VM user, 0700)                       — agent
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
import { createHash } from 'node:crypto';
import { existsSync, lstatSync } from 'node:fs';
import { chmod, lchown, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DriverError,
  fenceConfigFor,
  fencedMessage,
  disconnectPolicyOf,
  instanceKey,
  networkModeOf,
  NETWORK_MODES,
  type ConsoleEndpoint,
  type CreateInstanceRequest,
  type Driver,
  type DriverCapabilities,
  type InstanceRef,
  type ExportedImage,
  type InstanceSpec,
  type InstanceState,
  type InstanceStatus,
  type UpdateInstanceRequest,
  type WorkerNetworkInfo,
} from '../driver.ts';
import { writeInstanceRecord } from '../instance-status.ts';
import { HostProcessDriver, instanceDirName, lastStatusLine, spawnDetachedHost, type HeldInstance, type InstanceRecordBase } from '../host-process-driver.ts';
import { CONTROL_SOCKET, SERIAL_LOG, STATUS_LOG } from '../../host-process/qemu-host-config.ts';
import { subnetCidr, type VzHostConfig, type VzHostStatus } from '../../host-process/vz-host-config.ts';
import { leaseForMac } from '../../macos/dhcpd-leases.ts';
import { cloneBundle, type CloneFile } from '../../vz/clone.ts';
import { copyUserFile, readUserFile, removeAsUser } from '../../vz/user-files.ts';
import { AgentListener, handOver, type FdPassing } from '../../host-process/agent-link.ts';
import { parseAgentEvent } from '../../host-process/agent-protocol.ts';
import type { AgentLauncher } from '../../macos/agent-launcher.ts';
import type { InstallEvent, InstallRequest } from '../../vz/install.ts';
import { MacosSlots } from '../../vz/slots.ts';
import { parseTartConfig, readTartConfig, resourcesFor, type TartConfig } from '../../vz/tart-bundle.ts';

export const VZ_DRIVER_NAME = 'vz';
export const VZ_HOST_CONFIG = 'vz-host.json';
const HOST_LAUNCH = fileURLToPath(new URL('../../vm-host/darwin/launch.mjs', import.meta.url));
/** The agent's entry script, for the LaunchAgent's argv (the driver starts agents for installs). */
export const AGENT_LAUNCH = fileURLToPath(new URL('../../vm-host/darwin/agent-launch.mjs', import.meta.url));
/** The instance's VM-user-owned parts. */
const BUNDLE_DIR = 'bundle';
const LOGS_DIR = 'logs';
const AGENT_SOCKET = 'agent.sock';
/** Files of a Tart bundle that root copies (by fd) when it takes a bundle from a VM user's directory. */
const BUNDLE_FILES = ['config.json', 'disk.img', 'nvram.bin'];

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
  /** The ad-hoc-signed node copy and its pinned SHA-256 (macos/codesign.ts prepareSignedNode). Needed unless `launcher` and `installer` are given. */
  signedNode?: { path: string; sha256: string };
  /**
   * Makes/checks the signed node copy (prepareSignedNode). Run once when the driver loads (worker
   * start): a failure is logged with its exact remedy and fails every start with it.
   */
  prepareSignedNode?: () => Promise<{ path: string; sha256: string }>;
  launcher?: VzHostLauncher;
  installer?: VzInstaller;
  network?: VzNetworkOptions;
  /**
   * Issue 18: vmnet host mode for VMs in network mode "host-only" (the Mac and its VMs, no route
   * out); absent = that mode is refused on this worker.
   */
  hostOnlyNetwork?: VzNetworkOptions;
  /** macOS guests at once (Apple's licence: 2). */
  macosSlots?: number;
  /** Give every clone a new machine identifier (ECID) too, not only a new MAC. Default false. */
  freshMachineIdentifier?: boolean;
  /** Needed with freshMachineIdentifier (the addon's newMachineIdentifier; the worker's own node may lack the entitlement, but this call needs none). */
  newMachineIdentifier?: () => Uint8Array;
  cloneFile?: CloneFile;
  /**
   * The VM user: every VM (and IPSW install) runs as this user in its GUI session, never as root
   * (issue 17). Needed unless `launcher` (tests) is given.
   */
  vmUser?: { uid: number; gid: number };
  /** Starts agents for IPSW installs (default: LaunchAgents on the signed node copy, macos/agent-launcher.ts). */
  agentLauncher?: AgentLauncher;
  /** The native fd-passing calls (@fleet/native-vz), for IPSW installs. */
  fdPassing?: FdPassing;
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

/** Anka's host-only default subnet; vmnet host mode. */
export const DEFAULT_VZ_HOST_ONLY_NETWORK: VzNetworkOptions = { startAddress: '192.168.128.1', endAddress: '192.168.128.254', subnetMask: '255.255.255.0', dhcpLeaseSeconds: 600 };

export const DEFAULT_VZ_NETWORK: VzNetworkOptions = { startAddress: '192.168.64.1', endAddress: '192.168.64.254', subnetMask: '255.255.255.0', dhcpLeaseSeconds: 600 };

interface InstanceRecord extends InstanceRecordBase {
  guest: 'macos' | 'linux';
}

interface Held extends HeldInstance<InstanceRecord> {
  leaseTimer?: NodeJS.Timeout | undefined;
}

export class VzDriver extends HostProcessDriver<InstanceRecord, Held> implements Driver {
  readonly name = VZ_DRIVER_NAME;
  /** Registry images (issue 15): Tart images, cloned (APFS clonefile) from the worker's image cache. */
  readonly imageFormats = ['tart'] as const;
  readonly capabilities: DriverCapabilities;
  readonly slots: MacosSlots;
  private readonly instancesDir: string;
  private readonly installs = new Map<string, Promise<void>>();
  private loaded = false;

  constructor(private readonly opts: VzDriverOptions) {
    super();
    this.instancesDir = path.join(opts.dataDir, 'instances');
    if (Buffer.byteLength(path.join(this.instancesDir, 'x'.repeat(40), CONTROL_SOCKET)) > 103) {
      throw new DriverError(`vz driver data dir ${opts.dataDir} is too long for Unix socket paths (103 bytes on macOS); choose a shorter one`);
    }
    if (!opts.launcher && !opts.signedNode && !opts.prepareSignedNode) throw new DriverError('the vz driver needs the signed node copy (signedNode or prepareSignedNode) to run VM host processes');
    if (!opts.launcher && !opts.vmUser) throw new DriverError('the vz driver needs the VM user (vmUser): VMs never run as root');
    if (opts.vmUser && (!Number.isInteger(opts.vmUser.uid) || opts.vmUser.uid <= 0)) throw new DriverError(`the VM user must not be root (uid ${opts.vmUser.uid})`);
    if (opts.freshMachineIdentifier && !opts.newMachineIdentifier) throw new DriverError('freshMachineIdentifier needs newMachineIdentifier');
    this.slots = new MacosSlots(opts.macosSlots ?? 2);
    // vmnet hands out the addresses itself (no count of ours): 0 = not limited here.
    const info = (mode: 'nat' | 'host-only', n: VzNetworkOptions, iface: string): WorkerNetworkInfo => ({ mode, subnet: subnetCidr(n.startAddress, n.subnetMask), gateway: n.startAddress, addresses: 0, interface: iface });
    const networks = [info('nat', { ...DEFAULT_VZ_NETWORK, ...(opts.network ?? {}) }, 'vmnet shared')];
    if (opts.hostOnlyNetwork) networks.push(info('host-only', { ...DEFAULT_VZ_HOST_ONLY_NETWORK, ...opts.hostOnlyNetwork }, 'vmnet host'));
    this.capabilities = { guestOs: ['linux', 'macos'], maxMacosGuests: this.slots.capacity, networks };
  }

  protected controlSocket(h: Held): string {
    return path.join(h.dir, CONTROL_SOCKET);
  }

  protected startTimeoutMs(): number {
    return this.opts.startTimeoutMs ?? 60_000;
  }

  protected stopTimeoutMs(): number {
    return this.opts.stopTimeoutMs ?? 30_000;
  }

  async create(r: CreateInstanceRequest): Promise<InstanceStatus> {
    await this.load();
    const key = instanceKey(r);
    const existing = this.held.get(key);
    if (existing) return { ...existing.status };
    if (r.spec.os && r.spec.os !== 'linux' && r.spec.os !== 'macos') throw new DriverError(`the vz driver runs "linux" and "macos" guests, not ${JSON.stringify(r.spec.os)}`);
    if (!r.spec.image && !r.spec.pulled) throw new DriverError('the vz driver needs spec.image (a Tart bundle name, an .ipsw, or a registry image)');
    const mode = networkModeOf(r.spec);
    if (!NETWORK_MODES.includes(mode)) throw new DriverError(`unknown network mode ${JSON.stringify(mode)}`);
    if (mode === 'host-only' && !this.opts.hostOnlyNetwork) throw new DriverError('network mode host-only: this worker has no host-only network');
    if (r.spec.mac) {
      const other = [...this.held.values()].find((o) => o.rec.vmId !== r.vmId && o.rec.mac === r.spec.mac);
      if (other) throw new DriverError(`MAC ${r.spec.mac} is already used by ${other.rec.name} on this worker: two VMs with one MAC cannot run together`);
    }
    const dir = path.join(this.instancesDir, instanceDirName(r));
    await mkdir(this.instancesDir, { recursive: true, mode: 0o711 });
    await mkdir(dir, { recursive: true, mode: 0o711 });
    await chmod(dir, 0o711);
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
      // A create interrupted by a crash may have left a partial clone behind (maybe already the user's).
      await this.removeUserDir(path.join(dir, BUNDLE_DIR));
      // Cloned while root owns the new directory (nothing of the user's can be in it yet), then handed over.
      const cloned = await cloneBundle(image, path.join(dir, BUNDLE_DIR), {
        ...(this.opts.cloneFile ? { cloneFile: this.opts.cloneFile } : {}),
        // The operator's MAC (issue 18), else a fresh one.
        ...(r.spec.mac ? { randomMac: () => r.spec.mac! } : {}),
        ...(guest === 'macos' && this.opts.freshMachineIdentifier && this.opts.newMachineIdentifier ? { newMachineIdentifier: this.opts.newMachineIdentifier } : {}),
      });
      await this.handToVmUser(path.join(dir, BUNDLE_DIR));
      h.rec = { ...h.rec, guest, mac: cloned.config.macAddress };
      await writeInstanceRecord(dir, h.rec);
      return this.patch(h, { mac: h.rec.mac, message: undefined });
    } catch (e) {
      this.held.delete(key);
      await this.removeInstanceDir(dir);
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
    const bundleDir = path.join(h.dir, BUNDLE_DIR);
    const logsDir = path.join(h.dir, LOGS_DIR);
    let cfg: VzHostConfig;
    try {
      const bundle = await this.readBundleConfig(bundleDir);
      await this.ensureUserDir(logsDir);
      const node = this.opts.launcher ? { path: '', sha256: '' } : await this.signedNode();
      const res = resourcesFor(bundle, { cpus: h.rec.spec.cpus, memoryMib: h.rec.spec.memoryMib });
      const mode = networkModeOf(h.rec.spec);
      if (mode === 'host-only' && !this.opts.hostOnlyNetwork) throw new DriverError('network mode host-only: this worker has no host-only network');
      const net = mode === 'host-only' ? { ...DEFAULT_VZ_HOST_ONLY_NETWORK, ...this.opts.hostOnlyNetwork } : { ...DEFAULT_VZ_NETWORK, ...(this.opts.network ?? {}) };
      cfg = {
        vmId: h.rec.vmId,
        attempt: h.rec.attempt,
        name: h.rec.name,
        guest: h.rec.guest,
        bundleDir,
        runDir: h.dir,
        serialLogPath: path.join(logsDir, SERIAL_LOG),
        vmUser: this.opts.vmUser ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 },
        agentSocket: path.join(h.dir, AGENT_SOCKET),
        agentLabel: `dev.fleet.vm.${createHash('sha256').update(instanceDirName(h.rec)).digest('hex').slice(0, 16)}`,
        agentLog: path.join(logsDir, 'agent.log'),
        ...(node.path ? { agentNode: node } : {}),
        cpus: res.cpus,
        memoryBytes: res.memoryBytes,
        mac: bundle.macAddress,
        network: net,
        networkMode: mode,
        filter: { allow: h.rec.spec.network?.allow ?? [], block: h.rec.spec.network?.block ?? [], blockLocal: h.rec.spec.network?.blockLocal ?? false },
        ...(this.opts.stopTimeoutMs !== undefined ? { stopTimeoutMs: this.opts.stopTimeoutMs } : {}),
        // "wait" VMs keep running while the worker is cut off; every other one is fenced.
        ...fenceConfigFor(h.rec.spec.disconnectPolicy, this.opts.fence),
      };
    } catch (e) {
      this.slots.release(key);
      this.patch(h, { state: 'failed', message: (e as Error).message });
      throw new DriverError(`start ${h.rec.name}: ${(e as Error).message}`);
    }
    // Root's files in root's directory: the VM user can neither write nor swap them.
    await writeFile(path.join(h.dir, VZ_HOST_CONFIG), JSON.stringify(cfg, null, 2), { mode: 0o600 });
    await rm(path.join(h.dir, CONTROL_SOCKET), { force: true });
    await rm(path.join(h.dir, STATUS_LOG), { force: true });
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
    const up = await this.waitForControlSocket(this.controlSocket(h), { exited, hasExited: () => gone }, h.dir, path.join(h.dir, 'host.log'));
    if (!up.ok) {
      this.ended(h, 'failed', up.why, up.last?.failureKind);
      throw new DriverError(`start ${h.rec.name}: ${up.why}`);
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
    await this.removeInstanceDir(h.dir);
  }

  /**
   * The VM's screen (issue 19): Virtualization.framework draws a guest only into a
   * VZVirtualMachineView (an app window) and has no API to read a headless VM's framebuffer, so the
   * console is the guest's own VNC server: macOS Screen Sharing (Remote Management) on port 5900,
   * reached at the guest's address like port-forward. A Linux guest needs a VNC server of its own.
   */
  async consoleEndpoint(ref: InstanceRef): Promise<ConsoleEndpoint | undefined> {
    return this.held.has(instanceKey(ref)) ? { kind: 'guest-port', port: 5900 } : undefined;
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
    for (const h of this.held.values()) clearTimeout(h.leaseTimer);
    this.detachAll();
  }

  // ---- internals ----------------------------------------------------------------------

  private nodeReady: Promise<{ path: string; sha256: string }> | undefined;

  /** The signed node copy and its pinned hash (prepared and checked once). */
  private signedNode(): Promise<{ path: string; sha256: string }> {
    if (!this.nodeReady) {
      this.nodeReady = this.opts.prepareSignedNode ? this.opts.prepareSignedNode() : Promise.resolve(this.opts.signedNode!);
      this.nodeReady.catch((e: Error) => this.opts.log?.warn({ err: e.message }, 'the VM agent node copy is not usable: macOS VMs cannot start'));
    }
    return this.nodeReady;
  }

  /** The root half runs on the worker's own node (it needs root for vmnet, no entitlement). */
  private spawnHost: VzHostLauncher = (configFile, runDir) => spawnDetachedHost(process.execPath, [HOST_LAUNCH, configFile], { logFile: path.join(runDir, 'host.log') });

  /** A Tart bundle in a VM user's directory: its config read by fd, never by following the user's links. */
  private async readBundleConfig(bundleDir: string): Promise<TartConfig> {
    if (!this.opts.vmUser) return readTartConfig(bundleDir);
    const raw = await readUserFile(path.join(bundleDir, 'config.json'), this.opts.vmUser.uid);
    try {
      return parseTartConfig(JSON.parse(raw.toString('utf8')));
    } catch (e) {
      throw new DriverError(`${bundleDir}/config.json: ${(e as Error).message}`);
    }
  }

  /** A directory root just filled, handed to the VM user: lchown (never following a link), 0700 at the top. */
  private async handToVmUser(dir: string): Promise<void> {
    const u = this.opts.vmUser;
    if (!u) return;
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) await walk(p);
        await lchown(p, u.uid, u.gid);
      }
    };
    await walk(dir);
    await lchown(dir, u.uid, u.gid);
    await chmod(dir, 0o700);
  }

  /** A VM-user directory in the (root-owned) instance dir: made by root if absent, then handed over. */
  private async ensureUserDir(dir: string): Promise<void> {
    const st = lstatSync(dir, { throwIfNoEntry: false });
    if (st && !st.isDirectory()) await this.removeUserDir(dir);
    if (!st || !st.isDirectory()) {
      await mkdir(dir, { mode: 0o700 });
      await this.handToVmUser(dir);
    }
  }

  /** Deletes a VM-user directory as that user (vz/user-files.ts); without a VM user (tests) as root. */
  private async removeUserDir(dir: string): Promise<void> {
    const st = lstatSync(dir, { throwIfNoEntry: false });
    if (!st) return;
    const u = this.opts.vmUser;
    if (!u || !st.isDirectory() || st.uid === 0) {
      // Root's own (a clone that was never handed over), or a plain file/link: removed without following.
      await rm(dir, { recursive: true, force: true });
      return;
    }
    await removeAsUser(dir, u.uid, u.gid);
  }

  private async removeInstanceDir(dir: string): Promise<void> {
    await this.removeUserDir(path.join(dir, BUNDLE_DIR));
    await this.removeUserDir(path.join(dir, LOGS_DIR));
    await rm(dir, { recursive: true, force: true });
  }

  /**
   * IPSW → Tart bundle (issue 17): the installer runs as the VM user in its GUI session (an agent,
   * like a VM), takes one of the macOS slots while it runs (it runs a macOS VM), and writes into a
   * staging directory of the user's; root then copies the bundle's files by fd into its images dir.
   */
  private agentInstaller: VzInstaller = async (req, onEvent) => {
    const u = this.opts.vmUser;
    const np = this.opts.fdPassing;
    if (!u || !np) throw new Error('IPSW installs need the VM user and the native fd passing');
    const launcher = this.opts.agentLauncher ?? (await this.defaultAgentLauncher());
    const slotKey = `install:${req.bundleDir}`;
    if (!this.slots.acquire(slotKey)) throw new Error(`no macOS slot free for the install: ${this.slots.unavailableReason()}`);
    const tag = createHash('sha256').update(req.bundleDir).digest('hex').slice(0, 12);
    const staging = path.join(this.opts.imagesDir, `.install-${tag}`);
    const label = `dev.fleet.install.${tag}`;
    const sock = path.join(this.instancesDir, `install-${tag}.sock`);
    await this.removeInstanceDir(staging);
    await mkdir(staging, { recursive: true, mode: 0o711 });
    const userDir = path.join(staging, BUNDLE_DIR);
    await this.ensureUserDir(userDir);
    await mkdir(this.instancesDir, { recursive: true, mode: 0o711 });
    await rm(sock, { force: true });
    const listener = AgentListener.open(np, sock, u);
    try {
      await launcher.start({ label, uid: u.uid, gid: u.gid, socketPath: sock, logPath: path.join(userDir, 'install.log') });
      const { fd } = await listener.accept(120_000);
      const link = handOver(np, fd, { kind: 'install', request: { ...req, bundleDir: userDir } }, [], parseAgentEvent);
      let failed: string | undefined;
      let done = false;
      link.onMessage((e) => {
        if (e.event === 'install') {
          if (e.done) done = true;
          onEvent(e.percent !== undefined ? { phase: 'install', percent: e.percent, message: e.message } : { phase: 'load', message: e.message });
        } else if (e.event === 'install-failed') failed = e.message;
      });
      await link.closed;
      if (failed !== undefined || !done) throw new Error(failed ?? 'the installer agent exited before it finished');
      // Root's copy, taken by fd from the user's files: nothing the user links or changes later reaches it.
      const tmp = `${req.bundleDir}.tmp-${process.pid}`;
      await rm(tmp, { recursive: true, force: true });
      await mkdir(tmp, { mode: 0o755 });
      for (const f of BUNDLE_FILES) await copyUserFile(path.join(userDir, f), path.join(tmp, f), u.uid);
      await readTartConfig(tmp); // a bundle that does not parse is not an image
      await rename(tmp, req.bundleDir);
    } finally {
      listener.close();
      await rm(sock, { force: true });
      await launcher.stop({ label, uid: u.uid }).catch(() => {});
      await this.removeInstanceDir(staging).catch(() => {});
      this.slots.release(slotKey);
    }
  };

  private async defaultAgentLauncher(): Promise<AgentLauncher> {
    const { launchdAgentLauncher } = await import('../../macos/agent-launcher.ts');
    return launchdAgentLauncher(await this.signedNode(), AGENT_LAUNCH, this.instancesDir);
  }

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
      p = (this.opts.installer ?? this.agentInstaller)(req, (e) => this.patch(h, { message: e.message }));
      this.installs.set(bundleDir, p);
      void p.finally(() => this.installs.delete(bundleDir)).catch(() => {});
    }
    await p.catch((e: Error) => {
      throw new DriverError(`installing ${path.basename(image)} failed: ${e.message}`);
    });
    return bundleDir;
  }

  /**
   * ImagePush: a stopped instance's bundle is pushed as a Tart image. The bundle is the VM user's,
   * so root packs a copy it took by fd into `workDir` (vz/user-files.ts), never the user's files.
   */
  async exportImage(ref: InstanceRef, workDir?: string): Promise<ExportedImage> {
    const h = await this.get(ref);
    if (h.status.state !== 'stopped' && h.status.state !== 'failed') throw new DriverError(`push ${h.rec.name}: the VM must be stopped first (it is ${h.status.state})`);
    const bundleDir = path.join(h.dir, BUNDLE_DIR);
    if (!this.opts.vmUser) {
      if (!existsSync(path.join(bundleDir, 'config.json'))) throw new DriverError(`push ${h.rec.name}: the instance has no Tart bundle`);
      return { format: 'tart', bundleDir };
    }
    if (!workDir) throw new DriverError(`push ${h.rec.name}: no work directory for a copy of the VM user's bundle`);
    const copy = path.join(workDir, BUNDLE_DIR);
    await mkdir(copy, { recursive: true, mode: 0o700 });
    try {
      for (const f of BUNDLE_FILES) await copyUserFile(path.join(bundleDir, f), path.join(copy, f), this.opts.vmUser.uid);
      await readTartConfig(copy);
    } catch (e) {
      throw new DriverError(`push ${h.rec.name}: ${(e as Error).message}`);
    }
    return { format: 'tart', bundleDir: copy };
  }

  protected override async get(ref: InstanceRef): Promise<Held> {
    const h = await super.get(ref);
    if (!h.rec.mac) throw new DriverError(`instance ${instanceKey(ref)} is still being created (${h.status.message ?? 'cloning its image'})`);
    return h;
  }

  protected async load(): Promise<void> {
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
      const live = await this.probe(h);
      if (live) {
        if (rec.guest === 'macos' && live.state !== 'stopped' && live.state !== 'failed') this.slots.adopt(instanceKey(rec));
        this.fromHost(h, live, false);
        this.attach(h);
      } else {
        this.fromDeadHost(h, false);
      }
    }
  }

  protected fromHost(h: Held, s: VzHostStatus, emit: boolean): void {
    const state: InstanceState = s.state;
    if (state === 'stopped' || state === 'failed') return this.ended(h, state, s.message, s.failureKind, emit);
    const ip = state === 'running' ? (s.ip ?? (h.status.state === 'running' ? h.status.ip : undefined)) : undefined;
    this.patch(h, { state, ip, mac: s.mac, message: undefined }, emit);
    if (state === 'running' && !ip) this.scheduleLeaseFallback(h);
  }

  protected fromDeadHost(h: Held, emit: boolean): void {
    const last = lastStatusLine(h.dir);
    if (!last) return this.ended(h, 'stopped', undefined, undefined, emit);
    if (last.state === 'failed') return this.ended(h, 'failed', last.message, last.failureKind, emit);
    if (last.state !== 'stopped' && !h.stopping) return this.ended(h, 'failed', `the VM host process died while the VM was ${last.state}`, undefined, emit);
    this.ended(h, 'stopped', last.state === 'stopped' ? fencedMessage(last.message) : undefined, undefined, emit);
  }

  /** An instance ended: frees (or, on the framework's limit error, closes) the macOS slots. */
  protected override ended(h: Held, state: 'stopped' | 'failed', message: string | undefined, failureKind?: string, emit = true): void {
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
}
