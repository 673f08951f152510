// Live Connect streams, one per worker (the newest wins), and the push of
// desired state down them. Pushes are coalesced per worker: a burst of changes
// (a scheduler pass placing 100 VMs on one worker) becomes one DesiredState.
import * as grpc from '@grpc/grpc-js';
import type { ControllerMessage, WorkerMessage__Output } from '@fleet/proto';
import type { FleetDb } from '@fleet/db';
import type { Logger } from 'pino';
import { desiredAssignments } from '../vms/desired-state.ts';

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

export class WorkerStreams {
  private readonly streams = new Map<string, WorkerStream>();
  private readonly pending = new Set<string>();
  private flushScheduled = false;

  constructor(
    private readonly db: FleetDb,
    private readonly log: Logger,
  ) {}

  get size(): number {
    return this.streams.size;
  }

  attach(stream: WorkerStream): void {
    const old = this.streams.get(stream.workerId);
    if (old && old !== stream) old.close(grpc.status.ABORTED, 'replaced by a newer connection from the same worker');
    this.streams.set(stream.workerId, stream);
  }

  /** Returns true if this stream was the worker's current one. */
  detach(stream: WorkerStream): boolean {
    stream.closed = true;
    if (this.streams.get(stream.workerId) !== stream) return false;
    this.streams.delete(stream.workerId);
    return true;
  }

  disconnect(workerId: string, code: grpc.status, reason: string): void {
    const s = this.streams.get(workerId);
    if (!s) return;
    s.close(code, reason);
    this.streams.delete(workerId);
  }

  get(workerId: string): WorkerStream | undefined {
    return this.streams.get(workerId);
  }

  /**
   * True when the worker is connected and has never been told about this
   * instance, so it cannot hold it (and will never report it GONE).
   */
  neverDelivered(workerId: string, vmId: string, attempt: number): boolean {
    const s = this.streams.get(workerId);
    return !!s && !s.closed && !s.delivered.has(`${vmId}/${attempt}`);
  }

  /** Coalesce pushes: every worker marked before the next tick gets one DesiredState. */
  markDirty(workerId: string): void {
    if (!this.streams.has(workerId)) return;
    this.pending.add(workerId);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => void this.flush());
  }

  async pushDesiredState(stream: WorkerStream): Promise<void> {
    const vms = await desiredAssignments(this.db, stream.workerId);
    for (const vm of vms) stream.delivered.add(`${vm.vmId}/${vm.attempt}`);
    stream.revision += 1;
    stream.send({ desiredState: { revision: stream.revision, vms } });
  }

  private async flush(): Promise<void> {
    this.flushScheduled = false;
    const ids = [...this.pending];
    this.pending.clear();
    for (const id of ids) {
      const s = this.streams.get(id);
      if (!s || s.closed) continue;
      try {
        await this.pushDesiredState(s);
      } catch (err) {
        this.log.error({ err, worker: s.workerName }, 'failed to push desired state');
      }
    }
  }

  closeAll(reason: string): void {
    for (const s of this.streams.values()) s.close(grpc.status.UNAVAILABLE, reason);
    this.streams.clear();
  }
}
