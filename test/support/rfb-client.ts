// A small RFB 3.8 (VNC) client for tests and benchmarks (issue 19): over any Node Duplex (a
// Unix socket to QEMU's VNC server, or an adapter over a fleet `vnc` session WebSocket). It does
// the handshake with security type None, asks for 32-bit true colour little-endian, decodes Raw,
// CopyRect and DesktopSize into an RGBA framebuffer in memory, and sends keys and pointer events.
// Everything the server sends is checked against fixed bounds: garbage is an RfbError, never a
// huge allocation or a hang.
import { Duplex } from 'node:stream';
import WebSocket from 'ws';

export class RfbError extends Error {
  override name = 'RfbError';
}

/** Bounds on what a server may announce (QEMU's VGA modes are far below them). */
export const LIMITS = { maxDimension: 8192, maxNameLength: 4096, maxCutText: 1024 * 1024, maxReasonLength: 4096 } as const;

export const ENCODING = { raw: 0, copyRect: 1, desktopSize: -223 } as const;

export interface PixelFormat {
  bitsPerPixel: number;
  depth: number;
  bigEndian: boolean;
  trueColour: boolean;
  redMax: number;
  greenMax: number;
  blueMax: number;
  redShift: number;
  greenShift: number;
  blueShift: number;
}

/** What we ask for: 32 bpp, depth 24, little-endian, true colour: bytes B, G, R, X on the wire. */
export const CLIENT_PIXEL_FORMAT: PixelFormat = { bitsPerPixel: 32, depth: 24, bigEndian: false, trueColour: true, redMax: 255, greenMax: 255, blueMax: 255, redShift: 16, greenShift: 8, blueShift: 0 };

export interface UpdateRect {
  x: number;
  y: number;
  width: number;
  height: number;
  encoding: number;
}

export interface FramebufferUpdate {
  rects: UpdateRect[];
  /** performance.now() when the whole update had been read. */
  at: number;
}

export function encodePixelFormat(pf: PixelFormat): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt8(pf.bitsPerPixel, 0);
  b.writeUInt8(pf.depth, 1);
  b.writeUInt8(pf.bigEndian ? 1 : 0, 2);
  b.writeUInt8(pf.trueColour ? 1 : 0, 3);
  b.writeUInt16BE(pf.redMax, 4);
  b.writeUInt16BE(pf.greenMax, 6);
  b.writeUInt16BE(pf.blueMax, 8);
  b.writeUInt8(pf.redShift, 10);
  b.writeUInt8(pf.greenShift, 11);
  b.writeUInt8(pf.blueShift, 12);
  return b;
}

export function decodePixelFormat(b: Buffer): PixelFormat {
  const pf: PixelFormat = {
    bitsPerPixel: b.readUInt8(0),
    depth: b.readUInt8(1),
    bigEndian: b.readUInt8(2) !== 0,
    trueColour: b.readUInt8(3) !== 0,
    redMax: b.readUInt16BE(4),
    greenMax: b.readUInt16BE(6),
    blueMax: b.readUInt16BE(8),
    redShift: b.readUInt8(10),
    greenShift: b.readUInt8(11),
    blueShift: b.readUInt8(12),
  };
  if (![8, 16, 32].includes(pf.bitsPerPixel)) throw new RfbError(`server pixel format: bits per pixel ${pf.bitsPerPixel} (must be 8, 16 or 32)`);
  if (pf.depth === 0 || pf.depth > 32) throw new RfbError(`server pixel format: depth ${pf.depth}`);
  return pf;
}

// ---- client messages (RFC 6143 §7.5)

export const msg = {
  setPixelFormat(pf: PixelFormat): Buffer {
    return Buffer.concat([Buffer.from([0, 0, 0, 0]), encodePixelFormat(pf)]);
  },
  setEncodings(encodings: number[]): Buffer {
    if (encodings.length > 0xffff) throw new RfbError('too many encodings');
    const b = Buffer.alloc(4 + 4 * encodings.length);
    b.writeUInt8(2, 0);
    b.writeUInt16BE(encodings.length, 2);
    encodings.forEach((e, i) => b.writeInt32BE(e, 4 + 4 * i));
    return b;
  },
  updateRequest(incremental: boolean, x: number, y: number, width: number, height: number): Buffer {
    const b = Buffer.alloc(10);
    b.writeUInt8(3, 0);
    b.writeUInt8(incremental ? 1 : 0, 1);
    b.writeUInt16BE(x, 2);
    b.writeUInt16BE(y, 4);
    b.writeUInt16BE(width, 6);
    b.writeUInt16BE(height, 8);
    return b;
  },
  key(keysym: number, down: boolean): Buffer {
    if (!Number.isInteger(keysym) || keysym < 0 || keysym > 0xffffffff) throw new RfbError(`bad keysym ${keysym}`);
    const b = Buffer.alloc(8);
    b.writeUInt8(4, 0);
    b.writeUInt8(down ? 1 : 0, 1);
    b.writeUInt32BE(keysym, 4);
    return b;
  },
  pointer(x: number, y: number, buttonMask: number): Buffer {
    const b = Buffer.alloc(6);
    b.writeUInt8(5, 0);
    b.writeUInt8(buttonMask & 0xff, 1);
    b.writeUInt16BE(x, 2);
    b.writeUInt16BE(y, 4);
    return b;
  },
  /** ClientCutText; `declaredLength` lets a test lie about the length (garbage input). */
  cutText(text: Buffer, declaredLength = text.length): Buffer {
    const b = Buffer.alloc(8);
    b.writeUInt8(6, 0);
    b.writeUInt32BE(declaredLength >>> 0, 4);
    return Buffer.concat([b, text]);
  },
};

// ---- keysyms (X11): Latin-1 printable characters are their own keysym

export const KEYSYM = { Return: 0xff0d, BackSpace: 0xff08, Tab: 0xff09, Escape: 0xff1b, ShiftL: 0xffe1, ControlL: 0xffe3 } as const;

/** Characters that need Shift on a US keyboard (QEMU's default keymap is en-us). */
const US_SHIFTED = new Set('~!@#$%^&*()_+{}|:"<>?'.split(''));

/** The key events that type one character: [keysym, down] pairs, Shift around uppercase and shifted symbols. */
export function keyEventsFor(ch: string): Array<[number, boolean]> {
  let sym: number;
  if (ch === '\n' || ch === '\r') sym = KEYSYM.Return;
  else if (ch === '\t') sym = KEYSYM.Tab;
  else if (ch.length === 1 && ch.charCodeAt(0) >= 0x20 && ch.charCodeAt(0) <= 0x7e) sym = ch.charCodeAt(0);
  else throw new RfbError(`cannot type ${JSON.stringify(ch)}: only printable ASCII, newline and tab`);
  const shift = (ch >= 'A' && ch <= 'Z') || US_SHIFTED.has(ch);
  const press: Array<[number, boolean]> = [
    [sym, true],
    [sym, false],
  ];
  return shift ? [[KEYSYM.ShiftL, true], ...press, [KEYSYM.ShiftL, false]] : press;
}

// ---- reading

/** Exact-length reads from a stream; rejects once the stream ends or fails. */
class ByteReader {
  private chunks: Buffer[] = [];
  private length = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;

  constructor(private readonly stream: Duplex) {
    stream.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.length += d.length;
      this.wake();
    });
    stream.on('end', () => this.fail(new RfbError('the server closed the connection')));
    stream.on('close', () => this.fail(new RfbError('the connection closed')));
    stream.on('error', (e: Error) => this.fail(new RfbError(`connection error: ${e.message}`)));
  }

  get buffered(): number {
    return this.length;
  }

  private fail(e: Error): void {
    this.failure ??= e;
    const w = this.waiter;
    if (w && this.length < w.n) {
      this.waiter = null;
      w.reject(this.failure);
    }
  }

  /** The first n buffered bytes; copies only when they span chunks (never the whole buffer). */
  private take(n: number): Buffer {
    this.length -= n;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const c = this.chunks[0]!;
      if (c.length <= need) {
        parts.push(c);
        this.chunks.shift();
        need -= c.length;
      } else {
        parts.push(c.subarray(0, need));
        this.chunks[0] = c.subarray(need);
        need = 0;
      }
    }
    return Buffer.concat(parts, n);
  }

  private wake(): void {
    const w = this.waiter;
    if (w && this.length >= w.n) {
      this.waiter = null;
      w.resolve(this.take(w.n));
    }
  }

  read(n: number): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new RfbError('concurrent reads'));
    if (n === 0) return Promise.resolve(Buffer.alloc(0));
    if (this.length >= n) return Promise.resolve(this.take(n));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }
}

export interface RfbConnectOptions {
  /** Encodings to announce (default Raw, CopyRect, DesktopSize). */
  encodings?: number[];
  /** The whole handshake must finish within this (default 15 s). */
  timeoutMs?: number;
}

/**
 * One RFB connection. `connect` does the handshake; then a background loop reads server messages
 * into `fb` (RGBA, width * height * 4) and resolves `nextUpdate()` waiters.
 */
export class RfbClient {
  width = 0;
  height = 0;
  name = '';
  serverPixelFormat!: PixelFormat;
  fb = new Uint8Array(0);
  bells = 0;
  serverCutText: string[] = [];
  /** Set when the message loop stopped (the server closed or sent garbage). */
  error: Error | null = null;
  readonly updates: FramebufferUpdate[] = [];
  private waiters: Array<{ resolve: (u: FramebufferUpdate) => void; reject: (e: Error) => void }> = [];
  private readonly reader: ByteReader;

  private constructor(readonly stream: Duplex) {
    this.reader = new ByteReader(stream);
  }

  static async connect(stream: Duplex, opts: RfbConnectOptions = {}): Promise<RfbClient> {
    const c = new RfbClient(stream);
    const timeoutMs = opts.timeoutMs ?? 15_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        c.handshake(opts.encodings ?? [ENCODING.raw, ENCODING.copyRect, ENCODING.desktopSize]),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new RfbError(`RFB handshake not finished within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (e) {
      stream.destroy();
      throw e;
    } finally {
      clearTimeout(timer);
    }
    void c.loop();
    return c;
  }

  private async reason(): Promise<string> {
    const n = (await this.reader.read(4)).readUInt32BE(0);
    if (n > LIMITS.maxReasonLength) throw new RfbError(`server reason string of ${n} bytes (limit ${LIMITS.maxReasonLength})`);
    return (await this.reader.read(n)).toString('utf8');
  }

  private async handshake(encodings: number[]): Promise<void> {
    const version = (await this.reader.read(12)).toString('latin1');
    const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(version);
    if (!m) throw new RfbError(`not an RFB server: greeting ${JSON.stringify(version)}`);
    const [major, minor] = [Number(m[1]), Number(m[2])];
    if (major !== 3 || minor < 8) throw new RfbError(`server speaks RFB ${major}.${minor}; this client needs 3.8`);
    this.stream.write('RFB 003.008\n');
    const count = (await this.reader.read(1)).readUInt8(0);
    if (count === 0) throw new RfbError(`server refused the connection: ${await this.reason()}`);
    const types = [...(await this.reader.read(count))];
    if (!types.includes(1)) throw new RfbError(`server offers security types [${types.join(', ')}], not None (1)`);
    this.stream.write(Buffer.from([1]));
    const result = (await this.reader.read(4)).readUInt32BE(0);
    if (result !== 0) throw new RfbError(`security handshake failed (${result}): ${await this.reason()}`);
    this.stream.write(Buffer.from([1])); // ClientInit: shared, so a second viewer does not kick the first
    const init = await this.reader.read(24);
    const width = init.readUInt16BE(0);
    const height = init.readUInt16BE(2);
    this.serverPixelFormat = decodePixelFormat(init.subarray(4, 20));
    const nameLength = init.readUInt32BE(20);
    if (nameLength > LIMITS.maxNameLength) throw new RfbError(`server name of ${nameLength} bytes (limit ${LIMITS.maxNameLength})`);
    this.name = (await this.reader.read(nameLength)).toString('utf8');
    this.resize(width, height);
    this.stream.write(msg.setPixelFormat(CLIENT_PIXEL_FORMAT));
    this.stream.write(msg.setEncodings(encodings));
  }

  private resize(width: number, height: number): void {
    if (width < 1 || height < 1 || width > LIMITS.maxDimension || height > LIMITS.maxDimension) {
      throw new RfbError(`framebuffer ${width}x${height} out of bounds (1..${LIMITS.maxDimension})`);
    }
    this.width = width;
    this.height = height;
    this.fb = new Uint8Array(width * height * 4);
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        const type = (await this.reader.read(1)).readUInt8(0);
        if (type === 0) await this.readUpdate();
        else if (type === 1) {
          // SetColourMapEntries: we asked for true colour, so only skipped (bounded by u16 * 6).
          const h = await this.reader.read(5);
          await this.reader.read(h.readUInt16BE(3) * 6);
        } else if (type === 2) this.bells++;
        else if (type === 3) {
          const h = await this.reader.read(7);
          const n = h.readUInt32BE(3);
          if (n > LIMITS.maxCutText) throw new RfbError(`ServerCutText of ${n} bytes (limit ${LIMITS.maxCutText})`);
          this.serverCutText.push((await this.reader.read(n)).toString('latin1'));
        } else throw new RfbError(`unknown server message type ${type}`);
      }
    } catch (e) {
      this.error = e instanceof Error ? e : new RfbError(String(e));
      for (const w of this.waiters.splice(0)) w.reject(this.error);
      this.stream.destroy();
    }
  }

  private async readUpdate(): Promise<void> {
    const n = (await this.reader.read(3)).readUInt16BE(1);
    const rects: UpdateRect[] = [];
    for (let i = 0; i < n; i++) {
      const h = await this.reader.read(12);
      const r: UpdateRect = { x: h.readUInt16BE(0), y: h.readUInt16BE(2), width: h.readUInt16BE(4), height: h.readUInt16BE(6), encoding: h.readInt32BE(8) };
      if (r.encoding === ENCODING.desktopSize) {
        this.resize(r.width, r.height);
      } else {
        if (r.x + r.width > this.width || r.y + r.height > this.height) {
          throw new RfbError(`rectangle ${r.width}x${r.height}+${r.x}+${r.y} outside the ${this.width}x${this.height} framebuffer`);
        }
        if (r.encoding === ENCODING.raw) await this.readRaw(r);
        else if (r.encoding === ENCODING.copyRect) {
          const s = await this.reader.read(4);
          this.copyRect(r, s.readUInt16BE(0), s.readUInt16BE(2));
        } else throw new RfbError(`rectangle in encoding ${r.encoding}, which this client did not ask for`);
      }
      rects.push(r);
    }
    const u: FramebufferUpdate = { rects, at: performance.now() };
    // Keep a bounded history (tests look at the last few).
    this.updates.push(u);
    if (this.updates.length > 256) this.updates.shift();
    for (const w of this.waiters.splice(0)) w.resolve(u);
  }

  /** Raw pixels in CLIENT_PIXEL_FORMAT (B, G, R, X little-endian), one row at a time (bounded reads). */
  private async readRaw(r: UpdateRect): Promise<void> {
    const rowBytes = r.width * 4;
    for (let row = 0; row < r.height; row++) {
      const px = await this.reader.read(rowBytes);
      let o = ((r.y + row) * this.width + r.x) * 4;
      for (let i = 0; i < rowBytes; i += 4) {
        this.fb[o] = px[i + 2]!;
        this.fb[o + 1] = px[i + 1]!;
        this.fb[o + 2] = px[i]!;
        this.fb[o + 3] = 255;
        o += 4;
      }
    }
  }

  private copyRect(r: UpdateRect, sx: number, sy: number): void {
    if (sx + r.width > this.width || sy + r.height > this.height) throw new RfbError(`CopyRect source ${r.width}x${r.height}+${sx}+${sy} outside the framebuffer`);
    // Rows copied through a temporary so overlapping source and destination are fine.
    const copy = new Uint8Array(r.width * r.height * 4);
    for (let row = 0; row < r.height; row++) copy.set(this.fb.subarray(((sy + row) * this.width + sx) * 4, ((sy + row) * this.width + sx + r.width) * 4), row * r.width * 4);
    for (let row = 0; row < r.height; row++) this.fb.set(copy.subarray(row * r.width * 4, (row + 1) * r.width * 4), ((r.y + row) * this.width + r.x) * 4);
  }

  // ---- requests and input

  requestUpdate(incremental: boolean, x = 0, y = 0, width = this.width, height = this.height): void {
    this.stream.write(msg.updateRequest(incremental, x, y, width, height));
  }

  /** The next FramebufferUpdate (after this call), or a rejection when the connection fails or time runs out. */
  nextUpdate(timeoutMs = 10_000): Promise<FramebufferUpdate> {
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (u: FramebufferUpdate) => {
          clearTimeout(timer);
          resolve(u);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new RfbError(`no FramebufferUpdate within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** Requests an update and waits for it (a full one unless incremental). */
  async update(incremental: boolean, timeoutMs = 10_000): Promise<FramebufferUpdate> {
    const next = this.nextUpdate(timeoutMs);
    this.requestUpdate(incremental);
    return next;
  }

  key(keysym: number, down: boolean): void {
    this.stream.write(msg.key(keysym, down));
  }

  /** Types text (printable ASCII, \n = Return), pausing between keys so the guest's keyboard queue keeps up. */
  async type(text: string, delayMs = 15): Promise<void> {
    for (const ch of text) {
      for (const [sym, down] of keyEventsFor(ch)) this.key(sym, down);
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
    }
  }

  pointer(x: number, y: number, buttonMask = 0): void {
    this.stream.write(msg.pointer(x, y, buttonMask));
  }

  /** RGBA of one pixel. */
  pixel(x: number, y: number): [number, number, number, number] {
    const o = (y * this.width + x) * 4;
    return [this.fb[o]!, this.fb[o + 1]!, this.fb[o + 2]!, this.fb[o + 3]!];
  }

  /** Share (0..1) of pixels for which `pred(r, g, b)` holds. */
  share(pred: (r: number, g: number, b: number) => boolean): number {
    let n = 0;
    for (let o = 0; o < this.fb.length; o += 4) if (pred(this.fb[o]!, this.fb[o + 1]!, this.fb[o + 2]!)) n++;
    return this.fb.length ? n / (this.fb.length / 4) : 0;
  }

  close(): void {
    this.stream.destroy();
  }
}

// ---- a fleet `vnc` session WebSocket as a Duplex

export interface VncSessionStream {
  stream: Duplex;
  ws: WebSocket;
  /** JSON text frames the server sent (progress, started, exit, error). */
  frames: Array<Record<string, unknown>>;
  /** Resolves with the `started` frame; rejects on an `error` frame, an HTTP refusal or a close. */
  started: Promise<Record<string, unknown>>;
  /** Resolves with the close code once the WebSocket closes. */
  closed: Promise<number>;
}

/** HTTP refusal of the upgrade (401/403/404/409). */
export class SessionRefused extends Error {
  override name = 'SessionRefused';
  constructor(readonly status: number, readonly body: string) {
    super(`session refused: HTTP ${status} ${body.slice(0, 200)}`);
  }
}

/**
 * Opens `GET /v1/vms/{vm}/session` with {"type":"start","kind":"vnc"} and exposes channel 0 / 1 as
 * a Duplex (binary frames: first byte the channel). Reading follows the consumer: when the Duplex's
 * buffer is full the WebSocket's socket is paused, so a client that stops reading really stops.
 */
export function openVncSession(apiUrl: string, token: string, vm: string, opts: { waitMs?: number } = {}): VncSessionStream {
  const ws = new WebSocket(`${apiUrl.replace(/^http/, 'ws')}/v1/vms/${encodeURIComponent(vm)}/session`, ['fleet.v1'], { headers: { authorization: `Bearer ${token}` } });
  const frames: Array<Record<string, unknown>> = [];
  let paused = false;
  const stream = new Duplex({
    highWaterMark: 1024 * 1024,
    read() {
      if (paused) {
        paused = false;
        ws.resume();
      }
    },
    write(chunk: Buffer, _enc, cb) {
      if (ws.readyState !== WebSocket.OPEN) return cb(new Error('the session WebSocket is not open'));
      ws.send(Buffer.concat([Buffer.from([0]), chunk]), { binary: true }, (e) => cb(e ?? null));
    },
    final(cb) {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'eof' }));
      cb();
    },
    destroy(err, cb) {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000, 'client closed');
      cb(err);
    },
  });
  // Failures reach callers through `started` / `closed` (and RfbClient's own listener): a raw
  // stream nobody listens on must not turn them into uncaught exceptions.
  stream.on('error', () => undefined);
  let resolveStarted!: (f: Record<string, unknown>) => void;
  let rejectStarted!: (e: Error) => void;
  const started = new Promise<Record<string, unknown>>((res, rej) => {
    resolveStarted = res;
    rejectStarted = rej;
  });
  started.catch(() => undefined); // callers that do not await it must not see an unhandled rejection
  ws.on('unexpected-response', (_req, res) => {
    let body = '';
    res.on('data', (d: Buffer) => (body += d.toString()));
    res.on('end', () => {
      const e = new SessionRefused(res.statusCode ?? 0, body);
      rejectStarted(e);
      stream.destroy(e);
    });
  });
  ws.on('open', () => ws.send(JSON.stringify({ type: 'start', kind: 'vnc', waitMs: opts.waitMs ?? 60_000 })));
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (isBinary) {
      if (data.length < 1 || data[0] !== 1) return; // only channel 1 carries the RFB stream
      if (!stream.push(data.subarray(1)) && !paused) {
        paused = true;
        ws.pause();
      }
      return;
    }
    let f: Record<string, unknown>;
    try {
      f = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
    } catch {
      stream.destroy(new Error(`the server sent a text frame that is not JSON: ${data.toString('utf8').slice(0, 100)}`));
      return;
    }
    frames.push(f);
    if (f.type === 'started') resolveStarted(f);
    else if (f.type === 'error') {
      rejectStarted(new Error(`session error ${String(f.code)}: ${String(f.message)}`));
    } else if (f.type === 'exit') stream.push(null);
  });
  ws.on('error', (e) => {
    rejectStarted(e);
    stream.destroy(e);
  });
  const closed = new Promise<number>((resolve) =>
    ws.on('close', (code: number) => {
      rejectStarted(new Error(`the session closed (${code}) before it started`));
      stream.push(null);
      stream.destroy();
      resolve(code);
    }),
  );
  return { stream, ws, frames, started, closed };
}
