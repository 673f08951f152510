// Presents a Fleet session WebSocket (GET /v1/vms/{name}/session, kind "vnc") to
// noVNC as a plain RFB byte channel. noVNC's Websock.attach() accepts any object
// with WebSocket's shape (send, close, binaryType, protocol, readyState and the
// four on* handlers, found as own keys or on the class prototype); this class is
// that object. It hides the session protocol from noVNC:
// - the JSON `start` frame goes out when the socket opens; `progress` frames are
//   reported to the UI; `open` fires only on `started` (so noVNC's RFB handshake
//   begins when QEMU's VNC server is really there);
// - binary frames lose their channel byte (server → noVNC: channel 1) or gain one
//   (noVNC → server: channel 0);
// - `error` / `exit` frames and socket closes end the channel with a readable
//   reason, kept in `closeReason` (noVNC's own "disconnect" event only says
//   clean or not) and passed as the close event's `reason`.

/** The part of the browser's WebSocket the channel uses (a fake in unit tests). */
export interface SessionSocket {
  binaryType: BinaryType;
  readonly readyState: number;
  send(data: string | ArrayBufferView<ArrayBuffer>): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: Event) => void) | null;
  onmessage: ((ev: MessageEvent) => void) | null;
  onclose: ((ev: CloseEvent) => void) | null;
  onerror: ((ev: Event) => void) | null;
}

/** The close event the channel gives noVNC (noVNC reads code and reason). */
export interface ChannelCloseEvent {
  type: 'close';
  code: number;
  reason: string;
  wasClean: boolean;
}

export interface RfbChannelOptions {
  /** Bound on the server's boot-time waits (VM running, console reachable). */
  waitMs?: number;
  /** A `progress` frame: the session waits for the VM (shown in the status line). */
  onProgress?: (message: string, stage: string) => void;
  /** The `started` frame: the RFB bytes flow from now on. */
  onStarted?: (sessionId: string) => void;
}

type ServerFrame =
  | { type: 'progress'; stage: string; message?: string }
  | { type: 'started'; sessionId: string }
  | { type: 'exit'; code: number | null; signal: string | null }
  | { type: 'error'; code: string; message: string; stage?: string };

// WebSocket's readyState numbers (noVNC accepts these or RTCDataChannel's strings).
export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSING = 2;
export const CLOSED = 3;

const CHANNEL_STDIN = 0;
const CHANNEL_STDOUT = 1;

/**
 * Session error codes after which trying again cannot help: the request itself
 * is wrong, not allowed, or the VM's driver has no console. Everything else (a network blip, the worker's stream
 * broke, a boot wait timed out, the controller restarts) is worth a retry.
 */
const FINAL_ERRORS = new Set(['bad-request', 'forbidden', 'not-found', 'not-supported', 'auth-failed', 'host-key-mismatch']);

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;

/** Reconnect backoff after `failures` attempts in a row that never connected: 1 s, 2 s, 4 s … 30 s. */
export function retryDelay(failures: number): number {
  return Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.max(0, failures));
}

function parseFrame(text: string): ServerFrame | null {
  try {
    const m = JSON.parse(text) as { type?: unknown };
    return typeof m === 'object' && m !== null && typeof m.type === 'string' ? (m as ServerFrame) : null;
  } catch {
    return null;
  }
}

function socketCloseReason(code: number, reason: string): string {
  if (code === 1000) return 'The session was closed.';
  if (code === 1006) return 'The connection to the controller was lost (network, or the controller refused or ended the WebSocket).';
  return `The connection closed (code ${code}${reason ? `: ${reason}` : ''}).`;
}

export class FleetRfbChannel {
  // Own fields, so noVNC's property check (Object.keys) finds them.
  binaryType: BinaryType = 'arraybuffer';
  protocol = '';
  onopen: ((ev: { type: 'open' }) => void) | null = null;
  onmessage: ((ev: { type: 'message'; data: ArrayBuffer }) => void) | null = null;
  onclose: ((ev: ChannelCloseEvent) => void) | null = null;
  onerror: ((ev: { type: 'error' }) => void) | null = null;

  /** Why the channel ended, in words for the status line (null while it lives). */
  closeReason: string | null = null;
  /** Whether reconnecting can help after this end (false: the request itself was refused). */
  retryable = true;
  /** The server's error code, when an `error` frame ended the session. */
  errorCode: string | null = null;
  sessionId: string | null = null;

  private state: number = CONNECTING;
  private readonly socket: SessionSocket;

  constructor(socket: SessionSocket, private readonly options: RfbChannelOptions = {}) {
    this.socket = socket;
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: 'start', kind: 'vnc', waitMs: options.waitMs ?? 60_000 }));
    };
    socket.onmessage = (ev) => this.receive(ev.data);
    socket.onclose = (ev) => this.closed(ev.code, ev.reason);
    socket.onerror = () => this.onerror?.({ type: 'error' });
    // A socket that is already gone (closed before we were handed it) ends the channel at once.
    if (socket.readyState === CLOSED || socket.readyState === CLOSING) {
      this.state = CLOSED;
      this.closeReason = 'The connection was already closed.';
    }
  }

  get readyState(): number {
    return this.state;
  }

  /** noVNC's output: RFB bytes towards the VNC server, sent on channel 0. */
  send(data: ArrayBuffer | ArrayBufferView): void {
    if (this.state !== OPEN) return; // noVNC only flushes while open; anything else would be a protocol error server-side
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    // A copy is needed anyway: noVNC reuses its send buffer after this returns.
    const frame = new Uint8Array(bytes.byteLength + 1);
    frame[0] = CHANNEL_STDIN;
    frame.set(bytes, 1);
    this.socket.send(frame);
  }

  close(): void {
    if (this.state === CLOSING || this.state === CLOSED) return;
    this.state = CLOSING;
    this.closeReason ??= 'Disconnected.';
    this.retryable = false; // we asked for it
    this.socket.close(1000);
  }

  private receive(data: unknown): void {
    if (typeof data === 'string') {
      const frame = parseFrame(data);
      if (frame) this.control(frame);
      return;
    }
    if (!(data instanceof ArrayBuffer) || this.state !== OPEN) return;
    const bytes = new Uint8Array(data);
    // Only stdout carries the VNC server's bytes; an empty frame or another channel is not RFB.
    if (bytes.length < 2 || bytes[0] !== CHANNEL_STDOUT) return;
    this.onmessage?.({ type: 'message', data: data.slice(1) });
  }

  private control(frame: ServerFrame): void {
    switch (frame.type) {
      case 'progress':
        this.options.onProgress?.(frame.message ?? frame.stage, frame.stage);
        return;
      case 'started':
        if (this.state !== CONNECTING) return;
        this.state = OPEN;
        this.sessionId = frame.sessionId;
        this.options.onStarted?.(frame.sessionId);
        this.onopen?.({ type: 'open' });
        return;
      case 'exit':
        this.end(`The console session ended${frame.signal ? ` (signal ${frame.signal})` : frame.code !== null ? ` (exit ${frame.code})` : ''}.`, true);
        return;
      case 'error':
        this.errorCode = frame.code;
        this.end(`${frame.message} (${frame.code}${frame.stage ? `, while ${frame.stage}` : ''})`, !FINAL_ERRORS.has(frame.code));
        return;
    }
  }

  /** The server ended the session: keep its reason, then close (the server closes too; whichever is first). */
  private end(reason: string, retryable: boolean): void {
    if (this.closeReason === null) {
      this.closeReason = reason;
      this.retryable = retryable;
    }
    if (this.state === CONNECTING || this.state === OPEN) {
      this.state = CLOSING;
      this.socket.close(1000);
    }
  }

  private closed(code: number, reason: string): void {
    if (this.state === CLOSED) return;
    this.state = CLOSED;
    if (this.closeReason === null) {
      this.closeReason = socketCloseReason(code, reason);
      this.retryable = code !== 1008 && code !== 1009; // a policy refusal repeats itself
    }
    this.onclose?.({ type: 'close', code, reason: this.closeReason, wasClean: code === 1000 });
  }
}
