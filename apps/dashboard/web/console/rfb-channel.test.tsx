// The Console tab's channel adapter: a Fleet session WebSocket (kind "vnc") seen by
// noVNC as a plain RFB byte channel. A fake socket plays the controller; the last
// test hands the adapter to noVNC's own Websock (its attach() property check and
// receive queue), as RFB does.
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLOSED, CLOSING, CONNECTING, FleetRfbChannel, OPEN, retryDelay, type ChannelCloseEvent, type SessionSocket } from './rfb-channel.ts';
import { textToKeys, XK_SHIFT_L } from './keys.ts';

class FakeSocket implements SessionSocket {
  binaryType: BinaryType = 'blob';
  readyState = CONNECTING;
  sent: (string | Uint8Array)[] = [];
  closedWith: number[] = [];
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;

  send(data: string | ArrayBufferView<ArrayBuffer>): void {
    this.sent.push(typeof data === 'string' ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice());
  }
  close(code = 1005): void {
    this.closedWith.push(code);
    this.readyState = CLOSING;
  }
  // The controller's side:
  open(): void {
    this.readyState = OPEN;
    this.onopen?.(new Event('open'));
  }
  text(frame: object): void {
    this.onmessage?.(new MessageEvent('message', { data: JSON.stringify(frame) }));
  }
  binary(bytes: number[]): void {
    this.onmessage?.(new MessageEvent('message', { data: new Uint8Array(bytes).buffer }));
  }
  closed(code: number, reason = ''): void {
    this.readyState = CLOSED;
    // Node 20 has no CloseEvent; the adapter reads code and reason only.
    this.onclose?.({ code, reason, wasClean: code === 1000 } as CloseEvent);
  }
}

function setup(options: ConstructorParameters<typeof FleetRfbChannel>[1] = {}) {
  const socket = new FakeSocket();
  const channel = new FleetRfbChannel(socket, options);
  const events: string[] = [];
  const received: number[][] = [];
  const closes: ChannelCloseEvent[] = [];
  channel.onopen = () => events.push('open');
  channel.onmessage = (ev) => received.push([...new Uint8Array(ev.data)]);
  channel.onclose = (ev) => {
    events.push('close');
    closes.push(ev);
  };
  channel.onerror = () => events.push('error');
  return { socket, channel, events, received, closes };
}

describe('FleetRfbChannel', () => {
  it('asks for a vnc session when the socket opens, and opens only on "started"', () => {
    const progress: string[] = [];
    const { socket, channel, events } = setup({ waitMs: 5000, onProgress: (m) => progress.push(m) });
    expect(socket.binaryType).toBe('arraybuffer');
    expect(channel.readyState).toBe(CONNECTING);
    socket.open();
    expect(socket.sent).toEqual([JSON.stringify({ type: 'start', kind: 'vnc', waitMs: 5000 })]);
    expect(channel.readyState).toBe(CONNECTING); // the WebSocket is open, the VNC server not yet
    socket.text({ type: 'progress', stage: 'waiting-running', message: 'waiting for the VM to run' });
    expect(progress).toEqual(['waiting for the VM to run']);
    expect(events).toEqual([]);
    socket.text({ type: 'started', sessionId: 's-1' });
    expect(channel.readyState).toBe(OPEN);
    expect(channel.sessionId).toBe('s-1');
    socket.text({ type: 'started', sessionId: 's-1' }); // a duplicate does not re-open
    expect(events).toEqual(['open']);
  });

  it('defaults waitMs to 60 s', () => {
    const { socket } = setup();
    socket.open();
    expect(JSON.parse(socket.sent[0] as string)).toEqual({ type: 'start', kind: 'vnc', waitMs: 60_000 });
  });

  it('strips the channel byte from stdout frames and ignores everything else', () => {
    const { socket, received } = setup();
    socket.open();
    socket.binary([1, 9, 9]); // before "started": not RFB yet
    socket.text({ type: 'started', sessionId: 's' });
    socket.binary([1, 0x52, 0x46, 0x42]);
    socket.binary([2, 7]); // stderr: not RFB
    socket.binary([1]); // empty payload
    socket.binary([]);
    socket.text({ type: 'nonsense' });
    socket.onmessage?.(new MessageEvent('message', { data: 'not json' }));
    expect(received).toEqual([[0x52, 0x46, 0x42]]);
  });

  it('adds channel 0 to what noVNC sends, copying views (noVNC reuses its buffer)', () => {
    const { socket, channel } = setup();
    socket.open();
    channel.send(new Uint8Array([1, 2])); // not open yet: dropped
    socket.text({ type: 'started', sessionId: 's' });
    const buffer = new Uint8Array([9, 1, 2, 3, 9]);
    channel.send(new Uint8Array(buffer.buffer, 1, 3));
    buffer.fill(0);
    channel.send(new Uint8Array([4]).buffer);
    expect(socket.sent.slice(1)).toEqual([new Uint8Array([0, 1, 2, 3]), new Uint8Array([0, 4])]);
  });

  it('an error frame ends the channel with the server\'s words; refusals are final, timeouts retryable', () => {
    const timeout = setup();
    timeout.socket.open();
    timeout.socket.text({ type: 'error', code: 'timeout', stage: 'waiting-running', message: 'the VM did not start within 60 s' });
    expect(timeout.channel.readyState).toBe(CLOSING);
    expect(timeout.socket.closedWith).toEqual([1000]);
    expect(timeout.events).toEqual([]); // close fires when the socket really closes
    timeout.socket.closed(1000);
    expect(timeout.events).toEqual(['close']);
    expect(timeout.closes[0]).toEqual({ type: 'close', code: 1000, reason: 'the VM did not start within 60 s (timeout, while waiting-running)', wasClean: true });
    expect(timeout.channel.closeReason).toBe('the VM did not start within 60 s (timeout, while waiting-running)');
    expect(timeout.channel.retryable).toBe(true);
    expect(timeout.channel.errorCode).toBe('timeout');
    expect(timeout.channel.readyState).toBe(CLOSED);

    const refused = setup();
    refused.socket.open();
    refused.socket.text({ type: 'started', sessionId: 's' });
    refused.socket.text({ type: 'error', code: 'forbidden', message: 'token lacks the connect role' });
    refused.socket.closed(1008);
    expect(refused.closes).toEqual([{ type: 'close', code: 1008, reason: 'token lacks the connect role (forbidden)', wasClean: false }]);
    expect(refused.channel.retryable).toBe(false);
    expect(refused.events).toEqual(['open', 'close']);

    // A driver without a console (the synthetic one) says so; retrying would only repeat it.
    const unsupported = setup();
    unsupported.socket.open();
    unsupported.socket.text({ type: 'error', code: 'not-supported', message: 'the synthetic driver runs no real VM' });
    expect(unsupported.channel.retryable).toBe(false);
  });

  it('an exit frame ends the session (retryable: the console comes back when the VM does)', () => {
    const { socket, channel, closes } = setup();
    socket.open();
    socket.text({ type: 'started', sessionId: 's' });
    socket.text({ type: 'exit', code: 0, signal: null });
    socket.closed(1000);
    expect(closes.map((c) => c.reason)).toEqual(['The console session ended (exit 0).']);
    expect(channel.retryable).toBe(true);
  });

  it('a dropped connection says so and is retryable; the close event fires once', () => {
    const { socket, channel, events, closes } = setup();
    socket.open();
    socket.text({ type: 'started', sessionId: 's' });
    socket.onerror?.(new Event('error'));
    socket.closed(1006);
    socket.closed(1006);
    expect(events).toEqual(['open', 'error', 'close']);
    expect(closes[0]?.code).toBe(1006);
    expect(closes[0]?.reason).toMatch(/connection to the controller was lost/);
    expect(channel.retryable).toBe(true);
  });

  it('close() from noVNC closes the socket normally and is not retried', () => {
    const { socket, channel, closes } = setup();
    socket.open();
    socket.text({ type: 'started', sessionId: 's' });
    channel.close();
    channel.close();
    expect(socket.closedWith).toEqual([1000]);
    expect(channel.readyState).toBe(CLOSING);
    socket.closed(1000);
    expect(closes.map((c) => c.reason)).toEqual(['Disconnected.']);
    expect(channel.retryable).toBe(false);
  });
});

// noVNC's Websock, the class RFB hands its channel to. Its modules read WebSocket's
// constants and window.console at load time, which Node 20 lacks: stand-ins.
interface NoVncWebsock {
  readonly readyState: string;
  attach(channel: object): void;
  on(event: 'open' | 'message' | 'close', handler: (ev?: unknown) => void): void;
  rQlen: number;
  rQshiftStr(n: number): string;
  sQpushString(s: string): void;
  flush(): void;
}

describe("noVNC's Websock with the channel", () => {
  const hadWebSocket = 'WebSocket' in globalThis;
  const hadWindow = 'window' in globalThis;
  beforeAll(() => {
    if (!hadWebSocket) Object.assign(globalThis, { WebSocket: { CONNECTING, OPEN, CLOSING, CLOSED } });
    if (!hadWindow) Object.assign(globalThis, { window: globalThis });
  });
  afterAll(() => {
    if (!hadWebSocket) Reflect.deleteProperty(globalThis, 'WebSocket');
    if (!hadWindow) Reflect.deleteProperty(globalThis, 'window');
  });

  it('attaches (the property check passes), opens on "started", reads and writes RFB bytes', async () => {
    // Not an exported entry point of the package: import the file itself.
    const file = path.resolve(import.meta.dirname, '../../node_modules/@novnc/novnc/core/websock.js');
    const mod = (await import(/* @vite-ignore */ pathToFileURL(file).href)) as { default: new () => NoVncWebsock };
    const sock = new mod.default();
    const { socket, channel } = setup();
    let opened = 0;
    let closed = 0;
    sock.on('open', () => opened++);
    sock.on('message', () => undefined);
    sock.on('close', () => closed++);
    sock.attach(channel);
    expect(sock.readyState).toBe('connecting');
    socket.open();
    socket.text({ type: 'started', sessionId: 's' });
    expect(sock.readyState).toBe('open');
    expect(opened).toBe(1);
    socket.binary([1, ...new TextEncoder().encode('RFB 003.008\n')]);
    expect(sock.rQshiftStr(12)).toBe('RFB 003.008\n');
    sock.sQpushString('RFB 003.008\n');
    sock.flush();
    expect(socket.sent.at(-1)).toEqual(new Uint8Array([0, ...new TextEncoder().encode('RFB 003.008\n')]));
    socket.text({ type: 'error', code: 'worker-disconnected', message: 'the worker went away' });
    socket.closed(1011);
    expect(closed).toBe(1);
    expect(channel.closeReason).toBe('the worker went away (worker-disconnected)');
  });
});

describe('retryDelay', () => {
  it('doubles from 1 s up to 30 s', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 20].map(retryDelay)).toEqual([1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
  });
});

describe('textToKeys', () => {
  it('maps text to US-layout keys, holding Shift where that layout needs it', () => {
    expect(textToKeys('a>B1\n')).toEqual([
      { keysym: 0x61, code: 'KeyA', shift: false },
      { keysym: 0x3e, code: 'Period', shift: true },
      { keysym: 0x42, code: 'KeyB', shift: true },
      { keysym: 0x31, code: 'Digit1', shift: false },
      { keysym: 0xff0d, code: 'Enter', shift: false },
    ]);
    expect(textToKeys('é€')).toEqual([
      { keysym: 0xe9, code: null, shift: false },
      { keysym: 0x01000000 + 0x20ac, code: null, shift: false },
    ]);
    expect(textToKeys('\r\n')).toHaveLength(1);
    expect(XK_SHIFT_L).toBe(0xffe1);
  });
});
