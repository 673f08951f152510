import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

export async function tempDir(prefix: string): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), `vm-image-${prefix}-`));
}

export function sha256(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** Deterministic compressible bytes: log-like text lines. */
export function textBytes(n: number, seed = 1): Buffer {
  const out = Buffer.alloc(n);
  let p = 0;
  let s = seed;
  while (p < n) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    p += out.write(`${s % 1000} worker-${s % 7} vm started in ${(s >>> 5) % 5000} ms status=${s % 3 ? 'ok' : 'retry'}\n`, p, n - p, 'latin1');
  }
  return out;
}

/**
 * A disk-like file: zero regions (which must come back as holes) between random and text regions.
 * Returns the bytes too, for comparisons.
 */
export function diskBytes(size: number): Buffer {
  const MiB = 1024 * 1024;
  const b = Buffer.alloc(size);
  randomBytes(Math.min(MiB, size)).copy(b, 0); // first MiB random (a partition table + boot code, say)
  if (size > 2 * MiB) textBytes(Math.min(MiB, size - 2 * MiB)).copy(b, 2 * MiB);
  if (size > 4 * MiB + 4096) randomBytes(4096).copy(b, 4 * MiB + 100); // an unaligned small island
  if (size > 10) b.write('END', size - 3, 'latin1'); // last bytes non-zero so the final size is data
  return b;
}

/** Tart-like config.json (the keys Tart's VMConfig requires for a macOS VM). */
export function tartConfigJson(os: 'darwin' | 'linux' = 'darwin'): Buffer {
  const c: Record<string, unknown> = {
    version: 1,
    os,
    arch: 'arm64',
    cpuCountMin: 4,
    cpuCount: 4,
    memorySizeMin: 4294967296,
    memorySize: 8589934592,
    macAddress: '7e:4a:1c:2b:9d:01',
    display: { width: 1024, height: 768 },
    diskFormat: 'raw',
  };
  if (os === 'darwin') {
    c.ecid = 'YWJjZGVmZ2hpamtsbW5vcA==';
    c.hardwareModel = 'YnBsaXN0MDDTAQIDBAUGX1AQFV9WZXJzaW9u';
  }
  return Buffer.from(JSON.stringify(c));
}

export function hasCommand(cmd: string): boolean {
  return ['/usr/bin', '/usr/local/bin', '/bin'].some((d) => existsSync(path.join(d, cmd)));
}

export function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Entries of a directory's parent whose names start with the directory's base name + ".tmp-". */
export async function leftoverTemps(destDir: string): Promise<string[]> {
  const entries = await fsp.readdir(path.dirname(destDir));
  return entries.filter((e) => e.startsWith(`${path.basename(destDir)}.tmp-`));
}
