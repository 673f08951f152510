// The VM runtime contract. The reconcile loop talks to every runtime through this
// interface only, so it never depends on which driver runs (synthetic now; QEMU and
// Apple Virtualization.framework later).
//
// Model
// - An *instance* is one (vmId, attempt): the controller bumps `attempt` on every
//   reschedule / restart, and a new attempt is always a fresh instance (new disk clone,
//   new MAC). At most one instance per vmId is wanted at a time, but a driver may hold
//   leftovers of older attempts after a crash; `list()` reports them all.
// - Real drivers run each VM in its own "VM host process" that survives worker restarts.
//   `list()` is how a (re)started worker re-attaches to instances that already exist;
//   `close()` detaches without stopping anything.
// - The reconciler never runs two operations on the same vmId at once, but operations on
//   different vmIds run in parallel: drivers must be safe for that.
// - Operations resolve when the transition is complete (`start` → running, `stop` →
//   stopped, `remove` → nothing left) and reject with a `DriverError` whose message is
//   shown to operators. Every operation is idempotent: starting a running instance,
//   stopping a stopped one and removing a missing one all succeed.
// - Asynchronous changes — an IP learned from DHCP, a crash, the guest powering itself
//   off — arrive through the `subscribe()` listener as a full `InstanceStatus`.
// - Fencing (issue 12): `kill()` stops an instance at once, without a graceful shutdown, when the
//   worker's lease from the controller ran out (the controller may start the VM elsewhere a few
//   seconds later). Runtimes with VM host processes also fence on their own from the lease file
//   (fencing/lease-file.ts) for instances whose `disconnectPolicy` is "reschedule": a dead worker
//   cannot kill anything. Such an instance ends "stopped" with a message starting "fenced:".

/** What the reconciler asks a driver to run. Mirrors fleet.v1.VmSpec, driver-neutral. */
export interface InstanceSpec {
  image: string;
  /** Guest OS: "linux" | "macos" (empty = driver default). */
  os: string;
  cpus: number;
  memoryMib: number;
  diskGib: number;
  labels: Record<string, string>;
  username: string;
  /** OpenSSH public keys the guest must authorize (the fleet's per-VM session key). */
  authorizedKeys?: string[];
  /** Egress policy enforced by the packet filter (absent = the default: global destinations only). */
  network?: InstanceNetworkPolicy;
  /**
   * What happens while the worker is cut off from the controller (VmAssignment.disconnect_policy):
   * "reschedule" (absent = reschedule) is fenced when the lease runs out; "wait" keeps running.
   */
  disconnectPolicy?: DisconnectPolicy;
  /**
   * Issue 15: the registry image `image` names, already in the worker's image cache (absent for
   * local images). Its files are read-only and shared by every instance of that image.
   */
  pulled?: PulledImage;
  /** Issue 18: the NIC's MAC chosen by the operator (lower case); absent = the driver derives one. */
  mac?: string;
}

/** An unpacked image in the worker's image cache (images/image-cache.ts). */
export interface PulledImage {
  /** Manifest digest (sha256:…): what instances are pinned to. */
  digest: string;
  /** The pinned reference it was pulled as (registry/repository@sha256:…). */
  reference: string;
  format: 'tart' | 'fleet-qemu';
  dir: string;
  /** fleet-qemu: the base disk (backing file of every instance's overlay), and kernel boot files. */
  disk?: { path: string; format: 'qcow2' | 'raw'; virtualSize: number };
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** tart: the bundle (config.json, disk.img, nvram.bin) instances are cloned from. */
  bundleDir?: string;
}

/** What a stopped instance's disk becomes when it is pushed as an image (ImagePush). */
export type ExportedImage =
  | { format: 'fleet-qemu'; disk?: string; diskFormat?: 'qcow2' | 'raw'; kernel?: string; initrd?: string; cmdline?: string; architecture: string; minDiskGib?: number }
  | { format: 'tart'; bundleDir: string };

export type DisconnectPolicy = 'reschedule' | 'wait';

/** The assignment's disconnect_policy: "wait", or reschedule (empty, "reschedule", anything unknown: the safe default). */
export function disconnectPolicyOf(value: string | undefined | null): DisconnectPolicy {
  return value === 'wait' ? 'wait' : 'reschedule';
}

/** Messages of instances stopped by fencing start with this. */
export const FENCED_PREFIX = 'fenced:';

/** A stopped instance's message only when it says it was fenced (other stops carry none). */
export function fencedMessage(message: string | undefined): string | undefined {
  return message?.startsWith(FENCED_PREFIX) ? message : undefined;
}

/** How long a VM host process waits for a readable lease file before it fences anyway. */
export const DEFAULT_FENCE_GRACE_MS = 2000;

/** The VM host's fence setting for an instance: only "reschedule" VMs are fenced, and only by a worker that fences. */
export function fenceConfigFor(policy: string | undefined, fence: { leaseFile: string; graceMs?: number } | undefined): { fence?: { leaseFile: string; graceMs: number } } {
  if (!fence || disconnectPolicyOf(policy) === 'wait') return {};
  return { fence: { leaseFile: fence.leaseFile, graceMs: fence.graceMs ?? DEFAULT_FENCE_GRACE_MS } };
}

/** Issue 18: NAT (masqueraded out), host-only (the worker and nothing beyond), or no NIC. */
export type NetworkMode = 'nat' | 'host-only' | 'none';

export const NETWORK_MODES: readonly NetworkMode[] = ['nat', 'host-only', 'none'];

export interface InstanceNetworkPolicy {
  allow: string[];
  block: string[];
  blockLocal: boolean;
  /** Absent = "nat". */
  mode?: NetworkMode;
}

/** The mode of a spec's network ("nat" when unset or unknown to this worker: never silently more open). */
export function networkModeOf(spec: { network?: InstanceNetworkPolicy | undefined }): NetworkMode {
  return spec.network?.mode ?? 'nat';
}

/**
 * Where a VM's screen is served (issue 19): a Unix socket of its VM host process (QEMU's VNC
 * server), or a TCP port of the guest itself reached at its IP (a guest's own VNC server).
 */
export type ConsoleEndpoint = { kind: 'unix'; path: string } | { kind: 'guest-port'; port: number };

/** One VM network a worker offers (reported in Hello.networks). */
export interface WorkerNetworkInfo {
  mode: 'nat' | 'host-only';
  subnet: string;
  gateway: string;
  /** VM addresses it can hand out (0 = not limited / not reported). */
  addresses: number;
  /** The worker's interface for it (a bridge, or "vmnet shared" / "vmnet host"). */
  interface: string;
}

/** Identity of one instance. */
export interface InstanceRef {
  vmId: string;
  attempt: number;
}

export interface CreateInstanceRequest extends InstanceRef {
  /** Human name of the VM (for logs, host-process titles, disk bundle names). */
  name: string;
  /** Spec generation (uint64 as a decimal string). */
  generation: string;
  spec: InstanceSpec;
}

export interface UpdateInstanceRequest extends InstanceRef {
  generation: string;
  spec: InstanceSpec;
}

/** Lifecycle state as the driver sees it. */
export type InstanceState = 'stopped' | 'starting' | 'running' | 'stopping' | 'failed';

export interface InstanceStatus extends InstanceRef {
  name: string;
  state: InstanceState;
  /** The spec generation this instance currently carries. */
  generation: string;
  /** Guest IPv4 address once known (DHCP lease), else undefined. */
  ip?: string | undefined;
  /** Guest NIC MAC address (known from creation on). */
  mac?: string | undefined;
  /** Human-readable detail, e.g. the failure cause, or why it was fenced ("fenced: …"). */
  message?: string | undefined;
  /** The disconnect policy of the spec it carries (lets a restarted worker fence adopted instances). */
  disconnectPolicy?: DisconnectPolicy | undefined;
  /** The cached image (manifest digest) the instance's files depend on, if it came from a registry. */
  imageDigest?: string | undefined;
}

export interface InstanceNetworkCounters {
  fromVm: Record<string, number>;
  fromHost: Record<string, number>;
}

export type InstanceStatusListener = (status: InstanceStatus) => void;

export interface DriverCapabilities {
  /** Guest operating systems this runtime can run ("linux", "macos"). */
  guestOs: readonly string[];
  /** macOS guests allowed at once on this host (Apple's licence: 2); 0 = none. */
  maxMacosGuests: number;
  /**
   * VM addresses the runtime's network can hand out (one per instance it holds, reserved from
   * create() to remove()); undefined where the runtime does not manage addresses (vmnet). The
   * synthetic driver reports its fake pool.
   */
  natAddresses?: number;
  /** Issue 18: the VM networks this runtime offers (Hello.networks); absent = NAT only, not described. */
  networks?: readonly WorkerNetworkInfo[];
}

export interface Driver {
  /** Runtime name as reported in Hello.drivers: "synthetic", "qemu", "vz". */
  readonly name: string;
  readonly capabilities: DriverCapabilities;

  /** The VM's screen (issue 19); absent or undefined = this runtime has none to offer. */
  consoleEndpoint?(ref: InstanceRef): Promise<ConsoleEndpoint | undefined>;

  /** Every instance this driver holds right now (re-attach at startup). */
  list(): Promise<InstanceStatus[]>;
  /** Prepares an instance (clone disk, allocate MAC) without starting it: state "stopped". */
  create(request: CreateInstanceRequest): Promise<InstanceStatus>;
  /** Boots the instance; resolves once it is running. */
  start(ref: InstanceRef): Promise<InstanceStatus>;
  /** Stops the instance (graceful, then forced); resolves once it is stopped. */
  stop(ref: InstanceRef): Promise<InstanceStatus>;
  /**
   * Stops the instance at once (forced, no graceful shutdown: fencing); resolves once it is
   * stopped. `reason` ("fenced: …") is recorded where the runtime keeps a final status.
   */
  kill(ref: InstanceRef, reason?: string): Promise<InstanceStatus>;
  /** Applies a new spec to a stopped instance (the reconciler stops and restarts around it). */
  update(request: UpdateInstanceRequest): Promise<InstanceStatus>;
  /** Deletes everything the instance holds (process, disk, leases). Missing = success. */
  remove(ref: InstanceRef): Promise<void>;
  /** Asynchronous status changes; returns an unsubscribe function. */
  subscribe(listener: InstanceStatusListener): () => void;
  /**
   * Packet-filter counters of a running instance, by verdict, since its VM host process started.
   * Optional: runtimes without a filter (synthetic) leave it out; undefined = not running/unknown.
   */
  networkCounters?(ref: InstanceRef): Promise<InstanceNetworkCounters | undefined>;
  /**
   * Optional: the runtime can take fewer macOS guests than it advertised (the framework refused
   * one: VMs outside Fleet hold the host's slots). The listener gets how many it can hold now
   * (running ones included) and why; the worker re-advertises its capacity with that.
   */
  onMacosSlotLimit?(listener: (slots: number, reason: string) => void): () => void;
  /** Image formats this runtime runs from the image cache (issue 15); absent = registry images unsupported. */
  readonly imageFormats?: readonly ('tart' | 'fleet-qemu')[];
  /**
   * Optional (issue 15, ImagePush): files a *stopped* instance's disk becomes as an image, prepared
   * in `workDir` (e.g. the qcow2 overlay flattened into one standalone file). Refuses a running one.
   */
  exportImage?(ref: InstanceRef, workDir: string): Promise<ExportedImage>;
  /** Detaches from the runtime. Does NOT stop instances (they outlive the worker where the runtime allows). */
  close(): Promise<void>;
}

/** A driver operation failed; `message` is meant for operators. */
export class DriverError extends Error {
  override readonly name = 'DriverError';
}

export function instanceKey(ref: InstanceRef): string {
  return `${ref.vmId}#${ref.attempt}`;
}
