// End-to-end pack/unpack timing on a disk-like file (not a test; run by hand):
//   pnpm exec tsx packages/vm-image/scripts/pack-speed.ts [sizeMiB=512]
// Prints wall time and peak RSS so regressions in speed or memory (streaming) are visible.
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { packFleetQemu, packTartBundle, unpackFleetQemu, unpackTartImage, parseFleetQemuConfig, type PackedImage } from '../src/index.ts';

const MiB = 1024 * 1024;
const sizeMiB = Number(process.argv[2] ?? 512);
const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'vm-image-speed-'));
let peak = 0;
const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);

try {
  const bundle = path.join(root, 'bundle');
  await fsp.mkdir(bundle);
  // Half zeros, a quarter text-like, a quarter random, in 8 MiB stripes.
  const fh = await fsp.open(path.join(bundle, 'disk.img'), 'w');
  const text = Buffer.from('Lorem ipsum worker-3 vm started in 1234 ms status=ok\n'.repeat(160_000)).subarray(0, 8 * MiB);
  for (let off = 0; off < sizeMiB * MiB; off += 8 * MiB) {
    const stripe = (off / (8 * MiB)) % 4;
    if (stripe === 1) await fh.write(text, 0, text.length, off);
    if (stripe === 3) await fh.write(randomBytes(8 * MiB), 0, 8 * MiB, off);
  }
  await fh.truncate(sizeMiB * MiB);
  await fh.close();
  await fsp.writeFile(path.join(bundle, 'config.json'), JSON.stringify({ version: 1, os: 'linux', arch: 'arm64', cpuCountMin: 2, cpuCount: 2, memorySizeMin: 1 << 30, memorySize: 1 << 30, macAddress: '7e:4a:1c:2b:9d:01' }));
  await fsp.writeFile(path.join(bundle, 'nvram.bin'), randomBytes(64 * 1024));

  const paths = (p: PackedImage) => {
    const m = new Map([p.config, ...p.layers].map((b) => [b.descriptor.digest, b.path]));
    return (d: string) => m.get(d)!;
  };
  let t = performance.now();
  const tart = await packTartBundle(bundle, path.join(root, 'work-tart'));
  const packS = (performance.now() - t) / 1000;
  const compressed = tart.layers.reduce((a, l) => a + l.descriptor.size, 0);
  t = performance.now();
  await unpackTartImage(tart.manifest, paths(tart), path.join(root, 'out-tart'));
  const unpackS = (performance.now() - t) / 1000;
  console.log(`tart ${sizeMiB} MiB disk -> ${(compressed / MiB).toFixed(0)} MiB: pack ${packS.toFixed(2)} s (${(sizeMiB / packS).toFixed(0)} MiB/s), unpack ${unpackS.toFixed(2)} s (${(sizeMiB / unpackS).toFixed(0)} MiB/s)`);

  t = performance.now();
  const fleet = await packFleetQemu({ disk: path.join(bundle, 'disk.img'), architecture: 'arm64' }, path.join(root, 'work-fleet'));
  const fpack = (performance.now() - t) / 1000;
  t = performance.now();
  await unpackFleetQemu(fleet.manifest, parseFleetQemuConfig(await fsp.readFile(fleet.config.path)), paths(fleet), path.join(root, 'out-fleet'));
  const funpack = (performance.now() - t) / 1000;
  console.log(`fleet-qemu ${sizeMiB} MiB raw disk: pack ${fpack.toFixed(2)} s, unpack ${funpack.toFixed(2)} s`);
} finally {
  clearInterval(timer);
  console.log(`peak RSS ${(peak / MiB).toFixed(0)} MiB`);
  await fsp.rm(root, { recursive: true, force: true });
}
