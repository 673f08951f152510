// Cryptographically random bytes for the per-VM hot path (a data key and two nonces per sealed
// secret, the check integer of each new SSH key): Node's `randomBytes(n)` costs ~8 µs a call on
// this machine whatever n is (a crypto job is set up for every call; no system call), while one
// `randomFillSync` of a 4 KiB pool serves hundreds of them (issue 20, BENCHMARKS.md control plane).
// The bytes come from the same CSPRNG; each is handed out once and wiped from the pool as it goes.
import { randomFillSync } from 'node:crypto';

const POOL_BYTES = 4096;
const pool = Buffer.alloc(POOL_BYTES);
let used = POOL_BYTES; // empty: filled at the first call

/** `n` fresh random bytes in a Buffer of their own (not a view of the pool). */
export function randomBytesPooled(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`randomBytesPooled: bad length ${n}`);
  if (n > POOL_BYTES / 4) return randomFillSync(Buffer.alloc(n));
  if (used + n > POOL_BYTES) {
    randomFillSync(pool);
    used = 0;
  }
  const out = Buffer.from(pool.subarray(used, used + n));
  pool.fill(0, used, used + n);
  used += n;
  return out;
}
