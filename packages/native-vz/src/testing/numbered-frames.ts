// Frames the FramePort tests send between two ports (or a port and a raw socket end) and the
// collector that waits for them.
import type { FramePort } from '../index.ts';

/** Frame i: length 60..1514 unless given, bytes derived from i, first 4 bytes = i. */
export function frame(i: number, len = 60 + ((i * 97) % 1455)): Buffer {
  const f = Buffer.alloc(len);
  for (let j = 0; j < len; j++) f[j] = (i * 31 + j) & 0xff;
  f.writeUInt32BE(i, 0);
  return f;
}

/**
 * Copies of the frames `port` receives until `n` have arrived, and the size of each batch.
 * `pauseWhenDone`: pause the port then (frames after the n-th stay in the socket).
 */
export function collect(port: FramePort, n: number, opts: { timeoutMs?: number; pauseWhenDone?: boolean } = {}): Promise<{ frames: Buffer[]; batches: number[] }> {
  return new Promise((resolve, reject) => {
    const frames: Buffer[] = [];
    const batches: number[] = [];
    const t = setTimeout(() => reject(new Error(`timeout: got ${frames.length}/${n} frames`)), opts.timeoutMs ?? 10_000);
    port.onFrames(
      (fs) => {
        batches.push(fs.length);
        frames.push(...fs);
        if (frames.length >= n) {
          clearTimeout(t);
          if (opts.pauseWhenDone) port.pause();
          resolve({ frames, batches });
        }
      },
      { copy: true },
    );
  });
}
