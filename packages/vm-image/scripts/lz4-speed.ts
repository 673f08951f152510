// Measures the Apple-LZ4 codec on a 100 MiB disk-like buffer (not a test; run by hand):
//   pnpm exec tsx packages/vm-image/scripts/lz4-speed.ts
// The mix: 50% zero regions, 30% compressible (repetitive text-like records), 20% random.
import { randomBytes } from 'node:crypto';
import { AppleLz4Decoder, AppleLz4Encoder } from '../src/apple-lz4.ts';

const MiB = 1024 * 1024;
const size = 100 * MiB;
const data = Buffer.alloc(size);
let seed = 1;
for (let off = 0; off < size; off += 4 * MiB) {
  const kind = off % (20 * MiB) < 10 * MiB ? 'zero' : off % (20 * MiB) < 16 * MiB ? 'text' : 'random';
  if (kind === 'random') randomBytes(4 * MiB).copy(data, off);
  if (kind === 'text') {
    let p = off;
    while (p < off + 4 * MiB) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      p += data.write(`record ${seed % 10000} value=${(seed >>> 8) % 977} status=${seed % 3 ? 'ok' : 'failed'}\n`, p, off + 4 * MiB - p);
    }
  }
}

function run(label: string, input: Buffer): void {
  let t = performance.now();
  const enc = new AppleLz4Encoder();
  const parts: Buffer[] = [];
  for (let i = 0; i < input.length; i += 4 * MiB) parts.push(enc.write(input.subarray(i, i + 4 * MiB)));
  parts.push(enc.end());
  const comp = Buffer.concat(parts);
  const ct = (performance.now() - t) / 1000;
  t = performance.now();
  const dec = new AppleLz4Decoder();
  let out = 0;
  for (let i = 0; i < comp.length; i += MiB) for (const b of dec.write(comp.subarray(i, i + MiB))) out += b.length;
  dec.end();
  const dt = (performance.now() - t) / 1000;
  if (out !== input.length) throw new Error('size mismatch');
  const mb = input.length / MiB;
  console.log(`${label}: ${mb} MiB -> ${(comp.length / MiB).toFixed(1)} MiB; compress ${(mb / ct).toFixed(0)} MiB/s (${ct.toFixed(2)} s), decompress ${(mb / dt).toFixed(0)} MiB/s (${dt.toFixed(2)} s)`);
}

run('disk-like mix', data);
run('random', randomBytes(size));
run('text', Buffer.from(data.subarray(10 * MiB, 16 * MiB).toString('latin1').repeat(17).slice(0, size), 'latin1'));
run('zeros', Buffer.alloc(size));
