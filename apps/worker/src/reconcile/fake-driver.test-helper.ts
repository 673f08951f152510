// A scriptable in-test driver: records every operation, checks that no two operations
// on one vmId overlap, and lets a test hold an operation open or make it fail.
import {
  DriverError,
  type CreateInstanceRequest,
  type Driver,
  type InstanceRef,
  type InstanceSpec,
  type InstanceState,
  type InstanceStatus,
  type InstanceStatusListener,
  type UpdateInstanceRequest,
  disconnectPolicyOf,
} from '../drivers/driver.ts';

type Op = 'create' | 'start' | 'stop' | 'kill' | 'update' | 'remove';

interface FakeInstance {
  vmId: string;
  attempt: number;
  name: string;
  generation: string;
  spec: InstanceSpec;
  state: InstanceState;
  ip?: string | undefined;
  mac: string;
  message?: string | undefined;
}

export class FakeDriver implements Driver {
  readonly name = 'fake';
  readonly capabilities = { guestOs: ['linux', 'macos'], maxMacosGuests: 2 };
  readonly instances = new Map<string, FakeInstance>();
  /** "op vmId#attempt" in call order. */
  readonly ops: string[] = [];
  maxConcurrentPerVm = 0;
  maxConcurrentTotal = 0;
  readonly #activePerVm = new Map<string, number>();
  #activeTotal = 0;
  readonly #listeners = new Set<InstanceStatusListener>();
  readonly #holds = new Map<string, { promise: Promise<void>; release: () => void }>();
  readonly #failures = new Map<string, string>();
  #nextIp = 10;

  /** Makes the next `op` on vmId wait until the returned function is called. */
  hold(op: Op, vmId: string): () => void {
    let release!: () => void;
    const promise = new Promise<void>((resolve) => (release = resolve));
    this.#holds.set(`${op} ${vmId}`, { promise, release });
    return release;
  }

  /** Makes the next `op` on vmId fail with `message`. */
  failNext(op: Op, vmId: string, message: string): void {
    this.#failures.set(`${op} ${vmId}`, message);
  }

  /** Simulates something happening to the VM by itself (crash, guest shutdown). */
  happen(ref: InstanceRef, state: InstanceState, message?: string): void {
    const instance = this.instances.get(key(ref));
    if (!instance) throw new Error('no such instance');
    instance.state = state;
    if (state !== 'running') instance.ip = undefined;
    this.#emit(instance, message);
  }

  /** Pre-existing instance, as a re-attaching driver would find it. */
  seed(ref: InstanceRef & { state: InstanceState; generation?: string; disconnectPolicy?: 'reschedule' | 'wait' }): void {
    this.instances.set(key(ref), {
      vmId: ref.vmId,
      attempt: ref.attempt,
      name: ref.vmId,
      generation: ref.generation ?? '1',
      spec: { image: 'img', os: 'linux', cpus: 1, memoryMib: 512, diskGib: 1, labels: {}, username: '', ...(ref.disconnectPolicy ? { disconnectPolicy: ref.disconnectPolicy } : {}) },
      state: ref.state,
      ip: ref.state === 'running' ? `10.0.0.${this.#nextIp++}` : undefined,
      mac: '02:00:00:00:00:01',
    });
  }

  opsFor(vmId: string): string[] {
    return this.ops.filter((o) => o.split(' ')[1]!.startsWith(`${vmId}#`));
  }

  async list(): Promise<InstanceStatus[]> {
    return [...this.instances.values()].map((i) => this.#status(i));
  }

  async create(request: CreateInstanceRequest): Promise<InstanceStatus> {
    return this.#op('create', request, () => {
      const instance: FakeInstance = { vmId: request.vmId, attempt: request.attempt, name: request.name, generation: request.generation, spec: request.spec, state: 'stopped', mac: `02:00:00:00:00:${String(request.attempt).padStart(2, '0')}` };
      this.instances.set(key(request), instance);
      return instance;
    });
  }

  async start(ref: InstanceRef): Promise<InstanceStatus> {
    return this.#op('start', ref, (instance) => {
      instance!.state = 'running';
      instance!.ip = `10.0.0.${this.#nextIp++}`;
      instance!.message = undefined;
      return instance!;
    });
  }

  async stop(ref: InstanceRef): Promise<InstanceStatus> {
    return this.#op('stop', ref, (instance) => {
      instance!.state = 'stopped';
      instance!.ip = undefined;
      instance!.message = undefined;
      return instance!;
    });
  }

  /** Forced stop: no delay of its own (a hold or failNext('kill') still applies); the reason is kept as the message. */
  async kill(ref: InstanceRef, reason?: string): Promise<InstanceStatus> {
    return this.#op('kill', ref, (instance) => {
      instance!.state = 'stopped';
      instance!.ip = undefined;
      instance!.message = reason;
      return instance!;
    });
  }

  async update(request: UpdateInstanceRequest): Promise<InstanceStatus> {
    return this.#op('update', request, (instance) => {
      if (instance!.state !== 'stopped') throw new DriverError('update while not stopped');
      instance!.generation = request.generation;
      instance!.spec = request.spec;
      return instance!;
    });
  }

  async remove(ref: InstanceRef): Promise<void> {
    await this.#op('remove', ref, (instance) => {
      this.instances.delete(key(ref));
      return instance;
    });
  }

  subscribe(listener: InstanceStatusListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.#listeners.clear();
  }

  async #op(op: Op, ref: InstanceRef, apply: (instance: FakeInstance | undefined) => FakeInstance | undefined): Promise<InstanceStatus> {
    this.ops.push(`${op} ${key(ref)}`);
    const perVm = (this.#activePerVm.get(ref.vmId) ?? 0) + 1;
    this.#activePerVm.set(ref.vmId, perVm);
    this.#activeTotal++;
    this.maxConcurrentPerVm = Math.max(this.maxConcurrentPerVm, perVm);
    this.maxConcurrentTotal = Math.max(this.maxConcurrentTotal, this.#activeTotal);
    try {
      const holdKey = `${op} ${ref.vmId}`;
      const hold = this.#holds.get(holdKey);
      if (hold) {
        this.#holds.delete(holdKey);
        await hold.promise;
      } else {
        await new Promise((r) => setImmediate(r));
      }
      const failure = this.#failures.get(holdKey);
      if (failure !== undefined) {
        this.#failures.delete(holdKey);
        const instance = this.instances.get(key(ref));
        if (instance && (op === 'start' || op === 'stop' || op === 'kill')) instance.state = 'failed';
        throw new DriverError(failure);
      }
      const existing = this.instances.get(key(ref));
      if (!existing && op !== 'create' && op !== 'remove') throw new DriverError(`no instance ${key(ref)}`);
      const result = apply(existing);
      if (result && op !== 'remove') this.#emit(result);
      return result ? this.#status(result) : { vmId: ref.vmId, attempt: ref.attempt, name: '', state: 'stopped', generation: '0' };
    } finally {
      this.#activePerVm.set(ref.vmId, (this.#activePerVm.get(ref.vmId) ?? 1) - 1);
      this.#activeTotal--;
    }
  }

  #status(instance: FakeInstance, message?: string): InstanceStatus {
    return {
      vmId: instance.vmId,
      attempt: instance.attempt,
      name: instance.name,
      state: instance.state,
      generation: instance.generation,
      ip: instance.ip,
      mac: instance.mac,
      message: message ?? instance.message,
      disconnectPolicy: disconnectPolicyOf(instance.spec.disconnectPolicy),
    };
  }

  #emit(instance: FakeInstance, message?: string): void {
    for (const listener of this.#listeners) listener(this.#status(instance, message));
  }
}

function key(ref: InstanceRef): string {
  return `${ref.vmId}#${ref.attempt}`;
}
