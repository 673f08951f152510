/**
 * The macOS half of @fleet/native-vz, in TypeScript: the loader (darwin only) and thin,
 * promise-based wrappers over the addon's exact JS interface (src/vz-types.ts):
 *
 * - VzVirtualMachine: request ids → promises, native events → an EventEmitter, config checks
 *   and CPU/memory clamping before anything reaches Objective-C.
 * - VmnetPort: a vmnet interface with the FramePort batch contract (onBatch/sendBatch/stats),
 *   so the VM host process's pump treats it like the TAP FramePort on Linux.
 *
 * The wrappers take the addon as a parameter, so they are tested on Linux against a fake of
 * VzAddon (src/vz.test.ts). The native code behind them has NOT been compiled or run on a Mac
 * yet: docs/macos.md says exactly what has and has not been verified.
 */
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import path from 'node:path';
import type {
  NativeVirtualMachine,
  NativeVmnetInterface,
  VmnetEvent,
  VmnetStartOptions,
  VmnetStarted,
  VzAddon,
  VzEvent,
  VzLimits,
  VzMachineConfig,
  VzNativeError,
  VzNativeState,
  VzStartOptions,
} from './vz-types.ts';
import { VZ_ERROR_DOMAIN } from './vz-types.ts';

export * from './vz-types.ts';

/** Loads the darwin addon. Throws a clear error anywhere but macOS. */
export function loadVzAddon(): VzAddon {
  if (process.platform !== 'darwin') {
    throw new Error(`@fleet/native-vz: Virtualization.framework and vmnet exist only on macOS (this host is ${process.platform})`);
  }
  const require = createRequire(import.meta.url);
  let mod: { platform?: unknown };
  try {
    mod = require('../build/Release/native_vz.node') as { platform?: unknown };
  } catch (err) {
    const e = new Error(
      '@fleet/native-vz: build/Release/native_vz.node could not be loaded; build it with `pnpm install` ' +
        '(needs Xcode 15 or later with the macOS 14 SDK, or its Command Line Tools; see docs/macos.md)',
    );
    (e as Error & { cause?: unknown }).cause = err;
    throw e;
  }
  if (mod.platform !== 'darwin') throw new Error(`@fleet/native-vz: the built addon is for ${String(mod.platform)}, not darwin: rebuild it`);
  return mod as unknown as VzAddon;
}

/** A failed Virtualization.framework (or vmnet) operation: the framework's message plus domain/code. */
export class VzError extends Error {
  override readonly name = 'VzError';
  constructor(
    readonly operation: string,
    readonly domain: string,
    readonly code: number,
    message: string,
    readonly reason?: string,
  ) {
    super(`${operation}: ${message}${reason ? ` (${reason})` : ''}`);
  }
  /** True for VZErrorDomain errors with this VZErrorCode. */
  is(code: number): boolean {
    return this.domain === VZ_ERROR_DOMAIN && this.code === code;
  }
}

export function vzErrorFrom(operation: string, e: VzNativeError): VzError {
  return new VzError(operation, e.domain, e.code, e.message, e.reason);
}

/** Turns an Error thrown synchronously by the addon (with nsDomain/nsCode) into a VzError. */
export function vzErrorFromThrown(operation: string, err: unknown): VzError {
  const e = err as Error & { nsDomain?: unknown; nsCode?: unknown };
  const domain = typeof e?.nsDomain === 'string' ? e.nsDomain : 'FleetNativeVZ';
  const code = typeof e?.nsCode === 'number' ? e.nsCode : 0;
  return new VzError(operation, domain, code, e instanceof Error ? e.message : String(err));
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const MIB = 1024 * 1024;

export interface NormalizedConfig {
  config: VzMachineConfig;
  /** What was changed to fit the framework's limits (for logs / VM events). */
  adjustments: string[];
}

/**
 * Checks a machine configuration before it reaches Objective-C and clamps CPU count and memory
 * to the framework's limits (memory to whole MiB). Throws a plain Error naming the field for
 * anything the framework would reject less clearly.
 */
export function normalizeMachineConfig(input: VzMachineConfig, limits: VzLimits): NormalizedConfig {
  const adjustments: string[] = [];
  const c: VzMachineConfig = { ...input, disks: input.disks.map((d) => ({ ...d })) };
  if (c.guest !== 'macos' && c.guest !== 'linux') throw new Error(`guest must be "macos" or "linux", not ${JSON.stringify(c.guest)}`);
  if (!Number.isInteger(c.cpus) || c.cpus < 1) throw new Error(`cpus must be a positive integer, not ${c.cpus}`);
  if (!Number.isFinite(c.memoryBytes) || c.memoryBytes <= 0) throw new Error(`memoryBytes must be positive, not ${c.memoryBytes}`);
  const cpus = Math.min(limits.maxCpus, Math.max(limits.minCpus, c.cpus));
  if (cpus !== c.cpus) adjustments.push(`cpus ${c.cpus} → ${cpus} (framework allows ${limits.minCpus}..${limits.maxCpus})`);
  c.cpus = cpus;
  let mem = Math.min(limits.maxMemoryBytes, Math.max(limits.minMemoryBytes, c.memoryBytes));
  mem -= mem % MIB;
  if (mem < limits.minMemoryBytes) mem += MIB;
  if (mem !== c.memoryBytes) adjustments.push(`memory ${c.memoryBytes} → ${mem} bytes (framework allows ${limits.minMemoryBytes}..${limits.maxMemoryBytes}, whole MiB)`);
  c.memoryBytes = mem;
  if (c.disks.length === 0) throw new Error('at least one disk is needed');
  for (const d of c.disks) {
    if (!path.isAbsolute(d.path)) throw new Error(`disk path must be absolute: ${d.path}`);
  }
  if (c.network) {
    if (!Number.isInteger(c.network.fd) || c.network.fd < 0) throw new Error(`network.fd must be an open fd, not ${c.network.fd}`);
    if (!MAC_RE.test(c.network.mac)) throw new Error(`network.mac must look like aa:bb:cc:dd:ee:ff, not ${JSON.stringify(c.network.mac)}`);
    if (c.network.mtu !== undefined && (!Number.isInteger(c.network.mtu) || c.network.mtu < 1500 || c.network.mtu > 65535)) {
      throw new Error(`network.mtu must be 1500..65535 (VZFileHandleNetworkDeviceAttachment), not ${c.network.mtu}`);
    }
  }
  if (c.serialLogPath !== undefined && !path.isAbsolute(c.serialLogPath)) throw new Error(`serialLogPath must be absolute: ${c.serialLogPath}`);
  if (c.guest === 'macos') {
    if (!c.macos) throw new Error('a macOS guest needs hardwareModel, machineIdentifier and auxiliaryStoragePath');
    if (c.macos.hardwareModel.length === 0) throw new Error('macos.hardwareModel is empty');
    if (c.macos.machineIdentifier.length === 0) throw new Error('macos.machineIdentifier is empty');
    if (!path.isAbsolute(c.macos.auxiliaryStoragePath)) throw new Error(`macos.auxiliaryStoragePath must be absolute: ${c.macos.auxiliaryStoragePath}`);
    if (c.linux) throw new Error('a macOS guest takes no linux boot settings');
  } else {
    if (!c.linux) throw new Error('a Linux guest needs linux boot settings (efi or kernel)');
    if (c.macos) throw new Error('a Linux guest takes no macos platform settings');
    if (c.suspendable) throw new Error('suspendable configurations are supported for macOS guests only');
    if (c.linux.kind === 'kernel' && !path.isAbsolute(c.linux.kernelPath)) throw new Error(`linux.kernelPath must be absolute: ${c.linux.kernelPath}`);
    if (c.linux.kind === 'efi' && !path.isAbsolute(c.linux.variableStorePath)) throw new Error(`linux.variableStorePath must be absolute: ${c.linux.variableStorePath}`);
  }
  if (c.display) {
    for (const k of ['width', 'height'] as const) {
      const v = c.display[k];
      if (!Number.isInteger(v) || v < 320 || v > 8192) throw new Error(`display.${k} must be 320..8192 pixels, not ${v}`);
    }
  }
  return { config: c, adjustments };
}

export interface VzVirtualMachineEvents {
  state: [VzNativeState];
  guestStopped: [];
  stoppedWithError: [VzError];
  networkDisconnected: [VzError];
}

/**
 * One VZVirtualMachine. Operations resolve when the framework's completion handler reports
 * success and reject with a VzError carrying the framework's domain, code and message.
 */
export class VzVirtualMachine extends EventEmitter<VzVirtualMachineEvents> {
  private readonly native: NativeVirtualMachine;
  private nextId = 1;
  private readonly pending = new Map<number, { op: string; resolve: () => void; reject: (e: VzError) => void; onProgress?: (f: number) => void }>();
  private closed = false;
  /** The last state the framework reported (KVO); 'stopped' before the first report. */
  lastState: VzNativeState = 'stopped';

  constructor(addon: Pick<VzAddon, 'VirtualMachine'>, config: VzMachineConfig) {
    super();
    try {
      this.native = new addon.VirtualMachine(config, (e) => this.onEvent(e));
    } catch (err) {
      throw vzErrorFromThrown('configure VM', err);
    }
  }

  state(): VzNativeState {
    return this.closed ? this.lastState : this.native.state();
  }
  can(): ReturnType<NativeVirtualMachine['can']> {
    return this.native.can();
  }

  start(opts: VzStartOptions = {}): Promise<void> {
    return this.call('start', (id) => this.native.start(id, opts));
  }
  pause(): Promise<void> {
    return this.call('pause', (id) => this.native.pause(id));
  }
  resume(): Promise<void> {
    return this.call('resume', (id) => this.native.resume(id));
  }
  /** Hard stop. */
  stop(): Promise<void> {
    return this.call('stop', (id) => this.native.stop(id));
  }
  /** ACPI power-button request: resolves once the request was delivered, not when the guest is off. */
  requestStop(): Promise<void> {
    return this.call('request stop', (id) => this.native.requestStop(id));
  }
  saveState(file: string): Promise<void> {
    return this.call('save state', (id) => this.native.saveState(id, file));
  }
  restoreState(file: string): Promise<void> {
    return this.call('restore state', (id) => this.native.restoreState(id, file));
  }
  /** Installs macOS from an IPSW onto this (stopped) VM; `onProgress` gets 0..1. */
  install(ipswPath: string, onProgress: (fraction: number) => void): Promise<void> {
    return this.call('install macOS', (id) => this.native.install(id, ipswPath), onProgress);
  }
  cancelInstall(): void {
    if (!this.closed) this.native.cancelInstall();
  }
  unref(): void {
    if (!this.closed) this.native.unref();
  }
  ref(): void {
    if (!this.closed) this.native.ref();
  }
  /** Drops the event bridge (does not stop the VM). Pending operations reject. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.native.close();
    for (const [, p] of this.pending) p.reject(new VzError(p.op, 'FleetNativeVZ', 0, 'the VM object was closed'));
    this.pending.clear();
  }

  private call(op: string, invoke: (id: number) => void, onProgress?: (f: number) => void): Promise<void> {
    if (this.closed) return Promise.reject(new VzError(op, 'FleetNativeVZ', 0, 'the VM object is closed'));
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { op, resolve, reject, ...(onProgress ? { onProgress } : {}) });
      try {
        invoke(id);
      } catch (err) {
        this.pending.delete(id);
        reject(vzErrorFromThrown(op, err));
      }
    });
  }

  private onEvent(e: VzEvent): void {
    switch (e.type) {
      case 'state':
        this.lastState = e.state;
        this.emit('state', e.state);
        return;
      case 'done': {
        const p = this.pending.get(e.id);
        if (!p) return;
        this.pending.delete(e.id);
        if (e.error) p.reject(vzErrorFrom(p.op, e.error));
        else p.resolve();
        return;
      }
      case 'installProgress':
        this.pending.get(e.id)?.onProgress?.(Math.min(1, Math.max(0, e.fraction)));
        return;
      case 'guestStopped':
        this.emit('guestStopped');
        return;
      case 'stoppedWithError':
        this.emit('stoppedWithError', vzErrorFrom('VM stopped', e.error));
        return;
      case 'networkDisconnected':
        this.emit('networkDisconnected', vzErrorFrom('network attachment', e.error));
        return;
    }
  }
}

/** vmnet's documented limit per vmnet_read/vmnet_write call (besides 200 packets). */
export const VMNET_MAX_BYTES_PER_CALL = 256 * 1024;

/** A batch of frames, the same shape as FramePort's FrameBatch. */
export interface VmnetBatch {
  readonly buffer: Buffer;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  count: number;
}

export type VmnetPortStats = ReturnType<NativeVmnetInterface['stats']>;

const VMNET_NEEDS_ROOT =
  'starting a vmnet interface needs root (or com.apple.vm.networking, which Apple grants only to approved products); ' +
  'run the worker as root (launchd daemon) so the network half of each VM host starts vmnet as root. ' +
  'On macOS 26 the newer vmnet network API (vmnet_network_create, VZVmnetNetworkDeviceAttachment) is reported to work without root ' +
  'for shared and host mode; Fleet does not use it yet (docs/macos.md)';

/**
 * Explains vmnet start failures in operator terms. `euid` is the effective uid of the process
 * that called vmnet_start_interface: without root vmnet reports the generic VMNET_FAILURE (1001),
 * not VMNET_INVALID_ACCESS, so a VMNET_FAILURE from a non-root process gets the root hint too.
 */
export function vmnetStartMessage(status: string, o: { euid?: number | undefined } = {}): string {
  const notRoot = o.euid !== undefined && o.euid !== 0;
  switch (status) {
    case 'VMNET_INVALID_ACCESS':
      return `vmnet refused access (VMNET_INVALID_ACCESS): ${VMNET_NEEDS_ROOT}`;
    case 'VMNET_NOT_AUTHORIZED':
      return `vmnet refused: not authorized (VMNET_NOT_AUTHORIZED): ${VMNET_NEEDS_ROOT}`;
    case 'VMNET_FAILURE':
      if (notRoot) return `vmnet_start_interface failed (VMNET_FAILURE) in a process that is not root (euid ${o.euid}); vmnet reports a missing privilege this way: ${VMNET_NEEDS_ROOT}`;
      return `vmnet_start_interface failed (VMNET_FAILURE)${o.euid === 0 ? ' as root' : ''}: a general vmnet failure; check that the address range (start/end address, subnet mask) does not clash with another network, and the system log (Console) at this time`;
    case 'VMNET_SHARING_SERVICE_BUSY':
      return 'vmnet cannot start a shared-mode interface while a conflicting sharing service is on (VMNET_SHARING_SERVICE_BUSY): turn off Internet Sharing (System Settings → General → Sharing)';
    case 'VMNET_INVALID_ARGUMENT':
      return 'vmnet rejected the interface description (VMNET_INVALID_ARGUMENT): check the start/end addresses and subnet mask';
    default:
      return `vmnet_start_interface failed: ${status}${notRoot ? ` (not root: euid ${o.euid})` : ''}`;
  }
}

/**
 * A vmnet interface with the FramePort batch contract: onBatch(cb) gets zero-copy views into a
 * fixed receive area (valid only during the callback), sendBatch returns the accepted prefix.
 */
export class VmnetPort {
  readonly batchSize: number;
  readonly frameSize: number;
  private readonly native: NativeVmnetInterface;
  private readonly batch: VmnetBatch;
  private cb: ((b: VmnetBatch) => void) | undefined;
  private reading = false;
  private _closed = false;
  private startedInfo: VmnetStarted | undefined;
  private readonly startWaiters: Array<{ resolve: (i: VmnetStarted) => void; reject: (e: Error) => void }> = [];
  private failure: Error | undefined;

  private constructor(addon: Pick<VzAddon, 'VmnetInterface'>, opts: VmnetStartOptions, batch: number, frameSize: number, private readonly maxBatchesPerWakeup: number) {
    if (!Number.isInteger(batch) || batch < 1 || batch > 200) throw new RangeError('VmnetPort: batch must be 1..200 (vmnet reads at most 200 packets per call)');
    if (!Number.isInteger(frameSize) || frameSize < 1518 || frameSize > 65536) throw new RangeError('VmnetPort: frameSize must be 1518..65536');
    // One vmnet_read fills up to batch × frameSize bytes; vmnet allows 256 KB per call. A smaller
    // read than asked would also look like "queue empty" to drain() below.
    if (batch * frameSize > VMNET_MAX_BYTES_PER_CALL) throw new RangeError(`VmnetPort: batch × frameSize must be at most 256 KiB (vmnet's limit per read), not ${batch} × ${frameSize}`);
    const area = new ArrayBuffer(batch * frameSize);
    const offsets = new Uint32Array(batch);
    const lengths = new Uint32Array(batch);
    this.batchSize = batch;
    this.frameSize = frameSize;
    this.batch = { buffer: Buffer.from(area), offsets, lengths, count: 0 };
    this.native = new addon.VmnetInterface(opts, area, offsets, lengths, frameSize, batch, (e) => this.onEvent(e));
  }

  /** Starts an interface and resolves once vmnet reported it up (rejects with an operator message). */
  static async start(
    addon: Pick<VzAddon, 'VmnetInterface'>,
    opts: VmnetStartOptions,
    o: { batch?: number; frameSize?: number; maxBatchesPerWakeup?: number } = {},
  ): Promise<VmnetPort> {
    const port = new VmnetPort(addon, opts, o.batch ?? 64, o.frameSize ?? 2048, o.maxBatchesPerWakeup ?? 16);
    await port.started();
    return port;
  }

  get info(): VmnetStarted | undefined {
    return this.startedInfo;
  }
  get closed(): boolean {
    return this._closed;
  }

  started(): Promise<VmnetStarted> {
    if (this.startedInfo) return Promise.resolve(this.startedInfo);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.startWaiters.push({ resolve, reject }));
  }

  onBatch(cb: (b: VmnetBatch) => void): this {
    this.cb = cb;
    this.reading = true;
    // Packets may have queued while paused (no 'readable' re-posts until read() runs): drain now.
    queueMicrotask(() => this.drain());
    return this;
  }

  pause(): void {
    this.reading = false;
  }

  sendBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    if (this._closed) {
      const e = new Error('VmnetPort is closed') as Error & { code: string };
      e.code = 'ERR_FRAMEPORT_CLOSED';
      throw e;
    }
    return this.native.write(buf, offsets, lengths, count);
  }

  stats(): VmnetPortStats {
    return this.native.stats();
  }

  close(): void {
    if (this._closed) return;
    this._closed = true;
    this.reading = false;
    this.native.stop();
  }

  unref(): this {
    this.native.unref();
    return this;
  }
  ref(): this {
    this.native.ref();
    return this;
  }

  private drain(): void {
    for (let round = 0; round < this.maxBatchesPerWakeup; round++) {
      if (!this.reading || this._closed || !this.cb) return;
      const n = this.native.read();
      if (n === 0) return;
      this.batch.count = n;
      this.cb(this.batch);
      if (n < this.batchSize) return;
    }
    // More may be queued: yield to the event loop, then continue (vmnet posts no new event until read() runs).
    setImmediate(() => this.drain());
  }

  private onEvent(e: VmnetEvent): void {
    switch (e.type) {
      case 'started':
        this.startedInfo = e.info;
        for (const w of this.startWaiters.splice(0)) w.resolve(e.info);
        return;
      case 'error':
        // The addon reports the euid it started vmnet with; an older build does not, and then ours is the best guess.
        this.failure = new VzError('start vmnet interface', 'vmnet', e.code, vmnetStartMessage(e.status, { euid: e.euid ?? process.geteuid?.() }));
        this._closed = true;
        for (const w of this.startWaiters.splice(0)) w.reject(this.failure);
        return;
      case 'readable':
        this.drain();
        return;
      case 'stopped':
        this._closed = true;
        return;
    }
  }
}
