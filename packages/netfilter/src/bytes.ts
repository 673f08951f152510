/**
 * Big-endian reads straight from a Uint8Array. Callers check bounds first; these helpers do not
 * (an out-of-range index reads `undefined`, which the bit operators turn into 0 — never a throw).
 * No DataView, no allocation: IPv4 addresses are returned as unsigned 32-bit numbers.
 */

export function u16(f: Uint8Array, o: number): number {
  return (f[o]! << 8) | f[o + 1]!;
}

export function u32(f: Uint8Array, o: number): number {
  return ((f[o]! << 24) | (f[o + 1]! << 16) | (f[o + 2]! << 8) | f[o + 3]!) >>> 0;
}

/** True when `f[o..o+6)` equals the 6-byte MAC `m`. */
export function macAt(f: Uint8Array, o: number, m: Uint8Array): boolean {
  return (
    f[o] === m[0] &&
    f[o + 1] === m[1] &&
    f[o + 2] === m[2] &&
    f[o + 3] === m[3] &&
    f[o + 4] === m[4] &&
    f[o + 5] === m[5]
  );
}

/** True when `f[o..o+6)` is ff:ff:ff:ff:ff:ff. */
export function isBroadcastMacAt(f: Uint8Array, o: number): boolean {
  return (f[o]! & f[o + 1]! & f[o + 2]! & f[o + 3]! & f[o + 4]! & f[o + 5]!) === 0xff;
}

/**
 * The same four bytes as a signed 32-bit integer. The filter keeps IPv4 addresses in this form on
 * its hot path: int32 values are small integers (Smis) in V8 on 64-bit builds, so passing them
 * between functions never boxes a heap number (an unsigned address above 2^31 would).
 */
export function i32(f: Uint8Array, o: number): number {
  return (f[o]! << 24) | (f[o + 1]! << 16) | (f[o + 2]! << 8) | f[o + 3]!;
}
