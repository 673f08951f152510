// The Connect stream client: one long-lived bidi stream to the controller.
//
// Per stream: send Hello (full state) → receive Welcome (+ heartbeat interval) and
// DesiredStates → heartbeat, answer pings, push coalesced VmStatus reports and events.
// Leases (client-side fencing, issue 12): every Heartbeat carries a `seq`; the link remembers
// when it sent the last few (monotonic and wall clock). A LeaseRenewal echoing a known seq makes
// the lease valid until that send time + fence_after_ms, reported through `onLease`. Nothing
// else renews it: a controller that sends desired state but does not hear us must not keep it.
// When the stream ends for any reason other than a refusal, reconnect with exponential
// backoff + full jitter and send a fresh, complete Hello (full resync).
// Several controllers (issue 13): the link holds a list of addresses and dials them in turn. A
// failed connect or a lost stream moves on to the next address; while some address has not been
// tried since the link was lost, the next one is dialed almost at once (within the backoff's first
// window), and only a whole round of failures counts as one backoff step. With a single address
// this is exactly the old behaviour. Every delay stays under the lease rule below.
// UNAUTHENTICATED / PERMISSION_DENIED (unknown, revoked or deleted worker) and
// FAILED_PRECONDITION (protocol version unsupported) end the link for good: retrying
// cannot fix them and would only hammer the controller.
import * as grpc from '@grpc/grpc-js';
import {
  loadFleetProto,
  type ControllerMessage__Output,
  type DesiredState__Output,
  type Hello,
  type SessionCancel__Output,
  type SessionOpen__Output,
  type VmStatus,
  type Welcome__Output,
  type CapacityUpdate,
  type VmNetworkReport,
  type WorkerEvent,
  type ImageInventory,
  type ImageOperationStatus,
  type WorkerMessage,
  type WorkerServiceClient,
} from '@fleet/proto';
import type { Logger } from 'pino';
import { Backoff, type BackoffOptions } from './backoff.ts';
import { StatusBatcher } from './status-batcher.ts';

/** DNS name in the controller's server certificate; clients always verify against it. */
export const CONTROLLER_TLS_NAME = 'fleet-controller';

/** Channel options every controller connection uses (keepalive survives idle NATs and L7 boxes). */
export function controllerChannelOptions(extra: grpc.ChannelOptions = {}): grpc.ChannelOptions {
  return {
    'grpc.ssl_target_name_override': CONTROLLER_TLS_NAME,
    'grpc.keepalive_time_ms': 20_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    // One HTTP/2 connection per worker, never shared with another worker in the same process,
    // and no connection/backoff state inherited from a previous attempt.
    'grpc.use_local_subchannel_pool': 1,
    // A DesiredState is the worker's whole set in one message; since issue 15 each registry image
    // and image operation carries its registry's access (an operator CA is a few KiB): beyond 4 MiB.
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    ...extra,
  };
}

export interface LinkHandlers {
  /** Builds the Hello for a new stream: must describe EVERY instance held (full resync). */
  hello(): Hello;
  /** `address`: the controller address this stream dialed (host:port). */
  onWelcome?(welcome: Welcome__Output, address: string): void;
  /** A lease renewal announced a changed controller list (from the controller at `address`). */
  onControllerAddresses?(addresses: readonly string[], address: string): void;
  onDesiredState(state: DesiredState__Output): void;
  /** Running instances, for heartbeats. */
  runningVms(): number;
  /**
   * A remote-access session to open: the handler opens the Session RPC on `client`, the
   * client of the current Connect stream (same HTTP/2 connection). Without a handler
   * sessions are refused with an event.
   */
  onSessionOpen?(open: SessionOpen__Output, client: WorkerServiceClient): void;
  onSessionCancel?(cancel: SessionCancel__Output): void;
  /**
   * Lease news (fencing/lease.ts LeaseKeeper): `welcome` carries Welcome.fence_after_ms (0 = an
   * older controller: no fencing) and when the Hello it answers was sent; `renewal` a
   * LeaseRenewal for one of this stream's heartbeats, already turned into an expiry.
   */
  onLease?(event: LeaseEvent): void;
}

type LeaseRenewal__Output = NonNullable<ControllerMessage__Output['lease']>;

export type LeaseEvent =
  | { kind: 'welcome'; fenceAfterMs: number; helloSentAtMonoMs: number; helloSentAtUnixMs: number }
  | {
      kind: 'renewal';
      seq: string;
      fenceAfterMs: number;
      /** The renewed heartbeat's send time + fence_after_ms, on the monotonic clock (performance.now()). */
      validUntilMonoMs: number;
      /** The same on the wall clock (Date.now()). */
      validUntilUnixMs: number;
    };

/** Heartbeats whose send time is kept for LeaseRenewals (older echoes are ignored). */
export const LEASE_SEQ_WINDOW = 32;

export interface ControllerLinkOptions {
  /** Controller gRPC address, host:port (one controller; or use `addresses`). */
  address?: string;
  /** Controller gRPC addresses, host:port, dialed in this order (issue 13). */
  addresses?: readonly string[];
  /**
   * With several addresses: give up on a connection that is not established (TCP + TLS + HTTP/2)
   * after this long and try the next address (default 5 s). A controller host that drops packets
   * would otherwise hold the link for the transport's own connect timeout (20 s), the whole lease.
   */
  connectTimeoutMs?: number;
  credentials: grpc.ChannelCredentials;
  /** Merged over controllerChannelOptions(). */
  channelOptions?: grpc.ChannelOptions;
  handlers: LinkHandlers;
  logger: Logger;
  backoff?: BackoffOptions;
  /**
   * How long the worker's lease still runs (ms), or null when it does not matter (no fencing, or
   * already expired). While a lease runs out, reconnects are not left to the backoff's 30 s cap:
   * the delay is held to a quarter of what is left (at least 250 ms), so a short controller restart
   * or network blip does not cost the worker its "reschedule" VMs.
   */
  leaseRemainingMs?: () => number | null;
  /** Status coalescing window (default 50 ms). */
  statusFlushMs?: number;
  /** Give up on a stream that has not sent Welcome after this long (default 60 s). */
  welcomeTimeoutMs?: number;
  /** Heartbeat interval when Welcome does not name one (default 10 s). */
  defaultHeartbeatIntervalMs?: number;
  /** Clocks for lease bookkeeping (tests): monotonic (default performance.now) and wall (Date.now). */
  clock?: { monotonic?: () => number; wall?: () => number };
}

export type LinkExit =
  | { kind: 'stopped' }
  | {
      kind: 'fatal';
      reason: 'credential-refused' | 'protocol-unsupported';
      code: grpc.status;
      details: string;
      /** Operator-facing explanation, including what to do. */
      message: string;
    };

interface Stream {
  call: grpc.ClientDuplexStream<WorkerMessage, ControllerMessage__Output>;
  client: WorkerServiceClient;
  ended: boolean;
  welcomedAt: number | undefined;
  lastRevision: bigint | undefined;
  heartbeat: NodeJS.Timeout | undefined;
  welcomeTimer: NodeJS.Timeout | undefined;
  helloSentAt: { mono: number; wall: number };
  /** Send times of this stream's last LEASE_SEQ_WINDOW heartbeats, by seq. */
  beats: Map<string, { mono: number; wall: number }>;
  /** Welcome.fence_after_ms (0 = no fencing). */
  fenceAfterMs: number;
  /** The address this stream dialed. */
  address: string;
  /** Monotonic time of the last LeaseRenewal on this stream (or of its Welcome). */
  renewedAtMono: number;
}

/** Default of ControllerLinkOptions.connectTimeoutMs. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;

export class ControllerLink {
  readonly done: Promise<LinkExit>;
  #addresses: string[];
  /** Index in #addresses of the address the current (or last) stream dialed; -1 once it left the list. */
  #dialedIndex = -1;
  #dialed: string;
  /** Index the next stream dials. */
  #nextIndex = 0;
  /** Streams that failed since the link was last lost (or the last full round). */
  #roundFailures = 0;
  readonly #connectTimeoutMs: number;
  #credentials: grpc.ChannelCredentials;
  readonly #channelOptions: grpc.ChannelOptions;
  readonly #handlers: LinkHandlers;
  readonly #log: Logger;
  readonly #backoff: Backoff;
  readonly #leaseRemainingMs: (() => number | null) | undefined;
  readonly #batcher: StatusBatcher;
  readonly #welcomeTimeoutMs: number;
  readonly #defaultHeartbeatMs: number;
  #resolveDone!: (exit: LinkExit) => void;
  #stream: Stream | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #started = false;
  #finished = false;
  #streamsOpened = 0;
  #welcome: Welcome__Output | undefined;
  /** Heartbeat sequence: increases with every heartbeat, across streams too. */
  #seq = 0;
  readonly #mono: () => number;
  readonly #wall: () => number;

  constructor(options: ControllerLinkOptions) {
    const addresses = [...new Set(options.addresses ?? (options.address !== undefined ? [options.address] : []))];
    if (addresses.length === 0) throw new Error('ControllerLink needs at least one controller address');
    this.#addresses = addresses;
    this.#dialed = addresses[0]!;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#credentials = options.credentials;
    this.#channelOptions = controllerChannelOptions(options.channelOptions);
    this.#handlers = options.handlers;
    this.#log = options.logger;
    this.#backoff = new Backoff(options.backoff);
    this.#leaseRemainingMs = options.leaseRemainingMs;
    this.#welcomeTimeoutMs = options.welcomeTimeoutMs ?? 60_000;
    this.#defaultHeartbeatMs = options.defaultHeartbeatIntervalMs ?? 10_000;
    this.#mono = options.clock?.monotonic ?? (() => performance.now());
    this.#wall = options.clock?.wall ?? Date.now;
    this.#batcher = new StatusBatcher(options.statusFlushMs ?? 50, (vms) => this.#write({ vmStatus: { vms } }));
    this.done = new Promise((resolve) => (this.#resolveDone = resolve));
  }

  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#open();
  }

  /** True while a stream is open (Hello sent, not yet ended). */
  get connected(): boolean {
    return this.#stream !== undefined && !this.#stream.ended;
  }

  /** True once the current stream got its Welcome. */
  get welcomed(): boolean {
    return this.#stream?.welcomedAt !== undefined && !this.#stream.ended;
  }

  /** The last Welcome received (worker id / name as the controller knows them). */
  get welcome(): Welcome__Output | undefined {
    return this.#welcome;
  }

  /** Streams opened so far (1 + reconnects). */
  get streamsOpened(): number {
    return this.#streamsOpened;
  }

  /** The address the current (or last) stream dialed. */
  get address(): string {
    return this.#dialed;
  }

  /** Every address the link dials, in order. */
  get addresses(): readonly string[] {
    return this.#addresses;
  }

  /**
   * Replaces the list (e.g. from Welcome.controller_addresses; the caller validates it). The
   * open stream stays; when it ends, the link moves on to the entry after the dialed address in
   * the new list (to the first if the new list lacks it). An empty list is ignored.
   */
  setAddresses(addresses: readonly string[]): void {
    const list = [...new Set(addresses)];
    if (list.length === 0) return;
    const pending = this.#addresses[this.#nextIndex];
    this.#addresses = list;
    this.#dialedIndex = list.indexOf(this.#dialed);
    const pendingIndex = pending === undefined ? -1 : list.indexOf(pending);
    this.#nextIndex = pendingIndex >= 0 ? pendingIndex : (this.#dialedIndex + 1) % list.length;
    // A shorter list must not leave the round unfinishable.
    this.#roundFailures = Math.min(this.#roundFailures, list.length - 1);
  }

  /** Queues a status change; dropped while disconnected (the next Hello carries full state). */
  reportStatus(status: VmStatus): void {
    if (this.connected) this.#batcher.add(status);
  }

  sendEvent(event: WorkerEvent): void {
    if (this.connected) this.#write({ event });
  }

  /** A changed capacity; dropped while disconnected (the next Hello carries the current one). */
  sendCapacity(update: CapacityUpdate): void {
    if (this.connected) this.#write({ capacityUpdate: update });
  }

  /** Packet-filter counters of running instances; dropped while disconnected. */
  sendNetworkCounters(report: VmNetworkReport): void {
    if (this.connected && report.vms?.length) this.#write({ vmNetwork: report });
  }

  /** The image cache's contents; dropped while disconnected (sent again after every Welcome). */
  sendImageInventory(inventory: ImageInventory): void {
    if (this.connected) this.#write({ imageInventory: inventory });
  }

  /** Progress or outcome of an image operation; dropped while disconnected (the op stays in the desired state and is reported again). */
  sendImageOperation(status: ImageOperationStatus): void {
    if (this.connected) this.#write({ imageOperation: status });
  }

  /** New channel credentials (a renewed certificate): used from the next connection on; the open stream stays. */
  setCredentials(credentials: grpc.ChannelCredentials): void {
    this.#credentials = credentials;
  }

  /** Flushes pending statuses, half-closes the stream and closes the channel. */
  async stop(): Promise<void> {
    if (this.#finished) return;
    this.#finish({ kind: 'stopped' });
    const stream = this.#stream;
    if (stream && !stream.ended) {
      this.#batcher.flush();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          stream.call.cancel();
          resolve();
        }, 1000);
        stream.call.once('status', () => {
          clearTimeout(timer);
          resolve();
        });
        stream.call.once('error', () => {}); // CANCELLED after our own cancel()
        stream.call.end();
      });
    }
    this.#teardown();
  }

  // ------------------------------------------------------------------ stream lifecycle

  #open(): void {
    if (this.#finished) return;
    const { WorkerService } = loadFleetProto();
    const index = this.#nextIndex < this.#addresses.length ? this.#nextIndex : 0;
    const address = this.#addresses[index]!;
    this.#dialedIndex = index;
    this.#dialed = address;
    const client = new WorkerService(address, this.#credentials, this.#channelOptions);
    const call = client.Connect();
    const stream: Stream = {
      address,
      call,
      client,
      ended: false,
      welcomedAt: undefined,
      lastRevision: undefined,
      heartbeat: undefined,
      welcomeTimer: undefined,
      helloSentAt: { mono: 0, wall: 0 },
      beats: new Map(),
      fenceAfterMs: 0,
      renewedAtMono: 0,
    };
    this.#stream = stream;
    this.#streamsOpened++;

    const end = (code: grpc.status, details: string): void => {
      if (stream.ended) return;
      stream.ended = true;
      this.#onStreamEnd(stream, code, details);
    };
    call.on('data', (message: ControllerMessage__Output) => this.#onMessage(stream, message));
    call.on('error', (error: grpc.ServiceError) => end(error.code ?? grpc.status.UNKNOWN, error.details ?? error.message));
    call.on('status', (status: grpc.StatusObject) => end(status.code, status.details));

    // With somewhere else to go, a connection that does not come up is abandoned early.
    if (this.#addresses.length > 1) {
      client.waitForReady(Date.now() + this.#connectTimeoutMs, (error) => {
        if (!error || stream.ended) return;
        this.#log.warn({ address, timeoutMs: this.#connectTimeoutMs }, 'no connection to the controller in time; trying the next one');
        call.cancel();
      });
    }

    stream.welcomeTimer = setTimeout(() => {
      this.#log.warn({ timeoutMs: this.#welcomeTimeoutMs }, 'controller sent no Welcome in time; reconnecting');
      call.cancel();
    }, this.#welcomeTimeoutMs);

    // Full resync: everything we hold, in one Hello. Statuses queued for an older stream
    // are superseded by it.
    this.#batcher.clear();
    const hello = this.#handlers.hello();
    this.#log.debug({ address, vms: hello.vms?.length ?? 0, stream: this.#streamsOpened }, 'opening Connect stream');
    stream.helloSentAt = { mono: this.#mono(), wall: this.#wall() };
    this.#write({ hello });
  }

  #onMessage(stream: Stream, message: ControllerMessage__Output): void {
    if (stream.ended || this.#finished) return;
    switch (message.payload) {
      case 'welcome': {
        const welcome = message.welcome!;
        clearTimeout(stream.welcomeTimer);
        stream.welcomeTimer = undefined;
        stream.welcomedAt = Date.now();
        this.#welcome = welcome;
        const intervalMs = welcome.heartbeatIntervalMs > 0 ? welcome.heartbeatIntervalMs : this.#defaultHeartbeatMs;
        stream.fenceAfterMs = welcome.fenceAfterMs ?? 0;
        stream.renewedAtMono = this.#mono();
        clearInterval(stream.heartbeat);
        stream.heartbeat = setInterval(() => {
          if (this.#renewsNothing(stream, intervalMs)) return;
          this.#heartbeat(stream);
        }, intervalMs);
        this.#log.info(
          {
            address: stream.address,
            workerId: welcome.workerId,
            workerName: welcome.workerName,
            controllerVersion: welcome.controllerVersion,
            protocolVersion: welcome.protocolVersion,
            heartbeatIntervalMs: intervalMs,
            fenceAfterMs: stream.fenceAfterMs,
            reconnects: this.#streamsOpened - 1,
          },
          'connected to controller',
        );
        this.#handlers.onLease?.({ kind: 'welcome', fenceAfterMs: stream.fenceAfterMs, helloSentAtMonoMs: stream.helloSentAt.mono, helloSentAtUnixMs: stream.helloSentAt.wall });
        this.#handlers.onWelcome?.(welcome, stream.address);
        // A first heartbeat at once: its LeaseRenewal is the lease reschedule VMs wait for.
        this.#heartbeat(stream);
        return;
      }
      case 'lease':
        this.#onLeaseRenewal(stream, message.lease!);
        return;
      case 'desiredState': {
        const state = message.desiredState!;
        const revision = parseRevision(state.revision);
        if (stream.lastRevision !== undefined && revision < stream.lastRevision) {
          this.#log.debug({ revision: state.revision, last: String(stream.lastRevision) }, 'ignoring out-of-date desired state');
          return;
        }
        stream.lastRevision = revision;
        this.#handlers.onDesiredState(state);
        return;
      }
      case 'ping':
        this.#write({ pong: { nonce: message.ping!.nonce } });
        return;
      case 'sessionOpen': {
        const open = message.sessionOpen!;
        if (this.#handlers.onSessionOpen) {
          this.#handlers.onSessionOpen(open, stream.client);
          return;
        }
        this.#log.warn({ sessionId: open.sessionId, vmId: open.vmId, kind: open.kind }, 'remote-access sessions are not implemented by this worker yet');
        this.#write({
          event: { vmId: open.vmId, kind: 'session', level: 'error', message: `session ${open.sessionId} (${open.kind}) refused: this worker does not implement sessions yet`, atUnixMs: String(Date.now()) },
        });
        return;
      }
      case 'sessionCancel':
        if (this.#handlers.onSessionCancel) {
          this.#handlers.onSessionCancel(message.sessionCancel!);
          return;
        }
        this.#log.debug({ sessionId: message.sessionCancel!.sessionId }, 'session cancel for an unknown session ignored');
        return;
      default:
        this.#log.warn('controller message without a known payload ignored (sent by a newer controller?)');
    }
  }

  #heartbeat(stream: Stream): void {
    if (stream.ended || this.#stream !== stream) return;
    const seq = String(++this.#seq);
    const mono = this.#mono();
    const wall = this.#wall();
    stream.beats.set(seq, { mono, wall });
    // Maps iterate in insertion order: drop the oldest beyond the window.
    for (const old of stream.beats.keys()) {
      if (stream.beats.size <= LEASE_SEQ_WINDOW) break;
      stream.beats.delete(old);
    }
    this.#write({ heartbeat: { sentAtUnixMs: String(wall), runningVms: this.#handlers.runningVms(), seq } });
  }

  /**
   * A controller that keeps the stream open but renews nothing (it cannot record our heartbeats:
   * cut off from its database) would let the lease run out with the link up. After three
   * heartbeat intervals without a renewal, leave it for the next controller. Returns true when it
   * ended the stream.
   */
  #renewsNothing(stream: Stream, intervalMs: number): boolean {
    if (stream.ended || this.#stream !== stream || stream.fenceAfterMs <= 0) return false;
    const silentMs = this.#mono() - stream.renewedAtMono;
    if (silentMs <= 3 * intervalMs) return false;
    this.#log.warn({ address: stream.address, silentMs: Math.round(silentMs) }, 'the controller renews no lease on this stream; moving to the next controller');
    stream.call.cancel();
    return true;
  }

  #onLeaseRenewal(stream: Stream, renewal: LeaseRenewal__Output): void {
    const seq = String(renewal.heartbeatSeq ?? '');
    const sent = stream.beats.get(seq);
    if (!sent) {
      this.#log.debug({ seq }, 'lease renewal for a heartbeat this stream did not send (or too old) ignored');
      return;
    }
    stream.renewedAtMono = this.#mono();
    if (renewal.controllerAddresses?.length) this.#handlers.onControllerAddresses?.(renewal.controllerAddresses, stream.address);
    const fenceAfterMs = renewal.fenceAfterMs > 0 ? renewal.fenceAfterMs : stream.fenceAfterMs;
    if (fenceAfterMs <= 0) {
      this.#log.debug({ seq }, 'lease renewal without fence_after_ms ignored (no fencing)');
      return;
    }
    this.#handlers.onLease?.({ kind: 'renewal', seq, fenceAfterMs, validUntilMonoMs: sent.mono + fenceAfterMs, validUntilUnixMs: sent.wall + fenceAfterMs });
  }

  #onStreamEnd(stream: Stream, code: grpc.status, details: string): void {
    clearTimeout(stream.welcomeTimer);
    clearInterval(stream.heartbeat);
    stream.welcomeTimer = undefined;
    stream.heartbeat = undefined;
    if (this.#stream === stream) this.#batcher.clear();
    stream.client.close();
    if (this.#finished) return;

    if (code === grpc.status.UNAUTHENTICATED || code === grpc.status.PERMISSION_DENIED) {
      const message =
        `the controller refused this worker (${grpc.status[code]}: ${details || 'no details'}): ` +
        "this worker's credential was revoked or the worker was deleted: re-enroll with " +
        '`fleet-worker enroll --force --controller HOST:PORT --token <bootstrap token>`';
      this.#log.error({ code: grpc.status[code], details }, message);
      this.#finish({ kind: 'fatal', reason: 'credential-refused', code, details, message });
      return;
    }
    if (code === grpc.status.FAILED_PRECONDITION) {
      const message =
        `the controller does not accept this worker (FAILED_PRECONDITION: ${details || 'no details'}): ` +
        'its protocol version is probably unsupported; upgrade the worker or the controller so their protocol ranges overlap';
      this.#log.error({ code: grpc.status[code], details }, message);
      this.#finish({ kind: 'fatal', reason: 'protocol-unsupported', code, details, message });
      return;
    }

    const upForMs = stream.welcomedAt === undefined ? 0 : Date.now() - stream.welcomedAt;
    this.#backoff.connectionEnded(upForMs);
    // A lost link starts a new round, in which the controller just lost counts as tried.
    this.#roundFailures = stream.welcomedAt !== undefined ? 1 : this.#roundFailures + 1;
    const count = this.#addresses.length;
    this.#nextIndex = (this.#dialedIndex + 1) % count;
    let backoffMs: number;
    if (this.#roundFailures < count) {
      backoffMs = this.#backoff.jitter(); // another controller not tried yet: go now
    } else {
      this.#roundFailures = 0; // every address failed once: one backoff step, then again from the next
      backoffMs = this.#backoff.next();
    }
    const remaining = this.#leaseRemainingMs?.() ?? null;
    const delayMs = remaining !== null && remaining > 0 ? Math.min(backoffMs, Math.max(250, Math.floor(remaining / 4))) : backoffMs;
    const next = this.#addresses[this.#nextIndex]!;
    this.#log.warn(
      { address: stream.address, code: grpc.status[code] ?? code, details, upForMs, retryInMs: delayMs, failures: this.#backoff.failures, ...(count > 1 ? { next } : {}) },
      count > 1 && next !== stream.address ? 'controller stream ended; trying the next controller' : 'controller stream ended; reconnecting',
    );
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#open();
    }, delayMs);
  }

  #write(message: WorkerMessage): void {
    const stream = this.#stream;
    if (!stream || stream.ended) return;
    try {
      stream.call.write(message);
    } catch (error) {
      this.#log.debug({ err: error }, 'write on a closing stream dropped');
    }
  }

  #finish(exit: LinkExit): void {
    if (this.#finished) return;
    this.#finished = true;
    if (exit.kind === 'fatal') this.#teardown();
    this.#resolveDone(exit);
  }

  #teardown(): void {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#batcher.clear();
    const stream = this.#stream;
    if (!stream) return;
    clearTimeout(stream.welcomeTimer);
    clearInterval(stream.heartbeat);
    if (!stream.ended) {
      stream.ended = true;
      stream.call.on('error', () => {});
      stream.call.cancel();
    }
    stream.client.close();
  }
}

function parseRevision(revision: string): bigint {
  try {
    return BigInt(revision || '0');
  } catch {
    return 0n;
  }
}
