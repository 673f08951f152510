// The RFB client's own logic against a scripted server on loopback (no VM, no root): the
// handshake bytes, decoding into the framebuffer, key events, and garbage rejected cleanly.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { CLIENT_PIXEL_FORMAT, decodePixelFormat, encodePixelFormat, ENCODING, keyEventsFor, KEYSYM, msg, RfbClient, RfbError, type PixelFormat } from './rfb-client.ts';

const SERVER_PF: PixelFormat = { bitsPerPixel: 32, depth: 24, bigEndian: false, trueColour: true, redMax: 255, greenMax: 255, blueMax: 255, redShift: 16, greenShift: 8, blueShift: 0 };

function serverInit(width: number, height: number, name = 'QEMU (test)'): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt16BE(width, 0);
  h.writeUInt16BE(height, 2);
  const n = Buffer.alloc(4);
  n.writeUInt32BE(Buffer.byteLength(name), 0);
  return Buffer.concat([h, encodePixelFormat(SERVER_PF), n, Buffer.from(name)]);
}

function rectHeader(x: number, y: number, w: number, h: number, enc: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(x, 0);
  b.writeUInt16BE(y, 2);
  b.writeUInt16BE(w, 4);
  b.writeUInt16BE(h, 6);
  b.writeInt32BE(enc, 8);
  return b;
}

/** The rest of a FramebufferUpdate header after its type byte: padding, rectangle count. */
function updateHeader(n: number): Buffer {
  const b = Buffer.alloc(3);
  b.writeUInt16BE(n, 1);
  return b;
}

/** Raw pixels in the client's format (B, G, R, X). */
function rawPixels(w: number, h: number, rgb: [number, number, number]): Buffer {
  const b = Buffer.alloc(w * h * 4);
  for (let i = 0; i < w * h; i++) b.set([rgb[2], rgb[1], rgb[0], 0], i * 4);
  return b;
}

interface Scripted {
  client: Promise<RfbClient>;
  /** Everything the client sent so far. */
  received(): Buffer;
  send(b: Buffer): void;
  waitReceived(n: number): Promise<Buffer>;
}

const servers: net.Server[] = [];

async function waitFor(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met within 3 s');
    await new Promise((r) => setTimeout(r, 5));
  }
}
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A loopback server that sends `greeting` on accept, then whatever the test sends. */
async function scripted(greeting: Buffer[]): Promise<Scripted> {
  let sock!: net.Socket;
  let got = Buffer.alloc(0);
  const accepted = new Promise<void>((resolve) => {
    const server = net.createServer((s) => {
      sock = s;
      s.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
      s.on('error', () => undefined);
      for (const g of greeting) s.write(g);
      resolve();
    });
    servers.push(server);
    server.listen(0, '127.0.0.1');
  });
  const server = servers[servers.length - 1]!;
  await new Promise((r) => server.once('listening', r));
  const port = (server.address() as net.AddressInfo).port;
  const c = net.connect(port, '127.0.0.1');
  const client = RfbClient.connect(c, { timeoutMs: 3000 });
  client.catch(() => undefined);
  await accepted;
  return {
    client,
    received: () => got,
    send: (b) => sock.write(b),
    async waitReceived(n) {
      const deadline = Date.now() + 3000;
      while (got.length < n) {
        if (Date.now() > deadline) throw new Error(`server received ${got.length} of ${n} bytes`);
        await new Promise((r) => setTimeout(r, 5));
      }
      return got;
    },
  };
}

const GOOD_GREETING = [Buffer.from('RFB 003.008\n'), Buffer.from([1, 1]), Buffer.alloc(4), serverInit(8, 4)];

describe('RFB client', () => {
  it('handshakes (3.8, None, shared), asks for 32-bit true colour and the encodings', async () => {
    const s = await scripted(GOOD_GREETING);
    const c = await s.client;
    expect(c.width).toBe(8);
    expect(c.height).toBe(4);
    expect(c.name).toBe('QEMU (test)');
    expect(c.serverPixelFormat).toEqual(SERVER_PF);
    const expected = Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([1]), Buffer.from([1]), msg.setPixelFormat(CLIENT_PIXEL_FORMAT), msg.setEncodings([ENCODING.raw, ENCODING.copyRect, ENCODING.desktopSize])]);
    expect((await s.waitReceived(expected.length)).equals(expected)).toBe(true);
    c.close();
  });

  it('decodes Raw, CopyRect and DesktopSize into the RGBA framebuffer; ignores bells', async () => {
    const s = await scripted(GOOD_GREETING);
    const c = await s.client;
    const first = c.update(false);
    await s.waitReceived(12 + 1 + 1 + 20 + 16 + 10);
    expect(s.received().subarray(-10).equals(msg.updateRequest(false, 0, 0, 8, 4))).toBe(true);
    // Whole screen blue, then a red 2x2 at (1,1), copied to (5,2).
    s.send(Buffer.concat([Buffer.from([2, 0]), updateHeader(3), rectHeader(0, 0, 8, 4, 0), rawPixels(8, 4, [0, 0, 170]), rectHeader(1, 1, 2, 2, 0), rawPixels(2, 2, [255, 0, 0]), rectHeader(5, 2, 2, 2, 1), Buffer.from([0, 1, 0, 1])]));
    const u = await first;
    expect(u.rects.map((r) => r.encoding)).toEqual([0, 0, 1]);
    expect(c.bells).toBe(1);
    expect(c.pixel(0, 0)).toEqual([0, 0, 170, 255]);
    expect(c.pixel(2, 2)).toEqual([255, 0, 0, 255]);
    expect(c.pixel(6, 3)).toEqual([255, 0, 0, 255]);
    expect(c.pixel(7, 3)).toEqual([0, 0, 170, 255]);
    expect(c.share((r, g, b) => r === 0 && g === 0 && b === 170)).toBeCloseTo(24 / 32);
    const resized = c.nextUpdate();
    s.send(Buffer.concat([Buffer.from([0]), updateHeader(1), rectHeader(0, 0, 16, 10, ENCODING.desktopSize)]));
    await resized;
    expect([c.width, c.height, c.fb.length]).toEqual([16, 10, 16 * 10 * 4]);
    c.close();
  });

  it('copes with zero-length fields and a stream cut into 1-byte pieces', async () => {
    const s = await scripted([]);
    const all = Buffer.concat([Buffer.from('RFB 003.008\n'), Buffer.from([1, 1]), Buffer.alloc(4), serverInit(4, 2, ''), Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0]), updateHeader(1), rectHeader(0, 0, 4, 2, 0), rawPixels(4, 2, [1, 2, 3])]);
    for (const b of all) s.send(Buffer.from([b]));
    const c = await s.client;
    expect(c.name).toBe('');
    await waitFor(() => c.updates.length === 1);
    expect(c.serverCutText).toEqual(['']);
    expect(c.pixel(3, 1)).toEqual([1, 2, 3, 255]);
    c.close();
  });

  it('types with Shift around uppercase and shifted symbols, Return for newline', () => {
    expect(keyEventsFor('a')).toEqual([[0x61, true], [0x61, false]]);
    expect(keyEventsFor('A')).toEqual([[KEYSYM.ShiftL, true], [0x41, true], [0x41, false], [KEYSYM.ShiftL, false]]);
    expect(keyEventsFor('>')[0]).toEqual([KEYSYM.ShiftL, true]);
    expect(keyEventsFor('-')).toEqual([[0x2d, true], [0x2d, false]]);
    expect(keyEventsFor('\n')).toEqual([[KEYSYM.Return, true], [KEYSYM.Return, false]]);
    expect(() => keyEventsFor('é')).toThrow(RfbError);
    expect(msg.key(0xff0d, true).toString('hex')).toBe('040100000000ff0d');
    expect(msg.pointer(300, 2, 1).toString('hex')).toBe('0501012c0002');
  });

  it('rejects a non-RFB greeting, an old version, no None security, a failed SecurityResult', async () => {
    await expect((await scripted([Buffer.from('HTTP/1.1 400\r\n')])).client).rejects.toThrow(/not an RFB server/);
    await expect((await scripted([Buffer.from('RFB 003.003\n')])).client).rejects.toThrow(/needs 3\.8/);
    await expect((await scripted([Buffer.from('RFB 003.008\n'), Buffer.from([2, 2, 19])])).client).rejects.toThrow(/security types \[2, 19\], not None/);
    const reason = Buffer.from('too many clients');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(reason.length);
    await expect((await scripted([Buffer.from('RFB 003.008\n'), Buffer.from([0]), len, reason])).client).rejects.toThrow(/refused the connection: too many clients/);
    const fail = Buffer.alloc(4);
    fail.writeUInt32BE(1);
    await expect((await scripted([Buffer.from('RFB 003.008\n'), Buffer.from([1, 1]), fail, len, reason])).client).rejects.toThrow(/security handshake failed/);
    // A reason string that claims 4 GB is refused before anything is read or allocated.
    await expect((await scripted([Buffer.from('RFB 003.008\n'), Buffer.from([0]), Buffer.from([0xff, 0xff, 0xff, 0xff])])).client).rejects.toThrow(/reason string of 4294967295 bytes/);
  });

  it('rejects out-of-bounds sizes: framebuffer, name, rectangles, cut text, unknown messages', async () => {
    await expect((await scripted([Buffer.from('RFB 003.008\n'), Buffer.from([1, 1]), Buffer.alloc(4), serverInit(60000, 10)])).client).rejects.toThrow(/framebuffer 60000x10 out of bounds/);
    const longName = serverInit(8, 4);
    longName.writeUInt32BE(1 << 30, 20);
    await expect((await scripted([Buffer.from('RFB 003.008\n'), Buffer.from([1, 1]), Buffer.alloc(4), longName])).client).rejects.toThrow(/server name of 1073741824 bytes/);
    const badPf = serverInit(8, 4);
    badPf.writeUInt8(24, 4);
    await expect((await scripted([Buffer.from('RFB 003.008\n'), Buffer.from([1, 1]), Buffer.alloc(4), badPf])).client).rejects.toThrow(/bits per pixel 24/);

    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.concat([Buffer.from([0]), updateHeader(1), rectHeader(4, 0, 8, 4, 0)]), /outside the 8x4 framebuffer/],
      [Buffer.concat([Buffer.from([0]), updateHeader(1), rectHeader(0, 0, 2, 2, 7)]), /encoding 7, which this client did not ask for/],
      [Buffer.concat([Buffer.from([0]), updateHeader(1), rectHeader(0, 0, 4, 4, 1), Buffer.from([0, 6, 0, 0])]), /CopyRect source/],
      [Buffer.concat([Buffer.from([3, 0, 0, 0]), Buffer.from([0x7f, 0xff, 0xff, 0xff])]), /ServerCutText of 2147483647 bytes/],
      [Buffer.from([0xc8]), /unknown server message type 200/],
    ];
    for (const [garbage, re] of cases) {
      const s = await scripted(GOOD_GREETING);
      const c = await s.client;
      const next = c.nextUpdate(3000);
      s.send(garbage);
      await expect(next).rejects.toThrow(re);
      expect(c.error).toBeInstanceOf(RfbError);
    }
  });

  it('a server that stops mid-handshake or says nothing fails clearly, not forever', async () => {
    const s = await scripted([Buffer.from('RFB 003.008\n'), Buffer.from([1])]);
    await expect(s.client).rejects.toThrow(/handshake not finished within 3000 ms/);
    const pf = decodePixelFormat(encodePixelFormat(CLIENT_PIXEL_FORMAT));
    expect(pf).toEqual(CLIENT_PIXEL_FORMAT);
  });
});
