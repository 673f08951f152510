// The session broker: pairs a client's WebSocket with the Session RPC the VM's worker
// opens on its own HTTP/2 connection, and moves bytes between them with backpressure
// on both legs:
//   worker -> client: a client that reads slowly makes the broker pause the worker's
//     gRPC stream (HTTP/2 flow control then stops the worker, which stops reading the
//     SSH channel, whose window stops the command);
//   client -> worker: a full gRPC stream pauses reading the WebSocket (TCP backpressure).
// Each session is its own HTTP/2 stream with its own flow-control window, so a stalled
// session cannot stall the Connect stream or another session.
//
// Sessions are in memory only: a controller restart ends them (clients see the socket
// close; workers see their Session calls fail and close the VM side).
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { FleetDb, Vm } from '@fleet/db';
import type { SessionFrame, SessionFrame__Output, SessionKind } from '@fleet/proto';
import type { Logger } from 'pino';
import type { EventLog } from '../events/event-log.ts';
import type { FleetBus } from '../fleet-bus.ts';
import type { WorkerStreams } from '../grpc/worker-streams.ts';
import {
  BadRequest,
  CHANNEL_STDERR,
  CHANNEL_STDIN,
  CHANNEL_STDOUT,
  parseControl,
  type AttachRequest,
  type ServerMessage,
  type StartRequest,
} from './client-messages.ts';
import { OutputLog } from './output-log.ts';
import { BackgroundWrites } from '../storage/background-writes.ts';
import type { VmSecrets } from '../secrets/vm-secrets.ts';
import { SecretError } from '../secrets/secret-box.ts';
import { ensureVmAccess, forgetHostKey, hostKeyFingerprint, normaliseHostKey, recordedHostKey, recordHostKey } from './vm-access.ts';

export type SessionCall = grpc.ServerDuplexStream<SessionFrame__Output, SessionFrame>;

/** The part of a `ws` WebSocket the broker uses (tests pass fakes). */
export interface ClientSocket {
  readonly readyState: number;
  /** Drops the connection without a close handshake. */
  terminate?(): void;
  send(data: Buffer | string, cb?: (err?: Error) => void): void;
  close(code?: number, reason?: string): void;
  pause(): void;
  resume(): void;
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  off(event: string, listener: (...args: unknown[]) => void): unknown;
}

const OPEN = 1;
/** Unflushed bytes towards a client before the worker's stream is paused. */
const CLIENT_HIGH_WATER = 1024 * 1024;
const CLIENT_LOW_WATER = 256 * 1024;
/** Client input queued before the worker's stream exists. */
const PENDING_INPUT_LIMIT = 1024 * 1024;
/** How long a worker has to open the Session RPC after SessionOpen. */
const WORKER_OPEN_TIMEOUT_MS = 15_000;
/** Output kept per channel for re-attach (exec sessions opened with retainMs > 0). */
const RETAIN_BYTES = 8 * 1024 * 1024;
const MAX_SESSIONS = 2000;
/** Reconnectable execs hold up to 2 × 2 × RETAIN_BYTES each: caps keep one token (or all) from pinning gigabytes. */
export const MAX_RETAINED_PER_ACTOR = 16;
export const MAX_RETAINED = 64;

const KIND: Record<StartRequest['kind'], SessionKind> = { exec: 'SESSION_KIND_EXEC', ssh: 'SESSION_KIND_SSH', 'port-forward': 'SESSION_KIND_PORT_FORWARD', vnc: 'SESSION_KIND_VNC' };
const NOT_GOING_TO_RUN = new Set(['stopped', 'stopping', 'failed', 'deleting']);

export interface SessionBrokerDeps {
  db: FleetDb;
  /** Opens the VM's sealed private key and password for the worker (secrets at rest, issue 14). */
  secrets: VmSecrets;
  streams: WorkerStreams;
  bus: FleetBus;
  events: EventLog;
  log: Logger;
  /** Retries the writes nobody waits for (audit events, key cleanup); default: one of its own. */
  writes?: BackgroundWrites;
}

export class SessionError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly stage?: string,
  ) {
    super(message);
  }
}

/** Client frames that arrived between the start request and the broker taking over the socket. */
export type EarlyFrames = () => Array<[Buffer, boolean]>;

class BrokerSession {
  readonly startedAt = Date.now();
  client: ClientSocket | null = null;
  worker: SessionCall | null = null;
  workerId = '';
  workerName = '';
  state: 'waiting' | 'opening' | 'active' | 'done' = 'waiting';
  started = false;
  exit: { code: number; signal: string | null } | null = null;
  readonly pendingInput: SessionFrame[] = [];
  pendingInputBytes = 0;
  inputPausedForWorker = false;
  readonly pauseReasons = new Set<'client-slow' | 'detached'>();
  clientUnflushed = 0;
  bytesIn = 0;
  bytesOut = 0;
  readonly logs: { stdout: OutputLog; stderr: OutputLog } | null;
  detachedAt: number | null = null;
  appendedSinceDetach = 0;
  retainTimer: NodeJS.Timeout | undefined;
  openTimer: NodeJS.Timeout | undefined;
  hostKey = '';
  readonly cleanups: Array<() => void> = [];

  constructor(
    readonly id: string,
    readonly vm: Vm,
    readonly req: StartRequest,
    readonly actor: string,
  ) {
    this.logs = req.retainMs > 0 && req.kind === 'exec' && !req.tty ? { stdout: new OutputLog(RETAIN_BYTES * 2), stderr: new OutputLog(RETAIN_BYTES * 2) } : null;
  }

  describe(): string {
    if (this.req.kind === 'port-forward') return `port-forward to port ${this.req.port}`;
    if (this.req.kind === 'vnc') return 'vnc (the VM console)';
    if (this.req.kind === 'ssh') return this.req.command.length ? `ssh: ${this.req.command.join(' ')}` : 'ssh (interactive shell)';
    return `exec: ${this.req.command.join(' ')}`;
  }
}

export class SessionBroker {
  private readonly sessions = new Map<string, BrokerSession>();
  private readonly offVm: () => void;
  private readonly writes: BackgroundWrites;

  constructor(private readonly deps: SessionBrokerDeps) {
    this.writes = deps.writes ?? new BackgroundWrites({ log: deps.log });
    // A VM that stops boots next time with a new host key: forget the recorded one.
    // Both writes are retried until they succeed (BackgroundWrites), never just logged.
    this.offVm = deps.bus.onVmChange((c) => {
      if (c.type === 'DELETED') {
        // The row holds the VM's private key: it must not outlive the VM (no foreign key cascades it).
        const vmId = c.vm.id;
        this.writes.run('remove the access keys of a deleted VM', () => deps.db.vmAccess.deleteMany({ where: { vmId } }), { vmId });
      } else if (c.type === 'MODIFIED' && (c.vm.state === 'stopped' || c.vm.state === 'failed' || c.vm.state === 'pending')) {
        // (Not for a VM just created, ADDED as pending: it never booted, so it has no host key to forget.)
        // Only keys recorded before this change: a retry that runs after the next boot must not forget that boot's key.
        const vmId = c.vm.id;
        const before = new Date();
        this.writes.run('forget the host key of a stopped VM', () => forgetHostKey(deps.db, vmId, before), { vmId });
      }
    });
  }

  get size(): number {
    return this.sessions.size;
  }

  // ------------------------------------------------------------------ client side

  /** A client's start request, after the upgrade. Owns the socket from here on. */
  /** The VM's host key as recorded on first use for its current boot, or null. */
  async recordedHostKeyOf(vm: Pick<Vm, 'id' | 'attempt'>): Promise<{ key: string | null; seenAt: Date | null }> {
    const access = await this.deps.db.vmAccess.findUnique({ where: { vmId: vm.id } });
    const key = access ? recordedHostKey(access, vm.attempt) : null;
    return { key, seenAt: key ? (access?.hostKeySeenAt ?? null) : null };
  }

  /** The VM's login (created on first use) and recorded host key, for OpenSSH through `fleet ssh --stdio`. */
  async sshAccessOf(vm: Vm): Promise<{ username: string; privateKey: string; hostKey: string | null }> {
    const access = (await ensureVmAccess(this.deps.db, this.deps.secrets, [vm])).get(vm.id)!;
    return { username: access.username, privateKey: await this.deps.secrets.privateKeyOf(access), hostKey: recordedHostKey(access, vm.attempt) };
  }

  async start(client: ClientSocket, vmName: string, req: StartRequest, actor: string, early: EarlyFrames = () => []): Promise<void> {
    if (this.sessions.size >= MAX_SESSIONS) {
      sendJson(client, { type: 'error', code: 'unavailable', message: `the controller already brokers ${MAX_SESSIONS} sessions; try again later` });
      client.close(1013, 'too many sessions');
      return;
    }
    if (req.retainMs > 0 && req.kind === 'exec' && !req.tty) {
      const refusal = this.retentionRefusal(actor);
      if (refusal) {
        sendJson(client, { type: 'error', code: 'unavailable', message: refusal });
        client.close(1013, 'too many reconnectable sessions');
        return;
      }
    }
    const vm0 = await this.deps.db.vm.findUnique({ where: { name: vmName } });
    if (!vm0) return this.refuse(client, new SessionError('not-found', `vm "${vmName}" not found`));
    const s = new BrokerSession(randomUUID(), vm0, req, actor);
    this.sessions.set(s.id, s);
    this.attachClient(s, client, early());
    try {
      const vm = await this.waitRunning(s, req.waitMs);
      if (s.state === 'done') return;
      (s as { vm: Vm }).vm = vm;
      const stream = this.deps.streams.get(vm.workerId ?? '');
      if (!stream || stream.closed) throw new SessionError('worker-offline', `the worker running vm "${vm.name}" is not connected to the controller`);
      s.workerId = stream.workerId;
      s.workerName = stream.workerName;
      const access = (await ensureVmAccess(this.deps.db, this.deps.secrets, [vm])).get(vm.id)!;
      // Opened here, kept only in this message: the plaintext goes to the VM's worker alone.
      let privateKey: string;
      let password: string;
      try {
        privateKey = await this.deps.secrets.privateKeyOf(access);
        password = (await this.deps.secrets.passwordOf(access)) ?? '';
      } catch (err) {
        // A missing key-encryption key or a damaged envelope: say so (the message names no secret).
        if (err instanceof SecretError) {
          this.deps.log.error({ err, vm: vm.name }, 'cannot open the VM credentials');
          throw new SessionError('internal', `the controller cannot open the credentials of vm "${vm.name}": ${err.message}`);
        }
        throw err;
      }
      // The client may have gone (and the session been cancelled) during that await.
      if (s.state !== 'waiting') return;
      const expected = recordedHostKey(access, vm.attempt) ?? '';
      s.hostKey = expected;
      s.state = 'opening';
      s.openTimer = setTimeout(() => {
        if (s.state === 'opening') this.fail(s, new SessionError('worker-timeout', `worker ${s.workerName} did not open the session within ${WORKER_OPEN_TIMEOUT_MS / 1000}s`));
      }, WORKER_OPEN_TIMEOUT_MS);
      stream.send({
        sessionOpen: {
          sessionId: s.id,
          vmId: vm.id,
          attempt: vm.attempt,
          kind: KIND[req.kind],
          port: req.port,
          command: req.command,
          env: req.env,
          workdir: req.workdir,
          tty: req.tty,
          rows: req.rows,
          cols: req.cols,
          username: access.username,
          // A console needs no guest credentials: they do not leave the controller for it.
          privateKey: req.kind === 'vnc' ? '' : privateKey,
          password: req.kind === 'vnc' ? '' : password,
          hostKey: expected,
          waitMs: Math.max(1000, req.waitMs - (Date.now() - s.startedAt)),
          timeoutMs: req.timeoutMs,
        },
      });
    } catch (err) {
      this.fail(s, err);
    }
  }

  /** Why a new reconnectable exec may not start now, or null. */
  private retentionRefusal(actor: string): string | null {
    let mine = 0;
    let all = 0;
    for (const s of this.sessions.values()) {
      if (!s.logs) continue;
      all++;
      if (s.actor === actor) mine++;
    }
    if (mine >= MAX_RETAINED_PER_ACTOR) {
      return `${actor} already holds ${mine} reconnectable sessions (the limit is ${MAX_RETAINED_PER_ACTOR}); wait for one to end or its retention to expire, or run without --retain`;
    }
    if (all >= MAX_RETAINED) {
      return `the controller already keeps ${all} reconnectable sessions (the limit is ${MAX_RETAINED}); try again later or run without --retain`;
    }
    return null;
  }

  /** Re-attach to a retained exec session: replay from the offsets, then go live. */
  attach(client: ClientSocket, vmName: string, req: AttachRequest, actor: string, early: EarlyFrames = () => []): void {
    const s = this.sessions.get(req.sessionId);
    if (!s || s.vm.name !== vmName || !s.logs) return this.refuse(client, new SessionError('not-found', `no reconnectable session ${req.sessionId} on vm "${vmName}" (it ended and its retention expired, or it was not started with retention)`));
    if (s.actor !== actor) return this.refuse(client, new SessionError('forbidden', `session ${req.sessionId} belongs to ${s.actor}`));
    if (s.client) {
      // The old connection is probably half-dead: the newest client wins.
      const old = s.client;
      this.detachClient(s);
      old.close(4000, 'replaced by a newer attach');
    }
    clearTimeout(s.retainTimer);
    const out = s.logs.stdout.since(req.stdoutOffset);
    const err = s.logs.stderr.since(req.stderrOffset);
    this.attachClient(s, client, early());
    sendJson(client, { type: 'started', sessionId: s.id, replayFrom: { stdout: out.offset, stderr: err.offset } });
    for (const d of out.data) this.sendData(s, CHANNEL_STDOUT, d);
    for (const d of err.data) this.sendData(s, CHANNEL_STDERR, d);
    s.detachedAt = null;
    s.appendedSinceDetach = 0;
    this.setPaused(s, 'detached', false);
    this.audit(s, 'session.attached', `${actor} re-attached to session ${s.id} on ${s.vm.name} (replay from stdout ${out.offset}, stderr ${err.offset})`);
    if (s.exit) this.finishClient(s);
  }

  private refuse(client: ClientSocket, err: SessionError): void {
    sendJson(client, { type: 'error', code: err.code, message: err.message, ...(err.stage ? { stage: err.stage } : {}) });
    client.close(1000, err.code);
  }

  private attachClient(s: BrokerSession, client: ClientSocket, early: Array<[Buffer, boolean]> = []): void {
    s.client = client;
    const onMessage = (data: Buffer, isBinary: boolean) => this.onClientMessage(s, client, data, isBinary);
    const onClose = () => this.onClientClosed(s, client);
    client.on('message', onMessage);
    client.on('close', onClose);
    s.cleanups.push(() => {
      client.off('message', onMessage as never);
      client.off('close', onClose as never);
    });
    for (const [data, isBinary] of early) onMessage(data, isBinary);
    if (client.readyState !== OPEN) onClose();
  }

  private detachClient(s: BrokerSession): void {
    for (const c of s.cleanups.splice(0)) c();
    const client = s.client;
    if (client && s.inputPausedForWorker) {
      // Reading must go on, or the close handshake (the peer's close frame) is never seen.
      s.inputPausedForWorker = false;
      client.resume();
    }
    s.client = null;
    s.clientUnflushed = 0;
    this.setPaused(s, 'client-slow', false);
  }

  private onClientMessage(s: BrokerSession, client: ClientSocket, data: Buffer, isBinary: boolean): void {
    if (s.client !== client || s.state === 'done') return;
    try {
      if (isBinary) {
        if (data.length === 0 || data[0] !== CHANNEL_STDIN) throw new BadRequest('binary frames from the client must start with channel byte 0 (stdin)');
        const payload = data.subarray(1);
        if (payload.length === 0) return;
        s.bytesIn += payload.length;
        this.toWorker(s, { stdin: payload });
        return;
      }
      const m = parseControl(data.toString('utf8'));
      if (m.type === 'resize') this.toWorker(s, { resize: { rows: m.rows, cols: m.cols } });
      else if (m.type === 'signal') this.toWorker(s, { signal: m.name });
      else this.toWorker(s, { eof: true });
    } catch (err) {
      if (!(err instanceof BadRequest)) throw err;
      sendJson(client, { type: 'error', code: 'bad-request', message: err.message });
      // Detached first, so that the close below is not taken for the client closing its connection.
      this.detachClient(s);
      client.close(1008, 'bad request');
      this.cancel(s, `client sent a malformed frame: ${err.message}`);
    }
  }

  private onClientClosed(s: BrokerSession, client: ClientSocket): void {
    if (s.client !== client) return;
    this.detachClient(s);
    if (s.state === 'done') return this.forget(s);
    if (s.logs && s.exit === null) {
      // Reconnectable exec: the command keeps running; its output is kept until re-attach.
      s.detachedAt = Date.now();
      s.appendedSinceDetach = 0;
      clearTimeout(s.retainTimer);
      s.retainTimer = setTimeout(() => this.cancel(s, `nobody re-attached within ${s.req.retainMs} ms`), s.req.retainMs);
      this.audit(s, 'session.detached', `client of session ${s.id} on ${s.vm.name} disconnected; the command keeps running for ${Math.round(s.req.retainMs / 1000)} s`);
      return;
    }
    if (s.logs && s.exit) {
      clearTimeout(s.retainTimer);
      s.retainTimer = setTimeout(() => this.forget(s), s.req.retainMs);
      return;
    }
    // Once the VM side has started, the client closing its connection is how sessions normally
    // end (an OpenSSH ProxyCommand when ssh exits, a forwarded connection closed, a shell whose
    // terminal went away): recorded as session.closed. Before that, the client gave up: cancelled.
    if (s.started) this.cancel(s, 'the client closed the connection', 'closed');
    else this.cancel(s, 'the client disconnected before the session started');
  }

  private toWorker(s: BrokerSession, frame: SessionFrame): void {
    const w = s.worker;
    if (!w || s.state !== 'active') {
      s.pendingInput.push(frame);
      s.pendingInputBytes += frame.stdin ? (frame.stdin as Buffer).length : 16;
      if (s.pendingInputBytes > PENDING_INPUT_LIMIT && s.client && !s.inputPausedForWorker) {
        s.inputPausedForWorker = true;
        s.client.pause();
      }
      return;
    }
    if (!w.write(frame) && s.client && !s.inputPausedForWorker) {
      s.inputPausedForWorker = true;
      const client = s.client;
      client.pause();
      w.once('drain', () => {
        s.inputPausedForWorker = false;
        if (s.client === client) client.resume();
      });
    }
  }

  // ------------------------------------------------------------------ worker side

  /** A Session RPC from an authenticated worker. */
  acceptWorkerCall(call: SessionCall, workerId: string): void {
    const id = String(call.metadata.get('fleet-session-id')[0] ?? '');
    const s = this.sessions.get(id);
    if (!s) return endCall(call, grpc.status.NOT_FOUND, `no session ${id.slice(0, 64)} (cancelled or expired)`);
    if (s.workerId !== workerId) {
      this.deps.log.warn({ sessionId: id, workerId, expected: s.workerId }, 'a worker tried to open another worker\'s session');
      return endCall(call, grpc.status.PERMISSION_DENIED, 'this session belongs to another worker');
    }
    if (s.state !== 'opening' || s.worker) return endCall(call, grpc.status.FAILED_PRECONDITION, `session ${id} is ${s.state}`);
    // Cancelled while its certificate was being checked: its close events have already
    // fired, so listening for them below would leave the client waiting forever.
    if (call.cancelled) return this.fail(s, new SessionError('worker-disconnected', `worker ${s.workerName} dropped the session stream while opening it`));
    clearTimeout(s.openTimer);
    s.worker = call;
    s.state = 'active';
    call.on('data', (f: SessionFrame__Output) => this.onWorkerFrame(s, f));
    const gone = (why: string) => {
      if (s.worker !== call || s.state === 'done') return;
      s.worker = null;
      this.fail(s, new SessionError('worker-disconnected', `worker ${s.workerName} disconnected during the session (${why}); the remote command's outcome is unknown: it may have been stopped with the SSH channel`));
    };
    call.on('end', () => gone('stream ended without an exit status'));
    call.on('error', (e: Error) => gone(e.message));
    call.on('cancelled', () => gone('stream cancelled'));
    call.on('close', () => gone('connection closed'));
    // Input the client sent while the VM side was opening.
    const queued = s.pendingInput.splice(0);
    s.pendingInputBytes = 0;
    for (const f of queued) this.toWorker(s, f);
    if (s.inputPausedForWorker && s.client) {
      s.inputPausedForWorker = false;
      s.client.resume();
    }
  }

  private onWorkerFrame(s: BrokerSession, f: SessionFrame__Output): void {
    if (s.state === 'done') return;
    switch (f.payload) {
      case 'stdout':
      case 'stderr': {
        const data = f[f.payload]!;
        s.bytesOut += data.length;
        const ch = f.payload === 'stdout' ? CHANNEL_STDOUT : CHANNEL_STDERR;
        if (s.logs) {
          (ch === CHANNEL_STDOUT ? s.logs.stdout : s.logs.stderr).append(data);
          if (!s.client) {
            s.appendedSinceDetach += data.length;
            if (s.appendedSinceDetach >= RETAIN_BYTES) this.setPaused(s, 'detached', true);
          }
        }
        if (s.client) this.sendData(s, ch, data);
        return;
      }
      case 'progress':
        if (s.client && f.progress) sendJson(s.client, { type: 'progress', stage: clip(f.progress.stage, 40), message: clip(f.progress.message, 500) });
        return;
      case 'hostKey':
        void this.onHostKey(s, f.hostKey ?? '');
        return;
      case 'started':
        s.started = true;
        // A console involves no SSH: no host key to name.
        if (s.client) sendJson(s.client, { type: 'started', sessionId: s.id, ...(s.hostKey && s.req.kind !== 'vnc' ? { hostKeyFingerprint: hostKeyFingerprint(s.hostKey) } : {}) });
        this.audit(s, 'session.started', `${s.actor} opened ${s.describe()} on ${s.vm.name}`, { command: s.req.command, port: s.req.port, tty: s.req.tty });
        return;
      case 'exit': {
        s.exit = { code: f.exit?.code ?? -1, signal: clip(f.exit?.signal, 40) || null };
        this.finish(s);
        return;
      }
      case 'exitCode':
        s.exit = { code: f.exitCode ?? -1, signal: null };
        this.finish(s);
        return;
      case 'sessionError': {
        const e = f.sessionError!;
        this.fail(s, new SessionError(clip(e.code, 40) || 'failed', clip(e.message, 2000), e.stage ? clip(e.stage, 40) : undefined));
        return;
      }
      case 'error':
        this.fail(s, new SessionError('failed', clip(f.error ?? '', 2000)));
        return;
      default:
        this.deps.log.debug({ sessionId: s.id, payload: f.payload }, 'ignored a session frame the controller does not expect');
    }
  }

  private async onHostKey(s: BrokerSession, raw: string): Promise<void> {
    const key = await normaliseHostKey(raw);
    if (!key) return this.fail(s, new SessionError('host-key-invalid', 'the worker reported an unparseable host key'));
    try {
      const r = await recordHostKey(this.deps.db, s.vm.id, s.vm.attempt, key);
      if (!r.recorded) {
        return this.fail(
          s,
          new SessionError(
            'host-key-mismatch',
            `HOST KEY MISMATCH for vm "${s.vm.name}": this boot first presented ${r.previous ? hostKeyFingerprint(r.previous) : '?'}, now ${hostKeyFingerprint(key)}. Refusing to connect (possible impersonation). If the guest really changed its key, restart the VM.`,
          ),
        );
      }
      if (!s.hostKey) {
        s.hostKey = key;
        await this.deps.events.append([{ kind: 'vm.host-key', message: `host key of ${s.vm.name} recorded on first use: ${hostKeyFingerprint(key)}`, vmId: s.vm.id, vmName: s.vm.name, workerId: s.workerId, actor: `worker:${s.workerName}`, data: { hostKey: key, attempt: s.vm.attempt } }]);
      }
    } catch (err) {
      this.deps.log.error({ err, sessionId: s.id }, 'recording a host key failed');
    }
  }

  // ------------------------------------------------------------------ plumbing

  private sendData(s: BrokerSession, channel: number, data: Buffer): void {
    const client = s.client;
    if (!client || client.readyState !== OPEN) return;
    const frame = Buffer.allocUnsafe(data.length + 1);
    frame[0] = channel;
    data.copy(frame, 1);
    s.clientUnflushed += frame.length;
    client.send(frame, () => {
      if (s.client !== client) return;
      s.clientUnflushed -= frame.length;
      if (s.clientUnflushed <= CLIENT_LOW_WATER) this.setPaused(s, 'client-slow', false);
    });
    if (s.clientUnflushed > CLIENT_HIGH_WATER) this.setPaused(s, 'client-slow', true);
  }

  private setPaused(s: BrokerSession, reason: 'client-slow' | 'detached', on: boolean): void {
    const before = s.pauseReasons.size > 0;
    if (on) s.pauseReasons.add(reason);
    else s.pauseReasons.delete(reason);
    const after = s.pauseReasons.size > 0;
    if (!s.worker || before === after) return;
    if (after) s.worker.pause();
    else s.worker.resume();
  }

  private async waitRunning(s: BrokerSession, waitMs: number): Promise<Vm> {
    const deadline = s.startedAt + waitMs;
    let announced = false;
    for (;;) {
      const vm = await this.deps.db.vm.findUnique({ where: { id: s.vm.id } });
      if (!vm) throw new SessionError('not-found', `vm "${s.vm.name}" was deleted`);
      if (vm.state === 'running' && vm.workerId) return vm;
      if (NOT_GOING_TO_RUN.has(vm.state) || vm.desiredPower === 'stopped') {
        throw new SessionError('not-running', `vm "${vm.name}" is ${vm.state}${vm.reason ? ` (${vm.reason})` : ''}; start it first (fleet vm start ${vm.name})`, 'waiting-running');
      }
      if (Date.now() >= deadline) {
        throw new SessionError('timeout', `vm "${vm.name}" was not running after ${Math.round(waitMs / 1000)} s (it is ${vm.state}${vm.reason ? `: ${vm.reason}` : ''}); raise --wait`, 'waiting-running');
      }
      if (!announced && s.client) {
        announced = true;
        sendJson(s.client, { type: 'progress', stage: 'waiting-running', message: `vm "${vm.name}" is ${vm.state}; waiting for it to run` });
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.min(1000, Math.max(0, deadline - Date.now())));
        const off = this.deps.bus.onVmChange((c) => {
          if (c.vm.id === vm.id) done();
        });
        function done() {
          clearTimeout(t);
          off();
          resolve();
        }
      });
      if (s.state === 'done') return vm;
    }
  }

  private finish(s: BrokerSession): void {
    if (s.state === 'done') return;
    s.state = 'done';
    const exit = s.exit!;
    this.audit(s, 'session.ended', `${s.describe()} on ${s.vm.name} by ${s.actor} ended: exit ${exit.code}${exit.signal ? ` (signal ${exit.signal})` : ''}`, {
      exitCode: exit.code,
      signal: exit.signal,
      durationMs: Date.now() - s.startedAt,
      bytesIn: s.bytesIn,
      bytesOut: s.bytesOut,
    });
    const w = s.worker;
    s.worker = null;
    if (w) endCall(w, grpc.status.OK, 'done');
    if (s.client) this.finishClient(s);
    else if (s.logs) {
      clearTimeout(s.retainTimer);
      s.retainTimer = setTimeout(() => this.forget(s), s.req.retainMs);
    } else this.forget(s);
  }

  /** Sends exit once everything before it has been flushed, then closes the socket. */
  private finishClient(s: BrokerSession): void {
    const client = s.client!;
    sendJson(client, { type: 'exit', code: s.exit!.code, signal: s.exit!.signal }, () => closeClient(client, 1000, 'exit'));
    this.detachClient(s);
    if (!s.logs) this.forget(s);
    else {
      // Keep the finished session briefly so a client that lost the exit frame can re-attach.
      clearTimeout(s.retainTimer);
      s.retainTimer = setTimeout(() => this.forget(s), Math.min(s.req.retainMs, 60_000));
    }
  }

  private fail(s: BrokerSession, err: unknown): void {
    if (s.state === 'done') return;
    const e = err instanceof SessionError ? err : new SessionError('internal', 'internal error; see the controller log');
    if (!(err instanceof SessionError)) this.deps.log.error({ err, sessionId: s.id }, 'session failed');
    const wasActive = s.state === 'active' || s.state === 'opening';
    s.state = 'done';
    clearTimeout(s.openTimer);
    clearTimeout(s.retainTimer);
    const w = s.worker;
    s.worker = null;
    if (w) endCall(w, grpc.status.ABORTED, e.message);
    else if (wasActive) this.deps.streams.get(s.workerId)?.send({ sessionCancel: { sessionId: s.id, reason: e.message } });
    this.audit(s, 'session.failed', `${s.describe()} on ${s.vm.name} by ${s.actor} failed: ${e.code}: ${e.message}`, { code: e.code, stage: e.stage ?? null, durationMs: Date.now() - s.startedAt }, 'warn');
    if (s.client) {
      const client = s.client;
      sendJson(client, { type: 'error', code: e.code, message: e.message, ...(e.stage ? { stage: e.stage } : {}) }, () => closeClient(client, 1000, e.code));
      this.detachClient(s);
    }
    this.forget(s);
  }

  /**
   * Ends a session from the controller's side (client gone, retention over, shutdown).
   * `how`: 'cancelled' (a warning: session.cancelled) or 'closed' (a started session whose
   * client closed its connection, the normal end of a forward or ProxyCommand: session.closed, info).
   */
  cancel(s: BrokerSession, reason: string, how: 'cancelled' | 'closed' = 'cancelled'): void {
    if (s.state === 'done') return this.forget(s);
    const wasActive = s.state === 'active' || s.state === 'opening';
    s.state = 'done';
    clearTimeout(s.openTimer);
    clearTimeout(s.retainTimer);
    const w = s.worker;
    s.worker = null;
    if (w) endCall(w, grpc.status.CANCELLED, reason);
    else if (wasActive) this.deps.streams.get(s.workerId)?.send({ sessionCancel: { sessionId: s.id, reason } });
    const data = { durationMs: Date.now() - s.startedAt, bytesIn: s.bytesIn, bytesOut: s.bytesOut };
    if (how === 'closed') this.audit(s, 'session.closed', `${s.describe()} on ${s.vm.name} by ${s.actor} closed: ${reason}`, data);
    else this.audit(s, 'session.cancelled', `${s.describe()} on ${s.vm.name} by ${s.actor} cancelled: ${reason}`, data, 'warn');
    if (s.client) {
      const c = s.client;
      this.detachClient(s);
      closeClient(c, 1001, 'cancelled');
    }
    this.forget(s);
  }

  private forget(s: BrokerSession): void {
    clearTimeout(s.retainTimer);
    clearTimeout(s.openTimer);
    this.sessions.delete(s.id);
  }

  private audit(s: BrokerSession, kind: string, message: string, data: Record<string, unknown> = {}, level: 'info' | 'warn' = 'info'): void {
    const event = { kind, level, message, vmId: s.vm.id, vmName: s.vm.name, workerId: s.workerId || null, actor: s.actor, data: { sessionId: s.id, kind: s.req.kind, ...data } };
    this.writes.run('session audit event', () => this.deps.events.append([event]), { sessionId: s.id, event: kind });
  }

  /** The actor's token was revoked or expired: end its sessions, attached or kept for re-attach. */
  endSessionsOf(actor: string, reason: string): number {
    let ended = 0;
    for (const s of [...this.sessions.values()]) {
      if (s.actor !== actor) continue;
      if (s.client) sendJson(s.client, { type: 'error', code: 'unauthorized', message: reason });
      this.cancel(s, reason);
      ended++;
    }
    return ended;
  }

  /** Controller shutdown: tell every client, end every worker stream. */
  closeAll(reason: string): void {
    this.offVm();
    for (const s of [...this.sessions.values()]) {
      if (s.client) sendJson(s.client, { type: 'error', code: 'controller-shutdown', message: reason });
      this.cancel(s, reason);
    }
    if (!this.deps.writes) this.writes.stop();
  }
}

/** Closes a client socket; a peer that does not answer the close handshake is dropped after 2 s. */
function closeClient(client: ClientSocket, code: number, reason: string): void {
  try {
    client.close(code, reason);
  } catch {
    /* already closed */
  }
  if (client.terminate) setTimeout(() => client.terminate?.(), 2000).unref();
}

function sendJson(client: ClientSocket, msg: ServerMessage, cb?: () => void): void {
  if (client.readyState !== OPEN) {
    cb?.();
    return;
  }
  client.send(JSON.stringify(msg), () => cb?.());
}

function endCall(call: SessionCall, code: grpc.status, details: string): void {
  try {
    if (code === grpc.status.OK) call.end();
    else call.emit('error', { code, details, metadata: new grpc.Metadata() });
  } catch {
    /* already ended */
  }
}

function clip(s: string | undefined, n: number): string {
  return (s ?? '').slice(0, n);
}
