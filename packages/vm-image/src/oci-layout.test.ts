import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VmImageError } from './errors.ts';
import { packFleetQemu } from './fleet-qemu.ts';
import { readOciLayout, writeOciLayout } from './oci-layout.ts';
import { packTartBundle, unpackTartImage } from './tart.ts';
import { diskBytes, hasCommand, run, sha256, tartConfigJson, tempDir } from './test-helpers.ts';
import type { PackedImage } from './types.ts';

const MiB = 1024 * 1024;
const haveSkopeo = hasCommand('skopeo');
if (!haveSkopeo) console.warn('vm-image: skopeo not found; skipping the skopeo oci: transport checks (apt-get install skopeo)');

let root: string;
let layout: string;
let tart: PackedImage;
let fleet: PackedImage;
let disk: Buffer;

beforeAll(async () => {
  root = await tempDir('layout');
  const bundle = path.join(root, 'bundle');
  await fsp.mkdir(bundle);
  disk = diskBytes(3 * MiB + 5);
  await fsp.writeFile(path.join(bundle, 'config.json'), tartConfigJson('linux'));
  await fsp.writeFile(path.join(bundle, 'disk.img'), disk);
  await fsp.writeFile(path.join(bundle, 'nvram.bin'), randomBytes(1000));
  tart = await packTartBundle(bundle, path.join(root, 'work-tart'), { chunkSize: MiB });
  const raw = path.join(root, 'disk.raw');
  await fsp.writeFile(raw, diskBytes(2 * MiB));
  await fsp.writeFile(path.join(root, 'kernel'), randomBytes(5000));
  fleet = await packFleetQemu({ disk: raw, kernel: path.join(root, 'kernel'), cmdline: 'console=hvc0', architecture: 'arm64' }, path.join(root, 'work-fleet'), { chunkSize: MiB / 2 });
  layout = path.join(root, 'layout');
  await writeOciLayout(tart, layout, 'tart-v1');
  await writeOciLayout(fleet, layout, 'fleet-v1');
});

afterAll(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

describe('OCI image layout', () => {
  it('writes oci-layout, index.json with ref.name annotations, and every blob under blobs/sha256', async () => {
    expect(JSON.parse(await fsp.readFile(path.join(layout, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });
    const index = JSON.parse(await fsp.readFile(path.join(layout, 'index.json'), 'utf8'));
    expect(index.schemaVersion).toBe(2);
    expect(index.manifests).toEqual([
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: tart.manifestDigest, size: tart.manifestBytes.length, annotations: { 'org.opencontainers.image.ref.name': 'tart-v1' } },
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: fleet.manifestDigest, size: fleet.manifestBytes.length, annotations: { 'org.opencontainers.image.ref.name': 'fleet-v1' } },
    ]);
    for (const image of [tart, fleet]) {
      for (const b of [image.config, ...image.layers]) {
        const bytes = await fsp.readFile(path.join(layout, 'blobs', 'sha256', b.descriptor.digest.slice(7)));
        expect(sha256(bytes)).toBe(b.descriptor.digest);
      }
      const m = await fsp.readFile(path.join(layout, 'blobs', 'sha256', image.manifestDigest.slice(7)));
      expect(m.equals(image.manifestBytes)).toBe(true);
    }
  });

  it('reads back exactly what was written, for both formats', async () => {
    for (const [tag, image] of [
      ['tart-v1', tart],
      ['fleet-v1', fleet],
    ] as const) {
      const back = await readOciLayout(layout, tag);
      expect(back.manifestBytes.equals(image.manifestBytes)).toBe(true);
      expect(back.manifestDigest).toBe(image.manifestDigest);
      expect(back.manifest).toEqual(image.manifest);
      expect(back.layers.map((l) => l.descriptor)).toEqual(image.layers.map((l) => l.descriptor));
      for (const b of [back.config, ...back.layers]) expect(b.path.startsWith(path.join(layout, 'blobs', 'sha256'))).toBe(true);
    }
  });

  it('a Tart image read from a layout unpacks to the original disk', async () => {
    const back = await readOciLayout(layout, 'tart-v1');
    const byDigest = new Map([back.config, ...back.layers].map((b) => [b.descriptor.digest, b.path]));
    const dest = path.join(root, 'unpacked');
    await unpackTartImage(back.manifest, (d) => byDigest.get(d)!, dest);
    expect((await fsp.readFile(path.join(dest, 'disk.img'))).equals(disk)).toBe(true);
  });

  it('re-tagging replaces the old entry and keeps the others', async () => {
    const dir = path.join(root, 'retag');
    await writeOciLayout(tart, dir, 'latest');
    await writeOciLayout(fleet, dir, 'other');
    await writeOciLayout(fleet, dir, 'latest');
    const index = JSON.parse(await fsp.readFile(path.join(dir, 'index.json'), 'utf8'));
    expect(index.manifests.map((m: { annotations: Record<string, string> }) => m.annotations['org.opencontainers.image.ref.name'])).toEqual(['other', 'latest']);
    expect((await readOciLayout(dir, 'latest')).manifestDigest).toBe(fleet.manifestDigest);
  });

  it('reports a missing tag, a missing blob and a tampered manifest clearly', async () => {
    const err = (await readOciLayout(layout, 'nope').catch((e: unknown) => e)) as VmImageError;
    expect(err.code).toBe('bad-manifest');
    expect(err.message).toMatch(/no image tagged "nope"/);

    const dir = path.join(root, 'broken');
    await writeOciLayout(fleet, dir, 'x');
    await fsp.rm(path.join(dir, 'blobs', 'sha256', fleet.layers[1]!.descriptor.digest.slice(7)));
    expect(((await readOciLayout(dir, 'x').catch((e: unknown) => e)) as VmImageError).message).toMatch(/blob sha256:[0-9a-f]{64} \(application\/vnd.fleet.qemu.disk.v1\) is missing/);

    const dir2 = path.join(root, 'tampered');
    await writeOciLayout(fleet, dir2, 'x');
    await fsp.writeFile(path.join(dir2, 'blobs', 'sha256', fleet.manifestDigest.slice(7)), Buffer.concat([fleet.manifestBytes, Buffer.from(' ')]));
    expect(((await readOciLayout(dir2, 'x').catch((e: unknown) => e)) as VmImageError).code).toBe('digest-mismatch');
  });

  it('refuses tags skopeo would not take', async () => {
    await expect(writeOciLayout(tart, path.join(root, 'badtag'), 'has space')).rejects.toThrow(/invalid tag/);
  });
});

describe.skipIf(!haveSkopeo)('skopeo reads our layouts (oci: transport)', () => {
  it('skopeo inspect --raw returns our manifest bytes, for both formats', () => {
    for (const [tag, image] of [
      ['tart-v1', tart],
      ['fleet-v1', fleet],
    ] as const) {
      const raw = run('skopeo', ['inspect', '--raw', `oci:${layout}:${tag}`]);
      expect(raw.trim()).toBe(image.manifestBytes.toString('utf8'));
    }
  });

  it('skopeo copy (which verifies every blob digest) copies both images unchanged', async () => {
    for (const [tag, image] of [
      ['tart-v1', tart],
      ['fleet-v1', fleet],
    ] as const) {
      const out = path.join(root, `skopeo-copy-${tag}`);
      run('skopeo', ['--insecure-policy', 'copy', '--quiet', `oci:${layout}:${tag}`, `oci:${out}:${tag}`]);
      const back = await readOciLayout(out, tag);
      expect(back.manifestDigest).toBe(image.manifestDigest);
    }
  });
});
