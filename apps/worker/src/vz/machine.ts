// The lifecycle of one VZ VM as the VM host process sees it: the framework's states (stopped,
// starting, running, pausing, paused, resuming, stopping, saving, restoring, error) folded into
// the host's five (starting, running, stopping, stopped, failed), with
// - start: resolves running; a framework error becomes `failed` with a mapped message (a
//   VZErrorVirtualMachineLimitExceeded keeps its kind so the driver can close the macOS slots);
// - stop: ACPI power-button request (requestStop), then a hard stop after `stopTimeoutMs` if the
//   guest did not power off (macOS guests may show a dialog and never do);
// - kill: hard stop now (with an optional reason, e.g. "fenced: …", as the final message);
// - guest power-off → stopped ("guest powered off"); didStopWithError → failed.
import { EventEmitter } from 'node:events';
import type { VzNativeState, VzVirtualMachine } from '@fleet/native-vz/vz';
import { mapVzError, type VzFailure } from './errors.ts';

export type HostState = 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

/** The part of VzVirtualMachine the runner drives (the real class, over the addon or its fake). */
export type VzMachineHandle = Pick<VzVirtualMachine, 'start' | 'stop' | 'requestStop' | 'pause' | 'resume' | 'on' | 'off' | 'state'>;

export interface RunnerOptions {
  /** Graceful stop budget before the hard stop (default 30 s: macOS guests are slow to shut down). */
  stopTimeoutMs?: number;
}

export interface RunnerEvents {
  state: [HostState, string | undefined];
}

export class VzMachineRunner extends EventEmitter<RunnerEvents> {
  state: HostState = 'stopped';
  message: string | undefined;
  paused = false;
  /** The last failure, with its kind (e.g. 'limit-exceeded'). */
  failure: VzFailure | undefined;
  private stopWanted = false;
  /** Bumped on every start, so a deferred reaction to an old run never ends a new one. */
  private run = 0;
  private readonly exitWaiters: Array<() => void> = [];

  constructor(private readonly vm: VzMachineHandle, private readonly opts: RunnerOptions = {}) {
    super();
    vm.on('guestStopped', () => this.ended('stopped', this.stopWanted ? 'stopped' : 'guest powered off'));
    vm.on('stoppedWithError', (e) => {
      this.failure = mapVzError(e, 'VM');
      this.ended('failed', this.failure.message);
    });
    vm.on('state', (s: VzNativeState) => this.onNative(s));
  }

  async start(opts: { recovery?: boolean } = {}): Promise<void> {
    if (this.state === 'running' || this.state === 'starting') return;
    this.stopWanted = false;
    this.failure = undefined;
    this.paused = false;
    this.run++;
    this.set('starting', undefined);
    try {
      await this.vm.start(opts);
    } catch (e) {
      this.failure = mapVzError(e, 'start');
      this.set('failed', this.failure.message);
      throw new Error(this.failure.message);
    }
    if ((this.state as HostState) === 'starting') this.set('running', undefined);
  }

  /** Graceful stop, hard after the timeout. Resolves once the VM is stopped (or failed). */
  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'failed') return;
    this.stopWanted = true;
    this.set('stopping', undefined);
    const timeout = this.opts.stopTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeout)));
    const requested = this.vm.requestStop().then(
      () => true,
      () => false, // not running (e.g. paused): go straight to the hard stop
    );
    if (await requested) {
      const done = await Promise.race([this.exited().then(() => false), timedOut]);
      clearTimeout(timer);
      if (!done) return;
      this.message = `guest did not power off within ${timeout} ms: stopped hard`;
    }
    clearTimeout(timer);
    await this.hardStop(this.message ?? 'stopped');
  }

  /** Hard stop now; `reason` becomes the final message (default "killed"). */
  async kill(reason = 'killed'): Promise<void> {
    if (this.state === 'stopped' || this.state === 'failed') return;
    this.stopWanted = true;
    this.set('stopping', undefined);
    await this.hardStop(reason);
  }

  async pause(): Promise<void> {
    if (this.state !== 'running') throw new Error(`cannot pause: the VM is ${this.state}`);
    if (this.paused) return;
    try {
      await this.vm.pause();
    } catch (e) {
      throw new Error(mapVzError(e, 'pause').message);
    }
    this.paused = true;
    this.emit('state', this.state, this.message);
  }

  async resume(): Promise<void> {
    if (this.state !== 'running') throw new Error(`cannot resume: the VM is ${this.state}`);
    if (!this.paused) return;
    try {
      await this.vm.resume();
    } catch (e) {
      throw new Error(mapVzError(e, 'resume').message);
    }
    this.paused = false;
    this.emit('state', this.state, this.message);
  }

  /** Resolves once the VM has ended (stopped or failed). */
  exited(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'failed') return Promise.resolve();
    return new Promise((r) => this.exitWaiters.push(r));
  }

  private async hardStop(message: string): Promise<void> {
    const exited = this.exited();
    try {
      await this.vm.stop();
    } catch (e) {
      // Already stopped underneath us (guest powered off at the same moment) is fine.
      if (this.vm.state() !== 'stopped') {
        this.failure = mapVzError(e, 'stop');
        this.ended('failed', this.failure.message);
        return;
      }
    }
    this.ended('stopped', message);
    await exited;
  }

  private onNative(s: VzNativeState): void {
    if (s === 'paused') this.paused = true;
    else if (s === 'running') this.paused = false;
    const run = this.run;
    const later = (fn: () => void): void => void setImmediate(() => run === this.run && fn());
    if (s === 'error') {
      // didStopWithError (with the reason) usually follows this KVO change: give it the chance.
      later(() => this.ended('failed', this.failure?.message ?? 'Virtualization.framework reported the VM in the error state'));
    } else if (s === 'stopped' && (this.state === 'running' || this.state === 'stopping')) {
      // guestStopped / the hard stop's completion name the cause; this covers a stop without either.
      later(() => this.ended('stopped', this.stopWanted ? (this.message ?? 'stopped') : 'guest powered off'));
    }
  }

  private ended(state: 'stopped' | 'failed', message: string): void {
    if (this.state === 'stopped' || this.state === 'failed') return;
    this.paused = false;
    this.set(state, message);
    for (const w of this.exitWaiters.splice(0)) w();
  }

  private set(state: HostState, message: string | undefined): void {
    this.state = state;
    this.message = message;
    this.emit('state', state, message);
  }
}
