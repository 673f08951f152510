import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { AppleLz4Decoder, AppleLz4Encoder, Lz4FormatError, appleLz4Compress, appleLz4Decompress, decodeLz4Block } from './apple-lz4.ts';
import { hasCommand, textBytes } from './test-helpers.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

function decodeInPieces(frame: Buffer, pieceSize: number): Buffer {
  const dec = new AppleLz4Decoder();
  const out: Buffer[] = [];
  for (let i = 0; i < frame.length; i += pieceSize) {
    for (const b of dec.write(frame.subarray(i, i + pieceSize))) out.push(Buffer.from(b));
  }
  dec.end();
  return Buffer.concat(out);
}

/** Walks a frame's block headers: [magic, decodedSize] per block. */
function blockList(frame: Buffer): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  let p = 0;
  for (;;) {
    const magic = frame.toString('latin1', p, p + 4);
    if (magic === 'bv4$') return out;
    const size = frame.readUInt32LE(p + 4);
    out.push([magic, size]);
    p += magic === 'bv41' ? 12 + frame.readUInt32LE(p + 8) : 8 + size;
  }
}

describe('Apple LZ4 framing', () => {
  it('round-trips random, compressible and all-zero data of awkward sizes', () => {
    const cases: Array<[string, Buffer]> = [
      ['empty', Buffer.alloc(0)],
      ['one byte', Buffer.from([7])],
      ['12 bytes (below the shortest matchable block)', Buffer.from('abcabcabcabc')],
      ['random 1 MiB + 3', randomBytes(MiB + 3)],
      ['text 2 MiB + 12345', textBytes(2 * MiB + 12345)],
      ['zeros 3 MiB + 1', Buffer.alloc(3 * MiB + 1)],
      ['mixed', Buffer.concat([Buffer.alloc(70 * KiB), randomBytes(100 * KiB), textBytes(200 * KiB), Buffer.alloc(64 * KiB)])],
    ];
    for (const [name, data] of cases) {
      const frame = appleLz4Compress(data);
      expect(frame.subarray(frame.length - 4).toString('latin1'), name).toBe('bv4$');
      expect(appleLz4Decompress(frame).equals(data), name).toBe(true);
      // Blocks are at most 64 KiB of output, as Apple's encoder writes them.
      for (const [, size] of blockList(frame)) expect(size).toBeLessThanOrEqual(64 * KiB);
    }
  });

  it('compresses zeros and text, and stores random data as bv4- blocks', () => {
    expect(appleLz4Compress(Buffer.alloc(4 * MiB)).length).toBeLessThan(4 * MiB / 100);
    expect(appleLz4Compress(textBytes(4 * MiB)).length).toBeLessThan(4 * MiB / 2);
    const random = appleLz4Compress(randomBytes(256 * KiB));
    expect(blockList(random).map(([m]) => m)).toEqual(['bv4-', 'bv4-', 'bv4-', 'bv4-']);
    expect(random.length).toBe(256 * KiB + 4 * 8 + 4);
  });

  it('streams: any split of the input and of the frame gives the same bytes', () => {
    const data = Buffer.concat([textBytes(300 * KiB), Buffer.alloc(200 * KiB), randomBytes(70 * KiB)]);
    const enc = new AppleLz4Encoder();
    const parts: Buffer[] = [];
    for (let i = 0; i < data.length; i += 10_007) parts.push(enc.write(data.subarray(i, i + 10_007)));
    parts.push(enc.end());
    const frame = Buffer.concat(parts);
    expect(frame.equals(appleLz4Compress(data))).toBe(true);
    for (const piece of [1, 5, 13, 4096, 65_547]) expect(decodeInPieces(frame, piece).equals(data)).toBe(true);
  });

  it('decodes a hand-built frame: stored block, a compressed block copying from the previous block, an overlapping run', () => {
    // Byte layout (all integers little-endian u32):
    //   "bv4-" 05000000 "hello"                       stored block, 5 bytes
    //   "bv41" 0a000000 09000000                      compressed block: 10 bytes out of 9
    //          01 0500                                token: 0 literals, match len 4+1=5; offset 5 (into the previous block)
    //          50 "world"                             last sequence: 5 literals
    //   "bv41" 1a000000 0b000000                      26 bytes out of 11
    //          1f 7a 0100 01                          1 literal "z", offset 1, match len 4+15+1=20 (overlapping run)
    //          50 "zzzzz"                             5 literals
    //   "bv4$"
    const frame = Buffer.concat([
      Buffer.from('bv4-'), Buffer.from('05000000', 'hex'), Buffer.from('hello'),
      Buffer.from('bv41'), Buffer.from('0a00000009000000', 'hex'), Buffer.from('01050050', 'hex'), Buffer.from('world'),
      Buffer.from('bv41'), Buffer.from('1a0000000b000000', 'hex'), Buffer.from('1f7a010001', 'hex'), Buffer.from('50', 'hex'), Buffer.from('zzzzz'),
      Buffer.from('bv4$'),
    ]);
    expect(appleLz4Decompress(frame).toString('latin1')).toBe(`hellohelloworld${'z'.repeat(26)}`);
    expect(decodeInPieces(frame, 3).toString('latin1')).toBe(`hellohelloworld${'z'.repeat(26)}`);
  });

  it('rejects every truncation of a valid frame with a clear error', () => {
    const frame = appleLz4Compress(Buffer.concat([textBytes(70 * KiB), randomBytes(1000)]));
    for (let cut = 0; cut < frame.length; cut += cut < 64 ? 1 : 97) {
      expect(() => appleLz4Decompress(frame.subarray(0, cut)), `cut at ${cut}`).toThrow(Lz4FormatError);
    }
    expect(() => appleLz4Decompress(frame.subarray(0, frame.length - 1))).toThrow(/truncated/);
  });

  it('rejects garbage, trailing data and inconsistent blocks, and never hangs', () => {
    expect(() => appleLz4Decompress(Buffer.from('\x04\x22\x4d\x18standard-lz4-frame', 'latin1'))).toThrow(/not an Apple LZ4 block header at offset 0/);
    expect(() => appleLz4Decompress(Buffer.concat([appleLz4Compress(Buffer.from('x')), Buffer.from('junk')]))).toThrow(/after the end-of-stream marker/);
    // Header says 100 decoded bytes, the payload makes 6.
    expect(() => appleLz4Decompress(Buffer.concat([Buffer.from('bv41'), Buffer.from('6400000007000000', 'hex'), Buffer.from('60616263646566', 'hex'), Buffer.from('bv4$')]))).toThrow(
      /decoded to 6 bytes, header says 100/,
    );
    // A match reaching before the start of the stream.
    expect(() => appleLz4Decompress(Buffer.concat([Buffer.from('bv41'), Buffer.from('0a00000009000000', 'hex'), Buffer.from('01050050', 'hex'), Buffer.from('world'), Buffer.from('bv4$')]))).toThrow(
      /offset 5 reaches before the start/,
    );
    // Absurd sizes are refused before anything is allocated.
    expect(() => appleLz4Decompress(Buffer.concat([Buffer.from('bv4-'), Buffer.from('ffffffff', 'hex')]))).toThrow(/implausible/);
    // Random garbage after a valid-looking header: must throw, quickly.
    for (let i = 0; i < 200; i++) {
      const junk = Buffer.concat([Buffer.from('bv41'), Buffer.from('00000100', 'hex'), Buffer.from('00100000', 'hex'), randomBytes(4096), Buffer.from('bv4$')]);
      expect(() => appleLz4Decompress(junk)).toThrow(Lz4FormatError);
    }
  });

  it('hands out decoded data in bounded batches even when the input is tiny and the output huge', () => {
    const frame = appleLz4Compress(Buffer.alloc(64 * MiB));
    expect(frame.length).toBeLessThan(400 * KiB);
    const dec = new AppleLz4Decoder();
    let total = 0;
    let biggest = 0;
    for (const b of dec.write(frame)) {
      total += b.length;
      biggest = Math.max(biggest, b.length);
    }
    dec.end();
    expect(total).toBe(64 * MiB);
    expect(biggest).toBeLessThanOrEqual(8 * MiB);
  });
});

// Cross-checks with the reference LZ4 implementation (Debian's lz4 CLI), which writes the
// *standard* LZ4 frame. Block payloads are the same raw LZ4 block format in both framings.
const PRIME1 = 2654435761;
const PRIME2 = 2246822519;
const PRIME3 = 3266489917;
const PRIME4 = 668265263;
const PRIME5 = 374761393;
const rotl = (x: number, r: number): number => ((x << r) | (x >>> (32 - r))) >>> 0;

/** xxHash32 for inputs shorter than 16 bytes (all a frame header checksum needs). */
function xxh32Short(b: Uint8Array): number {
  let h = (PRIME5 + b.length) >>> 0;
  let i = 0;
  for (; i + 4 <= b.length; i += 4) {
    const w = (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)) >>> 0;
    h = Math.imul(rotl((h + Math.imul(w, PRIME3)) >>> 0, 17), PRIME4) >>> 0;
  }
  for (; i < b.length; i++) h = Math.imul(rotl((h + Math.imul(b[i]!, PRIME5)) >>> 0, 11), PRIME1) >>> 0;
  h = Math.imul(h ^ (h >>> 15), PRIME2) >>> 0;
  h = Math.imul(h ^ (h >>> 13), PRIME3) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** Re-wraps an Apple frame's blocks in a standard LZ4 frame (independent 64 KiB blocks, no checksums). */
function appleToStandardFrame(apple: Buffer): Buffer {
  const desc = Buffer.from([0x60, 0x40]); // FLG: version 01, independent blocks; BD: 64 KiB max
  const parts: Buffer[] = [Buffer.from([0x04, 0x22, 0x4d, 0x18]), desc, Buffer.from([(xxh32Short(desc) >>> 8) & 0xff])];
  let p = 0;
  for (;;) {
    const magic = apple.toString('latin1', p, p + 4);
    if (magic === 'bv4$') break;
    const size = Buffer.alloc(4);
    if (magic === 'bv41') {
      const n = apple.readUInt32LE(p + 8);
      size.writeUInt32LE(n);
      parts.push(size, apple.subarray(p + 12, p + 12 + n));
      p += 12 + n;
    } else {
      const n = apple.readUInt32LE(p + 4);
      size.writeUInt32LE((n | 0x80000000) >>> 0);
      parts.push(size, apple.subarray(p + 8, p + 8 + n));
      p += 8 + n;
    }
  }
  parts.push(Buffer.alloc(4));
  return Buffer.concat(parts);
}

/** Decodes a standard LZ4 frame's blocks with our block decoder (linked blocks keep history). */
function decodeStandardFrame(f: Buffer): Buffer {
  if (f.readUInt32LE(0) !== 0x184d2204) throw new Error('not an LZ4 frame');
  const flg = f[4]!;
  let p = 6 + (flg & 0x08 ? 8 : 0) + (flg & 0x01 ? 4 : 0) + 1;
  const out = Buffer.alloc(64 * MiB);
  let op = 0;
  for (;;) {
    const word = f.readUInt32LE(p);
    p += 4;
    if (word === 0) break;
    const n = word & 0x7fffffff;
    if (word & 0x80000000) {
      f.copy(out, op, p, p + n);
      op += n;
    } else {
      op = decodeLz4Block(f, p, p + n, out, op, out.length, 0);
    }
    p += n + (flg & 0x10 ? 4 : 0);
  }
  return out.subarray(0, op);
}

describe.skipIf(!hasCommand('lz4'))('LZ4 blocks vs the reference lz4 CLI', () => {
  const data = Buffer.concat([textBytes(500 * KiB), Buffer.alloc(300 * KiB), randomBytes(100 * KiB), textBytes(77 * KiB, 9)]);

  it('the reference decoder accepts the blocks our encoder writes', () => {
    const standard = appleToStandardFrame(appleLz4Compress(data));
    const decoded = execFileSync('lz4', ['-d', '-c'], { input: standard, maxBuffer: 64 * MiB, stdio: ['pipe', 'pipe', 'ignore'] });
    expect(decoded.equals(data)).toBe(true);
  });

  it('our decoder reads blocks from the reference encoder, fast and high-compression, with linked blocks', () => {
    for (const level of ['-1', '-9']) {
      const standard = execFileSync('lz4', [level, '-BD', '-B4', '--no-frame-crc', '-c'], { input: data, maxBuffer: 64 * MiB, stdio: ['pipe', 'pipe', 'ignore'] });
      expect(decodeStandardFrame(standard).equals(data), level).toBe(true);
    }
  });
});
if (!hasCommand('lz4')) console.warn('vm-image: lz4 CLI not found; skipping the cross-check against the reference LZ4 implementation');
