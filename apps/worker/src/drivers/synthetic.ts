// The SYNTHETIC driver: in-memory VMs with realistic delays, for development, tests and
// load tests. Nothing is booted and no traffic is ever sent: IP and MAC addresses are
// strings drawn from a fake per-worker pool (198.18.0.0/15, the RFC 2544 benchmarking
// range, so they can never be mistaken for a real guest). Like a real NAT network, each
// instance holds one address from create() to remove(); the pool (its 512 /24s, .2–.254 of
// each: 129,536 addresses, or `natAddresses`) is reported as `capabilities.natAddresses`,
// and create() fails once it is exhausted. Nothing may dial these addresses either: the
// worker refuses exec/ssh/port-forward sessions to synthetic VMs ("not-supported",
// sessions/session-runner.ts) instead of connecting to them.
//
// Delays (base values, multiplied by `speed`; speed 0 = instant, no timers at all):
//   create 200 ms · boot 1–3 s (deterministic per vmId/attempt) · stop 500 ms · update 100 ms
//
// Failure injection (deterministic) through the image name, `synthetic:<directive>[,<directive>…]`:
//   synthetic:fail-create        create() rejects
//   synthetic:fail-start         start() rejects after the boot delay
//   synthetic:crash-after=<ms>   the instance crashes <ms> after reaching running (not scaled)
//   synthetic:macos-limit        a macOS guest is refused as if VMs outside Fleet held the host's
//                                slots (VZErrorVirtualMachineLimitExceeded): the driver then offers
//                                only the macOS guests it runs, until one of them stops
//   synthetic:boot-ms=<ms>       boot takes exactly <ms> (not scaled)
// Anything else (other images, other words such as synthetic:ok or synthetic:macos) boots
// normally; the guest OS comes from spec.os, not from the image name. macOS guests (spec.os "macos") are limited to
// `maxMacosGuests` running at once, like Virtualization.framework's licence limit.
//
// With `stateFile`, instances are persisted (debounced JSON) so that a new driver on the
// same file re-attaches to them, the way real drivers re-attach to VM host processes.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import {
  DriverError,
  type CreateInstanceRequest,
  type Driver,
  type DriverCapabilities,
  type InstanceRef,
  type InstanceSpec,
  type InstanceState,
  type InstanceStatus,
  type InstanceStatusListener,
  type UpdateInstanceRequest,
  disconnectPolicyOf,
  networkModeOf,
  NETWORK_MODES,
} from './driver.ts';

export const SYNTHETIC_DRIVER_NAME = 'synthetic';

export interface SyntheticDriverOptions {
  /** Multiplier on every built-in delay: 1 = realistic, 0.1 = ten times faster, 0 = instant. */
  speed?: number;
  /** Seed for the fake address pool and MACs (e.g. the worker name), so workers differ. */
  poolSeed?: string;
  /** Persist instances here so a restarted worker re-attaches to them. */
  stateFile?: string;
  /** macOS guests allowed to run at once (default 2). */
  maxMacosGuests?: number;
  /** Size of the fake address pool (default and maximum: all of it, `SYNTHETIC_POOL_ADDRESSES`). */
  natAddresses?: number;
  logger?: Logger;
}

export const SYNTHETIC_DELAYS_MS = {
  create: 200,
  bootMin: 1000,
  bootMax: 3000,
  stop: 500,
  update: 100,
} as const;

interface Directives {
  failCreate: boolean;
  failStart: boolean;
  crashAfterMs?: number;
  bootMs?: number;
  macosLimit?: boolean;
  /** Words that are not directives (ignored). */
  other: string[];
}

interface SyntheticInstance {
  vmId: string;
  attempt: number;
  name: string;
  generation: string;
  spec: InstanceSpec;
  state: InstanceState;
  message?: string | undefined;
  /** Index into the fake address pool of its network (kept while its mode stays); -1 for mode none. */
  poolIndex: number;
  /** Issue 18: which fake network the index is in (absent in older state files = nat). */
  network?: 'nat' | 'host-only' | 'none';
  mac: string;
  crashTimer?: NodeJS.Timeout | undefined;
  /** Cancels an in-flight delay (boot/stop) when the instance is stopped or removed meanwhile. */
  cancelDelay?: ((reason: string) => void) | undefined;
}

/** What the state file keeps of an instance: everything but its timers. */
type PersistedInstance = Omit<SyntheticInstance, 'crashTimer' | 'cancelDelay'>;

const INSTANCE_STATES: ReadonlySet<string> = new Set(['stopped', 'starting', 'running', 'stopping', 'failed']);

/** The state file is ours, but a hand edit or a torn write must not stop the worker. */
function isPersistedInstance(p: unknown): p is PersistedInstance {
  if (typeof p !== 'object' || p === null) return false;
  const r = p as Record<string, unknown>;
  const spec = r.spec as Record<string, unknown> | null | undefined;
  return (
    typeof r.vmId === 'string' && typeof r.attempt === 'number' && typeof r.name === 'string' &&
    typeof r.generation === 'string' && typeof r.state === 'string' && INSTANCE_STATES.has(r.state) &&
    typeof r.poolIndex === 'number' && typeof r.mac === 'string' &&
    typeof spec === 'object' && spec !== null && typeof spec.image === 'string'
  );
}

const POOL_HOSTS_PER_SUBNET = 253; // .2 … .254
const POOL_SUBNETS = 512; // the /24s of 198.18.0.0/15
/** Addresses in the synthetic driver's whole fake pool. */
export const SYNTHETIC_POOL_ADDRESSES = POOL_SUBNETS * POOL_HOSTS_PER_SUBNET;
/** The fake host-only network (TEST-NET-2: never routed; nothing here touches a network anyway). */
export const SYNTHETIC_HOST_ONLY = { subnet: '198.51.100.0/24', gateway: '198.51.100.1', addresses: 253 } as const;

/** FNV-1a, 32 bit: deterministic pseudo-randomness for delays, pools and MACs. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

export function parseSyntheticImage(image: string): Directives {
  const directives: Directives = { failCreate: false, failStart: false, other: [] };
  if (!image.startsWith('synthetic:')) return directives;
  for (const raw of image.slice('synthetic:'.length).split(',')) {
    const part = raw.trim();
    if (part === '') continue;
    const [key, value] = part.split('=', 2) as [string, string | undefined];
    const ms = value === undefined ? Number.NaN : Number(value);
    if (key === 'fail-create' && value === undefined) directives.failCreate = true;
    else if (key === 'fail-start' && value === undefined) directives.failStart = true;
    else if (key === 'crash-after' && Number.isFinite(ms) && ms >= 0) directives.crashAfterMs = ms;
    else if (key === 'boot-ms' && Number.isFinite(ms) && ms >= 0) directives.bootMs = ms;
    else if (key === 'macos-limit' && value === undefined) directives.macosLimit = true;
    else directives.other.push(part);
  }
  return directives;
}

/** After a macOS limit error, the host is offered for macOS guests again this much later. */
export const MACOS_LIMIT_RETRY_MS = 300_000;

export class SyntheticDriver implements Driver {
  #macosBlocked = false;
  readonly #slotListeners = new Set<(slots: number, reason: string) => void>();
  readonly name = SYNTHETIC_DRIVER_NAME;
  readonly capabilities: DriverCapabilities;

  readonly #speed: number;
  readonly #seed: string;
  readonly #stateFile: string | undefined;
  readonly #log: Logger | undefined;
  readonly #instances = new Map<string, SyntheticInstance>();
  readonly #usedPool = new Set<number>();
  readonly #usedHostOnly = new Set<number>();
  readonly #listeners = new Set<InstanceStatusListener>();
  #loaded: Promise<void> | undefined;
  #persistTimer: NodeJS.Timeout | undefined;
  #persistChain: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(options: SyntheticDriverOptions = {}) {
    const speed = options.speed ?? 1;
    if (!Number.isFinite(speed) || speed < 0) throw new DriverError(`synthetic speed must be a number >= 0, got ${speed}`);
    this.#speed = speed;
    this.#seed = options.poolSeed ?? 'synthetic';
    this.#stateFile = options.stateFile;
    this.#log = options.logger?.child({ driver: SYNTHETIC_DRIVER_NAME });
    const maxMacosGuests = options.maxMacosGuests ?? 2;
    const natAddresses = options.natAddresses ?? SYNTHETIC_POOL_ADDRESSES;
    if (!Number.isInteger(natAddresses) || natAddresses < 1 || natAddresses > SYNTHETIC_POOL_ADDRESSES) {
      throw new DriverError(`synthetic natAddresses must be an integer from 1 to ${SYNTHETIC_POOL_ADDRESSES}, got ${natAddresses}`);
    }
    // Issue 18: both modes, each with its own fake pool, counted as the controller counts them.
    const networks = [
      { mode: 'nat' as const, subnet: '198.18.0.0/15', gateway: '198.18.0.1', addresses: natAddresses, interface: 'synthetic' },
      { mode: 'host-only' as const, ...SYNTHETIC_HOST_ONLY, interface: 'synthetic-host-only' },
    ];
    this.capabilities = { guestOs: ['linux', 'macos'], maxMacosGuests, natAddresses, networks };
  }

  async list(): Promise<InstanceStatus[]> {
    await this.#load();
    return [...this.#instances.values()].map((i) => this.#status(i));
  }

  async create(request: CreateInstanceRequest): Promise<InstanceStatus> {
    await this.#load();
    const key = keyOf(request);
    const existing = this.#instances.get(key);
    if (existing) return this.#status(existing);
    const directives = parseSyntheticImage(request.spec.image);
    const mode = networkModeOf(request.spec);
    if (!NETWORK_MODES.includes(mode)) throw new DriverError(`unknown network mode ${JSON.stringify(mode)}`);
    const mac = request.spec.mac;
    if (mac !== undefined) {
      // As a real runtime: no two VMs with one MAC on a worker (the scheduler avoids it too).
      const other = [...this.#instances.values()].find((i) => i.vmId !== request.vmId && i.mac === mac);
      if (other) throw new DriverError(`MAC ${mac} is already used by ${other.name} on this worker: two VMs with one MAC cannot run together`);
    }
    await this.#delay(this.#scaled(SYNTHETIC_DELAYS_MS.create));
    if (directives.failCreate) throw new DriverError('synthetic failure injected: image synthetic:fail-create cannot be prepared');
    const instance: SyntheticInstance = {
      vmId: request.vmId,
      attempt: request.attempt,
      name: request.name,
      generation: request.generation,
      spec: request.spec,
      state: 'stopped',
      poolIndex: this.#allocateFor(mode),
      network: mode,
      mac: mac ?? this.#macFor(request),
    };
    this.#instances.set(key, instance);
    this.#log?.debug({ vmId: request.vmId, attempt: request.attempt }, 'synthetic instance created');
    this.#changed(instance);
    return this.#status(instance);
  }

  async start(ref: InstanceRef): Promise<InstanceStatus> {
    const instance = await this.#get(ref);
    if (instance.state === 'running') return this.#status(instance);
    const directives = parseSyntheticImage(instance.spec.image);
    if (instance.spec.os === 'macos') {
      const active = [...this.#instances.values()].filter(
        (i) => i !== instance && i.spec.os === 'macos' && (i.state === 'running' || i.state === 'starting'),
      ).length;
      if (directives.macosLimit) {
        this.#setState(instance, 'failed', 'VZErrorVirtualMachineLimitExceeded (synthetic): the host\'s macOS guest slots are taken outside Fleet');
        this.#macosBlocked = true;
        this.#emitMacosLimit(active, instance.message!);
        // Slots held outside Fleet may free up without any sign: probe again later.
        setTimeout(() => {
          if (!this.#macosBlocked || this.#closed) return;
          this.#macosBlocked = false;
          this.#emitMacosLimit(this.capabilities.maxMacosGuests, 'retrying macOS guests after a limit error');
        }, this.#scaled(MACOS_LIMIT_RETRY_MS)).unref();
        throw new DriverError(instance.message);
      }
      if (active >= this.capabilities.maxMacosGuests) {
        this.#setState(instance, 'failed', `synthetic macOS guest limit reached (${this.capabilities.maxMacosGuests} per host, like VZErrorVirtualMachineLimitExceeded)`);
        throw new DriverError(instance.message);
      }
    }
    this.#setState(instance, 'starting', undefined);
    const bootMs = directives.bootMs ?? this.#scaled(this.#bootDelay(ref));
    try {
      await this.#cancellableDelay(instance, bootMs);
    } catch (error) {
      throw new DriverError(`synthetic start interrupted: ${(error as Error).message}`);
    }
    if (directives.failStart) {
      this.#setState(instance, 'failed', 'synthetic failure injected: image synthetic:fail-start never boots');
      throw new DriverError(instance.message);
    }
    this.#setState(instance, 'running', undefined);
    if (directives.crashAfterMs !== undefined) this.#armCrash(instance, directives.crashAfterMs);
    return this.#status(instance);
  }

  async stop(ref: InstanceRef): Promise<InstanceStatus> {
    const instance = await this.#get(ref);
    this.#disarmCrash(instance);
    instance.cancelDelay?.('stopped');
    if (instance.state === 'stopped') return this.#status(instance);
    // A failed instance has no process left: stopping it only settles the state.
    if (instance.state !== 'failed') {
      this.#setState(instance, 'stopping', undefined);
      await this.#delay(this.#scaled(SYNTHETIC_DELAYS_MS.stop));
    }
    if (this.#instances.get(keyOf(ref)) === instance) this.#setState(instance, 'stopped', undefined);
    return this.#status(instance);
  }

  /** Forced stop (fencing): no shutdown delay; the reason stays as the instance's message. */
  async kill(ref: InstanceRef, reason?: string): Promise<InstanceStatus> {
    const instance = await this.#get(ref);
    this.#disarmCrash(instance);
    instance.cancelDelay?.('killed');
    if (instance.state === 'stopped' && !reason) return this.#status(instance);
    if (this.#instances.get(keyOf(ref)) === instance) this.#setState(instance, 'stopped', reason);
    return this.#status(instance);
  }

  async update(request: UpdateInstanceRequest): Promise<InstanceStatus> {
    const instance = await this.#get(request);
    if (instance.state === 'running' || instance.state === 'starting') {
      throw new DriverError('synthetic update refused: stop the instance before applying a new spec');
    }
    await this.#delay(this.#scaled(SYNTHETIC_DELAYS_MS.update));
    const mode = networkModeOf(request.spec);
    if (mode !== (instance.network ?? 'nat')) {
      // Another network: the address moves with it (the next one is held before the old goes).
      const index = this.#allocateFor(mode);
      this.#releaseIndex(instance);
      instance.poolIndex = index;
      instance.network = mode;
    }
    if (request.spec.mac) instance.mac = request.spec.mac;
    instance.spec = request.spec;
    instance.generation = request.generation;
    this.#changed(instance);
    return this.#status(instance);
  }

  async remove(ref: InstanceRef): Promise<void> {
    await this.#load();
    const key = keyOf(ref);
    const instance = this.#instances.get(key);
    if (!instance) return;
    this.#disarmCrash(instance);
    instance.cancelDelay?.('removed');
    this.#instances.delete(key);
    this.#releaseIndex(instance);
    this.#log?.debug({ vmId: ref.vmId, attempt: ref.attempt }, 'synthetic instance removed');
    this.#schedulePersist();
  }

  subscribe(listener: InstanceStatusListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const instance of this.#instances.values()) {
      this.#disarmCrash(instance);
      instance.cancelDelay?.('driver closed');
    }
    this.#listeners.clear();
    if (this.#persistTimer) {
      clearTimeout(this.#persistTimer);
      this.#persistTimer = undefined;
    }
    if (this.#stateFile && this.#loaded) await this.#persistNow();
  }

  /** Fake address of pool slot `index`: 198.18.0.0/15 split in /24s, one base /24 per worker seed. */
  addressFor(index: number): string {
    const base = fnv1a(`${this.#seed}/subnet`) % 512;
    const subnet = (base + Math.floor(index / POOL_HOSTS_PER_SUBNET)) % POOL_SUBNETS;
    const host = 2 + (index % POOL_HOSTS_PER_SUBNET);
    return `198.${18 + (subnet >> 8)}.${subnet & 0xff}.${host}`;
  }

  // ------------------------------------------------------------------ internals

  #status(instance: SyntheticInstance): InstanceStatus {
    return {
      vmId: instance.vmId,
      attempt: instance.attempt,
      name: instance.name,
      state: instance.state,
      generation: instance.generation,
      // The fake lease is "handed out" once the guest has booted.
      ip: instance.state !== 'running' || instance.network === 'none' ? undefined : instance.network === 'host-only' ? hostOnlyAddress(instance.poolIndex) : this.addressFor(instance.poolIndex),
      mac: instance.mac,
      message: instance.message,
      disconnectPolicy: disconnectPolicyOf(instance.spec.disconnectPolicy),
    };
  }

  #setState(instance: SyntheticInstance, state: InstanceState, message: string | undefined): void {
    const wasActive = instance.state === 'running' || instance.state === 'starting';
    instance.state = state;
    instance.message = message;
    this.#changed(instance);
    if (wasActive && state !== 'running' && instance.spec.os === 'macos' && this.#macosBlocked) {
      // One of ours freed a slot: the host can take macOS guests again.
      this.#macosBlocked = false;
      this.#emitMacosLimit(this.capabilities.maxMacosGuests, 'macOS slots available again');
    }
  }

  onMacosSlotLimit(listener: (slots: number, reason: string) => void): () => void {
    this.#slotListeners.add(listener);
    return () => this.#slotListeners.delete(listener);
  }

  #emitMacosLimit(slots: number, reason: string): void {
    for (const l of this.#slotListeners) {
      try {
        l(slots, reason);
      } catch {
        /* a listener's problem */
      }
    }
  }

  #changed(instance: SyntheticInstance): void {
    this.#schedulePersist();
    if (this.#closed || this.#instances.get(keyOf(instance)) !== instance) return;
    const status = this.#status(instance);
    for (const listener of this.#listeners) {
      try {
        listener(status);
      } catch (error) {
        this.#log?.error({ err: error }, 'synthetic driver status listener threw');
      }
    }
  }

  #armCrash(instance: SyntheticInstance, afterMs: number): void {
    this.#disarmCrash(instance);
    instance.crashTimer = setTimeout(() => {
      instance.crashTimer = undefined;
      if (instance.state !== 'running') return;
      this.#log?.debug({ vmId: instance.vmId, attempt: instance.attempt }, 'synthetic crash injected');
      this.#setState(instance, 'failed', `synthetic crash injected after ${afterMs} ms of running`);
    }, afterMs);
    instance.crashTimer.unref?.();
  }

  #disarmCrash(instance: SyntheticInstance): void {
    if (instance.crashTimer) clearTimeout(instance.crashTimer);
    instance.crashTimer = undefined;
  }

  async #get(ref: InstanceRef): Promise<SyntheticInstance> {
    await this.#load();
    const instance = this.#instances.get(keyOf(ref));
    if (!instance) throw new DriverError(`synthetic instance ${ref.vmId} attempt ${ref.attempt} does not exist`);
    return instance;
  }

  #scaled(ms: number): number {
    return ms * this.#speed;
  }

  #bootDelay(ref: InstanceRef): number {
    const span = SYNTHETIC_DELAYS_MS.bootMax - SYNTHETIC_DELAYS_MS.bootMin;
    return SYNTHETIC_DELAYS_MS.bootMin + (fnv1a(`${ref.vmId}#${ref.attempt}/boot`) % (span + 1));
  }

  /** Waits `ms` (already scaled); 0 resolves without a timer. */
  async #delay(ms: number): Promise<void> {
    if (ms <= 0) return;
    await new Promise<void>((resolve) => setTimeout(resolve, ms));
  }

  #cancellableDelay(instance: SyntheticInstance, ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        instance.cancelDelay = undefined;
        resolve();
      }, ms);
      instance.cancelDelay = (reason) => {
        clearTimeout(timer);
        instance.cancelDelay = undefined;
        reject(new Error(reason));
      };
    });
  }

  /** An address index on the network of `mode` (-1 for none: no NIC, no address). */
  #allocateFor(mode: 'nat' | 'host-only' | 'none'): number {
    if (mode === 'none') return -1;
    if (mode === 'nat') return this.#allocatePoolIndex();
    let index = 0;
    while (this.#usedHostOnly.has(index)) index++;
    if (index >= SYNTHETIC_HOST_ONLY.addresses) {
      throw new DriverError(`no free VM address: all ${SYNTHETIC_HOST_ONLY.addresses} addresses of the synthetic host-only network are held by instances on this worker`);
    }
    this.#usedHostOnly.add(index);
    return index;
  }

  #releaseIndex(instance: SyntheticInstance): void {
    if ((instance.network ?? 'nat') === 'nat') this.#usedPool.delete(instance.poolIndex);
    else if (instance.network === 'host-only') this.#usedHostOnly.delete(instance.poolIndex);
  }

  #allocatePoolIndex(): number {
    const size = this.capabilities.natAddresses!;
    let index = 0;
    while (this.#usedPool.has(index)) index++;
    if (index >= size) {
      throw new DriverError(`no free VM address: all ${size} addresses of the synthetic NAT pool are held by instances on this worker`);
    }
    this.#usedPool.add(index);
    return index;
  }

  #macFor(ref: InstanceRef): string {
    const a = fnv1a(`${this.#seed}/${ref.vmId}#${ref.attempt}/mac`);
    const b = fnv1a(`${ref.vmId}#${ref.attempt}/${this.#seed}/mac`);
    const bytes = [0x02, (a >>> 24) & 0xff, (a >>> 16) & 0xff, (a >>> 8) & 0xff, a & 0xff, b & 0xff];
    return bytes.map((x) => x.toString(16).padStart(2, '0')).join(':');
  }

  // ------------------------------------------------------------------ persistence

  #load(): Promise<void> {
    this.#loaded ??= this.#readState();
    return this.#loaded;
  }

  async #readState(): Promise<void> {
    if (!this.#stateFile) return;
    let text: string;
    try {
      text = await readFile(this.#stateFile, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    let parsed: { instances?: unknown };
    try {
      parsed = JSON.parse(text) as { instances?: unknown };
    } catch {
      this.#log?.warn({ file: this.#stateFile }, 'synthetic state file is corrupt; starting empty');
      return;
    }
    const entries = Array.isArray(parsed?.instances) ? (parsed.instances as unknown[]) : [];
    for (const p of entries) {
      if (!isPersistedInstance(p)) {
        this.#log?.warn({ file: this.#stateFile }, 'skipped a malformed entry in the synthetic state file');
        continue;
      }
      // A VM host process would have finished booting / stopping while the worker was away.
      const state: InstanceState = p.state === 'starting' ? 'running' : p.state === 'stopping' ? 'stopped' : p.state;
      const instance: SyntheticInstance = { ...p, state };
      this.#instances.set(keyOf(instance), instance);
      if ((instance.network ?? 'nat') === 'nat') this.#usedPool.add(instance.poolIndex);
      else if (instance.network === 'host-only') this.#usedHostOnly.add(instance.poolIndex);
      const crash = parseSyntheticImage(instance.spec.image).crashAfterMs;
      if (state === 'running' && crash !== undefined) this.#armCrash(instance, crash);
    }
    this.#log?.info({ file: this.#stateFile, instances: this.#instances.size }, 'synthetic driver re-attached to persisted instances');
  }

  #schedulePersist(): void {
    if (!this.#stateFile || this.#closed || this.#persistTimer) return;
    this.#persistTimer = setTimeout(() => {
      this.#persistTimer = undefined;
      void this.#persistNow().catch((error: unknown) => this.#log?.warn({ err: error }, 'could not persist synthetic instances'));
    }, 100);
    this.#persistTimer.unref?.();
  }

  #persistNow(): Promise<void> {
    const file = this.#stateFile;
    if (!file) return Promise.resolve();
    const snapshot: PersistedInstance[] = [...this.#instances.values()].map(({ crashTimer: _t, cancelDelay: _c, ...kept }) => kept);
    const body = `${JSON.stringify({ driver: SYNTHETIC_DRIVER_NAME, version: 1, instances: snapshot }, null, 1)}\n`;
    this.#persistChain = this.#persistChain.catch(() => undefined).then(async () => {
      await mkdir(dirname(file), { recursive: true, mode: 0o700 });
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, body, { mode: 0o600 });
      await rename(tmp, file);
    });
    return this.#persistChain;
  }
}

function keyOf(ref: InstanceRef): string {
  return `${ref.vmId}#${ref.attempt}`;
}

/** The fake host-only address of pool slot `index` (.2 … .254). */
function hostOnlyAddress(index: number): string {
  return `198.51.100.${2 + index}`;
}
