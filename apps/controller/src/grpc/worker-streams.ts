// Live Connect streams, one per worker (the newest wins), and the push of
// desired state down them. Pushes are coalesced per worker: a burst of changes
// (a scheduler pass placing 100 VMs on one worker) becomes one DesiredState.
// A push that fails (the database is unavailable) is retried for that worker with a
// capped, jittered backoff until it succeeds or the worker's stream ends: a worker is
// never left without a change that is already committed.
import * as grpc from '@grpc/grpc-js';
import type { ControllerMessage, ImageOperation, VmAssignment, WorkerMessage__Output } from '@fleet/proto';
import type { FleetDb } from '@fleet/db';
import type { Logger } from 'pino';
import { desiredAssignments, type ImagePullsOf } from '../vms/desired-state.ts';
import type { VmSecrets } from '../secrets/vm-secrets.ts';
import { backoffDelayMs, errorFields, type BackoffOptions, type ErrorSink } from '../storage/backoff.ts';
import { GroupCommitter } from '../storage/group-commit.ts';
import { markDelivered } from '../storage/allocation-rows.ts';

export type ConnectCall = grpc.ServerDuplexStream<WorkerMessage__Output, ControllerMessage>;

export class WorkerStream {
  revision = 0;
  closed = false;
  /** (vmId/attempt) keys sent to the worker in any DesiredState on this stream. */
  readonly delivered = new Set<string>();

  constructor(
    readonly workerId: string,
    readonly workerName: string,
    private readonly call: ConnectCall,
  ) {}

  send(message: ControllerMessage): void {
    if (this.closed) return;
    // write() returning false only means the HTTP/2 window is full; grpc-js
    // buffers it. Desired state is small and coalesced, so this stays bounded.
    this.call.write(message);
  }

  /** End the stream with a status the worker can act on. */
  close(code: grpc.status, details: string): void {
    if (this.closed) return;
    this.closed = true;
    this.call.emit('error', { code, details, metadata: new grpc.Metadata() });
  }
}

/** Most desired-state pushes a flush runs at once (each holds its worker's state in memory until sent). */
export const PUSH_CONCURRENCY = 64;

/** Push retries: after 250 ms, 500 ms, 1 s, ... at most 5 s apart (jittered). */
export const PUSH_RETRY_BACKOFF: BackoffOptions = { baseMs: 250, maxMs: 5000 };

export interface WorkerStreamsOptions {
  /** Told about every failed push (the storage-health tracker). */
  sink?: ErrorSink;
  backoff?: Partial<BackoffOptions>;
  /** What builds a worker's desired state (tests replace it). */
  assignments?: (db: FleetDb, workerId: string) => Promise<VmAssignment[]>;
  /** Seals the key pairs of VMs assigned for the first time (needed unless `assignments` is given). */
  secrets?: VmSecrets;
  /** Registry image pulls of a worker's VMs (issue 15; images/image-pulls.ts). Absent: local images only. */
  imagePulls?: ImagePullsOf;
  /** The worker's pending and running image operations (issue 15; images/image-operation-service.ts). Absent: none. */
  imageOperations?: (workerId: string) => Promise<ImageOperation[]>;
}

interface PushRetry {
  /** The stream the failed push was for: a retry never goes to a newer or closed stream. */
  stream: WorkerStream;
  failures: number;
  timer: NodeJS.Timeout | undefined;
}

export class WorkerStreams {
  private readonly streams = new Map<string, WorkerStream>();
  private readonly pending = new Set<string>();
  private readonly retries = new Map<string, PushRetry>();
  /** Workers with a push under way, and those marked again meanwhile (pushes to one worker never overlap, so a newer revision never carries older state). */
  private readonly inFlight = new Set<string>();
  private readonly again = new Set<string>();
  private flushScheduled = false;
  private readonly backoff: BackoffOptions;
  private readonly assignments: (db: FleetDb, workerId: string) => Promise<VmAssignment[]>;

  /** Delivery marks of pushes to several workers share a transaction (one fsync): one per VM otherwise. */
  private readonly deliveries: GroupCommitter<Array<{ vmId: string; attempt: number }>>;

  constructor(
    private readonly db: FleetDb,
    private readonly log: Logger,
    private readonly opts: WorkerStreamsOptions = {},
  ) {
    this.backoff = { ...PUSH_RETRY_BACKOFF, ...opts.backoff };
    this.deliveries = new GroupCommitter(db);
    const secrets = opts.secrets;
    if (!opts.assignments && !secrets) throw new Error('WorkerStreams: pass the VM secrets (or replace assignments)');
    this.assignments = opts.assignments ?? ((db, workerId) => desiredAssignments(db, secrets!, workerId, opts.imagePulls));
  }

  get size(): number {
    return this.streams.size;
  }

  /** Delivery-mark transactions and the pushes they carried so far (tests, logs). */
  get deliveryStats(): Readonly<{ groups: number; writes: number; retried: number }> {
    return this.deliveries.stats;
  }

  attach(stream: WorkerStream): void {
    const old = this.streams.get(stream.workerId);
    if (old && old !== stream) old.close(grpc.status.ABORTED, 'replaced by a newer connection from the same worker');
    this.cancelRetry(stream.workerId);
    this.streams.set(stream.workerId, stream);
  }

  /** Returns true if this stream was the worker's current one. */
  detach(stream: WorkerStream): boolean {
    stream.closed = true;
    if (this.streams.get(stream.workerId) !== stream) return false;
    this.streams.delete(stream.workerId);
    this.cancelRetry(stream.workerId);
    return true;
  }

  disconnect(workerId: string, code: grpc.status, reason: string): void {
    const s = this.streams.get(workerId);
    if (!s) return;
    s.close(code, reason);
    this.streams.delete(workerId);
    this.cancelRetry(workerId);
  }

  get(workerId: string): WorkerStream | undefined {
    return this.streams.get(workerId);
  }

  /**
   * Coalesce pushes: every worker marked before the next tick gets one DesiredState.
   * A worker whose last push failed waits for its retry (which sends the state as of then).
   */
  markDirty(workerId: string): void {
    if (!this.streams.has(workerId)) return;
    if (this.retries.get(workerId)?.timer) return;
    this.pending.add(workerId);
    this.scheduleFlush();
  }

  /** Push the full desired state to every worker held here (changes elsewhere may have been missed). */
  markAllDirty(): void {
    for (const id of this.streams.keys()) this.markDirty(id);
  }

  /** Workers whose push is waiting to be retried (for tests and logs). */
  get retrying(): number {
    return this.retries.size;
  }

  /** Retry every failed push now (the storage is back). */
  retryNow(): void {
    for (const [id, r] of this.retries) {
      if (!r.timer) continue;
      clearTimeout(r.timer);
      r.timer = undefined;
      this.pending.add(id);
    }
    if (this.pending.size > 0) this.scheduleFlush();
  }

  async pushDesiredState(stream: WorkerStream): Promise<void> {
    const [assigned, imageOperations] = await Promise.all([this.assignments(this.db, stream.workerId), this.opts.imageOperations?.(stream.workerId) ?? Promise.resolve([])]);
    let vms = assigned;
    if (stream.closed) return;
    // Recorded as delivered before it is sent; an attempt whose allocation is gone meanwhile (deleted
    // before it was ever sent, by any controller) is left out: the worker must never hold it.
    const fresh = vms.filter((vm) => !stream.delivered.has(`${vm.vmId}/${vm.attempt}`));
    if (fresh.length > 0) {
      // (Never undefined, which Prisma would read as "any": '' and -1 match no allocation.)
      const keys = fresh.map((vm) => ({ vmId: vm.vmId ?? '', attempt: vm.attempt ?? -1 }));
      const now = new Date();
      // Idempotent, so it may run twice (GroupCommitter.run).
      const alive = await this.deliveries.run((sql) => markDelivered(sql, stream.workerId, keys, now));
      const present = new Set(alive.map((a) => `${a.vmId}/${a.attempt}`));
      vms = vms.filter((vm) => stream.delivered.has(`${vm.vmId}/${vm.attempt}`) || present.has(`${vm.vmId}/${vm.attempt}`));
      if (stream.closed) return;
    }
    for (const vm of vms) stream.delivered.add(`${vm.vmId}/${vm.attempt}`);
    stream.revision += 1;
    stream.send({ desiredState: { revision: stream.revision, vms, imageOperations } });
  }

  /**
   * The flush runs once the current callback and the promise jobs already queued have run
   * (process.nextTick): the workers marked by one scheduler pass or one group of reports share
   * it. Not setImmediate: under load the rest of the event loop's turn ran first (issue 20, as
   * for the scheduler's passes).
   */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    process.nextTick(() => void this.flush());
  }

  /**
   * Pushes to different workers run side by side (at most PUSH_CONCURRENCY at once), so their
   * delivery marks share group commits: one after the other, every push waited for a COMMIT of
   * its own, and the last worker of a pass for all of them. Pushes to one worker never overlap
   * (pushOne).
   */
  private async flush(): Promise<void> {
    this.flushScheduled = false;
    const streams: WorkerStream[] = [];
    for (const id of this.pending) {
      const s = this.streams.get(id);
      if (s && !s.closed) streams.push(s);
    }
    this.pending.clear();
    let next = 0;
    const runner = async (): Promise<void> => {
      while (next < streams.length) await this.pushOne(streams[next++]!);
    };
    await Promise.all(Array.from({ length: Math.min(PUSH_CONCURRENCY, streams.length) }, runner));
  }

  /**
   * The first push on a new stream (after Hello). A failure does not end the stream: the
   * push is retried like any other.
   */
  pushOrRetry(stream: WorkerStream): Promise<void> {
    return this.pushOne(stream);
  }

  /** One push, never overlapping another to the same worker (a second request waits for the first, then runs). */
  private async pushOne(s: WorkerStream): Promise<void> {
    const id = s.workerId;
    if (this.inFlight.has(id)) {
      this.again.add(id);
      return;
    }
    this.inFlight.add(id);
    try {
      await this.pushDesiredState(s);
      this.pushed(s);
    } catch (err) {
      this.pushFailed(s, err);
    } finally {
      this.inFlight.delete(id);
      if (this.again.delete(id)) this.markDirty(id);
    }
  }

  private pushed(s: WorkerStream): void {
    const r = this.retries.get(s.workerId);
    if (!r || r.stream !== s) return;
    this.retries.delete(s.workerId);
    clearTimeout(r.timer);
    this.log.info({ worker: s.workerName, failures: r.failures }, 'desired state pushed after failed attempts');
  }

  private pushFailed(s: WorkerStream, err: unknown): void {
    if (s.closed || this.streams.get(s.workerId) !== s) return; // the stream ended meanwhile: its successor gets a full push
    let r = this.retries.get(s.workerId);
    if (!r || r.stream !== s) {
      if (r) clearTimeout(r.timer);
      r = { stream: s, failures: 0, timer: undefined };
      this.retries.set(s.workerId, r);
    }
    r.failures += 1;
    this.opts.sink?.observe(err);
    const retryInMs = backoffDelayMs(r.failures, this.backoff);
    this.log[r.failures === 1 ? 'error' : 'warn']({ ...errorFields(err), worker: s.workerName, failures: r.failures, retryInMs }, 'failed to push desired state; retrying');
    const retry = r;
    clearTimeout(retry.timer);
    retry.timer = setTimeout(() => {
      retry.timer = undefined;
      if (this.retries.get(s.workerId) !== retry || s.closed) return;
      this.pending.add(s.workerId);
      this.scheduleFlush();
    }, retryInMs);
    retry.timer.unref();
  }

  private cancelRetry(workerId: string): void {
    const r = this.retries.get(workerId);
    if (!r) return;
    clearTimeout(r.timer);
    this.retries.delete(workerId);
  }

  closeAll(reason: string): void {
    for (const s of this.streams.values()) s.close(grpc.status.UNAVAILABLE, reason);
    this.streams.clear();
    for (const id of [...this.retries.keys()]) this.cancelRetry(id);
  }
}
