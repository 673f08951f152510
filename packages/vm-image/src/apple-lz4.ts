/**
 * Apple's framed LZ4 (the Compression framework's COMPRESSION_LZ4, which is what
 * `NSData.compressed(using: .lz4)`, `InputFilter` and `OutputFilter` produce and consume; Tart
 * compresses its disk layers with it). It is NOT the standard LZ4 frame format (magic 04 22 4D 18)
 * that the `lz4` CLI writes. A stream is a sequence of blocks, every integer little-endian u32:
 *
 *   "bv41" (62 76 34 31) | decodedSize | encodedSize | <encodedSize bytes: one raw LZ4 block>
 *   "bv4-" (62 76 34 2d) | size        | <size bytes stored as-is>
 *   "bv4$" (62 76 34 24)                                   end of stream; nothing may follow
 *
 * A compressed block may copy from up to 64 KiB of the output of the blocks before it, so the
 * decoder keeps that much history. Apple's own encoder writes 64 KiB blocks; ours does too and
 * makes every block independent (always decodable, whatever the decoder keeps).
 *
 * The raw LZ4 block codec below is our own: a bounds-checked decoder and a greedy hash-table
 * compressor that follows the block format's end rules (last 5 bytes literals, last match starting
 * at least 12 bytes before the end) so any conforming decoder, Apple's included, accepts it.
 */

const MAGIC_COMPRESSED = 0x31347662; // "bv41" read as little-endian u32
const MAGIC_STORED = 0x2d347662; // "bv4-"
const MAGIC_END = 0x24347662; // "bv4$"

/** Decoded bytes per block we write (what Apple's encoder uses). */
export const APPLE_LZ4_BLOCK_SIZE = 64 * 1024;
/** How far back an LZ4 match can reach (16-bit offsets). */
const WINDOW = 64 * 1024;
/** Refuse blocks claiming more than this: bounds what garbage headers can make us allocate. */
const MAX_BLOCK_DECODED = 16 * 1024 * 1024;
/** Decoded bytes handed out per batch: zeros compress ~250:1, so bound memory by output, not input. */
const MAX_BATCH_DECODED = 8 * 1024 * 1024;

const MIN_MATCH = 4;
const LAST_LITERALS = 5;
const MF_LIMIT = 12;
const HASH_LOG = 14;

export class Lz4FormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Lz4FormatError';
  }
}

/** Largest possible raw LZ4 block for `n` input bytes (all literals plus length bytes). */
function lz4Bound(n: number): number {
  return n + Math.floor(n / 255) + 16;
}

/**
 * Decodes one raw LZ4 block src[sp, send) into dst[dp, dEnd). Matches may reach back to `low`
 * (earlier blocks' output kept in front of dp). Returns the end position in dst.
 */
export function decodeLz4Block(src: Uint8Array, sp: number, send: number, dst: Uint8Array, dp: number, dEnd: number, low: number): number {
  if (sp >= send) throw new Lz4FormatError('empty LZ4 block');
  for (;;) {
    const token = src[sp++]!;
    let lit = token >>> 4;
    if (lit === 15) {
      let b: number;
      do {
        if (sp >= send) throw new Lz4FormatError('LZ4 block ends inside a literal length');
        b = src[sp++]!;
        lit += b;
      } while (b === 255);
    }
    if (lit > 0) {
      if (lit > send - sp) throw new Lz4FormatError('LZ4 literal run goes past the end of the block');
      if (lit > dEnd - dp) throw new Lz4FormatError('LZ4 block decodes to more than its declared size');
      if (lit < 32) {
        for (let i = 0; i < lit; i++) dst[dp + i] = src[sp + i]!;
      } else {
        dst.set(src.subarray(sp, sp + lit), dp);
      }
      sp += lit;
      dp += lit;
    }
    // The last sequence of a block has literals only.
    if (sp === send) return dp;
    if (send - sp < 2) throw new Lz4FormatError('LZ4 block ends inside a match offset');
    const off = src[sp]! | (src[sp + 1]! << 8);
    sp += 2;
    if (off === 0 || off > dp - low) throw new Lz4FormatError(`LZ4 match offset ${off} reaches before the start of the data`);
    let ml = (token & 15) + MIN_MATCH;
    if ((token & 15) === 15) {
      let b: number;
      do {
        if (sp >= send) throw new Lz4FormatError('LZ4 block ends inside a match length');
        b = src[sp++]!;
        ml += b;
      } while (b === 255);
    }
    if (ml > dEnd - dp) throw new Lz4FormatError('LZ4 block decodes to more than its declared size');
    const ref = dp - off;
    if (ml <= 16) {
      // Byte by byte is also right for overlapping (run-length) matches.
      for (let i = 0; i < ml; i++) dst[dp + i] = dst[ref + i]!;
    } else if (off >= ml) {
      dst.copyWithin(dp, ref, ref + ml);
    } else {
      // Overlapping: the output repeats with period `off`; double the copied span each round.
      let done = 0;
      while (done < ml) {
        const n = Math.min(ml - done, dp + done - ref);
        dst.copyWithin(dp + done, ref, ref + n);
        done += n;
      }
    }
    dp += ml;
    // Tolerate a block that ends right after a match (not what the spec's encoders write).
    if (sp === send) return dp;
  }
}

const hashTable = new Int32Array(1 << HASH_LOG);

function read32(b: Uint8Array, i: number): number {
  return b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24);
}

function writeLength(dst: Uint8Array, op: number, n: number): number {
  while (n >= 255) {
    dst[op++] = 255;
    n -= 255;
  }
  dst[op++] = n;
  return op;
}

/**
 * Greedy LZ4 block compressor for one independent block of at most 64 KiB (so every offset fits
 * 16 bits). Writes into dst at d0 and returns the compressed length; dst needs lz4Bound(len) bytes.
 */
export function encodeLz4Block(src: Uint8Array, s0: number, len: number, dst: Uint8Array, d0: number): number {
  if (len > WINDOW) throw new RangeError('encodeLz4Block: blocks are at most 64 KiB');
  const end = s0 + len;
  let op = d0;
  let anchor = s0;
  if (len >= MF_LIMIT + 1) {
    hashTable.fill(0);
    const matchStartLimit = end - MF_LIMIT; // a match may start at most here
    const matchEndLimit = end - LAST_LITERALS; // and must end at or before here
    let ip = s0;
    let misses = 0;
    while (ip <= matchStartLimit) {
      const seq = read32(src, ip);
      const h = Math.imul(seq, 2654435761) >>> (32 - HASH_LOG);
      const cand = hashTable[h]! - 1 + s0; // stored +1 so 0 means empty
      hashTable[h] = ip - s0 + 1;
      if (cand < s0 || cand >= ip || read32(src, cand) !== seq) {
        // Skip faster through data that does not compress.
        ip += 1 + (misses++ >>> 6);
        continue;
      }
      misses = 0;
      let ml = MIN_MATCH;
      while (ip + ml < matchEndLimit && src[ip + ml] === src[cand + ml]) ml++;
      const lit = ip - anchor;
      const tokenPos = op++;
      const litCode = lit >= 15 ? 15 : lit;
      if (lit >= 15) op = writeLength(dst, op, lit - 15);
      for (let i = 0; i < lit; i++) dst[op + i] = src[anchor + i]!;
      op += lit;
      const off = ip - cand;
      dst[op++] = off & 0xff;
      dst[op++] = off >>> 8;
      const mlCode = ml - MIN_MATCH;
      if (mlCode >= 15) op = writeLength(dst, op, mlCode - 15);
      dst[tokenPos] = (litCode << 4) | (mlCode >= 15 ? 15 : mlCode);
      ip += ml;
      anchor = ip;
      // Index a position inside the match so the next one can chain to it.
      if (ip - 2 > s0 && ip - 2 <= matchStartLimit) {
        hashTable[Math.imul(read32(src, ip - 2), 2654435761) >>> (32 - HASH_LOG)] = ip - 2 - s0 + 1;
      }
    }
  }
  const lit = end - anchor;
  dst[op++] = (lit >= 15 ? 15 : lit) << 4;
  if (lit >= 15) op = writeLength(dst, op, lit - 15);
  dst.set(src.subarray(anchor, end), op);
  op += lit;
  return op - d0;
}

const ZERO_BLOCK = new Uint8Array(APPLE_LZ4_BLOCK_SIZE);
let zeroFrameBlock: Uint8Array | undefined;

/** Appends one framed block (bv41, or bv4- when compression does not pay) for src[s0, s0+len). */
function frameBlock(src: Uint8Array, s0: number, len: number, out: Uint8Array, op: number): number {
  // Disk images are mostly zeros: reuse the encoding of an all-zero block.
  if (len === APPLE_LZ4_BLOCK_SIZE && Buffer.compare(src.subarray(s0, s0 + len), ZERO_BLOCK) === 0) {
    if (!zeroFrameBlock) {
      const tmp = new Uint8Array(12 + lz4Bound(len));
      const n = frameBlockSlow(ZERO_BLOCK, 0, len, tmp, 0);
      zeroFrameBlock = tmp.slice(0, n);
    }
    out.set(zeroFrameBlock, op);
    return op + zeroFrameBlock.length;
  }
  return frameBlockSlow(src, s0, len, out, op);
}

const scratch = new Uint8Array(lz4Bound(APPLE_LZ4_BLOCK_SIZE));

function frameBlockSlow(src: Uint8Array, s0: number, len: number, out: Uint8Array, op: number): number {
  const n = encodeLz4Block(src, s0, len, scratch, 0);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  if (n < len) {
    view.setUint32(op, MAGIC_COMPRESSED, true);
    view.setUint32(op + 4, len, true);
    view.setUint32(op + 8, n, true);
    out.set(scratch.subarray(0, n), op + 12);
    return op + 12 + n;
  }
  view.setUint32(op, MAGIC_STORED, true);
  view.setUint32(op + 4, len, true);
  out.set(src.subarray(s0, s0 + len), op + 8);
  return op + 8 + len;
}

/** Streaming encoder: feed any-sized chunks, get framed output; `end()` flushes and writes "bv4$". */
export class AppleLz4Encoder {
  private partial = Buffer.allocUnsafe(APPLE_LZ4_BLOCK_SIZE);
  private partialLen = 0;
  private ended = false;

  /** Returns the framed bytes for every whole 64 KiB block now available (maybe empty). */
  write(chunk: Uint8Array): Buffer {
    if (this.ended) throw new Error('AppleLz4Encoder: write after end');
    let sp = 0;
    const blocks = Math.floor((this.partialLen + chunk.length) / APPLE_LZ4_BLOCK_SIZE);
    const out = Buffer.allocUnsafe(blocks * (APPLE_LZ4_BLOCK_SIZE + 12));
    let op = 0;
    if (this.partialLen > 0) {
      const take = Math.min(APPLE_LZ4_BLOCK_SIZE - this.partialLen, chunk.length);
      this.partial.set(chunk.subarray(0, take), this.partialLen);
      this.partialLen += take;
      sp = take;
      if (this.partialLen < APPLE_LZ4_BLOCK_SIZE) return out.subarray(0, 0);
      op = frameBlock(this.partial, 0, APPLE_LZ4_BLOCK_SIZE, out, op);
      this.partialLen = 0;
    }
    while (chunk.length - sp >= APPLE_LZ4_BLOCK_SIZE) {
      op = frameBlock(chunk, sp, APPLE_LZ4_BLOCK_SIZE, out, op);
      sp += APPLE_LZ4_BLOCK_SIZE;
    }
    if (sp < chunk.length) {
      this.partial.set(chunk.subarray(sp), 0);
      this.partialLen = chunk.length - sp;
    }
    return out.subarray(0, op);
  }

  end(): Buffer {
    if (this.ended) throw new Error('AppleLz4Encoder: end called twice');
    this.ended = true;
    const out = Buffer.allocUnsafe(this.partialLen + 12 + 4);
    let op = 0;
    if (this.partialLen > 0) op = frameBlock(this.partial, 0, this.partialLen, out, 0);
    out.writeUInt32LE(MAGIC_END, op);
    return out.subarray(0, op + 4);
  }
}

interface PendingBlock {
  stored: boolean;
  payloadStart: number;
  payloadLen: number;
  decodedLen: number;
}

/**
 * Streaming decoder. `write(chunk)` yields decoded data in batches of at most 8 MiB; iterate it
 * fully (and finish using each batch) before the next write. `end()` throws unless the stream ended
 * with "bv4$". Any malformed input throws Lz4FormatError with the stream offset; it never loops.
 */
export class AppleLz4Decoder {
  private pending: Buffer = Buffer.alloc(0);
  /** Offset in the whole compressed stream of pending[0] (for error messages). */
  private consumed = 0;
  private history: Uint8Array = new Uint8Array(0);
  private ended = false;
  /** Decoded bytes so far. */
  decodedBytes = 0;

  *write(chunk: Uint8Array): Generator<Buffer> {
    if (chunk.length === 0) return;
    if (this.ended) throw new Lz4FormatError(`data after the end-of-stream marker at offset ${this.consumed}`);
    this.pending = this.pending.length === 0 ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength) : Buffer.concat([this.pending, chunk]);
    let pos = 0;
    for (;;) {
      const blocks: PendingBlock[] = [];
      let batch = 0;
      let p = pos;
      while (batch < MAX_BATCH_DECODED) {
        if (this.pending.length - p < 4) break;
        const magic = this.pending.readUInt32LE(p);
        if (magic === MAGIC_END) {
          if (p + 4 !== this.pending.length) throw new Lz4FormatError(`data after the end-of-stream marker at offset ${this.consumed + p}`);
          this.ended = true;
          p += 4;
          break;
        }
        let block: PendingBlock;
        if (magic === MAGIC_COMPRESSED) {
          if (this.pending.length - p < 12) break;
          const decodedLen = this.pending.readUInt32LE(p + 4);
          const payloadLen = this.pending.readUInt32LE(p + 8);
          if (decodedLen > MAX_BLOCK_DECODED || payloadLen > lz4Bound(decodedLen) || payloadLen === 0) {
            throw new Lz4FormatError(`implausible bv41 block at offset ${this.consumed + p}: decoded ${decodedLen} bytes from ${payloadLen}`);
          }
          block = { stored: false, payloadStart: p + 12, payloadLen, decodedLen };
        } else if (magic === MAGIC_STORED) {
          if (this.pending.length - p < 8) break;
          const len = this.pending.readUInt32LE(p + 4);
          if (len > MAX_BLOCK_DECODED) throw new Lz4FormatError(`implausible bv4- block of ${len} bytes at offset ${this.consumed + p}`);
          block = { stored: true, payloadStart: p + 8, payloadLen: len, decodedLen: len };
        } else {
          const hex = this.pending.subarray(p, p + 4).toString('hex');
          throw new Lz4FormatError(`not an Apple LZ4 block header at offset ${this.consumed + p} (bytes ${hex}; expected "bv41", "bv4-" or "bv4$")`);
        }
        if (this.pending.length - block.payloadStart < block.payloadLen) break;
        blocks.push(block);
        batch += block.decodedLen;
        p = block.payloadStart + block.payloadLen;
      }
      if (blocks.length > 0) yield this.decodeBatch(blocks, batch);
      pos = p;
      if (this.ended || blocks.length === 0) break;
    }
    // Keep only the unparsed tail (at most one partial block), copied so the caller's chunk is free.
    this.consumed += pos;
    this.pending = pos === this.pending.length ? Buffer.alloc(0) : Buffer.from(this.pending.subarray(pos));
  }

  private decodeBatch(blocks: PendingBlock[], total: number): Buffer {
    const hist = this.history.length;
    const dst = Buffer.allocUnsafe(hist + total);
    dst.set(this.history, 0);
    let dp = hist;
    const src = this.pending;
    for (const b of blocks) {
      if (b.stored) {
        src.copy(dst, dp, b.payloadStart, b.payloadStart + b.payloadLen);
        dp += b.payloadLen;
        continue;
      }
      let end: number;
      try {
        end = decodeLz4Block(src, b.payloadStart, b.payloadStart + b.payloadLen, dst, dp, dp + b.decodedLen, 0);
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        throw new Lz4FormatError(`bad bv41 block at offset ${this.consumed + b.payloadStart - 12}: ${msg}`);
      }
      if (end !== dp + b.decodedLen) {
        throw new Lz4FormatError(`bv41 block at offset ${this.consumed + b.payloadStart - 12} decoded to ${end - dp} bytes, header says ${b.decodedLen}`);
      }
      dp = end;
    }
    this.history = dst.subarray(Math.max(0, dst.length - WINDOW));
    this.decodedBytes += total;
    return dst.subarray(hist);
  }

  end(): void {
    if (!this.ended) {
      throw new Lz4FormatError(
        this.pending.length > 0
          ? `Apple LZ4 stream is truncated: ${this.pending.length} bytes of an incomplete block at offset ${this.consumed}`
          : `Apple LZ4 stream is truncated: no end-of-stream marker ("bv4$") after ${this.consumed} bytes`,
      );
    }
  }

  get finished(): boolean {
    return this.ended;
  }
}

/** One-shot helpers (tests, small blobs). */
export function appleLz4Compress(data: Uint8Array): Buffer {
  const enc = new AppleLz4Encoder();
  return Buffer.concat([enc.write(data), enc.end()]);
}

export function appleLz4Decompress(data: Uint8Array): Buffer {
  const dec = new AppleLz4Decoder();
  const parts = [...dec.write(data)];
  dec.end();
  return Buffer.concat(parts);
}
