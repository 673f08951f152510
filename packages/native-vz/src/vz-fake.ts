/**
 * A fake of the darwin addon's exact JS interface (VzAddon in src/vz-types.ts), for tests on
 * Linux. It behaves like Virtualization.framework and vmnet as documented: completions and
 * events arrive asynchronously (as from the VM's dispatch queue), operations in the wrong state
 * fail with VZErrorInvalidVirtualMachineStateTransition, a third running macOS guest fails with
 * VZErrorVirtualMachineLimitExceeded, a guest powers off a while after requestStop, vmnet refuses
 * to start without root with the generic VMNET_FAILURE (1001) — what vmnet really answers, not
 * VMNET_INVALID_ACCESS — and the euid. It is NOT evidence that the native code works.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import type {
  NativeVirtualMachine,
  NativeVmnetInterface,
  VmnetEvent,
  VmnetStartOptions,
  VzAddon,
  VzEvent,
  VzMachineConfig,
  VzNativeError,
  VzNativeState,
  VzRestoreImageInfo,
  VzStartOptions,
} from './vz-types.ts';
import { VZ_ERROR_DOMAIN, VZErrorCode } from './vz-types.ts';

export interface FakeHostOptions {
  /** Running macOS guests the "kernel" allows (default 2). */
  macosLimit?: number;
  /** macOS guests already running outside our control (another tool; a stuck count). */
  foreignMacosGuests?: number;
  /** Whether the process is root (vmnet). Default true. */
  root?: boolean;
  /** The euid vmnet errors report when not root. Default 501. */
  euid?: number;
  /** Make vmnet_start_interface fail with this vmnet_return_t name (as root too), e.g. "VMNET_SHARING_SERVICE_BUSY". */
  vmnetStartFailure?: string;
  /** Whether the process has the virtualization entitlement. Default true. */
  entitled?: boolean;
  /** ms from requestStop to the guest powering off; Infinity = the guest ignores it. Default 5. */
  guestShutdownMs?: number;
  /** Restore images by path. */
  restoreImages?: Record<string, VzRestoreImageInfo>;
}

const vzErr = (code: number, message: string): VzNativeError => ({ domain: VZ_ERROR_DOMAIN, code, message });
/** The addon throws a TypeError for a path that is not absolute (NSURL fileURLWithPath: raises on ""). */
function absolute(what: string, p: string): void {
  if (!p.startsWith('/')) throw new TypeError(`${what} must be absolute`);
}
/** vmnet_return_t values (vmnet/vmnet.h). */
const VMNET_CODES: Record<string, number> = {
  VMNET_FAILURE: 1001,
  VMNET_MEM_FAILURE: 1002,
  VMNET_INVALID_ARGUMENT: 1003,
  VMNET_SETUP_INCOMPLETE: 1004,
  VMNET_INVALID_ACCESS: 1005,
  VMNET_SHARING_SERVICE_BUSY: 1009,
  VMNET_NOT_AUTHORIZED: 1010,
};

export class FakeVzHost {
  readonly opts: Required<Omit<FakeHostOptions, 'restoreImages' | 'vmnetStartFailure'>> & { restoreImages: Record<string, VzRestoreImageInfo>; vmnetStartFailure?: string };
  readonly machines: FakeVirtualMachine[] = [];
  readonly interfaces: FakeVmnetInterface[] = [];
  /** Every config passed to `new VirtualMachine` (after the TS wrapper validated it). */
  readonly configs: VzMachineConfig[] = [];

  constructor(o: FakeHostOptions = {}) {
    this.opts = {
      macosLimit: o.macosLimit ?? 2,
      foreignMacosGuests: o.foreignMacosGuests ?? 0,
      root: o.root ?? true,
      euid: o.euid ?? 501,
      ...(o.vmnetStartFailure !== undefined ? { vmnetStartFailure: o.vmnetStartFailure } : {}),
      entitled: o.entitled ?? true,
      guestShutdownMs: o.guestShutdownMs ?? 5,
      restoreImages: o.restoreImages ?? {},
    };
  }

  runningMacos(): number {
    return this.opts.foreignMacosGuests + this.machines.filter((m) => m.config.guest === 'macos' && m.counts()).length;
  }

  addon(): VzAddon {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const host = this;
    return {
      platform: 'darwin',
      isSupported: () => true,
      limits: () => ({ minCpus: 1, maxCpus: 8, minMemoryBytes: 128 * 1024 * 1024, maxMemoryBytes: 16 * 1024 * 1024 * 1024 }),
      newMachineIdentifier: () => Buffer.concat([Buffer.from('ecid:'), randomBytes(8)]),
      hardwareModelSupported: (d) => Buffer.from(d).toString().startsWith('hw:'),
      createAuxiliaryStorage: (p, hw) => {
        if (!Buffer.from(hw).toString().startsWith('hw:')) throw Object.assign(new Error('createAuxiliaryStorage: invalid hardware model'), { nsDomain: VZ_ERROR_DOMAIN, nsCode: 2 });
        writeFileSync(p, Buffer.concat([Buffer.from('aux:'), Buffer.from(hw)]));
      },
      loadRestoreImage: (p, cb) => {
        setImmediate(() => {
          const info = host.opts.restoreImages[p];
          if (info) cb(null, info);
          else cb(vzErr(VZErrorCode.RestoreImageLoadFailed, `The restore image at ${p} could not be loaded.`), null);
        });
      },
      VirtualMachine: class {
        constructor(config: VzMachineConfig, onEvent: (e: VzEvent) => void) {
          if (!host.opts.entitled) {
            throw Object.assign(new Error('VirtualMachine: invalid configuration: The process doesn’t have the “com.apple.security.virtualization” entitlement.'), {
              nsDomain: VZ_ERROR_DOMAIN,
              nsCode: VZErrorCode.InvalidVirtualMachineConfiguration,
            });
          }
          const m = new FakeVirtualMachine(host, config, onEvent);
          host.configs.push(config);
          host.machines.push(m);
          return m;
        }
      } as unknown as VzAddon['VirtualMachine'],
      VmnetInterface: class {
        constructor(opts: VmnetStartOptions, area: ArrayBuffer, offsets: Uint32Array, lengths: Uint32Array, frameSize: number, batch: number, onEvent: (e: VmnetEvent) => void) {
          const i = new FakeVmnetInterface(host, opts, area, offsets, lengths, frameSize, batch, onEvent);
          host.interfaces.push(i);
          return i;
        }
      } as unknown as VzAddon['VmnetInterface'],
    };
  }
}

export class FakeVirtualMachine implements NativeVirtualMachine {
  private st: VzNativeState = 'stopped';
  private closed = false;
  private shutdownTimer: NodeJS.Timeout | undefined;
  private installing: { id: number; timer: NodeJS.Timeout } | undefined;
  readonly calls: string[] = [];
  refd = true;

  constructor(private readonly host: FakeVzHost, readonly config: VzMachineConfig, private readonly onEvent: (e: VzEvent) => void) {}

  /** Holds a macOS licence slot (running, paused or in transition). */
  counts(): boolean {
    return this.st !== 'stopped' && this.st !== 'error';
  }

  /** Simulates the guest crashing: the framework stops the VM with an error. */
  crash(message = 'The virtual machine stopped unexpectedly.'): void {
    this.set('error');
    this.emit({ type: 'stoppedWithError', error: vzErr(VZErrorCode.Internal, message) });
  }
  /** Simulates the guest powering itself off. */
  guestPowerOff(): void {
    this.set('stopped');
    this.emit({ type: 'guestStopped' });
  }

  state(): VzNativeState {
    return this.st;
  }
  can(): { start: boolean; pause: boolean; resume: boolean; requestStop: boolean; stop: boolean } {
    const s = this.st;
    return { start: s === 'stopped' || s === 'error', pause: s === 'running', resume: s === 'paused', requestStop: s === 'running', stop: s === 'running' || s === 'paused' || s === 'error' };
  }
  start(id: number, opts: VzStartOptions): void {
    this.calls.push(opts.recovery ? 'start(recovery)' : 'start');
    this.later(() => {
      if (!this.can().start) return this.done(id, vzErr(VZErrorCode.InvalidVirtualMachineStateTransition, 'Invalid virtual machine state transition.'));
      if (this.config.guest === 'macos' && this.host.runningMacos() >= this.host.opts.macosLimit) {
        return this.done(id, vzErr(VZErrorCode.VirtualMachineLimitExceeded, 'The maximum supported number of active virtual machines has been reached.'));
      }
      this.set('starting');
      this.later(() => {
        this.set('running');
        this.done(id);
      });
    });
  }
  pause(id: number): void {
    this.calls.push('pause');
    this.transition(id, 'running', 'pausing', 'paused');
  }
  resume(id: number): void {
    this.calls.push('resume');
    this.transition(id, 'paused', 'resuming', 'running');
  }
  stop(id: number): void {
    this.calls.push('stop');
    this.later(() => {
      if (!this.can().stop) return this.done(id, vzErr(VZErrorCode.InvalidVirtualMachineStateTransition, 'Invalid virtual machine state transition.'));
      clearTimeout(this.shutdownTimer);
      this.set('stopping');
      this.later(() => {
        this.set('stopped');
        this.done(id);
      });
    });
  }
  requestStop(id: number): void {
    this.calls.push('requestStop');
    this.later(() => {
      if (this.st !== 'running') return this.done(id, vzErr(VZErrorCode.InvalidVirtualMachineStateTransition, 'Invalid virtual machine state transition.'));
      this.done(id);
      const ms = this.host.opts.guestShutdownMs;
      if (Number.isFinite(ms)) this.shutdownTimer = setTimeout(() => this.st === 'running' && this.guestPowerOff(), ms);
    });
  }
  saveState(id: number, file: string): void {
    absolute('saveState(id, path): path', file);
    this.calls.push(`saveState(${file})`);
    this.later(() => {
      if (this.st !== 'paused') return this.done(id, vzErr(VZErrorCode.InvalidVirtualMachineState, 'The virtual machine must be paused to save its state.'));
      if (!this.config.suspendable) return this.done(id, vzErr(VZErrorCode.Save, 'The virtual machine configuration does not support saving.'));
      writeFileSync(file, 'saved');
      this.done(id);
    });
  }
  restoreState(id: number, file: string): void {
    absolute('restoreState(id, path): path', file);
    this.calls.push(`restoreState(${file})`);
    this.transition(id, 'stopped', 'restoring', 'paused');
  }
  install(id: number, ipswPath: string): void {
    absolute('install(id, ipswPath): ipswPath', ipswPath);
    this.calls.push(`install(${ipswPath})`);
    if (this.host.opts.restoreImages[ipswPath] === undefined) {
      this.later(() => this.done(id, vzErr(VZErrorCode.InvalidRestoreImage, 'The restore image is invalid.')));
      return;
    }
    const steps = [0, 0.004, 0.25, 0.251, 0.5, 0.75, 1];
    let i = 0;
    const tick = (): void => {
      if (this.installing?.id !== id) return;
      if (i < steps.length) {
        this.emit({ type: 'installProgress', id, fraction: steps[i++]! });
        if (this.installing?.id !== id) return; // cancelled from the progress callback
        this.installing.timer = setTimeout(tick, 1);
      } else {
        this.installing = undefined;
        this.set('stopped');
        this.done(id);
      }
    };
    this.installing = { id, timer: setTimeout(tick, 1) };
  }
  cancelInstall(): void {
    this.calls.push('cancelInstall');
    const inst = this.installing;
    if (!inst) return;
    clearTimeout(inst.timer);
    this.installing = undefined;
    this.later(() => this.done(inst.id, vzErr(VZErrorCode.OperationCancelled, 'The operation was cancelled.')));
  }
  unref(): void {
    this.refd = false;
  }
  ref(): void {
    this.refd = true;
  }
  close(): void {
    this.closed = true;
  }

  private transition(id: number, from: VzNativeState, via: VzNativeState, to: VzNativeState): void {
    this.later(() => {
      if (this.st !== from) return this.done(id, vzErr(VZErrorCode.InvalidVirtualMachineStateTransition, 'Invalid virtual machine state transition.'));
      this.set(via);
      this.later(() => {
        this.set(to);
        this.done(id);
      });
    });
  }
  private set(s: VzNativeState): void {
    if (this.st === s) return;
    this.st = s;
    this.emit({ type: 'state', state: s });
  }
  private done(id: number, error?: VzNativeError): void {
    this.emit(error ? { type: 'done', id, error } : { type: 'done', id });
  }
  private emit(e: VzEvent): void {
    if (!this.closed) this.onEvent(e);
  }
  private later(fn: () => void): void {
    setImmediate(fn);
  }
}

export class FakeVmnetInterface implements NativeVmnetInterface {
  /** Frames the "host network" has queued for us. */
  private readonly inbound: Buffer[] = [];
  /** Frames written to vmnet (copies). */
  readonly written: Buffer[] = [];
  private stopped = false;
  private pending = false;
  refd = true;
  private readonly s = { rxFrames: 0, rxBytes: 0, rxCalls: 0, txFrames: 0, txBytes: 0, txDrops: 0, txErrors: 0, lastStatus: null as string | null };
  /** Frames accepted per write call before "buffer exhausted" (default unlimited). */
  writeCapacity = Infinity;

  constructor(
    private readonly host: FakeVzHost,
    readonly opts: VmnetStartOptions,
    private readonly area: ArrayBuffer,
    private readonly offsets: Uint32Array,
    private readonly lengths: Uint32Array,
    private readonly frameSize: number,
    private readonly batch: number,
    private readonly onEvent: (e: VmnetEvent) => void,
  ) {
    setImmediate(() => {
      const euid = host.opts.root ? 0 : host.opts.euid;
      const failure = host.opts.vmnetStartFailure ?? (host.opts.root ? undefined : 'VMNET_FAILURE');
      if (failure !== undefined) {
        this.stopped = true;
        onEvent({ type: 'error', status: failure, code: VMNET_CODES[failure] ?? 1001, euid });
        return;
      }
      onEvent({
        type: 'started',
        info: { mac: '5e:00:00:00:00:01', mtu: 1500, maxPacketSize: 1518, startAddress: opts.startAddress ?? '192.168.64.1', endAddress: opts.endAddress ?? '192.168.64.254', subnetMask: opts.subnetMask ?? '255.255.255.0' },
      });
    });
  }

  /** The host network delivers frames (VMNET_INTERFACE_PACKETS_AVAILABLE, coalesced). */
  deliver(frames: Buffer[]): void {
    this.inbound.push(...frames.map((f) => Buffer.from(f)));
    if (!this.pending && !this.stopped) {
      this.pending = true;
      setImmediate(() => this.onEvent({ type: 'readable' }));
    }
  }

  read(): number {
    this.pending = false;
    if (this.stopped) return 0;
    this.s.rxCalls++;
    const view = new Uint8Array(this.area);
    let n = 0;
    while (n < this.batch && this.inbound.length > 0) {
      const f = this.inbound.shift()!;
      const len = Math.min(f.length, this.frameSize);
      view.set(f.subarray(0, len), n * this.frameSize);
      this.offsets[n] = n * this.frameSize;
      this.lengths[n] = len;
      this.s.rxBytes += len;
      n++;
    }
    this.s.rxFrames += n;
    return n;
  }
  write(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    if (this.stopped) {
      this.s.txDrops += count;
      return 0;
    }
    const n = Math.min(count, this.writeCapacity, 200);
    for (let i = 0; i < n; i++) this.written.push(Buffer.from(buf.subarray(offsets[i]!, offsets[i]! + lengths[i]!)));
    this.s.txFrames += n;
    this.s.txDrops += count - n;
    return n;
  }
  stats(): ReturnType<NativeVmnetInterface['stats']> {
    return { ...this.s };
  }
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    setImmediate(() => this.onEvent({ type: 'stopped' }));
  }
  unref(): void {
    this.refd = false;
  }
  ref(): void {
    this.refd = true;
  }
}
