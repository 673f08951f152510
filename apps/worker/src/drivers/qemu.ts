// The QEMU driver (Linux): every instance runs in its own VM host process
// (src/vm-host/main.ts), started detached so that the VM outlives the worker. The driver keeps
// one run dir per instance under its data dir:
//
//   <dataDir>/instances/<vmId>.<attempt>/
//     instance.json   what the worker asked for (name, generation, spec, MAC, TAP)   — driver
//     config.json     the VM host process's config, rewritten on every start         — driver
//     control.sock    the host process's control socket (exists while it runs)      — host
//     status.jsonl    one line per state/lease change; the last line survives exit   — host
//     serial.log, qemu.log, host.log, qmp.sock
//
// With VM users (`vmUsers`, issue 14; qemu-users.ts) the run dir is root's (0711) and the host
// process's own files (control.sock, status.jsonl, serial.log, qemu.log, qmp.sock) live in
// <run dir>/run/, owned by the instance's uid (0700); disk.qcow2 is that uid's (0600). The host
// process and QEMU run as that uid: no capabilities, no_new_privs, QEMU under -sandbox.
//
// `list()` re-attaches: a run dir whose control socket answers is a live VM; one whose host
// process is gone is reported from the last status line (a host that died while its VM was
// running is "failed"). The NAT network is the worker's; the driver only attaches TAPs to it.
// Fencing (issue 12): with `fence`, the host process of every "reschedule" instance watches the
// worker's lease file and kills QEMU when the lease runs out (worker dead or cut off); such an
// instance ends "stopped" with a "fenced: …" message. `kill()` is the worker's own forced stop.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ensureGuestImage, guestCmdline, macFromSeed, type GuestImage } from '@fleet/guest-image';
import { closeFd, openPacketSocket, openVnetTap } from '@fleet/native-vz';
import { type FilterConfig, grantsHostAccess, resolveConfig } from '@fleet/netfilter';
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
  type ExportedImage,
  type InstanceNetworkCounters,
  type InstanceRef,
  type InstanceSpec,
  type InstanceState,
  type InstanceStatus,
  type NetworkMode,
  type UpdateInstanceRequest,
  type WorkerNetworkInfo,
} from './driver.ts';
import { writeInstanceRecord } from './instance-status.ts';
import { HostProcessDriver, instanceDirName, lastStatusLine, sleep, spawnDetachedHost, statusLines, targetOf, type DetachedHost, type HeldInstance, type InstanceRecordBase } from './host-process-driver.ts';
import { createInstanceDisk, resolveSpecImage } from './qemu-disk.ts';
import { allocateVmUid, firstUntraversable, giveToVmUser, inVmUserRange, prepareRunDir, publishGuestFiles, validateVmUserRange, vmHostCommand, VM_RUN_SUBDIR, type VmUserRange } from './qemu-users.ts';
import { CONFIG_FILE, CONTROL_SOCKET, STATUS_LOG, VNC_SOCKET, type VmHostConfig, type VmHostStatus } from '../host-process/qemu-host-config.ts';
import { controlRequest } from '../host-process/control-client.ts';

export const QEMU_DRIVER_NAME = 'qemu';
const DISK_FILE = 'disk.qcow2';
const LAUNCH = fileURLToPath(new URL('../vm-host/launch.mjs', import.meta.url));

/** An instance's address on the NAT network (uplink/address-pool.ts Reservation). */
export interface QemuNatReservation {
  ip: string;
  mac: string;
}

/** What the driver needs from the worker's NAT network (uplink/nat-network.ts NatNetwork). */
export interface QemuNat {
  addTap(tap: string): Promise<void>;
  removeTap(tap: string): Promise<void>;
  /** A persistent TAP owned by a VM user (needed with `vmUsers`) and its removal. */
  createTap?(tap: string, owner: { uid: number; gid: number }): Promise<void>;
  deleteTap?(tap: string): Promise<void>;
  /**
   * The veth uplink (issue 20; NatNetwork has it): a veth pair whose end `port` becomes the bridge
   * port (addTap, where a TAP went) and whose other end `ifname` is alone in namespace `netns`.
   * When present the driver uses it instead of a TAP: it opens an AF_PACKET socket there and hands
   * it to the VM host process.
   */
  createUplink?(port: string): Promise<{ netns: string; ifname: string }>;
  /** The offload path (`vmFraming: 'vnet'`): an empty per-VM namespace and the name QEMU's TAP takes in it; deleteUplink removes it. */
  createVmNamespace?(port: string): Promise<{ netns: string; ifname: string }>;
  /** Frames the kernel dropped sending to the VM end in the VM's namespace (QEMU's TAP on the offload path); undefined without one. */
  vmEndTxDropped?(port: string): number | undefined;
  deleteUplink?(port: string): Promise<void>;
  /** Uplinks no VM host process holds (their VM namespace has no packet socket): leftovers. */
  unusedUplinks?(): Promise<string[]>;
  /** Reserves (idempotently) the instance's one address, bound to its MAC; throws when none is free. */
  reserve(req: { key: string; vmId: string; mac: string; name: string; hostAccess: boolean; preferredIp?: string | undefined }): Promise<QemuNatReservation>;
  release(key: string): Promise<void>;
  /** Frees the reservations of instances that no longer exist (after a restart). */
  releaseAllBut(keep: ReadonlySet<string>): Promise<string[]>;
  /** The host's own addresses other than the gateway (never reachable from a VM). */
  hostAddresses(): Promise<string[]>;
  readonly addresses: { size: number; used: number; free: number };
  readonly gatewayIp: string;
  readonly gatewayMac: string;
  readonly subnet: string;
  readonly dhcpServerIp: string;
  /** The worker's interface for it (the bridge; reported in Hello.networks). */
  readonly name?: string;
}

export interface QemuDriverOptions {
  /** Where run dirs live (e.g. <worker data dir>/qemu). Keep it short: Unix socket paths are limited to 107 bytes. */
  dataDir: string;
  nat: QemuNat;
  /**
   * Issue 18: the worker's host-only network (a bridge with no uplink: VMs reach the worker and
   * nothing beyond). Absent = VMs in mode "host-only" are refused on this worker.
   */
  hostOnly?: QemuNat;
  /**
   * How a VM's frames reach the bridge (issue 20): `tap` (default) — the VM host process writes
   * them to a TAP, one write per frame; `veth` — sendmmsg/recvmmsg on an AF_PACKET socket bound to
   * the VM end of a veth pair in a namespace of its own (the network's createUplink). Both carry
   * the same filter; the TAP measured faster VM → host (one device hop, not two) and equal host → VM.
   */
  vmLink?: 'tap' | 'veth';
  /**
   * How frames travel between QEMU and the VM host process (issue 20). `vnet` (the default with
   * the TAP uplink, when the network has createVmNamespace) — the offload path: QEMU's NIC is a
   * TAP with a virtio-net header alone in a per-VM namespace, read through an AF_PACKET socket,
   * and the uplink TAP carries the header too, so TSO super-frames and pending checksums cross
   * whole; a real guest sends 2–4× what it can in plain frames. `stream` (the default otherwise)
   * — length-prefixed plain frames on a stream socket (`-netdev stream`), many per syscall;
   * `dgram` — one datagram per frame (`-netdev dgram`). The frame pump bench measured host → VM
   * 88 % of the kernel row with stream against 45 % with dgram in the same quiet run, VM → host
   * 96 % vs 63 %; real guests the same either way (BENCHMARKS.md, issue 20). See
   * VmHostConfig.nicFraming.
   */
  vmFraming?: 'dgram' | 'stream' | 'vnet';
  /** Run VM host processes inside this network namespace (where the NAT bridge is; tests). */
  netns?: string;
  /** The guest image (default: ensureGuestImage()). spec.image is not interpreted yet. */
  image?: () => Promise<GuestImage>;
  /** OpenSSH public keys passed to guests on the kernel command line. */
  authorizedKeys?: string[];
  accel?: 'tcg' | 'kvm' | 'auto';
  /** Graceful stop timeout before the host process kills QEMU (default 10 s). */
  stopTimeoutMs?: number;
  /** How long start() waits for the host process to report running (default 30 s). */
  startTimeoutMs?: number;
  log?: { info(o: object, m?: string): void; warn(o: object, m?: string): void };
  /** Prefixes every VM's filter treats as public (a lab network standing in for the Internet; tests). */
  globalPrefixes?: string[];
  /** Operator disk images (qcow2/raw) referenced by name in spec.image live here. */
  imagesDir?: string;
  /** Called once by close() (the worker's NAT network is detached there). */
  onClose?: () => void;
  /**
   * Client-side fencing: the worker's lease file (<worker data dir>/lease.json). Host processes of
   * "reschedule" instances read it and kill their VM when the lease ran out, or when no valid lease
   * was readable for `graceMs` (default 2 s) after they started. Absent = no fencing by host processes.
   */
  fence?: { leaseFile: string; graceMs?: number };
  /**
   * Issue 14: run every VM host process and QEMU as the instance's own unprivileged uid from this
   * range (qemu-users.ts), QEMU under `-sandbox`. Absent = both run as root (tests of earlier issues).
   */
  vmUsers?: VmUserRange;
}

/** Default VmHostConfig.fence.graceMs (a missing lease file right after start). */

interface InstanceRecord extends InstanceRecordBase {
  tap: string;
  /** Issue 18: absent in records of earlier versions = "nat". */
  mode?: NetworkMode;
  /** The address reserved for it on the NAT network (absent in records of earlier versions until load()). */
  ip?: string;
  /** The instance's qcow2 (in its run dir) and how the VM boots: the built-in kernel, or the disk. */
  disk?: string;
  boot?: 'kernel' | 'disk';
  /** Its VM user (uid = gid), with `vmUsers`: kept for its whole life, so adoption keeps it too. */
  uid?: number;
  /** How its NIC was set up at its last start (VmHostConfig.nicFraming); absent in records of earlier versions. */
  nicFraming?: 'dgram' | 'stream' | 'vnet';
}

type Held = HeldInstance<InstanceRecord>;

const execFileAsync = promisify(execFile);

/** The cached image an instance's disk or kernel depends on (never evicted while the instance exists). */
function imageDigestOf(rec: InstanceRecord): { imageDigest?: string } {
  return rec.spec.pulled ? { imageDigest: rec.spec.pulled.digest } : {};
}

/** The fd number the VM host process finds its AF_PACKET uplink socket at (spawnDetachedHost's inheritFd: through `ip netns exec` and setpriv, which keep inherited fds). */
export const UPLINK_FD = 3;
/** The offload path's fds in the VM host process (VmHostConfig.vnetNic): its packet socket, QEMU's TAP. */
export const VNET_PUMP_FD = 3;
export const VNET_QEMU_FD = 4;
/** Socket buffers of the uplink: a burst of 64-frame batches fits (the kernel doubles these). */
const UPLINK_RCVBUF = 4 << 20;
const UPLINK_SNDBUF = 1 << 20;

export function tapNameFor(ref: InstanceRef): string {
  return `fv${createHash('sha256').update(instanceKey(ref)).digest('hex').slice(0, 10)}`;
}


/**
 * A VM host process killed with SIGKILL leaves its QEMU running (with a dead NIC). Kill that
 * orphan: the pid comes from status.jsonl and is trusted only if the process's command line
 * still names this run dir (so a reused pid is never killed).
 */
export function killOrphanQemu(dir: string, hostDir = dir): boolean {
  const pid = statusLines(hostDir)
    .map((l) => l.qemuPid)
    .filter((p): p is number => typeof p === 'number')
    .at(-1);
  if (pid === undefined) return false;
  try {
    if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) return false;
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}

export class QemuDriver extends HostProcessDriver<InstanceRecord, Held> implements Driver {
  readonly name = QEMU_DRIVER_NAME;
  readonly imageFormats = ['fleet-qemu'] as const;
  readonly capabilities: DriverCapabilities;
  /** VM uids handed out but maybe not yet in `held` (a create in progress); freed by remove(). */
  private readonly claimedUids = new Set<number>();
  private readonly instancesDir: string;
  private loading: Promise<void> | undefined;

  constructor(private readonly opts: QemuDriverOptions) {
    super();
    this.instancesDir = path.join(opts.dataDir, 'instances');
    const networks: WorkerNetworkInfo[] = [networkInfo('nat', opts.nat)];
    if (opts.hostOnly) networks.push(networkInfo('host-only', opts.hostOnly));
    this.capabilities = { guestOs: ['linux'], maxMacosGuests: 0, natAddresses: opts.nat.addresses.size, networks };
    // The longest socket path an instance gets (with VM users its sockets sit one level deeper).
    const longest = opts.vmUsers ? path.join(this.instancesDir, 'x'.repeat(40), VM_RUN_SUBDIR, CONTROL_SOCKET) : path.join(this.instancesDir, 'x'.repeat(40), CONTROL_SOCKET);
    if (Buffer.byteLength(longest) > 107) {
      throw new DriverError(`qemu driver data dir ${opts.dataDir} is too long for Unix socket paths (107 bytes, e.g. ${longest}); choose a shorter one`);
    }
    if (opts.vmUsers) {
      try {
        validateVmUserRange(opts.vmUsers);
      } catch (e) {
        throw new DriverError((e as Error).message);
      }
      if (!opts.nat.createTap || !opts.nat.deleteTap) throw new DriverError('VM users need a NAT network that creates TAPs (createTap/deleteTap)');
    }
  }

  /** Where the VM host process keeps its sockets, logs and status.jsonl (with a VM user: its own subdir). */
  private hostDir(h: { dir: string; rec: InstanceRecord }): string {
    return h.rec.uid !== undefined ? path.join(h.dir, VM_RUN_SUBDIR) : h.dir;
  }

  private socketPath(h: { dir: string; rec: InstanceRecord }): string {
    return path.join(this.hostDir(h), CONTROL_SOCKET);
  }

  /** The control socket, if it can be trusted (see trustedSocket); else where it should be. */
  protected controlSocket(h: Held): string {
    return this.trustedSocket(h) ?? this.socketPath(h);
  }

  protected startTimeoutMs(): number {
    return this.opts.startTimeoutMs ?? 30_000;
  }

  protected stopTimeoutMs(): number {
    return this.opts.stopTimeoutMs ?? 10_000;
  }

  /**
   * With VM users, the control socket lives in a directory the VM's user owns: root connects to
   * it only if it is a socket (not a symlink to another VM's socket) owned by that user.
   */
  private trustedSocket(h: { dir: string; rec: InstanceRecord }): string | undefined {
    const sock = this.socketPath(h);
    if (h.rec.uid === undefined) return sock;
    try {
      const st = lstatSync(sock);
      return st.isSocket() && st.uid === h.rec.uid ? sock : undefined;
    } catch {
      return undefined;
    }
  }

  /** The uid for an instance without one (a record from before VM users were on). */
  private allocateUid(): number {
    const used = new Set<number>(this.claimedUids);
    for (const h of this.held.values()) if (h.rec.uid !== undefined) used.add(h.rec.uid);
    try {
      const uid = allocateVmUid(this.opts.vmUsers!, used);
      this.claimedUids.add(uid);
      return uid;
    } catch (e) {
      throw new DriverError((e as Error).message);
    }
  }

  /** Checks once that VM users can reach their run dirs (every ancestor o+x). */
  private async checkTraversable(): Promise<void> {
    await mkdir(this.instancesDir, { recursive: true, mode: 0o711 });
    await chmod(this.opts.dataDir, 0o711);
    await chmod(this.instancesDir, 0o711);
    const bad = await firstUntraversable(this.instancesDir);
    if (bad) throw new DriverError(`VM users cannot reach their run dirs: ${bad} is not traversable by others (fix: chmod 0711 ${bad}; its files stay private)`);
    // The VM host process runs Fleet's own code as the VM's user: the installation must be reachable too.
    const code = await firstUntraversable(path.dirname(LAUNCH));
    if (code) {
      throw new DriverError(
        `VM users cannot run Fleet's VM host process from ${path.dirname(LAUNCH)}: ${code} is not traversable by others. ` +
          `Install Fleet where other users can read it (e.g. /opt/fleet), or chmod o+x ${code} (lets others pass through, not list it); ` +
          '--vm-uid-base 0 runs VMs as root instead (not recommended)',
      );
    }
  }

  async create(r: CreateInstanceRequest): Promise<InstanceStatus> {
    await this.load();
    const existing = this.held.get(instanceKey(r));
    if (existing) return { ...existing.status };
    if (r.spec.os && r.spec.os !== 'linux') throw new DriverError(`the qemu driver runs Linux guests only, not ${JSON.stringify(r.spec.os)}`);
    const mode = this.checkNetwork(r.spec, r.vmId);
    const rec: InstanceRecord = {
      vmId: r.vmId,
      attempt: r.attempt,
      name: r.name,
      generation: r.generation,
      spec: r.spec,
      mac: r.spec.mac ?? macFromSeed(instanceKey(r)),
      tap: tapNameFor(r),
      mode,
    };
    const { source, boot } = await resolveSpecImage(r.spec, this.opts.imagesDir);
    // The instance's one address, held until remove(): a full subnet refuses here, clearly.
    try {
      rec.ip = (await this.reserve(rec))?.ip;
    } catch (e) {
      throw new DriverError(`create ${r.name}: ${(e as Error).message}`);
    }
    const dir = path.join(this.instancesDir, instanceDirName(r));
    rec.disk = path.join(dir, DISK_FILE);
    rec.boot = boot;
    try {
      if (this.opts.vmUsers) {
        await this.checkTraversable();
        rec.uid = this.allocateUid();
        await prepareRunDir(dir, rec.uid);
      } else {
        await mkdir(dir, { recursive: true, mode: 0o700 });
      }
      await createInstanceDisk(rec.disk, source, r.spec.diskGib);
      if (rec.uid !== undefined) await giveToVmUser(rec.disk, rec.uid);
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      await this.netOf(rec)?.release(instanceKey(r)).catch(() => {});
      if (rec.uid !== undefined) this.claimedUids.delete(rec.uid);
      throw e;
    }
    await writeInstanceRecord(dir, rec);
    const h: Held = { rec, dir, status: { vmId: r.vmId, attempt: r.attempt, name: r.name, state: 'stopped', generation: r.generation, mac: rec.mac, disconnectPolicy: disconnectPolicyOf(rec.spec.disconnectPolicy), ...imageDigestOf(rec) } };
    this.held.set(instanceKey(r), h);
    return { ...h.status };
  }

  async start(ref: InstanceRef): Promise<InstanceStatus> {
    const h = await this.get(ref);
    if (h.watch && (h.status.state === 'running' || h.status.state === 'starting')) return this.waitRunning(h);
    const { rec, dir } = h;
    const net = this.netOf(rec);
    // A TAP by default: measured faster than the veth uplink VM → host and equal host → VM
    // (BENCHMARKS.md, frame pump); the veth uplink only when the worker asks for it.
    const veth = net !== undefined && this.opts.vmLink === 'veth';
    if (veth && net.createUplink === undefined) throw new DriverError(`start ${rec.name}: this network offers no veth uplink (--vm-link veth)`);
    // The offload path by default (real guests: 2–4× the plain frames VM → host, BENCHMARKS.md);
    // the stream socket with the veth uplink or a network that has no per-VM namespaces.
    const framing = this.opts.vmFraming ?? (veth || net?.createVmNamespace === undefined ? 'stream' : 'vnet');
    const vnet = net !== undefined && framing === 'vnet';
    if (vnet && veth) throw new DriverError(`start ${rec.name}: --vm-framing vnet works with the TAP uplink only, not --vm-link veth`);
    if (vnet && net.createVmNamespace === undefined) throw new DriverError(`start ${rec.name}: this network offers no per-VM namespace (--vm-framing vnet)`);
    if (this.opts.vmUsers || rec.uid !== undefined) {
      if (net && !net.createTap && !veth) throw new DriverError(`start ${rec.name}: this network cannot create TAPs for VM users`);
      // A record from before VM users were on gets its uid now; the run dir and disk are
      // (re)handed to it, and its TAP is created owned by it (the host process cannot).
      if (rec.uid === undefined) {
        await this.checkTraversable();
        rec.uid = this.allocateUid();
      }
      await prepareRunDir(dir, rec.uid);
      if (rec.disk && existsSync(rec.disk)) await giveToVmUser(rec.disk, rec.uid);
      if (net && !veth) await net.createTap!(rec.tap, { uid: rec.uid, gid: rec.uid });
    }
    const hostDir = this.hostDir(h);
    // Re-applied on every start: the policy may have changed (update) and a record of an earlier
    // version may have no reservation yet.
    rec.ip = (await this.reserve(rec))?.ip;
    if (net) rec.nicFraming = framing;
    await writeInstanceRecord(dir, rec);
    const hostAddresses = net ? await net.hostAddresses().catch(() => []) : [];
    let img = await (this.opts.image ?? (() => ensureGuestImage()))();
    if (rec.uid !== undefined) img = { ...img, ...(await publishGuestFiles(path.join(this.opts.dataDir, 'guest'), img)) };
    const keys = [...(this.opts.authorizedKeys ?? []), ...(rec.spec.authorizedKeys ?? [])];
    const cfg: VmHostConfig = {
      vmId: rec.vmId,
      attempt: rec.attempt,
      name: rec.name,
      cpus: Math.max(1, rec.spec.cpus || 1),
      memoryMib: Math.max(128, rec.spec.memoryMib || 256),
      // An operator image boots its own kernel from its disk; the built-in guest boots directly.
      ...(rec.boot === 'disk'
        ? {}
        : {
            // A pulled image that boots its own kernel; else the built-in guest's.
            kernel: rec.spec.pulled?.kernel ?? img.kernel,
            initrd: rec.spec.pulled?.kernel ? (rec.spec.pulled.initrd ?? '') : img.initrd,
            cmdline: guestCmdline(rec.spec.pulled?.kernel ? (rec.spec.pulled.cmdline ?? '') : img.cmdlineBase, {
              // The worker's own keys plus the ones the assignment carries (the fleet's per-VM key).
              authorizedKeys: keys,
              hostname: rec.name.replace(/[^A-Za-z0-9-]/g, '-').replace(/^-+|-+$/g, '').slice(0, 63) || 'fleet-vm',
            }),
          }),
      ...(rec.disk ? { disk: rec.disk } : {}),
      mac: rec.mac,
      runDir: hostDir,
      // Unprivileged VMs: QEMU's seccomp sandbox on top of the uid, no capabilities, no_new_privs.
      ...(rec.uid !== undefined ? { sandbox: true } : {}),
      // Mode "none": no TAP, no filter: the VM gets no network device at all.
      ...(net
        ? {
            tap: rec.tap,
            ...(veth ? { uplinkFd: UPLINK_FD } : {}),
            ...(vnet ? { vnetNic: { pumpFd: VNET_PUMP_FD, qemuFd: VNET_QEMU_FD } } : {}),
            // Written out either way: a config without it means dgram (VmHostConfig.nicFraming).
            nicFraming: framing,
            filter: {
              gatewayIp: net.gatewayIp,
              gatewayMac: net.gatewayMac,
              subnet: net.subnet,
              dhcpServers: [net.dhcpServerIp],
              allow: this.allowRules(rec),
              block: rec.spec.network?.block ?? [],
              blockLocal: rec.spec.network?.blockLocal ?? false,
              globalPrefixes: rec.mode === 'host-only' ? [] : (this.opts.globalPrefixes ?? []),
              ...(rec.ip ? { address: rec.ip } : {}),
              hostAddresses,
              ...(rec.mode === 'host-only' ? { hostOnly: true } : {}),
            },
          }
        : {}),
      accel: this.opts.accel ?? 'tcg',
      stopTimeoutMs: this.opts.stopTimeoutMs ?? 10_000,
      // "wait" VMs keep running while the worker is cut off; every other one is fenced.
      ...fenceConfigFor(rec.spec.disconnectPolicy, this.opts.fence),
    };
    const configFile = path.join(dir, CONFIG_FILE);
    await writeFile(configFile, JSON.stringify(cfg, null, 2), { mode: 0o600 });
    if (rec.uid !== undefined) {
      // Readable by the VM's own host process (its gid) and no other VM; only root writes it.
      await chown(configFile, 0, rec.uid);
      await chmod(configFile, 0o640);
    }
    await rm(path.join(hostDir, CONTROL_SOCKET), { force: true });
    await rm(path.join(hostDir, STATUS_LOG), { force: true });
    // host.log stays in the root-owned run dir: the host writes it through the inherited fd only.
    const [cmd, args]: [string, string[]] =
      rec.uid !== undefined
        ? vmHostCommand({ uid: rec.uid, netns: this.opts.netns, node: process.execPath, launch: LAUNCH, configFile })
        : this.opts.netns
          ? ['ip', ['netns', 'exec', this.opts.netns, process.execPath, LAUNCH, configFile]]
          : [process.execPath, [LAUNCH, configFile]];
    // A VM user's processes get a minimal environment: nothing of the worker's (tokens, proxies)
    // reaches QEMU, whose environ its own uid can read.
    const env = rec.uid !== undefined ? { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: hostDir, TMPDIR: hostDir, LANG: 'C.UTF-8' } : process.env;
    let host: DetachedHost;
    if (net && veth) {
      // Root opens the AF_PACKET socket in the VM's own namespace (nothing else is in there, so the
      // unprivileged holder can bind it to nothing else) and hands it over; it is never reopened.
      const up = await net.createUplink!(rec.tap);
      const sock = openPacketSocket(up.ifname, { netns: up.netns, rcvbuf: UPLINK_RCVBUF, sndbuf: UPLINK_SNDBUF });
      try {
        host = spawnDetachedHost(cmd, args, { logFile: path.join(dir, 'host.log'), env, inheritFds: [sock.fd] });
      } finally {
        closeFd(sock.fd);
      }
    } else if (net && vnet) {
      // Root creates QEMU's TAP alone in the VM's own namespace and the packet socket bound to it,
      // and hands both over; the TAP goes when QEMU and the host process have closed it.
      const vmNs = await net.createVmNamespace!(rec.tap);
      const nic = openVnetTap(vmNs.ifname, { netns: vmNs.netns, up: true });
      try {
        const sock = openPacketSocket(vmNs.ifname, { netns: vmNs.netns, vnetHdr: true, rcvbuf: UPLINK_RCVBUF, sndbuf: UPLINK_SNDBUF });
        try {
          host = spawnDetachedHost(cmd, args, { logFile: path.join(dir, 'host.log'), env, inheritFds: [sock.fd, nic.fd] });
        } finally {
          closeFd(sock.fd);
        }
      } finally {
        closeFd(nic.fd);
      }
    } else {
      host = spawnDetachedHost(cmd, args, { logFile: path.join(dir, 'host.log'), env });
    }
    h.stopping = false;
    this.patch(h, { state: 'starting', ip: undefined, message: undefined });

    const sock = path.join(hostDir, CONTROL_SOCKET);
    const up = await this.waitForControlSocket(sock, host, hostDir, path.join(dir, 'host.log'));
    if (!up.ok) {
      // Fenced before QEMU ran (the lease file had run out): stopped, not failed.
      const fenced = up.last?.state === 'stopped' ? fencedMessage(up.last.message) : undefined;
      this.patch(h, { state: fenced ? 'stopped' : 'failed', message: up.why });
      throw new DriverError(`start ${rec.name}: ${up.why}`);
    }
    const exited = (): boolean => host.hasExited();
    // The TAP exists once the control socket is up (the veth uplink already did): attach it to the bridge.
    try {
      if (net) await net.addTap(rec.tap);
    } catch (e) {
      await controlRequest(sock, 'kill', 3000, targetOf(rec)).catch(() => {});
      // The host may have fenced itself and exited meanwhile (its TAP went with it): that is the
      // outcome to report, not the attach that raced it.
      let last = lastStatusLine(hostDir);
      for (let i = 0; i < 40 && !exited() && last?.state !== 'stopped'; i++) {
        await sleep(25);
        last = lastStatusLine(hostDir);
      }
      const fenced = last?.state === 'stopped' ? fencedMessage(last.message) : undefined;
      if (fenced) {
        this.patch(h, { state: 'stopped', message: last!.message });
        throw new DriverError(`start ${rec.name}: ${last!.message}`);
      }
      this.patch(h, { state: 'failed', message: `cannot attach ${rec.tap} to the ${rec.mode === 'host-only' ? 'host-only' : 'NAT'} network: ${(e as Error).message}` });
      throw new DriverError(`start ${rec.name}: ${h.status.message}`);
    }
    this.attach(h);
    return this.waitRunning(h);
  }

  async stop(ref: InstanceRef): Promise<InstanceStatus> {
    const h = await this.get(ref);
    return this.halt(h, 'stop');
  }

  /** Forced stop: the host process SIGKILLs QEMU now (no powerdown) and records `reason`. */
  async kill(ref: InstanceRef, reason?: string): Promise<InstanceStatus> {
    const h = await this.get(ref);
    return this.halt(h, 'kill', reason);
  }

  async update(a: UpdateInstanceRequest): Promise<InstanceStatus> {
    const h = await this.get(a);
    if (h.status.state === 'running' || h.status.state === 'starting') {
      throw new DriverError(`update ${h.rec.name}: the instance must be stopped first (it is ${h.status.state})`);
    }
    if (a.spec.image !== h.rec.spec.image || a.spec.pulled?.digest !== h.rec.spec.pulled?.digest) {
      // A new image means a new disk: the old one (and what the VM wrote to it) is replaced.
      const { source, boot } = await resolveSpecImage(a.spec, this.opts.imagesDir);
      // Made beside the old one and renamed over it: a failed create keeps the old disk.
      const disk = path.join(h.dir, DISK_FILE);
      const next = `${disk}.new`;
      await rm(next, { force: true });
      await createInstanceDisk(next, source, a.spec.diskGib);
      await rename(next, disk);
      h.rec = { ...h.rec, disk, boot };
    }
    const mode = this.checkNetwork(a.spec, h.rec.vmId);
    const mac = a.spec.mac ?? macFromSeed(instanceKey(h.rec));
    if (mode !== (h.rec.mode ?? 'nat') || mac !== h.rec.mac) {
      // Another network or MAC: the old address goes now, the new one is reserved at the next start.
      await this.netOf(h.rec)?.release(instanceKey(h.rec));
      h.rec = { ...h.rec, mode, mac };
      delete h.rec.ip;
    }
    h.rec = { ...h.rec, generation: a.generation, spec: a.spec };
    await writeInstanceRecord(h.dir, h.rec);
    return this.patch(h, { generation: a.generation, mac: h.rec.mac, disconnectPolicy: disconnectPolicyOf(a.spec.disconnectPolicy), ...imageDigestOf(h.rec) });
  }

  /**
   * ImagePush: the stopped instance's disk flattened into one standalone compressed qcow2 in
   * `workDir` (its overlay and the image it was made from, merged), plus the kernel it boots.
   */
  async exportImage(ref: InstanceRef, workDir: string): Promise<ExportedImage> {
    const h = await this.get(ref);
    if (h.status.state !== 'stopped' && h.status.state !== 'failed') {
      throw new DriverError(`push ${h.rec.name}: the VM must be stopped first (it is ${h.status.state})`);
    }
    if (!h.rec.disk || !existsSync(h.rec.disk)) throw new DriverError(`push ${h.rec.name}: the instance has no disk`);
    const disk = path.join(workDir, 'disk.qcow2');
    try {
      await execFileAsync('qemu-img', ['convert', '-c', '-O', 'qcow2', '-U', h.rec.disk, disk], { timeout: 60 * 60_000 });
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      throw new DriverError(`push ${h.rec.name}: flattening its disk failed: ${(err.stderr ?? err.message).trim()}`);
    }
    const minDiskGib = Math.max(1, h.rec.spec.diskGib || 1);
    if (h.rec.boot !== 'kernel') return { format: 'fleet-qemu', disk, diskFormat: 'qcow2', architecture: 'amd64', minDiskGib };
    const pulled = h.rec.spec.pulled;
    if (pulled?.kernel) {
      return { format: 'fleet-qemu', disk, diskFormat: 'qcow2', kernel: pulled.kernel, ...(pulled.initrd ? { initrd: pulled.initrd } : {}), cmdline: pulled.cmdline ?? '', architecture: 'amd64', minDiskGib };
    }
    const img = await (this.opts.image ?? (() => ensureGuestImage()))();
    return { format: 'fleet-qemu', disk, diskFormat: 'qcow2', kernel: img.kernel, initrd: img.initrd, cmdline: img.cmdlineBase, architecture: 'amd64', minDiskGib };
  }

  async remove(ref: InstanceRef): Promise<void> {
    await this.load();
    const h = this.held.get(instanceKey(ref));
    if (!h) return;
    await this.halt(h, 'kill');
    killOrphanQemu(h.dir, this.hostDir(h));
    await this.deleteUplinkOf(h);
    this.held.delete(instanceKey(ref));
    await rm(h.dir, { recursive: true, force: true });
    // Its uid is free again only once nothing of it is left (its files went with the run dir).
    if (h.rec.uid !== undefined) this.claimedUids.delete(h.rec.uid);
    // Only once nothing of the instance can send any more: its address, lease and DNS name go.
    await this.netOf(h.rec)?.release(instanceKey(ref));
  }

  /**
   * The VM's screen: QEMU's VNC server on <host dir>/vnc.sock. With VM users that directory is the
   * VM user's: root connects only to a socket (not a link to another VM's) owned by that user.
   */
  async consoleEndpoint(ref: InstanceRef): Promise<ConsoleEndpoint | undefined> {
    const h = this.held.get(instanceKey(ref));
    if (!h) return undefined;
    const sock = path.join(this.hostDir(h), VNC_SOCKET);
    try {
      const st = lstatSync(sock);
      if (!st.isSocket() || (h.rec.uid !== undefined && st.uid !== h.rec.uid)) return undefined;
    } catch {
      return undefined;
    }
    return { kind: 'unix', path: sock };
  }

  async networkCounters(ref: InstanceRef): Promise<InstanceNetworkCounters | undefined> {
    const h = this.held.get(instanceKey(ref));
    if (!h || h.status.state !== 'running') return undefined;
    const sock = this.trustedSocket(h);
    const r = sock ? await controlRequest(sock, 'status', 2000, targetOf(h.rec)).catch(() => undefined) : undefined;
    const counters = r?.status?.counters as
      | { filter?: { fromVm?: unknown; fromHost?: unknown }; pump?: { vm?: { txDrops?: unknown }; tap?: { txDrops?: unknown }; vmToHost?: { badChecksumHeader?: unknown } } }
      | undefined;
    const filter = counters?.filter;
    const numbers = (o: unknown): Record<string, number> =>
      Object.fromEntries(Object.entries(o && typeof o === 'object' ? o : {}).filter((e): e is [string, number] => typeof e[1] === 'number' && e[1] > 0));
    if (!filter) return undefined;
    const fromVm = numbers(filter.fromVm);
    const fromHost = numbers(filter.fromHost);
    // Frames the filter passed that a queue then refused, so that no drop goes uncounted in the
    // API: the pump's sends (either side), and on the offload path what QEMU's TAP dropped in the
    // kernel (a packet-socket send only queues there).
    const n = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0);
    const toUplink = n(counters?.pump?.tap?.txDrops);
    const toVm = n(counters?.pump?.vm?.txDrops) + (h.rec.nicFraming === 'vnet' ? n(this.networkFor(h.rec)?.vmEndTxDropped?.(h.rec.tap)) : 0);
    if (toUplink > 0) fromVm.uplink_queue_full = toUplink;
    // Dropped by the pump before the filter judged them (offload path): named, not lost in a total.
    const badHeader = n(counters?.pump?.vmToHost?.badChecksumHeader);
    if (badHeader > 0) fromVm.bad_checksum_header = badHeader;
    if (toVm > 0) fromHost.vm_queue_full = toVm;
    return { fromVm, fromHost };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.detachAll();
    this.opts.onClose?.();
  }

  // ---- internals ----------------------------------------------------------------------

  /** Scans the run dirs once (concurrent callers share the one scan): re-attaches to live host processes, reports dead ones. */
  protected load(): Promise<void> {
    this.loading ??= this.scan();
    return this.loading;
  }

  private async scan(): Promise<void> {
    let names: string[] = [];
    try {
      names = await readdir(this.instancesDir);
    } catch {
      names = [];
    }
    for (const n of names) {
      const dir = path.join(this.instancesDir, n);
      let rec: InstanceRecord;
      try {
        rec = JSON.parse(await readFile(path.join(dir, 'instance.json'), 'utf8')) as InstanceRecord;
      } catch {
        continue;
      }
      const base: InstanceStatus = { vmId: rec.vmId, attempt: rec.attempt, name: rec.name, state: 'stopped', generation: rec.generation, mac: rec.mac, disconnectPolicy: disconnectPolicyOf(rec.spec.disconnectPolicy), ...imageDigestOf(rec) };
      if (rec.uid !== undefined) {
        // A persisted uid is the instance's identity and run-dir layout: never root, never shared.
        const valid = inVmUserRange({ base: 1000, count: 0xffff_fffe - 1000 }, rec.uid) && rec.uid !== 65534;
        const shared = [...this.held.values()].some((o) => o.rec.uid === rec.uid);
        if (!valid || shared) {
          this.opts.log?.warn({ vmId: rec.vmId, attempt: rec.attempt, uid: rec.uid }, 'instance.json has an invalid or duplicate VM uid: skipped');
          continue;
        }
        if (!this.opts.vmUsers || !inVmUserRange(this.opts.vmUsers, rec.uid)) {
          this.opts.log?.warn({ vmId: rec.vmId, attempt: rec.attempt, uid: rec.uid }, 'instance keeps its VM uid from outside the configured --vm-uid-base/--vm-uid-count range');
        }
      }
      const h: Held = { rec, dir, status: base };
      this.held.set(instanceKey(rec), h);
      const live = this.trustedSocket(h) ? { status: await this.probe(h) } : undefined;
      // Every instance keeps (or, from an earlier version, gets) its reservation; a running VM keeps the address it holds.
      try {
        const preferred = rec.ip ?? (typeof live?.status?.ip === 'string' ? live.status.ip : undefined);
        const ipNow = (await this.reserve(rec, preferred))?.ip;
        if (ipNow !== rec.ip) {
          rec.ip = ipNow;
          await writeInstanceRecord(dir, rec);
        }
      } catch (e) {
        this.opts.log?.warn({ vmId: rec.vmId, attempt: rec.attempt, err: (e as Error).message }, 'no address reservation for an existing instance');
      }
      if (live?.status) {
        this.fromHost(h, live.status, false);
        // A re-created NAT network has lost its ports: attach again (idempotent).
        await this.netOf(rec)?.addTap(rec.tap).catch((e: Error) => this.opts.log?.warn({ tap: rec.tap, err: e.message }, 're-attaching TAP failed'));
        this.attach(h);
      } else {
        this.fromDeadHost(h, false);
        // Nobody holds its uplink any more: a veth pair and namespace left behind are deleted.
        await this.deleteUplinkOf(h);
      }
    }
    // Uplinks of instances removed while no worker ran (no run dir, so not reconciled above): a
    // veth whose VM namespace holds no packet socket belongs to no running VM.
    const ours = new Set([...this.held.values()].map((h) => h.rec.tap));
    for (const net of [this.opts.nat, this.opts.hostOnly]) {
      for (const port of (await net?.unusedUplinks?.().catch(() => [] as string[])) ?? []) {
        if (ours.has(port)) continue;
        this.opts.log?.info({ port }, 'deleting a veth uplink left behind by a removed instance');
        await net!.deleteUplink?.(port).catch((e: Error) => this.opts.log?.warn({ port, err: e.message }, 'deleting a stale veth uplink failed'));
      }
    }
    // Addresses of instances removed while no worker ran (or whose run dir is gone) are free again.
    const freed: string[] = [];
    for (const [mode, net] of [['nat', this.opts.nat], ['host-only', this.opts.hostOnly]] as const) {
      if (!net) continue;
      const keep = new Set([...this.held.entries()].filter(([, h]) => (h.rec.mode ?? 'nat') === mode).map(([k]) => k));
      freed.push(
        ...(await net.releaseAllBut(keep).catch((e: Error) => {
          this.opts.log?.warn({ err: e.message, network: mode }, 'releasing stale address reservations failed');
          return [];
        })),
      );
    }
    if (freed.length) this.opts.log?.info({ instances: freed }, 'released the addresses of instances that no longer exist');
  }

  /** The network an instance's NIC is on (undefined: mode "none", no NIC). */
  private netOf(rec: InstanceRecord): QemuNat | undefined {
    const net = this.networkFor(rec);
    if (net === undefined && rec.mode === 'host-only') throw new DriverError(`${rec.name} is in network mode host-only, but this worker has no host-only network (start it with --host-only-subnet)`);
    return net;
  }

  /** The instance's network, or undefined (mode none, or host-only on a worker without one): for clean-ups, never throws. */
  private networkFor(rec: InstanceRecord): QemuNat | undefined {
    const mode = rec.mode ?? 'nat';
    return mode === 'none' ? undefined : mode === 'host-only' ? this.opts.hostOnly : this.opts.nat;
  }

  /**
   * The spec's network mode, if this worker can give it, and its MAC, if free here: no two
   * instances of different VMs on one worker share a MAC (issue 18; the scheduler avoids it too).
   */
  private checkNetwork(spec: InstanceSpec, vmId: string): NetworkMode {
    const mode = networkModeOf(spec);
    if (!NETWORK_MODES.includes(mode)) throw new DriverError(`unknown network mode ${JSON.stringify(mode)} (this worker knows ${NETWORK_MODES.join(', ')})`);
    if (mode === 'host-only' && !this.opts.hostOnly) throw new DriverError('network mode host-only: this worker has no host-only network (start it with --host-only-subnet)');
    if (spec.mac !== undefined) {
      if (!isUnicastMac(spec.mac)) throw new DriverError(`MAC ${JSON.stringify(spec.mac)} is not a unicast MAC address (six lower-case hex octets, the first even)`);
      const other = [...this.held.values()].find((h) => h.rec.vmId !== vmId && h.rec.mac === spec.mac);
      if (other) throw new DriverError(`MAC ${spec.mac} is already used by ${other.rec.name} on this worker: two VMs with one MAC cannot run together`);
    }
    return mode;
  }

  /** The policy's allow rules; a host-only VM reaches the worker unless block-local says no. */
  private allowRules(rec: InstanceRecord): string[] {
    const n = rec.spec.network;
    const allow = [...(n?.allow ?? [])];
    if (rec.mode === 'host-only' && !n?.blockLocal && !allow.includes('@host')) allow.push('@host');
    return allow;
  }

  /** The instance's reservation, with host access as its policy grants it (the filter's own decision for the gateway). */
  private async reserve(rec: InstanceRecord, preferredIp?: string): Promise<QemuNatReservation | undefined> {
    const net = this.netOf(rec);
    if (!net) return undefined;
    const n = rec.spec.network;
    const policy: FilterConfig = {
      vmMac: rec.mac,
      gatewayIp: net.gatewayIp,
      subnet: net.subnet,
      allow: this.allowRules(rec),
      block: n?.block ?? [],
      blockLocal: n?.blockLocal ?? false,
    };
    let hostAccess = false;
    try {
      hostAccess = grantsHostAccess(resolveConfig(policy));
    } catch {
      /* an invalid policy is refused when the VM host process starts; it grants nothing */
    }
    return net.reserve({ key: instanceKey(rec), vmId: rec.vmId, mac: rec.mac, name: rec.name, hostAccess, preferredIp: preferredIp ?? rec.ip });
  }

  protected fromHost(h: Held, s: VmHostStatus, emit: boolean): void {
    // A socket that answers for another instance (a VM user swapped its socket for a link to a
    // neighbour's) never changes this one's status.
    if (s.vmId !== h.rec.vmId || s.attempt !== h.rec.attempt) {
      this.opts.log?.warn({ vmId: h.rec.vmId, attempt: h.rec.attempt, answered: { vmId: s.vmId, attempt: s.attempt } }, 'control socket answered for another instance: ignored');
      return;
    }
    const state: InstanceState = s.state;
    const message = state === 'failed' ? s.message : state === 'stopped' ? fencedMessage(s.message) : undefined;
    this.patch(h, { state, ip: state === 'running' ? s.ip : undefined, mac: s.mac, message }, emit);
  }

  /** The host process is gone: its last status line says how it ended. */
  protected fromDeadHost(h: Held, emit: boolean): void {
    const last = lastStatusLine(this.hostDir(h));
    let state: InstanceState = 'stopped';
    let message: string | undefined;
    if (!last) state = 'stopped';
    else if (last.state === 'failed') [state, message] = ['failed', last.message];
    else if (last.state === 'stopped') message = fencedMessage(last.message); // fenced by its host: stopped, not failed
    else if (last.state !== 'stopped' && !h.stopping) [state, message] = ['failed', `the VM host process died while the VM was ${last.state}`];
    if (last && last.state !== 'stopped' && last.state !== 'failed' && killOrphanQemu(h.dir, this.hostDir(h))) {
      this.opts.log?.warn({ vmId: h.rec.vmId, attempt: h.rec.attempt }, 'killed the QEMU left behind by a dead VM host process');
    }
    this.patch(h, { state, ip: undefined, message }, emit);
  }

  /** After a stop or kill: the port leaves the bridge; a veth uplink or a VM user's (persistent) TAP is deleted. */
  protected override async afterHalt(h: Held): Promise<void> {
    const net = this.networkFor(h.rec);
    await net?.removeTap(h.rec.tap).catch(() => {});
    await this.deleteUplinkOf(h);
  }

  private async deleteUplinkOf(h: Held): Promise<void> {
    const net = this.networkFor(h.rec);
    if (net?.deleteUplink) await net.deleteUplink(h.rec.tap).catch((e: Error) => this.opts.log?.warn({ port: h.rec.tap, err: e.message }, 'deleting the veth uplink failed'));
    else if (h.rec.uid !== undefined) await net?.deleteTap?.(h.rec.tap).catch(() => {});
  }
}

/** A unicast MAC in Fleet's form: six lower-case hex octets, the first even (not a group address), not all zero. */
export function isUnicastMac(mac: string): boolean {
  return /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac) && (parseInt(mac.slice(0, 2), 16) & 1) === 0 && mac !== '00:00:00:00:00:00';
}

/** A network as the worker reports it (Hello.networks). */
function networkInfo(mode: 'nat' | 'host-only', net: QemuNat): WorkerNetworkInfo {
  return { mode, subnet: net.subnet, gateway: net.gatewayIp, addresses: net.addresses.size, interface: net.name ?? '' };
}
