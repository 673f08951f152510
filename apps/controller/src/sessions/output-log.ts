// Output kept for a reconnectable exec session: per channel, the last `capacity` bytes
// and the absolute offset of their first byte, so that a re-attaching client can ask
// "from byte N of stdout" and learn exactly what (if anything) was dropped.
export class OutputLog {
  private chunks: Buffer[] = [];
  private bytes = 0;
  /** Absolute offset of the first byte still held. */
  start = 0;

  constructor(private readonly capacity: number) {}

  /** Absolute offset one past the last byte written. */
  get end(): number {
    return this.start + this.bytes;
  }

  append(data: Buffer): void {
    this.chunks.push(data);
    this.bytes += data.length;
    while (this.bytes - (this.chunks[0]?.length ?? 0) >= this.capacity && this.chunks.length > 1) {
      const dropped = this.chunks.shift()!;
      this.bytes -= dropped.length;
      this.start += dropped.length;
    }
  }

  /** Bytes from absolute offset `from` (clamped to what is held) and where they begin. */
  since(from: number): { offset: number; data: Buffer[] } {
    let offset = Math.max(from, this.start);
    if (offset >= this.end) return { offset: this.end, data: [] };
    const out: Buffer[] = [];
    let pos = this.start;
    for (const c of this.chunks) {
      const cEnd = pos + c.length;
      if (cEnd > offset) out.push(c.subarray(Math.max(0, offset - pos)));
      pos = cEnd;
    }
    offset = Math.max(from, this.start);
    return { offset, data: out };
  }
}
