import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VmImageError } from './errors.ts';
import { inspectDisk, packFleetQemu, parseFleetQemuConfig, planFleetQemu, unpackFleetQemu, type FleetQemuConfig } from './fleet-qemu.ts';
import { ANNOTATIONS, MEDIA_TYPES, detectFormat, parseImageManifest, type ImageManifest } from './manifest.ts';
import { hasCommand, leftoverTemps, run, sha256, tempDir } from './test-helpers.ts';
import type { PackedImage } from './types.ts';
import { platformOf } from './index.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const haveQemu = hasCommand('qemu-img') && hasCommand('qemu-io');
if (!haveQemu) console.warn('vm-image: qemu-img/qemu-io not found; skipping the qcow2 tests (apt-get install qemu-utils)');

let root: string;

function blobPathOf(image: PackedImage): (digest: string) => string {
  const byDigest = new Map([image.config, ...image.layers].map((b) => [b.descriptor.digest, b.path]));
  return (d) => byDigest.get(d) ?? `/nonexistent/${d}`;
}

async function configOf(image: PackedImage): Promise<FleetQemuConfig> {
  return parseFleetQemuConfig(await fsp.readFile(image.config.path));
}

async function rejection(p: Promise<unknown>): Promise<VmImageError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(VmImageError);
  return err as VmImageError;
}

beforeAll(async () => {
  root = await tempDir('fleet');
});

afterAll(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

describe.skipIf(!haveQemu)('fleet qemu: qcow2 disk + kernel boot', () => {
  let qcow2: string;
  let kernel: Buffer;
  let initrd: Buffer;
  let packed: PackedImage;

  beforeAll(async () => {
    qcow2 = path.join(root, 'disk.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '64M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 1M 3M', '-c', 'write -P 0xcd 40M 512k', qcow2]);
    kernel = randomBytes(300 * KiB);
    initrd = randomBytes(200 * KiB + 7);
    await fsp.writeFile(path.join(root, 'vmlinuz'), kernel);
    await fsp.writeFile(path.join(root, 'initrd.img'), initrd);
    packed = await packFleetQemu(
      { disk: qcow2, kernel: path.join(root, 'vmlinuz'), initrd: path.join(root, 'initrd.img'), cmdline: 'console=ttyS0 root=/dev/vda1', architecture: 'x86_64', minDiskGib: 10 },
      path.join(root, 'work'),
      { chunkSize: 256 * KiB },
    );
  });

  it('describes the disk from its qcow2 header and the file, and boots the kernel', async () => {
    const file = await fsp.readFile(qcow2);
    const cfg = await configOf(packed);
    expect(cfg).toMatchObject({
      os: 'linux',
      architecture: 'amd64',
      disk: { format: 'qcow2', virtualSize: 64 * MiB, size: file.length, digest: sha256(file) },
      boot: { kind: 'kernel', cmdline: 'console=ttyS0 root=/dev/vda1' },
      minDiskGib: 10,
    });
    expect(Date.parse(cfg.created!)).not.toBeNaN();
    expect(platformOf('fleet-qemu', await fsp.readFile(packed.config.path))).toEqual({ os: 'linux', architecture: 'amd64' });
  });

  it('lays out the manifest: uncompressed disk pieces with contiguous offsets, then kernel, then initrd', async () => {
    const m = packed.manifest;
    expect(m.mediaType).toBe(MEDIA_TYPES.ociManifest);
    expect(m.config.mediaType).toBe('application/vnd.fleet.qemu.config.v1+json');
    expect(detectFormat(m)).toBe('fleet-qemu');
    const disk = m.layers.filter((l) => l.mediaType === 'application/vnd.fleet.qemu.disk.v1');
    const size = (await fsp.stat(qcow2)).size;
    expect(disk.length).toBe(Math.ceil(size / (256 * KiB)));
    disk.forEach((l, i) => expect(l.annotations).toEqual({ 'org.fleet.disk.offset': String(i * 256 * KiB) }));
    expect(m.layers.slice(disk.length).map((l) => l.mediaType)).toEqual(['application/vnd.fleet.qemu.kernel.v1', 'application/vnd.fleet.qemu.initrd.v1']);
    expect(m.layers.at(-2)!.digest).toBe(sha256(kernel));
    // The pieces are the file's bytes, unchanged.
    const file = await fsp.readFile(qcow2);
    expect((await fsp.readFile(packed.layers[1]!.path)).equals(file.subarray(256 * KiB, 512 * KiB))).toBe(true);
    expect(parseImageManifest(JSON.parse(packed.manifestBytes.toString()))).toEqual(m);
  });

  it('unpacks to identical files inside destDir, and qemu-img accepts the disk', async () => {
    const dest = path.join(root, 'out');
    const progress: number[] = [];
    const out = await unpackFleetQemu(packed.manifest, await configOf(packed), blobPathOf(packed), dest, { onProgress: (p) => progress.push(p.bytesDone) });
    expect(out).toEqual({
      disk: { path: path.join(dest, 'disk.qcow2'), format: 'qcow2', virtualSize: 64 * MiB },
      kernel: path.join(dest, 'kernel'),
      initrd: path.join(dest, 'initrd'),
      cmdline: 'console=ttyS0 root=/dev/vda1',
    });
    expect((await fsp.readFile(out.disk!.path)).equals(await fsp.readFile(qcow2))).toBe(true);
    expect((await fsp.readFile(out.kernel!)).equals(kernel)).toBe(true);
    expect((await fsp.readFile(out.initrd!)).equals(initrd)).toBe(true);
    run('qemu-img', ['check', '-q', out.disk!.path]);
    const readBack = run('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0xcd 40M 512k', out.disk!.path]);
    expect(readBack).toMatch(/read 524288\/524288 bytes/);
    expect(progress.at(-1)).toBe(packed.layers.reduce((a, l) => a + l.descriptor.size, 0));
  });

  it('refuses disk pieces whose offsets are not contiguous', async () => {
    const m: ImageManifest = structuredClone(packed.manifest);
    [m.layers[1], m.layers[2]] = [m.layers[2]!, m.layers[1]!];
    const err = await rejection(unpackFleetQemu(m, await configOf(packed), blobPathOf(packed), path.join(root, 'out-swapped')));
    expect(err.code).toBe('bad-manifest');
    expect(err.message).toMatch(/disk layer 1 .* starts at offset 524288, expected 262144/);
    const gap: ImageManifest = structuredClone(packed.manifest);
    gap.layers[3]!.annotations![ANNOTATIONS.fleetDiskOffset] = String(3 * 256 * KiB + 1);
    expect((await rejection(unpackFleetQemu(gap, await configOf(packed), blobPathOf(packed), path.join(root, 'out-gap')))).code).toBe('bad-manifest');
    await expect(fsp.stat(path.join(root, 'out-swapped'))).rejects.toThrow(/ENOENT/);
  });

  it('rejects a reassembled disk whose digest differs from the config, leaving nothing behind', async () => {
    const cfg = await configOf(packed);
    cfg.disk!.digest = sha256(Buffer.from('not this disk'));
    const dest = path.join(root, 'out-digest');
    const err = await rejection(unpackFleetQemu(packed.manifest, cfg, blobPathOf(packed), dest));
    expect(err.code).toBe('digest-mismatch');
    expect(err.message).toMatch(/reassembled disk has digest sha256:[0-9a-f]{64}, the config says/);
    await expect(fsp.stat(dest)).rejects.toThrow(/ENOENT/);
    expect(await leftoverTemps(dest)).toEqual([]);
  });

  it('refuses a qcow2 that has a backing file', async () => {
    const overlay = path.join(root, 'overlay.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', qcow2, '-F', 'qcow2', overlay]);
    const err = await rejection(packFleetQemu({ disk: overlay, architecture: 'amd64' }, path.join(root, 'work-overlay')));
    expect(err.code).toBe('bad-config');
    expect(err.message).toMatch(/backing file/);
  });

  it('reads the qcow2 virtual size itself (no qemu-img)', async () => {
    const big = path.join(root, 'big.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', big, '20G']);
    expect(await inspectDisk(big)).toMatchObject({ format: 'qcow2', virtualSize: 20 * 1024 * MiB });
    expect((await rejection(inspectDisk(big, 'raw'))).code).toBe('bad-config');
  });
});

describe('fleet qemu: raw disk', () => {
  it('round-trips a raw disk, boots from disk, and leaves zero regions as holes', async () => {
    const raw = path.join(root, 'disk.raw');
    const data = Buffer.alloc(8 * MiB);
    randomBytes(MiB).copy(data, 0);
    randomBytes(100).copy(data, 6 * MiB + 3);
    await fsp.writeFile(raw, data);
    const packed = await packFleetQemu({ disk: raw, architecture: 'arm64' }, path.join(root, 'work-raw'), { chunkSize: 3 * MiB });
    const cfg = await configOf(packed);
    expect(cfg.boot).toEqual({ kind: 'disk' });
    expect(cfg.disk).toEqual({ format: 'raw', virtualSize: 8 * MiB, size: 8 * MiB, digest: sha256(data) });
    expect(packed.layers.map((l) => l.descriptor.size)).toEqual([3 * MiB, 3 * MiB, 2 * MiB]);
    const dest = path.join(root, 'out-raw');
    const out = await unpackFleetQemu(packed.manifest, cfg, blobPathOf(packed), dest);
    expect(out).toEqual({ disk: { path: path.join(dest, 'disk.raw'), format: 'raw', virtualSize: 8 * MiB } });
    expect((await fsp.readFile(out.disk!.path)).equals(data)).toBe(true);
    const st = await fsp.stat(out.disk!.path);
    expect(st.blocks * 512).toBeLessThan(2 * MiB);
  });

  it('plans where every layer goes without reading a blob, with the same layout checks as unpacking', async () => {
    const raw = path.join(root, 'plan.raw');
    await fsp.writeFile(raw, randomBytes(5 * MiB + 17));
    const kernelFile = path.join(root, 'plan-kernel');
    await fsp.writeFile(kernelFile, randomBytes(1000));
    const packed = await packFleetQemu({ disk: raw, kernel: kernelFile, cmdline: 'ro', architecture: 'amd64' }, path.join(root, 'work-plan'), { chunkSize: 2 * MiB });
    const cfg = await configOf(packed);
    const plan = planFleetQemu(packed.manifest, cfg);
    expect(plan.disk).toEqual({
      file: 'disk.raw',
      format: 'raw',
      virtualSize: 5 * MiB + 17,
      size: 5 * MiB + 17,
      digest: cfg.disk!.digest,
      pieces: packed.layers.slice(0, 3).map((l, i) => ({ desc: l.descriptor, offset: i * 2 * MiB })),
    });
    expect(plan.kernel).toEqual(packed.layers[3]!.descriptor);
    expect(plan.initrd).toBeUndefined();
    expect(plan.cmdline).toBe('ro');

    const swapped: ImageManifest = structuredClone(packed.manifest);
    [swapped.layers[0], swapped.layers[1]] = [swapped.layers[1]!, swapped.layers[0]!];
    expect(() => planFleetQemu(swapped, cfg)).toThrow(/disk layer 0 .* starts at offset 2097152, expected 0: disk pieces must be contiguous/);
    const short: ImageManifest = structuredClone(packed.manifest);
    short.layers.splice(2, 1);
    expect(() => planFleetQemu(short, cfg)).toThrow(/disk layers add up to 4194304 bytes, the config says the disk is 5242897/);
    const noOffset: ImageManifest = structuredClone(packed.manifest);
    delete noOffset.layers[1]!.annotations;
    expect(() => planFleetQemu(noOffset, cfg)).toThrow(VmImageError);
    expect(() => planFleetQemu(packed.manifest, { ...cfg, boot: { kind: 'disk' } })).toThrow(/boots from disk but the manifest has a kernel/);
  });

  it('unpacks into an existing empty directory (the worker pre-creates it)', async () => {
    const kernelOnly = path.join(root, 'k');
    await fsp.writeFile(kernelOnly, randomBytes(1000));
    const packed = await packFleetQemu({ kernel: kernelOnly, architecture: 'arm64', cmdline: '' }, path.join(root, 'work-k'));
    const dest = path.join(root, 'out-k');
    await fsp.mkdir(dest);
    const out = await unpackFleetQemu(packed.manifest, await configOf(packed), blobPathOf(packed), dest);
    expect(out).toEqual({ kernel: path.join(dest, 'kernel'), cmdline: '' });
  });

  it('refuses inputs that cannot make a bootable image', async () => {
    const raw = path.join(root, 'small.raw');
    await fsp.writeFile(raw, randomBytes(4096));
    expect((await rejection(packFleetQemu({ architecture: 'amd64' }, path.join(root, 'w1')))).message).toMatch(/needs a disk, a kernel, or both/);
    expect((await rejection(packFleetQemu({ disk: raw, initrd: raw, architecture: 'amd64' }, path.join(root, 'w2')))).message).toMatch(/initrd needs a kernel/);
    expect((await rejection(packFleetQemu({ disk: raw, architecture: 'riscv64' }, path.join(root, 'w3')))).message).toMatch(/architecture/);
    expect((await rejection(packFleetQemu({ disk: raw, diskFormat: 'qcow2', architecture: 'amd64' }, path.join(root, 'w4')))).message).toMatch(/no qcow2 header/);
  });
});

describe('parseFleetQemuConfig', () => {
  const good = { os: 'linux', architecture: 'arm64', disk: { format: 'raw', virtualSize: 10, size: 10, digest: sha256(Buffer.from('x')) }, boot: { kind: 'disk' } };
  const parse = (v: unknown): VmImageError | FleetQemuConfig => {
    try {
      return parseFleetQemuConfig(Buffer.from(JSON.stringify(v)));
    } catch (e) {
      return e as VmImageError;
    }
  };

  it('accepts a valid config', () => {
    expect(parse(good)).toEqual(good);
    expect(parse({ os: 'linux', architecture: 'amd64', boot: { kind: 'kernel', cmdline: 'quiet' }, futureField: 1 })).toEqual({ os: 'linux', architecture: 'amd64', boot: { kind: 'kernel', cmdline: 'quiet' } });
  });

  it.each([
    ['not linux', { ...good, os: 'darwin' }, /"os" must be "linux"/],
    ['unknown arch', { ...good, architecture: 'x86' }, /architecture/],
    ['bad disk format', { ...good, disk: { ...good.disk, format: 'vmdk' } }, /disk.format/],
    ['bad digest', { ...good, disk: { ...good.disk, digest: 'sha256:abc' } }, /disk.digest/],
    ['negative size', { ...good, disk: { ...good.disk, size: -1 } }, /disk.size/],
    ['raw size mismatch', { ...good, disk: { ...good.disk, virtualSize: 20 } }, /raw disk's virtualSize/],
    ['disk boot without disk', { os: 'linux', architecture: 'arm64', boot: { kind: 'disk' } }, /no "disk"/],
    ['kernel boot without cmdline', { ...good, boot: { kind: 'kernel' } }, /cmdline/],
    ['unknown boot', { ...good, boot: { kind: 'pxe' } }, /boot.kind/],
    ['bad minDiskGib', { ...good, minDiskGib: 0 }, /minDiskGib/],
    ['bad created', { ...good, created: 'yesterday' }, /created/],
    ['array', [good], /JSON object/],
  ])('rejects %s', (_name, value, message) => {
    const r = parse(value);
    expect(r).toBeInstanceOf(VmImageError);
    expect((r as VmImageError).code).toBe('bad-config');
    expect((r as VmImageError).message).toMatch(message);
  });

  it('rejects non-JSON', () => {
    expect(() => parseFleetQemuConfig(Buffer.from('{'))).toThrow(/not JSON/);
  });
});
