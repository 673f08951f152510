import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appleLz4Compress } from './apple-lz4.ts';
import { VmImageError } from './errors.ts';
import { ANNOTATIONS, MEDIA_TYPES, parseImageManifest, serializeManifest, type ImageManifest } from './manifest.ts';
import { packTartBundle, unpackTartImage } from './tart.ts';
import { diskBytes, leftoverTemps, sha256, tartConfigJson, tempDir } from './test-helpers.ts';
import type { PackedImage, UnpackProgress } from './types.ts';
import { platformOf } from './index.ts';

const MiB = 1024 * 1024;

let root: string;
let bundle: string;
let disk: Buffer;
let nvram: Buffer;
let config: Buffer;
let packed: PackedImage;
const packProgress: UnpackProgress[] = [];

function blobPathOf(image: PackedImage): (digest: string) => string {
  const byDigest = new Map([image.config, ...image.layers].map((b) => [b.descriptor.digest, b.path]));
  return (d) => {
    const p = byDigest.get(d);
    if (!p) throw new Error(`no blob ${d}`);
    return p;
  };
}

async function expectVmImageError(p: Promise<unknown>, code: VmImageError['code'], message?: RegExp): Promise<VmImageError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(VmImageError);
  expect((err as VmImageError).code).toBe(code);
  if (message) expect((err as VmImageError).message).toMatch(message);
  return err as VmImageError;
}

beforeAll(async () => {
  root = await tempDir('tart');
  bundle = path.join(root, 'bundle');
  await fsp.mkdir(bundle);
  // 5 MiB + 12345: random first MiB, text at 2 MiB, a 4 KiB random island at 4 MiB + 100, zeros elsewhere.
  disk = diskBytes(5 * MiB + 12345);
  nvram = randomBytes(128 * 1024);
  config = tartConfigJson('darwin');
  await fsp.writeFile(path.join(bundle, 'config.json'), config);
  await fsp.writeFile(path.join(bundle, 'disk.img'), disk);
  await fsp.writeFile(path.join(bundle, 'nvram.bin'), nvram);
  packed = await packTartBundle(bundle, path.join(root, 'work'), { chunkSize: MiB, onProgress: (p) => packProgress.push(p) });
});

afterAll(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

describe('packTartBundle', () => {
  it('writes the manifest Tart pushes: OCI config stub, then config.json, disk.v2 pieces, nvram', () => {
    const m = packed.manifest;
    expect(m.schemaVersion).toBe(2);
    expect(m.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(m.config.mediaType).toBe('application/vnd.oci.image.config.v1+json');
    const types = m.layers.map((l) => l.mediaType);
    expect(types).toEqual([
      'application/vnd.cirruslabs.tart.config.v1',
      ...Array<string>(6).fill('application/vnd.cirruslabs.tart.disk.v2'),
      'application/vnd.cirruslabs.tart.nvram.v1',
    ]);
    expect(m.annotations?.['org.cirruslabs.tart.uncompressed-disk-size']).toBe(String(disk.length));
    expect(m.annotations?.['org.cirruslabs.tart.upload-time']).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    // config.json travels byte for byte; nvram too.
    expect(m.layers[0]!.digest).toBe(sha256(config));
    expect(m.layers[0]!.size).toBe(config.length);
    expect(m.layers.at(-1)!.digest).toBe(sha256(nvram));

    // Each disk layer annotates the uncompressed size and digest of its 1 MiB piece.
    m.layers.slice(1, -1).forEach((l, i) => {
      const piece = disk.subarray(i * MiB, Math.min(disk.length, (i + 1) * MiB));
      expect(l.annotations).toEqual({
        'org.cirruslabs.tart.uncompressed-size': String(piece.length),
        'org.cirruslabs.tart.uncompressed-content-digest': sha256(piece),
      });
    });
  });

  it('writes the OCI config stub Tart writes (sorted keys, disk format label)', async () => {
    const stub = await fsp.readFile(packed.config.path, 'utf8');
    expect(stub).toBe('{"architecture":"arm64","config":{"Labels":{"org.cirruslabs.tart.disk.format":"raw"}},"os":"darwin"}');
    expect(platformOf('tart', Buffer.from(stub))).toEqual({ os: 'darwin', architecture: 'arm64' });
    expect(platformOf('tart', tartConfigJson('linux'))).toEqual({ os: 'linux', architecture: 'arm64' });
  });

  it('writes blobs whose bytes match their descriptors; disk blobs are Apple LZ4 streams; manifestBytes is the manifest', async () => {
    for (const b of [packed.config, ...packed.layers]) {
      const bytes = await fsp.readFile(b.path);
      expect(sha256(bytes)).toBe(b.descriptor.digest);
      expect(bytes.length).toBe(b.descriptor.size);
      if (b.descriptor.mediaType === MEDIA_TYPES.tartDiskV2) {
        expect(['bv41', 'bv4-']).toContain(bytes.toString('latin1', 0, 4));
        expect(bytes.toString('latin1', bytes.length - 4)).toBe('bv4$');
      }
    }
    expect(sha256(packed.manifestBytes)).toBe(packed.manifestDigest);
    expect(parseImageManifest(JSON.parse(packed.manifestBytes.toString()))).toEqual(packed.manifest);
    // The zero pieces compress to almost nothing.
    expect(packed.layers[4]!.descriptor.size).toBeLessThan(10_000);
  });

  it('reports progress up to the total', () => {
    expect(packProgress.length).toBeGreaterThan(3);
    const last = packProgress.at(-1)!;
    expect(last.bytesDone).toBe(last.bytesTotal);
    expect(last.bytesTotal).toBe(disk.length + config.length + nvram.length);
    for (let i = 1; i < packProgress.length; i++) expect(packProgress[i]!.bytesDone).toBeGreaterThanOrEqual(packProgress[i - 1]!.bytesDone);
  });

  it('refuses a bundle whose config.json Tart could not load', async () => {
    const bad = path.join(root, 'bad-bundle');
    await fsp.mkdir(bad);
    await fsp.writeFile(path.join(bad, 'config.json'), JSON.stringify({ version: 1, os: 'darwin' }));
    await fsp.writeFile(path.join(bad, 'disk.img'), Buffer.alloc(10));
    await fsp.writeFile(path.join(bad, 'nvram.bin'), Buffer.alloc(10));
    await expectVmImageError(packTartBundle(bad, path.join(root, 'bad-work')), 'bad-config', /cpuCountMin/);
  });
});

describe('unpackTartImage', () => {
  it('restores byte-identical files with zero regions left as holes', async () => {
    const dest = path.join(root, 'out-ok');
    const progress: UnpackProgress[] = [];
    await unpackTartImage(packed.manifest, blobPathOf(packed), dest, { onProgress: (p) => progress.push(p) });
    expect((await fsp.readdir(dest)).sort()).toEqual(['config.json', 'disk.img', 'nvram.bin']);
    expect((await fsp.readFile(path.join(dest, 'config.json'))).equals(config)).toBe(true);
    expect((await fsp.readFile(path.join(dest, 'nvram.bin'))).equals(nvram)).toBe(true);
    const out = await fsp.readFile(path.join(dest, 'disk.img'));
    expect(out.length).toBe(disk.length);
    expect(out.equals(disk)).toBe(true);
    const st = await fsp.stat(path.join(dest, 'disk.img'));
    // About 2.1 MiB of the 5 MiB is data; the rest must not be allocated.
    expect(st.blocks * 512).toBeLessThan(st.size * 0.7);
    expect(progress.at(-1)).toEqual({ bytesDone: progress.at(-1)!.bytesTotal, bytesTotal: packed.manifest.layers.reduce((a, l) => a + l.size, 0) });
    expect(await leftoverTemps(dest)).toEqual([]);
  });

  it('gives a disk that ends in zeros its exact size', async () => {
    const b2 = path.join(root, 'bundle-zero-tail');
    await fsp.mkdir(b2);
    const d2 = Buffer.concat([randomBytes(1000), Buffer.alloc(3 * MiB)]);
    await fsp.writeFile(path.join(b2, 'config.json'), tartConfigJson('linux'));
    await fsp.writeFile(path.join(b2, 'disk.img'), d2);
    await fsp.writeFile(path.join(b2, 'nvram.bin'), Buffer.from('nv'));
    const p2 = await packTartBundle(b2, path.join(root, 'work-zero-tail'), { chunkSize: 2 * MiB });
    const dest = path.join(root, 'out-zero-tail');
    await unpackTartImage(p2.manifest, blobPathOf(p2), dest);
    const out = await fsp.readFile(path.join(dest, 'disk.img'));
    expect(out.equals(d2)).toBe(true);
  });

  it('rejects a layer whose uncompressed digest annotation is wrong, leaving nothing at destDir', async () => {
    const m: ImageManifest = structuredClone(packed.manifest);
    m.layers[3]!.annotations![ANNOTATIONS.tartUncompressedContentDigest] = sha256(Buffer.from('something else'));
    const dest = path.join(root, 'out-bad-digest');
    const err = await expectVmImageError(unpackTartImage(m, blobPathOf(packed), dest), 'digest-mismatch', /disk layer 2 .* annotation says sha256:/);
    expect(err.message).toContain(packed.manifest.layers[3]!.digest);
    await expect(fsp.stat(dest)).rejects.toThrow(/ENOENT/);
    expect(await leftoverTemps(dest)).toEqual([]);
  });

  it('rejects a layer that decompresses to a different size than annotated', async () => {
    const m: ImageManifest = structuredClone(packed.manifest);
    m.layers[2]!.annotations![ANNOTATIONS.tartUncompressedSize] = String(MiB - 1);
    delete m.annotations![ANNOTATIONS.tartUncompressedDiskSize];
    const dest = path.join(root, 'out-bad-size');
    await expectVmImageError(unpackTartImage(m, blobPathOf(packed), dest), 'digest-mismatch', /more than its org.cirruslabs.tart.uncompressed-size/);
    await expect(fsp.stat(dest)).rejects.toThrow(/ENOENT/);
  });

  it('rejects a corrupt compressed blob as digest-mismatch naming the layer', async () => {
    const bad = path.join(root, 'corrupt.blob');
    const orig = await fsp.readFile(packed.layers[1]!.path);
    const corrupt = Buffer.from(orig);
    corrupt.write('XXXX', 0, 'latin1');
    await fsp.writeFile(bad, corrupt);
    const paths = blobPathOf(packed);
    const dest = path.join(root, 'out-corrupt');
    await expectVmImageError(
      unpackTartImage(packed.manifest, (d) => (d === packed.layers[1]!.descriptor.digest ? bad : paths(d)), dest),
      'digest-mismatch',
      /disk layer 0 .* not a valid Apple LZ4 stream: not an Apple LZ4 block header at offset 0/,
    );
    await expect(fsp.stat(dest)).rejects.toThrow(/ENOENT/);
  });

  it('rejects manifests missing what Tart requires', async () => {
    const noNvram: ImageManifest = { ...packed.manifest, layers: packed.manifest.layers.slice(0, -1) };
    await expectVmImageError(unpackTartImage(noNvram, blobPathOf(packed), path.join(root, 'x1')), 'bad-manifest', /exactly one application\/vnd.cirruslabs.tart.nvram.v1/);
    const noAnn: ImageManifest = structuredClone(packed.manifest);
    delete noAnn.layers[1]!.annotations;
    await expectVmImageError(unpackTartImage(noAnn, blobPathOf(packed), path.join(root, 'x2')), 'bad-manifest', /no org.cirruslabs.tart.uncompressed-size annotation/);
  });

  it('refuses an unknown layer type when the manifest is parsed', () => {
    const json = JSON.parse(packed.manifestBytes.toString());
    json.layers.splice(2, 0, { mediaType: 'application/vnd.cirruslabs.tart.disk.v3', digest: sha256(Buffer.from('x')), size: 1 });
    let err: unknown;
    try {
      parseImageManifest(json);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VmImageError);
    expect((err as VmImageError).code).toBe('unsupported-media-type');
    expect((err as VmImageError).message).toMatch(/application\/vnd.cirruslabs.tart.disk.v3.*tart VM image format/);
  });

  it('stops on abort and cleans up', async () => {
    const dest = path.join(root, 'out-abort');
    const ac = new AbortController();
    const p = unpackTartImage(packed.manifest, blobPathOf(packed), dest, {
      signal: ac.signal,
      onProgress: (pr) => {
        if (pr.bytesDone > packed.manifest.layers[0]!.size) ac.abort();
      },
    });
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    await expect(fsp.stat(dest)).rejects.toThrow(/ENOENT/);
    expect(await leftoverTemps(dest)).toEqual([]);
  });

  it('refuses to overwrite a non-empty destination', async () => {
    const dest = path.join(root, 'out-occupied');
    await fsp.mkdir(dest);
    await fsp.writeFile(path.join(dest, 'keep'), 'x');
    await expectVmImageError(unpackTartImage(packed.manifest, blobPathOf(packed), dest), 'io', /not empty/);
    expect(await fsp.readdir(dest)).toEqual(['keep']);
  });

  it('reads legacy disk.v1 images: one Apple LZ4 stream cut into slices', async () => {
    const work = path.join(root, 'v1');
    await fsp.mkdir(work);
    const stream = appleLz4Compress(disk);
    const cut = [0, 1000, Math.floor(stream.length / 2), stream.length];
    const files = new Map<string, string>();
    const layers = [];
    for (let i = 0; i + 1 < cut.length; i++) {
      const slice = stream.subarray(cut[i], cut[i + 1]);
      const digest = sha256(slice);
      const file = path.join(work, `slice${i}`);
      await fsp.writeFile(file, slice);
      files.set(digest, file);
      layers.push({ mediaType: MEDIA_TYPES.tartDiskV1, digest, size: slice.length });
    }
    files.set(packed.layers[0]!.descriptor.digest, packed.layers[0]!.path);
    files.set(packed.layers.at(-1)!.descriptor.digest, packed.layers.at(-1)!.path);
    const m: ImageManifest = {
      ...packed.manifest,
      layers: [packed.manifest.layers[0]!, ...layers, packed.manifest.layers.at(-1)!],
    };
    const parsed = parseImageManifest(JSON.parse(serializeManifest(m).toString()));
    const dest = path.join(root, 'out-v1');
    await unpackTartImage(parsed, (d) => files.get(d)!, dest);
    expect((await fsp.readFile(path.join(dest, 'disk.img'))).equals(disk)).toBe(true);
  });
});

describe('disk full', () => {
  // A real ENOSPC: a 4 MiB tmpfs (needs root and mount; skipped loudly otherwise).
  let mnt: string | undefined;
  beforeAll(async () => {
    const dir = await tempDir('enospc');
    try {
      const { execFileSync } = await import('node:child_process');
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir], { stdio: 'ignore' });
      mnt = dir;
    } catch {
      console.warn('vm-image: cannot mount a small tmpfs here (not root?); skipping the real ENOSPC test');
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
  afterAll(async () => {
    if (!mnt) return;
    const { execFileSync } = await import('node:child_process');
    execFileSync('umount', [mnt], { stdio: 'ignore' });
    await fsp.rm(mnt, { recursive: true, force: true });
  });

  it('maps ENOSPC to disk-full and removes the partial bundle', async (ctx) => {
    if (!mnt) return ctx.skip();
    // The unpacked disk needs ~2.1 MiB of real blocks, so fill the tmpfs to leave ~1 MiB.
    await fsp.writeFile(path.join(mnt, 'filler'), Buffer.alloc(3 * MiB, 1));
    const dest = path.join(mnt, 'bundle');
    await expectVmImageError(unpackTartImage(packed.manifest, blobPathOf(packed), dest), 'disk-full', /no space left on device/);
    expect((await fsp.readdir(mnt)).sort()).toEqual(['filler']);
  });

  it('packing into a full work dir fails with disk-full and leaves no blobs behind', async (ctx) => {
    if (!mnt) return ctx.skip();
    const work = path.join(mnt, 'work');
    await expectVmImageError(packTartBundle(bundle, work, { chunkSize: MiB }), 'disk-full');
    const left = await fsp.readdir(path.join(work, 'blobs', 'sha256')).catch(() => []);
    expect(left).toEqual([]);
  });
});
