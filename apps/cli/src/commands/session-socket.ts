// The client end of a session WebSocket (GET /v1/vms/NAME/session; protocol in
// docs/api.md "Sessions"), shared by exec, ssh, port-forward and cp.
// Backpressure: stdin is read only while the socket's unsent bytes stay under a
// bound; output is written to stdout/stderr and the socket is paused while they drain.
// Several controllers (issue 13): a socket that cannot connect to one controller of the URL's
// group (client/controller-endpoints.ts) is opened on the next at once. That is safe: nothing of
// the session is sent before the WebSocket is open. Certificate failures are reported, not skipped.
import { EventEmitter } from 'node:events';
import type WebSocket from 'ws';
import { endpointsFor, failoverCode, type ControllerEndpoints } from '../client/controller-endpoints.ts';
import { isCertificateError, untrustedControllerError, wsTlsOptions } from '../client/controller-trust.ts';
import { ApiError, CliError, ExitCode, UnreachableError } from '../errors.ts';

export interface SessionStart {
  kind: 'exec' | 'ssh' | 'port-forward' | 'vnc';
  command?: string[];
  tty?: boolean;
  rows?: number;
  cols?: number;
  env?: Record<string, string>;
  workdir?: string;
  port?: number;
  waitMs?: number;
  timeoutMs?: number;
  retainMs?: number;
}

export interface SessionAttach {
  sessionId: string;
  stdoutOffset: number;
  stderrOffset: number;
}

export type SessionOutcome =
  | { kind: 'exit'; code: number; signal: string | null }
  | { kind: 'error'; code: string; message: string; stage?: string };

/** Exit codes of session commands beyond the remote command's own (documented in docs/api.md). */
export const SESSION_EXIT = {
  /** The remote command ran longer than --timeout (like timeout(1)). */
  TIMEOUT: 124,
  /** The session broke after it started (worker or controller lost, VM gone): like ssh's 255. */
  BROKEN: 255,
} as const;

// ws is loaded by the first session, not at every start of the CLI (issue 16): a socket
// is dialled once it has loaded (writes before then wait in `beforeOpen`, as before the open).
let wsClass: Promise<typeof WebSocket> | undefined;
const loadWs = (): Promise<typeof WebSocket> => (wsClass ??= import('ws').then((m) => (m as { default: typeof WebSocket }).default));

const HIGH_WATER = 1024 * 1024;
/** With another controller to try: give up on a WebSocket that has not opened (nor been answered) after this long. */
export const SESSION_CONNECT_TIMEOUT_MS = 10_000;
const CH_STDIN = 0;
const CH_STDOUT = 1;
const CH_STDERR = 2;

export interface SessionSocketEvents {
  progress: [stage: string, message: string];
  started: [sessionId: string, info: { hostKeyFingerprint?: string; replayFrom?: { stdout: number; stderr: number } }];
  stdout: [data: Buffer];
  stderr: [data: Buffer];
  /** Socket-level buffer went under the high-water mark again. */
  drain: [];
}

export class SessionSocket extends EventEmitter<SessionSocketEvents> {
  readonly outcome: Promise<SessionOutcome>;
  private unsent = 0;
  private resolveOutcome!: (o: SessionOutcome) => void;
  private rejectOutcome!: (e: Error) => void;
  private settled = false;
  private pausedBy = 0;
  /** Frames written before the socket opened (stdin of a pipe is often ready first). */
  private beforeOpen: Array<{ data: Buffer | string; cb?: () => void }> | null = [];
  sessionId = '';

  private ws: WebSocket | undefined;
  /** Controllers that could not be reached, for the error when none can. */
  private readonly unreachable: string[] = [];

  private constructor() {
    super();
    this.outcome = new Promise((resolve, reject) => {
      this.resolveOutcome = resolve;
      this.rejectOutcome = reject;
    });
    this.outcome.catch(() => undefined);
  }

  static open(url: string, token: string | null, vm: string, opening: { start: SessionStart } | { attach: SessionAttach }): SessionSocket {
    const endpoints = endpointsFor(url.replace(/\/+$/, ''));
    const s = new SessionSocket();
    loadWs().then(
      (WS) => {
        if (!s.settled) s.dial(WS, endpoints, endpoints.candidates(), 0, token, vm, opening);
      },
      (err: Error) => s.fail(err),
    );
    return s;
  }

  /** Opens the WebSocket to `candidates[index]`; moves on to the next while none could be connected to. */
  private dial(WS: typeof WebSocket, endpoints: ControllerEndpoints, candidates: string[], index: number, token: string | null, vm: string, opening: { start: SessionStart } | { attach: SessionAttach }): void {
    const base = candidates[index]!;
    const wsUrl = `${base.replace(/^http/, 'ws')}/v1/vms/${encodeURIComponent(vm)}/session`;
    const ws = new WS(wsUrl, ['fleet.v1'], {
      ...wsTlsOptions(base),
      headers: token ? { authorization: `Bearer ${token}` } : {},
      perMessageDeflate: false,
      maxPayload: 4 * 1024 * 1024,
    });
    this.ws = ws;
    ws.binaryType = 'nodebuffer';
    const next = candidates[index + 1];
    let answered = false;
    const answer = (): void => {
      answered = true;
      clearTimeout(connectTimer);
      endpoints.answered(base);
    };
    // Abandons this socket for the next controller (only before any answer: nothing was sent).
    const moveOn = (reason: string): boolean => {
      if (answered || next === undefined || this.settled || this.ws !== ws) return false;
      clearTimeout(connectTimer);
      this.unreachable.push(`${base}: ${reason}`);
      ws.removeAllListeners();
      ws.on('error', () => {});
      ws.terminate();
      this.dial(WS, endpoints, candidates, index + 1, token, vm, opening);
      return true;
    };
    const connectTimer = next === undefined ? undefined : setTimeout(() => moveOn(`no connection within ${SESSION_CONNECT_TIMEOUT_MS / 1000} s`), SESSION_CONNECT_TIMEOUT_MS);
    connectTimer?.unref();
    ws.on('open', () => {
      answer();
      const first = 'start' in opening ? { type: 'start', ...opening.start } : { type: 'attach', ...opening.attach };
      ws.send(JSON.stringify(first));
      const queued = this.beforeOpen ?? [];
      this.beforeOpen = null;
      for (const q of queued) ws.send(q.data, () => q.cb?.());
    });
    ws.on('unexpected-response', (_req, res) => {
      answer();
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        let message = `HTTP ${res.statusCode}`;
        let code = 'http_error';
        try {
          const parsed = JSON.parse(body) as { error?: { code?: string; message?: string } };
          if (parsed.error?.message) message = parsed.error.message;
          if (parsed.error?.code) code = parsed.error.code;
        } catch {
          /* not JSON */
        }
        this.fail(new ApiError(message, res.statusCode ?? 0, code));
      });
    });
    ws.on('error', (err: NodeJS.ErrnoException) => {
      if (this.settled) return;
      if (isCertificateError(err.code)) {
        this.fail(untrustedControllerError(base, err.code!));
        return;
      }
      if (!answered && failoverCode(err.code, true) && moveOn(err.code ?? err.message)) return;
      clearTimeout(connectTimer);
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOTFOUND' || err.code === 'EHOSTUNREACH' || err.code === 'ETIMEDOUT' || err.code === 'ENETUNREACH') {
        const tried = this.unreachable.length > 0 ? ` (also tried ${this.unreachable.join('; ')})` : '';
        this.fail(new UnreachableError(`cannot reach the controller at ${base}: ${err.message}${tried}`));
      } else this.fail(new CliError(`session connection failed: ${err.message}`, ExitCode.ERROR));
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary));
    ws.on('close', (code: number, reason: Buffer) => {
      clearTimeout(connectTimer);
      if (this.settled) return;
      const why = reason.toString() || (code === 1006 ? 'connection lost' : `closed with ${code}`);
      if (code === 1009) this.settle({ kind: 'error', code: 'too-big', message: 'the controller closed the session: a frame exceeded 1 MiB' });
      else this.settle({ kind: 'error', code: 'connection-lost', message: `the connection to the controller was lost (${why}); the remote command's outcome is unknown` });
    });
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      if (data.length < 1) return;
      const ch = data[0];
      const payload = data.subarray(1);
      if (ch === CH_STDOUT) this.emit('stdout', payload);
      else if (ch === CH_STDERR) this.emit('stderr', payload);
      return;
    }
    let m: { type?: string; [k: string]: unknown };
    try {
      m = JSON.parse(data.toString('utf8')) as typeof m;
    } catch {
      return;
    }
    switch (m.type) {
      case 'progress':
        this.emit('progress', String(m.stage ?? ''), String(m.message ?? ''));
        return;
      case 'started':
        this.sessionId = String(m.sessionId ?? '');
        this.emit('started', this.sessionId, {
          ...(typeof m.hostKeyFingerprint === 'string' ? { hostKeyFingerprint: m.hostKeyFingerprint } : {}),
          ...(m.replayFrom ? { replayFrom: m.replayFrom as { stdout: number; stderr: number } } : {}),
        });
        return;
      case 'exit':
        this.settle({ kind: 'exit', code: Number(m.code ?? 255), signal: typeof m.signal === 'string' ? m.signal : null });
        return;
      case 'error':
        this.settle({ kind: 'error', code: String(m.code ?? 'error'), message: String(m.message ?? ''), ...(typeof m.stage === 'string' ? { stage: m.stage } : {}) });
        return;
      default:
        return;
    }
  }

  private settle(o: SessionOutcome): void {
    if (this.settled) return;
    this.settled = true;
    this.resolveOutcome(o);
    // The session is over: finish the close handshake, but never wait on it for long
    // (a peer that stopped reading would otherwise hold the process for ws's 30 s timeout).
    const ws = this.ws;
    if (!ws) return;
    if (ws.readyState === ws.OPEN) ws.close(1000, 'done');
    setTimeout(() => ws.terminate(), 1000).unref();
  }

  private fail(e: Error): void {
    if (this.settled) return;
    this.settled = true;
    this.rejectOutcome(e);
    this.ws?.terminate();
  }

  get done(): boolean {
    return this.settled;
  }

  private send(data: Buffer | string, cb?: () => void): void {
    if (this.beforeOpen) {
      this.beforeOpen.push({ data, ...(cb ? { cb } : {}) });
      return;
    }
    if (!this.ws || this.ws.readyState !== this.ws.OPEN) {
      cb?.();
      return;
    }
    this.ws.send(data, () => cb?.());
  }

  /** Sends stdin bytes; false = over the high-water mark, wait for 'drain'. */
  write(data: Buffer): boolean {
    for (let off = 0; off < data.length; off += 512 * 1024) {
      const part = data.subarray(off, off + 512 * 1024);
      const frame = Buffer.allocUnsafe(part.length + 1);
      frame[0] = CH_STDIN;
      part.copy(frame, 1);
      this.unsent += frame.length;
      this.send(frame, () => {
        this.unsent -= frame.length;
        if (this.unsent < HIGH_WATER / 4 && this.unsent + frame.length >= HIGH_WATER / 4) this.emit('drain');
      });
    }
    return this.unsent < HIGH_WATER;
  }

  private control(m: object): void {
    this.send(JSON.stringify(m));
  }

  eof(): void {
    this.control({ type: 'eof' });
  }

  signal(name: string): void {
    this.control({ type: 'signal', name });
  }

  resize(rows: number, cols: number): void {
    this.control({ type: 'resize', rows, cols });
  }

  /** Output backpressure: stop reading the socket until resume(). Nested calls are counted. */
  pause(): void {
    if (this.pausedBy++ === 0) this.ws?.pause();
  }

  resume(): void {
    if (this.pausedBy > 0 && --this.pausedBy === 0) this.ws?.resume();
  }

  /** Closes the socket (a detach for retained sessions). */
  close(): void {
    const ws = this.ws;
    if (!ws) this.fail(new CliError('session connection failed: closed before it was opened', ExitCode.ERROR));
    else if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(1000, 'client closed');
  }
}

/** Writes to a Node stream, pausing the session until it drains. */
export function pipeOutput(session: SessionSocket, which: 'stdout' | 'stderr', out: NodeJS.WritableStream): void {
  session.on(which, (data) => {
    if (!out.write(data)) {
      session.pause();
      out.once('drain', () => session.resume());
    }
  });
}

/** The CLI exit code for a session outcome. */
export function exitCodeOf(o: SessionOutcome, started: boolean): number {
  if (o.kind === 'exit') return o.code;
  switch (o.code) {
    case 'not-found':
      return ExitCode.NOT_FOUND;
    case 'forbidden':
      return ExitCode.AUTH;
    case 'bad-request':
      return ExitCode.USAGE;
    case 'not-running':
      return ExitCode.CONFLICT;
    case 'timeout':
      return o.stage ? ExitCode.WAIT_FAILED : SESSION_EXIT.TIMEOUT;
    default:
      return started ? SESSION_EXIT.BROKEN : ExitCode.ERROR;
  }
}
