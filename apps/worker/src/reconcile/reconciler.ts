// Desired vs actual. The controller sends the complete set of VM instances it wants on
// this worker (level-triggered); the reconciler drives the driver until what runs matches,
// and reports every change as a VmStatus.
//
// Rules (instance key = (vmId, attempt)):
// - vmId wanted, no instance            → create; start it if desiredPower is RUNNING.
// - instance of another attempt          → stop + remove it (report GONE for that attempt), then create.
// - same attempt, newer generation       → stop if active, apply the spec, report observedGeneration.
// - desiredPower STOPPED and active      → stop.   RUNNING and not running → start.
// - vmId no longer wanted                → stop + remove, report GONE, forget.
// - FAILED is terminal for an attempt: kept (and reported) until the controller drops it
//   or moves to a new attempt. Restart policy belongs to the controller.
// - GONE is reported only after the driver confirmed removal (it frees controller capacity).
//   An assignment withdrawn before the worker got round to creating it is reported GONE too
//   (the worker holds nothing for it), so the controller never waits for it.
// - An instance that crashes or powers off on its own while no operation is in flight is FAILED.
// - One operation per vmId at a time; different vmIds run in parallel up to `concurrency`.
// - Fencing (issue 12): while the lease from the controller is expired, every starting/running
//   instance whose disconnect policy is "reschedule" (empty = reschedule) is killed at once (no
//   graceful shutdown: the controller re-places it a few seconds later) and reported STOPPED
//   with "fenced: no lease from the controller for <n>s (disconnect policy reschedule)"; no
//   reschedule instance is started. "wait" instances are untouched. This holds before the first
//   desired state too (a restarted worker with an expired lease). Once the lease is renewed the
//   desired state decides again (e.g. started again). An operation already in flight on a VM
//   finishes first (VM host processes fence themselves within ~300 ms regardless).
import { PowerState, VmPhase, type DesiredState__Output, type VmAssignment__Output, type VmStatus, type WorkerEvent } from '@fleet/proto';
import type { Logger } from 'pino';
import {
  disconnectPolicyOf,
  FENCED_PREFIX,
  instanceKey,
  type DisconnectPolicy,
  type Driver,
  type InstanceRef,
  type InstanceSpec,
  type InstanceState,
  type InstanceStatus,
  type NetworkMode,
  type PulledImage,
} from '../drivers/driver.ts';
import { seconds } from '../fencing/lease-file.ts';
import type { LeaseView } from '../fencing/lease.ts';
import { KeyedRunner } from './keyed-runner.ts';

export type Phase = (typeof VmPhase)[keyof typeof VmPhase];

export interface ReconcilerOptions {
  driver: Driver;
  logger: Logger;
  /** Operations on different VMs running at once (default 8). */
  concurrency?: number;
  /** Called for every change of an instance's reported status. */
  onStatus?: (status: VmStatus) => void;
  /** Called for notable happenings (failures) worth a controller-side event. */
  onEvent?: (event: WorkerEvent) => void;
  now?: () => number;
  /** The worker's lease from the controller (fencing/lease.ts); absent = never fenced. Call leaseChanged() when it expires or is renewed. */
  lease?: LeaseView;
  /** The image cache (issue 15): registry images are pulled through it before their instance is created. */
  images?: ImageSource;
}

/** What the reconciler needs of the image cache (images/image-cache.ts). */
export interface ImageSource {
  acquire(request: { reference: string; access: RegistryAccessInput }, onProgress?: (p: { bytesDone: number; bytesTotal: number }) => void): Promise<{ image: PulledImage; release: () => void }>;
}

type RegistryAccessInput = { insecure?: boolean; caPem?: string; username?: string; password?: string };

/** How often a pull's progress is reported at most (the controller shows it as "pulling 37 %"). */
const PULL_PROGRESS_INTERVAL_MS = 1000;

interface Instance {
  vmId: string;
  attempt: number;
  name: string;
  phase: Phase;
  observedGeneration: string;
  ip: string;
  mac: string;
  message: string;
  changedAtUnixMs: number;
  /** From the assignment that created it, or from the driver for adopted instances. */
  disconnectPolicy: DisconnectPolicy;
  /** While its image is being pulled (before the driver creates it). */
  pull?: { bytesDone: number; bytesTotal: number } | undefined;
}

interface InstancePatch {
  name?: string;
  phase?: Phase;
  observedGeneration?: string;
  ip?: string;
  mac?: string;
  message?: string;
}

const ACTIVE: ReadonlySet<Phase> = new Set<Phase>([VmPhase.VM_PHASE_STARTING, VmPhase.VM_PHASE_RUNNING, VmPhase.VM_PHASE_STOPPING]);

const PHASE_OF_STATE: Record<InstanceState, Phase> = {
  stopped: VmPhase.VM_PHASE_STOPPED,
  starting: VmPhase.VM_PHASE_STARTING,
  running: VmPhase.VM_PHASE_RUNNING,
  stopping: VmPhase.VM_PHASE_STOPPING,
  failed: VmPhase.VM_PHASE_FAILED,
};

export class Reconciler {
  readonly #driver: Driver;
  readonly #log: Logger;
  readonly #onStatus: (status: VmStatus) => void;
  readonly #onEvent: (event: WorkerEvent) => void;
  readonly #now: () => number;
  readonly #lease: LeaseView | undefined;
  readonly #images: ImageSource | undefined;
  /** Pulls waited for by a reconcile step, aborted when that VM's assignment changes. */
  readonly #pullWaits = new Map<string, { key: string; abort: AbortController }>();
  readonly #runner: KeyedRunner;
  /** vmId → attempt → instance. Usually one attempt per vmId; leftovers are possible after crashes. */
  readonly #instances = new Map<string, Map<number, Instance>>();
  #desired: Map<string, VmAssignment__Output> | undefined;
  #desiredRevision: string | undefined;
  #unsubscribe: (() => void) | undefined;
  #closed = false;
  /** Assignments the controller withdrew (vmId#attempt) whose GONE is still to be reported. */
  readonly #withdrawn = new Map<string, VmAssignment__Output>();
  /** Instances (vmId#attempt) with a driver operation in flight. */
  readonly #busy = new Set<string>();

  constructor(options: ReconcilerOptions) {
    this.#driver = options.driver;
    this.#log = options.logger;
    this.#onStatus = options.onStatus ?? (() => {});
    this.#onEvent = options.onEvent ?? (() => {});
    this.#now = options.now ?? Date.now;
    this.#lease = options.lease;
    this.#images = options.images;
    this.#runner = new KeyedRunner({
      concurrency: options.concurrency ?? 8,
      run: (vmId) => this.#reconcileVm(vmId),
      onError: (vmId, error) => this.#log.error({ err: error, vmId }, 'reconcile step crashed'),
    });
  }

  /** Re-attaches to whatever the driver already holds. Call once, before connecting. */
  async adopt(): Promise<void> {
    this.#unsubscribe ??= this.#driver.subscribe((status) => this.#onDriverStatus(status));
    const existing = await this.#driver.list();
    for (const status of existing) {
      if (this.#get(status.vmId, status.attempt)) continue;
      this.#put({
        vmId: status.vmId,
        attempt: status.attempt,
        name: status.name,
        phase: PHASE_OF_STATE[status.state],
        observedGeneration: status.generation,
        ip: status.ip ?? '',
        mac: status.mac ?? '',
        message: status.message ?? '',
        changedAtUnixMs: this.#now(),
        disconnectPolicy: disconnectPolicyOf(status.disconnectPolicy),
      }, false); // reported by the next Hello
    }
    if (existing.length > 0) this.#log.info({ instances: existing.length, driver: this.#driver.name }, 're-attached to existing VM instances');
    // A worker restarted after its lease ran out fences what it found, before any desired state.
    if (this.#leaseExpired()) this.leaseChanged();
  }

  /**
   * The lease expired or was renewed: re-runs every VM held or wanted. Expired → reschedule
   * instances are fenced (even before the first desired state); renewed → the desired state decides.
   */
  leaseChanged(): void {
    if (this.#closed) return;
    const vmIds = new Set<string>(this.#instances.keys());
    if (this.#desired) for (const vmId of this.#desired.keys()) vmIds.add(vmId);
    for (const old of this.#withdrawn.values()) vmIds.add(old.vmId);
    for (const vmId of vmIds) this.#runner.trigger(vmId);
  }

  /** Replaces the desired set (a full DesiredState) and reconciles everything it touches. */
  setDesired(state: DesiredState__Output): void {
    const desired = new Map<string, VmAssignment__Output>();
    for (const assignment of state.vms) {
      const previous = desired.get(assignment.vmId);
      if (previous && previous.attempt > assignment.attempt) continue; // defensive: keep the newest attempt
      desired.set(assignment.vmId, assignment);
    }
    const previous = this.#desired;
    if (previous) {
      for (const [vmId, old] of previous) {
        const now = desired.get(vmId);
        if (!now || now.attempt !== old.attempt) this.#withdrawn.set(assignmentRef(old), old);
      }
    }
    for (const assignment of desired.values()) this.#withdrawn.delete(assignmentRef(assignment));
    // A step waiting for a pull lets go as soon as its VM is withdrawn or changed (the pull goes on for the cache).
    for (const [vmId, wait] of this.#pullWaits) {
      const now = desired.get(vmId);
      if (!now || assignmentKey(now) !== wait.key) wait.abort.abort();
    }
    this.#desired = desired;
    this.#desiredRevision = state.revision;
    this.#log.debug({ revision: state.revision, vms: desired.size }, 'desired state received');
    this.reconcileAll();
  }

  /** Safety net: re-runs reconciliation for every wanted or held VM. No-op before the first desired state. */
  reconcileAll(): void {
    if (!this.#desired || this.#closed) return;
    const vmIds = new Set<string>(this.#desired.keys());
    for (const vmId of this.#instances.keys()) vmIds.add(vmId);
    for (const old of this.#withdrawn.values()) vmIds.add(old.vmId);
    for (const vmId of vmIds) this.#runner.trigger(vmId);
  }

  get hasDesiredState(): boolean {
    return this.#desired !== undefined;
  }

  get desiredRevision(): string | undefined {
    return this.#desiredRevision;
  }

  /** Status of every instance held (for Hello). */
  snapshot(): VmStatus[] {
    const out: VmStatus[] = [];
    for (const byAttempt of this.#instances.values()) for (const instance of byAttempt.values()) out.push(toVmStatus(instance));
    return out;
  }

  runningCount(): number {
    let count = 0;
    for (const byAttempt of this.#instances.values()) {
      for (const instance of byAttempt.values()) if (instance.phase === VmPhase.VM_PHASE_RUNNING) count++;
    }
    return count;
  }

  /** Resolves once no reconcile step is running or queued. */
  idle(): Promise<void> {
    return this.#runner.idle();
  }

  /** Stops reconciling (waits for in-flight operations); leaves instances as they are. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#runner.close();
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
  }

  // ------------------------------------------------------------------ per-VM step

  async #reconcileVm(vmId: string): Promise<void> {
    if (this.#closed) return;
    if (this.#leaseExpired()) {
      for (const instance of this.#attemptsOf(vmId)) {
        if ((instance.phase === VmPhase.VM_PHASE_STARTING || instance.phase === VmPhase.VM_PHASE_RUNNING) && this.#policyOf(instance) === 'reschedule') {
          await this.#fence(instance);
          if (this.#closed) return;
        }
      }
    }
    if (!this.#desired) return;
    const want = this.#desired.get(vmId);
    const wantKey = want && assignmentKey(want);
    const stale = (): boolean => {
      if (this.#closed) return true;
      const now = this.#desired?.get(vmId);
      return (now && assignmentKey(now)) !== wantKey;
    };

    for (const instance of this.#attemptsOf(vmId)) {
      if (want && instance.attempt === want.attempt) continue;
      await this.#destroy(instance, want ? `replaced by attempt ${want.attempt}` : 'no longer desired');
      if (stale()) return;
    }
    this.#reportWithdrawn(vmId);
    if (!want) return;

    let instance = this.#get(vmId, want.attempt);
    if (!instance) {
      instance = await this.#create(want);
      if (!instance || stale()) return;
    }
    if (instance.phase === VmPhase.VM_PHASE_FAILED) return;

    if (BigInt(want.generation || '0') > BigInt(instance.observedGeneration || '0')) {
      await this.#applySpec(instance, want);
      if (stale() || phaseOf(instance) === VmPhase.VM_PHASE_FAILED) return;
    }

    if (want.desiredPower === PowerState.POWER_STATE_RUNNING) {
      if (instance.phase !== VmPhase.VM_PHASE_RUNNING) {
        if (this.#mayNotStart(want)) this.#heldByFence(instance);
        else await this.#start(instance);
      }
    } else if (want.desiredPower === PowerState.POWER_STATE_STOPPED) {
      if (instance.phase !== VmPhase.VM_PHASE_STOPPED) await this.#stop(instance);
    }
    // POWER_STATE_UNSPECIFIED: no opinion, leave the power state alone.
  }

  async #create(want: VmAssignment__Output): Promise<Instance | undefined> {
    const ref = { vmId: want.vmId, attempt: want.attempt };
    const startNow = want.desiredPower === PowerState.POWER_STATE_RUNNING && !this.#mayNotStart(want);
    const base: Instance = {
      ...ref,
      name: want.name,
      phase: startNow ? VmPhase.VM_PHASE_STARTING : VmPhase.VM_PHASE_STOPPED,
      observedGeneration: want.generation,
      ip: '',
      mac: '',
      message: '',
      changedAtUnixMs: this.#now(),
      disconnectPolicy: disconnectPolicyOf(want.disconnectPolicy),
    };
    const problem = this.#validate(want);
    if (problem) {
      this.#put({ ...base, phase: VmPhase.VM_PHASE_FAILED, message: problem });
      this.#failedEvent(ref, problem);
      return undefined;
    }
    // Report STARTING at once when the VM will run, so the controller sees it was taken up.
    if (startNow || want.imagePull?.reference) this.#put(base);
    let pulled: { image: PulledImage; release: () => void } | undefined;
    try {
      pulled = await this.#pullImage(ref, want);
    } catch (error) {
      const instance = this.#get(ref.vmId, ref.attempt);
      if (error instanceof PullWithdrawn) {
        if (instance) this.#delete(instance); // nothing was created; the withdrawal is reported GONE
        return undefined;
      }
      const message = `image pull failed: ${errorMessage(error)}`;
      if (instance) this.#update(instance, { phase: VmPhase.VM_PHASE_FAILED, message });
      else this.#put({ ...base, phase: VmPhase.VM_PHASE_FAILED, message });
      this.#failedEvent(ref, message);
      return undefined;
    }
    try {
      const spec = { ...toInstanceSpec(want), ...(pulled ? { pulled: pulled.image } : {}) };
      const status = await this.#op(ref, () => this.#driver.create({ ...ref, name: want.name, generation: want.generation, spec })).finally(() => pulled?.release());
      const instance = this.#get(ref.vmId, ref.attempt);
      if (instance) {
        this.#update(instance, { mac: status.mac ?? '' });
        return instance;
      }
      this.#put({ ...base, mac: status.mac ?? '' });
      return this.#get(ref.vmId, ref.attempt);
    } catch (error) {
      const message = `create failed: ${errorMessage(error)}`;
      const instance = this.#get(ref.vmId, ref.attempt);
      if (instance) this.#update(instance, { phase: VmPhase.VM_PHASE_FAILED, message });
      else this.#put({ ...base, phase: VmPhase.VM_PHASE_FAILED, message });
      this.#failedEvent(ref, message);
      return undefined;
    }
  }

  async #start(instance: Instance): Promise<void> {
    this.#update(instance, { phase: VmPhase.VM_PHASE_STARTING, message: '' });
    try {
      const status = await this.#op(instance, () => this.#driver.start(instance));
      this.#update(instance, { phase: VmPhase.VM_PHASE_RUNNING, ...network(status), message: '' });
    } catch (error) {
      const message = `start failed: ${errorMessage(error)}`;
      this.#update(instance, { phase: VmPhase.VM_PHASE_FAILED, ip: '', message });
      this.#failedEvent(instance, message);
    }
  }

  async #stop(instance: Instance): Promise<void> {
    this.#update(instance, { phase: VmPhase.VM_PHASE_STOPPING });
    try {
      const status = await this.#op(instance, () => this.#driver.stop(instance));
      this.#update(instance, { phase: VmPhase.VM_PHASE_STOPPED, ...network(status), ip: '', message: '' });
    } catch (error) {
      const message = `stop failed: ${errorMessage(error)}`;
      this.#update(instance, { phase: VmPhase.VM_PHASE_FAILED, message });
      this.#failedEvent(instance, message);
    }
  }

  /** Kills a reschedule instance at once because the lease ran out; reported STOPPED "fenced: …". */
  async #fence(instance: Instance): Promise<void> {
    const message = this.#fenceMessage();
    this.#log.warn({ vmId: instance.vmId, attempt: instance.attempt, noLeaseForMs: Math.round(this.#lease?.noLeaseForMs() ?? 0) }, 'fencing VM instance: no lease from the controller');
    this.#update(instance, { phase: VmPhase.VM_PHASE_STOPPING, message });
    try {
      const status = await this.#op(instance, () => this.#driver.kill(instance, message));
      this.#update(instance, { phase: VmPhase.VM_PHASE_STOPPED, ...network(status), ip: '', message });
      this.#event(instance, 'vm.fenced', 'warn', message);
    } catch (error) {
      const failure = `fencing failed: ${errorMessage(error)}`;
      this.#update(instance, { phase: VmPhase.VM_PHASE_FAILED, ip: '', message: failure });
      this.#failedEvent(instance, failure);
    }
  }

  /** A reschedule VM that should run but may not start while the lease is expired: says why. */
  #heldByFence(instance: Instance): void {
    if (instance.phase === VmPhase.VM_PHASE_STOPPED && !instance.message.startsWith(FENCED_PREFIX)) {
      this.#update(instance, { message: this.#fenceMessage() });
    }
  }

  #leaseExpired(): boolean {
    return this.#lease?.expired ?? false;
  }

  #mayNotStart(want: VmAssignment__Output): boolean {
    return this.#leaseExpired() && disconnectPolicyOf(want.disconnectPolicy) === 'reschedule';
  }

  /** The current assignment's policy for this very attempt, else the one the instance was made with. */
  #policyOf(instance: Instance): DisconnectPolicy {
    const want = this.#desired?.get(instance.vmId);
    if (want && want.attempt === instance.attempt) return disconnectPolicyOf(want.disconnectPolicy);
    return instance.disconnectPolicy;
  }

  #fenceMessage(): string {
    return `${FENCED_PREFIX} no lease from the controller for ${seconds(this.#lease?.noLeaseForMs() ?? 0)}s (disconnect policy reschedule)`;
  }

  async #applySpec(instance: Instance, want: VmAssignment__Output): Promise<void> {
    const problem = this.#validate(want);
    if (problem) {
      this.#update(instance, { phase: VmPhase.VM_PHASE_FAILED, message: problem });
      this.#failedEvent(instance, problem);
      return;
    }
    this.#log.debug({ vmId: instance.vmId, attempt: instance.attempt, from: instance.observedGeneration, to: want.generation }, 'applying new spec generation');
    if (instance.phase !== VmPhase.VM_PHASE_STOPPED) {
      await this.#stop(instance);
      if (phaseOf(instance) !== VmPhase.VM_PHASE_STOPPED) return;
    }
    let pulled: { image: PulledImage; release: () => void } | undefined;
    try {
      pulled = await this.#pullImage(instance, want);
    } catch (error) {
      if (error instanceof PullWithdrawn) return;
      const message = `image pull for generation ${want.generation} failed: ${errorMessage(error)}`;
      this.#update(instance, { phase: VmPhase.VM_PHASE_FAILED, message });
      this.#failedEvent(instance, message);
      return;
    }
    try {
      const spec = { ...toInstanceSpec(want), ...(pulled ? { pulled: pulled.image } : {}) };
      const status = await this.#op(instance, () => this.#driver.update({ vmId: instance.vmId, attempt: instance.attempt, generation: want.generation, spec })).finally(() => pulled?.release());
      this.#update(instance, { observedGeneration: status.generation || want.generation, name: want.name });
    } catch (error) {
      const message = `applying generation ${want.generation} failed: ${errorMessage(error)}`;
      this.#update(instance, { phase: VmPhase.VM_PHASE_FAILED, message });
      this.#failedEvent(instance, message);
    }
  }

  /** Stops and removes an instance; reports GONE only once the driver confirmed removal. */
  async #destroy(instance: Instance, reason: string): Promise<void> {
    this.#log.debug({ vmId: instance.vmId, attempt: instance.attempt, reason }, 'removing VM instance');
    if (ACTIVE.has(instance.phase)) {
      this.#update(instance, { phase: VmPhase.VM_PHASE_STOPPING });
    }
    if (instance.phase !== VmPhase.VM_PHASE_STOPPED) {
      const wasActive = ACTIVE.has(instance.phase);
      try {
        await this.#op(instance, () => this.#driver.stop(instance));
      } catch (error) {
        // remove() must force whatever is left; only its failure keeps the instance.
        this.#log[wasActive ? 'warn' : 'debug']({ err: error, vmId: instance.vmId, attempt: instance.attempt }, 'stop before remove failed');
      }
    }
    try {
      await this.#op(instance, () => this.#driver.remove(instance));
    } catch (error) {
      const message = `remove failed (will retry): ${errorMessage(error)}`;
      this.#update(instance, { phase: VmPhase.VM_PHASE_FAILED, message });
      this.#failedEvent(instance, message);
      return;
    }
    this.#update(instance, { phase: VmPhase.VM_PHASE_GONE, ip: '', message: reason });
    this.#delete(instance);
    this.#withdrawn.delete(instanceKey(instance));
  }

  /** GONE for withdrawn assignments of `vmId` that never became an instance here. */
  #reportWithdrawn(vmId: string): void {
    for (const [key, old] of this.#withdrawn) {
      if (old.vmId !== vmId || this.#get(old.vmId, old.attempt)) continue;
      this.#withdrawn.delete(key);
      this.#emitStatus({
        vmId: old.vmId,
        attempt: old.attempt,
        phase: VmPhase.VM_PHASE_GONE,
        observedGeneration: old.generation,
        ip: '',
        mac: '',
        message: 'withdrawn before the worker created it',
        changedAtUnixMs: String(this.#now()),
      });
    }
  }

  /**
   * The assignment's registry image from the image cache (pulled if needed), pinned until released;
   * undefined for local images. Progress is reported on the instance. Rejects with PullWithdrawn
   * when the assignment changes meanwhile.
   */
  async #pullImage(ref: InstanceRef, want: VmAssignment__Output): Promise<{ image: PulledImage; release: () => void } | undefined> {
    const pull = want.imagePull;
    if (!pull?.reference) return undefined;
    if (!this.#images || !this.#driver.imageFormats?.length) {
      throw new Error(`this worker's driver "${this.#driver.name}" cannot run registry images (${pull.reference})`);
    }
    const access: RegistryAccessInput = pull.access ?? {};
    const abort = new AbortController();
    this.#pullWaits.set(ref.vmId, { key: assignmentKey(want), abort });
    let last = 0;
    let lastPercent = -1;
    const report = (p: { bytesDone: number; bytesTotal: number }, force = false): void => {
      const instance = this.#get(ref.vmId, ref.attempt);
      if (!instance) return;
      const now = this.#now();
      // At most once a second, unless it moved by 10 points (a fast pull still shows its steps).
      const percent = percentOf(p);
      if (!force && now - last < PULL_PROGRESS_INTERVAL_MS && percent < lastPercent + 10) return;
      last = now;
      lastPercent = percent;
      instance.pull = { bytesDone: p.bytesDone, bytesTotal: p.bytesTotal };
      instance.changedAtUnixMs = now;
      instance.message = `pulling image ${pull.reference}: ${percentOf(p)} %`;
      this.#emit(instance);
    };
    report({ bytesDone: 0, bytesTotal: 0 }, true);
    try {
      const acquiring = this.#images.acquire(
        { reference: pull.reference, access: { insecure: access.insecure ?? false, caPem: access.caPem ?? '', username: access.username ?? '', password: access.password ?? '' } },
        (p) => report(p),
      );
      const withdrawn = new Promise<never>((_, reject) => abort.signal.addEventListener('abort', () => reject(new PullWithdrawn()), { once: true }));
      try {
        return await Promise.race([acquiring, withdrawn]);
      } catch (error) {
        // Withdrawn: the pull goes on for the cache; its pin is let go once it ends.
        if (error instanceof PullWithdrawn) void acquiring.then((got) => got.release(), () => {});
        throw error;
      }
    } finally {
      if (this.#pullWaits.get(ref.vmId)?.abort === abort) this.#pullWaits.delete(ref.vmId);
      const instance = this.#get(ref.vmId, ref.attempt);
      if (instance?.pull) {
        instance.pull = undefined;
        if (instance.message.startsWith('pulling image ')) instance.message = '';
        instance.changedAtUnixMs = this.#now();
        this.#emit(instance);
      }
    }
  }

  #validate(want: VmAssignment__Output): string | undefined {
    if (!want.spec) return 'assignment carries no VM spec';
    const driver = want.spec.driver;
    if (driver && driver !== this.#driver.name) {
      return `driver "${driver}" is not available on this worker (it runs "${this.#driver.name}")`;
    }
    const os = want.spec.os;
    if (os && !this.#driver.capabilities.guestOs.includes(os)) {
      return `driver "${this.#driver.name}" cannot run ${os} guests`;
    }
    return undefined;
  }

  /** Runs one driver operation on an instance, marking it busy meanwhile. */
  async #op<T>(ref: InstanceRef, operation: () => Promise<T>): Promise<T> {
    const key = instanceKey(ref);
    this.#busy.add(key);
    try {
      return await operation();
    } finally {
      this.#busy.delete(key);
    }
  }

  // ------------------------------------------------------------------ driver events

  #onDriverStatus(status: InstanceStatus): void {
    const instance = this.#get(status.vmId, status.attempt);
    if (!instance || instance.phase === VmPhase.VM_PHASE_GONE) return;
    const patch: InstancePatch = network(status);
    // While an operation runs on the instance, its result decides the phase.
    if (!this.#busy.has(instanceKey(status))) {
      // Nobody asked for this transition: it happened to the VM.
      if (status.state === 'failed' && instance.phase !== VmPhase.VM_PHASE_FAILED) {
        patch.phase = VmPhase.VM_PHASE_FAILED;
        patch.ip = '';
        patch.message = status.message || 'VM failed';
      } else if (status.state === 'stopped' && (instance.phase === VmPhase.VM_PHASE_RUNNING || instance.phase === VmPhase.VM_PHASE_STARTING)) {
        patch.ip = '';
        if (status.message?.startsWith(FENCED_PREFIX) || (this.#leaseExpired() && this.#policyOf(instance) === 'reschedule')) {
          // Its VM host process fenced it (the lease file ran out): stopped, as the worker would have.
          patch.phase = VmPhase.VM_PHASE_STOPPED;
          patch.message = status.message?.startsWith(FENCED_PREFIX) ? status.message : this.#fenceMessage();
          this.#event(instance, 'vm.fenced', 'warn', patch.message);
        } else {
          patch.phase = VmPhase.VM_PHASE_FAILED;
          patch.message = `VM stopped outside Fleet's control${status.message ? `: ${status.message}` : ''}`;
        }
      } else if (status.state === 'running' && instance.phase === VmPhase.VM_PHASE_STOPPED) {
        patch.phase = VmPhase.VM_PHASE_RUNNING;
        this.#runner.trigger(status.vmId); // stop it again if it should be stopped
      }
      if (patch.phase === VmPhase.VM_PHASE_FAILED) this.#failedEvent(instance, patch.message ?? 'VM failed');
    }
    this.#update(instance, patch);
  }

  // ------------------------------------------------------------------ table

  #attemptsOf(vmId: string): Instance[] {
    const byAttempt = this.#instances.get(vmId);
    return byAttempt ? [...byAttempt.values()] : [];
  }

  #get(vmId: string, attempt: number): Instance | undefined {
    return this.#instances.get(vmId)?.get(attempt);
  }

  #put(instance: Instance, emit = true): void {
    let byAttempt = this.#instances.get(instance.vmId);
    if (!byAttempt) {
      byAttempt = new Map();
      this.#instances.set(instance.vmId, byAttempt);
    }
    byAttempt.set(instance.attempt, instance);
    if (emit) this.#emit(instance);
  }

  #delete(instance: Instance): void {
    const byAttempt = this.#instances.get(instance.vmId);
    if (!byAttempt || byAttempt.get(instance.attempt) !== instance) return;
    byAttempt.delete(instance.attempt);
    if (byAttempt.size === 0) this.#instances.delete(instance.vmId);
  }

  #update(instance: Instance, patch: InstancePatch): void {
    let changed = false;
    for (const [key, value] of Object.entries(patch) as Array<[keyof Instance, string | undefined]>) {
      if (value === undefined || instance[key] === value) continue;
      (instance as unknown as Record<string, unknown>)[key] = value;
      changed = true;
    }
    if (!changed) return;
    instance.changedAtUnixMs = this.#now();
    this.#emit(instance);
  }

  #emit(instance: Instance): void {
    if (instance.phase === VmPhase.VM_PHASE_FAILED) {
      this.#log.warn({ vmId: instance.vmId, attempt: instance.attempt, driver: this.#driver.name, message: instance.message }, 'VM instance failed');
    }
    this.#emitStatus(toVmStatus(instance));
  }

  #emitStatus(status: VmStatus): void {
    try {
      this.#onStatus(status);
    } catch (error) {
      this.#log.error({ err: error }, 'status listener threw');
    }
  }

  #failedEvent(ref: InstanceRef, message: string): void {
    this.#event(ref, 'vm.failed', 'error', message);
  }

  #event(ref: InstanceRef, kind: string, level: 'info' | 'warn' | 'error', message: string): void {
    try {
      this.#onEvent({ vmId: ref.vmId, kind, level, message: `attempt ${ref.attempt}: ${message}`, atUnixMs: String(this.#now()) });
    } catch (error) {
      this.#log.error({ err: error }, 'event listener threw');
    }
  }
}

/** Reads the phase without TypeScript's narrowing (it changes across awaits). */
function phaseOf(instance: Instance): Phase {
  return instance.phase;
}

function assignmentRef(a: VmAssignment__Output): string {
  return instanceKey({ vmId: a.vmId, attempt: a.attempt });
}

function assignmentKey(a: VmAssignment__Output): string {
  return `${a.attempt}/${a.generation}/${a.desiredPower}`;
}

function network(status: InstanceStatus): InstancePatch {
  return { ip: status.ip ?? '', ...(status.mac ? { mac: status.mac } : {}) };
}

export function toVmStatus(instance: Instance): VmStatus {
  return {
    vmId: instance.vmId,
    attempt: instance.attempt,
    phase: instance.phase,
    observedGeneration: instance.observedGeneration,
    ip: instance.ip,
    mac: instance.mac,
    message: instance.message,
    changedAtUnixMs: String(instance.changedAtUnixMs),
    ...(instance.pull ? { pull: { bytesDone: String(instance.pull.bytesDone), bytesTotal: String(instance.pull.bytesTotal) } } : {}),
  };
}

/** A step stopped waiting for a pull because its VM's assignment changed. */
class PullWithdrawn extends Error {
  constructor() {
    super('the assignment changed while its image was being pulled');
  }
}

function percentOf(p: { bytesDone: number; bytesTotal: number }): number {
  return p.bytesTotal > 0 ? Math.min(100, Math.floor((p.bytesDone / p.bytesTotal) * 100)) : 0;
}

export function toInstanceSpec(want: VmAssignment__Output): InstanceSpec {
  const spec = want.spec;
  return {
    image: spec?.image ?? '',
    os: spec?.os ?? '',
    cpus: spec?.cpus ?? 0,
    memoryMib: Number(spec?.memoryMib ?? 0),
    diskGib: spec?.diskGib ?? 0,
    labels: { ...(spec?.labels ?? {}) },
    username: spec?.username ?? '',
    disconnectPolicy: disconnectPolicyOf(want.disconnectPolicy),
    authorizedKeys: [...(spec?.authorizedKeys ?? [])],
    network: {
      allow: [...(spec?.network?.allow ?? [])],
      block: [...(spec?.network?.block ?? [])],
      blockLocal: spec?.network?.blockLocal ?? false,
      ...networkModeField(spec?.network?.mode),
    },
    ...(spec?.mac ? { mac: spec.mac.toLowerCase() } : {}),
  };
}

/** The wire's mode ("" = nat); an unknown one is kept as is so the driver refuses it clearly. */
function networkModeField(mode: string | undefined): { mode?: NetworkMode } {
  if (!mode || mode === 'nat') return {};
  return { mode: mode as NetworkMode };
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
