/**
 * Fleet's VM image format for Linux guests on the qemu driver (see docs/images.md). The disk FILE
 * (qcow2 or raw) is cut into fixed-size uncompressed pieces, one layer each, in order, with their
 * byte offset annotated. No compression on top: a qcow2 can carry compressed clusters itself, so
 * a pull is download + concatenate and runs at network speed; pieces give resumable, parallel pulls.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { VmImageError, asVmImageError } from './errors.ts';
import { BlobWriter, READ_CHUNK, SparseWriter, buildDirAtomically, checkAbort, digestOf, writeAllAt, MiB } from './fsutil.ts';
import { ANNOTATIONS, MEDIA_TYPES, detectFormat, isDigest, serializeManifest, sha256Digest, type Descriptor, type ImageManifest } from './manifest.ts';
import type { BlobFile, PackedImage, UnpackProgress } from './types.ts';

export const FLEET_DISK_CHUNK_SIZE = 64 * MiB;

export interface FleetQemuConfig {
  os: 'linux';
  architecture: string;
  disk?: { format: 'qcow2' | 'raw'; virtualSize: number; size: number; digest: string };
  boot: { kind: 'disk' } | { kind: 'kernel'; cmdline: string };
  minDiskGib?: number;
  created?: string;
}

const ARCH_ALIASES: Record<string, 'amd64' | 'arm64'> = { amd64: 'amd64', x86_64: 'amd64', arm64: 'arm64', aarch64: 'arm64' };

function badConfig(msg: string): VmImageError {
  return new VmImageError('bad-config', msg);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Validates a fleet-qemu config blob. Types and consistency are strict; unknown extra keys are
 * ignored so a later writer can add optional fields without breaking older workers.
 */
export function parseFleetQemuConfig(bytes: Buffer): FleetQemuConfig {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw badConfig(`fleet qemu config is not JSON: ${(err as Error).message}`);
  }
  if (!isRecord(v)) throw badConfig('fleet qemu config must be a JSON object');
  if (v.os !== 'linux') throw badConfig(`fleet qemu config "os" must be "linux", got ${JSON.stringify(v.os)}`);
  if (v.architecture !== 'amd64' && v.architecture !== 'arm64') throw badConfig(`fleet qemu config "architecture" must be "amd64" or "arm64", got ${JSON.stringify(v.architecture)}`);
  const out: FleetQemuConfig = { os: 'linux', architecture: v.architecture, boot: { kind: 'disk' } };

  if (v.disk !== undefined) {
    const d = v.disk;
    if (!isRecord(d)) throw badConfig('fleet qemu config "disk" must be an object');
    if (d.format !== 'qcow2' && d.format !== 'raw') throw badConfig(`fleet qemu config disk.format must be "qcow2" or "raw", got ${JSON.stringify(d.format)}`);
    if (!isSize(d.virtualSize) || d.virtualSize === 0) throw badConfig(`fleet qemu config disk.virtualSize must be a positive safe integer, got ${JSON.stringify(d.virtualSize)}`);
    if (!isSize(d.size) || d.size === 0) throw badConfig(`fleet qemu config disk.size must be a positive safe integer, got ${JSON.stringify(d.size)}`);
    if (!isDigest(d.digest)) throw badConfig(`fleet qemu config disk.digest must be sha256:<64 hex>, got ${JSON.stringify(d.digest)}`);
    if (d.format === 'raw' && d.virtualSize !== d.size) throw badConfig(`fleet qemu config: a raw disk's virtualSize (${d.virtualSize}) must equal its size (${d.size})`);
    out.disk = { format: d.format, virtualSize: d.virtualSize, size: d.size, digest: d.digest };
  }

  const b = v.boot;
  if (!isRecord(b)) throw badConfig('fleet qemu config "boot" must be an object');
  if (b.kind === 'disk') {
    if (!out.disk) throw badConfig('fleet qemu config boots from disk but has no "disk"');
    out.boot = { kind: 'disk' };
  } else if (b.kind === 'kernel') {
    if (typeof b.cmdline !== 'string') throw badConfig('fleet qemu config boot.cmdline must be a string when boot.kind is "kernel"');
    out.boot = { kind: 'kernel', cmdline: b.cmdline };
  } else {
    throw badConfig(`fleet qemu config boot.kind must be "disk" or "kernel", got ${JSON.stringify(b.kind)}`);
  }

  if (v.minDiskGib !== undefined) {
    if (typeof v.minDiskGib !== 'number' || !Number.isFinite(v.minDiskGib) || v.minDiskGib <= 0) {
      throw badConfig(`fleet qemu config "minDiskGib" must be a positive number, got ${JSON.stringify(v.minDiskGib)}`);
    }
    out.minDiskGib = v.minDiskGib;
  }
  if (v.created !== undefined) {
    if (typeof v.created !== 'string' || Number.isNaN(Date.parse(v.created))) throw badConfig(`fleet qemu config "created" must be an ISO date string, got ${JSON.stringify(v.created)}`);
    out.created = v.created;
  }
  return out;
}

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
// qcow2 v3 incompatible feature bits we cannot carry: the image is marked corrupt, or its data
// lives in a separate "external data file" that would not be in the image.
const QCOW2_INCOMPAT_CORRUPT = 1n << 1n;
const QCOW2_INCOMPAT_EXTERNAL_DATA = 1n << 2n;

export interface DiskInfo {
  format: 'qcow2' | 'raw';
  virtualSize: number;
  size: number;
}

/**
 * Reads the disk's format facts without qemu-img: a qcow2 header (magic, backing file offset at 8,
 * virtual size at 24, v3 incompatible features at 72); anything else is raw (virtual size = file size).
 */
export async function inspectDisk(file: string, declared?: 'qcow2' | 'raw'): Promise<DiskInfo> {
  const fh = await fsp.open(file, 'r').catch((err: unknown) => {
    throw asVmImageError(err, `opening disk ${file}`);
  });
  try {
    const size = (await fh.stat()).size;
    const header = Buffer.alloc(104);
    const { bytesRead } = await fh.read(header, 0, header.length, 0);
    const isQcow2 = bytesRead >= 32 && header.readUInt32BE(0) === QCOW2_MAGIC;
    if (declared === 'qcow2' && !isQcow2) throw badConfig(`disk ${file} was given as qcow2 but has no qcow2 header`);
    if (declared === 'raw' && isQcow2) throw badConfig(`disk ${file} was given as raw but is a qcow2 image`);
    if (size === 0) throw badConfig(`disk ${file} is empty`);
    if (!isQcow2) return { format: 'raw', virtualSize: size, size };
    const version = header.readUInt32BE(4);
    if (version !== 2 && version !== 3) throw badConfig(`disk ${file} is qcow2 version ${version}; only versions 2 and 3 are supported`);
    if (header.readBigUInt64BE(8) !== 0n) {
      throw badConfig(`disk ${file} is a qcow2 with a backing file; flatten it first (qemu-img convert -O qcow2 ${file} flat.qcow2)`);
    }
    const virtualSize = header.readBigUInt64BE(24);
    if (virtualSize === 0n || virtualSize > BigInt(Number.MAX_SAFE_INTEGER)) throw badConfig(`disk ${file} has an unusable qcow2 virtual size ${virtualSize}`);
    if (version === 3 && bytesRead >= 80) {
      const incompat = header.readBigUInt64BE(72);
      if (incompat & QCOW2_INCOMPAT_CORRUPT) throw badConfig(`disk ${file} is a qcow2 marked corrupt; repair it with qemu-img check -r all`);
      if (incompat & QCOW2_INCOMPAT_EXTERNAL_DATA) throw badConfig(`disk ${file} is a qcow2 whose data lives in an external data file; convert it to a self-contained image first`);
    }
    return { format: 'qcow2', virtualSize: Number(virtualSize), size };
  } finally {
    await fh.close();
  }
}

async function copyIntoBlob(
  file: string,
  start: number,
  end: number,
  blobs: BlobWriter,
  mediaType: string,
  annotations: Record<string, string> | undefined,
  onData: (b: Buffer) => void,
): Promise<BlobFile> {
  const hash = createHash('sha256');
  const { fh, tmpPath } = await blobs.openTemp();
  let written = 0;
  try {
    if (end > start) {
      for await (const chunk of createReadStream(file, { start, end: end - 1, highWaterMark: READ_CHUNK })) {
        const b = chunk as Buffer;
        hash.update(b);
        onData(b);
        await writeAllAt(fh, b, written);
        written += b.length;
      }
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (written !== end - start) throw new VmImageError('io', `${file} changed while it was being packed (read ${written} bytes, expected ${end - start})`);
  const digest = digestOf(hash);
  const descriptor: Descriptor = { mediaType, digest, size: written };
  if (annotations) descriptor.annotations = annotations;
  return { descriptor, path: await blobs.commit(tmpPath, digest) };
}

/**
 * Packs a disk (qcow2 or raw, prepared by the caller: no backing file) and/or a kernel (+ initrd,
 * cmdline) into a fleet-qemu image under workDir. Boot kind is "kernel" when a kernel is given.
 */
export async function packFleetQemu(
  input: { disk?: string; diskFormat?: 'qcow2' | 'raw'; kernel?: string; initrd?: string; cmdline?: string; architecture: string; minDiskGib?: number },
  workDir: string,
  opts: { chunkSize?: number } = {},
): Promise<PackedImage> {
  const chunkSize = opts.chunkSize ?? FLEET_DISK_CHUNK_SIZE;
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) throw new RangeError(`packFleetQemu: chunkSize must be a positive integer, got ${chunkSize}`);
  const architecture = ARCH_ALIASES[input.architecture];
  if (!architecture) throw badConfig(`architecture must be amd64 or arm64 (or x86_64/aarch64), got ${JSON.stringify(input.architecture)}`);
  if (!input.disk && !input.kernel) throw badConfig('a fleet qemu image needs a disk, a kernel, or both');
  if (input.initrd && !input.kernel) throw badConfig('an initrd needs a kernel');
  if (input.cmdline !== undefined && !input.kernel) throw badConfig('a kernel command line needs a kernel');
  if (input.minDiskGib !== undefined && (!Number.isFinite(input.minDiskGib) || input.minDiskGib <= 0)) throw badConfig(`minDiskGib must be a positive number, got ${input.minDiskGib}`);

  const info = input.disk ? await inspectDisk(input.disk, input.diskFormat) : undefined;
  const blobs = new BlobWriter(workDir);
  try {
    await blobs.init();
    const layers: BlobFile[] = [];
    let diskDigest: string | undefined;
    if (input.disk && info) {
      const whole = createHash('sha256');
      for (let start = 0; start < info.size; start += chunkSize) {
        const end = Math.min(info.size, start + chunkSize);
        layers.push(
          await copyIntoBlob(input.disk, start, end, blobs, MEDIA_TYPES.fleetQemuDisk, { [ANNOTATIONS.fleetDiskOffset]: String(start) }, (b) => whole.update(b)),
        );
      }
      diskDigest = digestOf(whole);
    }
    for (const [file, mediaType] of [
      [input.kernel, MEDIA_TYPES.fleetQemuKernel],
      [input.initrd, MEDIA_TYPES.fleetQemuInitrd],
    ] as const) {
      if (!file) continue;
      const size = (await fsp.stat(file)).size;
      if (size === 0) throw badConfig(`${file} is empty`);
      layers.push(await copyIntoBlob(file, 0, size, blobs, mediaType, undefined, () => undefined));
    }

    const created = new Date().toISOString();
    const config: FleetQemuConfig = { os: 'linux', architecture, boot: input.kernel ? { kind: 'kernel', cmdline: input.cmdline ?? '' } : { kind: 'disk' } };
    if (info && diskDigest) config.disk = { format: info.format, virtualSize: info.virtualSize, size: info.size, digest: diskDigest };
    // Fixed key order (os, architecture, disk, boot, ...) so the blob reads naturally.
    const ordered = { os: config.os, architecture: config.architecture, disk: config.disk, boot: config.boot, minDiskGib: input.minDiskGib, created };
    const configBytes = Buffer.from(JSON.stringify(ordered), 'utf8');
    const configDigest = sha256Digest(configBytes);
    const configBlob: BlobFile = {
      descriptor: { mediaType: MEDIA_TYPES.fleetQemuConfig, digest: configDigest, size: configBytes.length },
      path: await blobs.writeBytes(configBytes, configDigest),
    };

    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: configBlob.descriptor,
      layers: layers.map((l) => l.descriptor),
      annotations: { [ANNOTATIONS.ociCreated]: created },
    };
    const manifestBytes = serializeManifest(manifest);
    return { manifest, manifestBytes, manifestDigest: sha256Digest(manifestBytes), config: configBlob, layers };
  } catch (err) {
    await blobs.cleanup();
    throw asVmImageError(err, 'packing fleet qemu image');
  }
}

function parseOffset(d: Descriptor, i: number): number {
  const v = d.annotations?.[ANNOTATIONS.fleetDiskOffset];
  if (v === undefined) throw new VmImageError('bad-manifest', `disk layer ${i} (${d.digest}) has no ${ANNOTATIONS.fleetDiskOffset} annotation`);
  if (!/^\d{1,16}$/.test(v) || !Number.isSafeInteger(Number(v))) throw new VmImageError('bad-manifest', `disk layer ${i} (${d.digest}) has a bad ${ANNOTATIONS.fleetDiskOffset}: ${JSON.stringify(v)}`);
  return Number(v);
}

function atMostOne(m: ImageManifest, mediaType: string): Descriptor | undefined {
  const found = m.layers.filter((l) => l.mediaType === mediaType);
  if (found.length > 1) throw new VmImageError('bad-manifest', `a fleet qemu image has at most one ${mediaType} layer, this one has ${found.length}`);
  return found[0];
}

/** Where each layer of a fleet-qemu image goes: what a pull needs to write the files directly. */
export interface FleetQemuPlan {
  disk?: {
    /** File name inside the image directory. */
    file: 'disk.qcow2' | 'disk.raw';
    format: 'qcow2' | 'raw';
    virtualSize: number;
    /** The disk file's size: the pieces cover [0, size) exactly. */
    size: number;
    /** sha256 of the whole file (config.disk.digest); implied by the pieces' digests, see docs/images.md. */
    digest: string;
    /** The disk layers in file order: each one's bytes go to [offset, offset + desc.size). */
    pieces: { desc: Descriptor; offset: number }[];
  };
  kernel?: Descriptor;
  initrd?: Descriptor;
  cmdline?: string;
}

/**
 * Checks a fleet-qemu manifest against its config and returns where every layer goes, without
 * reading any blob: disk pieces exist exactly when the config describes a disk, their offsets are
 * contiguous from 0 and in order, their sizes add up to disk.size; kernel and initrd agree with
 * boot. Anything else is `bad-manifest` (or `unsupported-media-type` for another format).
 */
export function planFleetQemu(manifest: ImageManifest, config: FleetQemuConfig): FleetQemuPlan {
  if (detectFormat(manifest) !== 'fleet-qemu') throw new VmImageError('unsupported-media-type', `not a fleet qemu image (config ${manifest.config.mediaType})`);
  const diskLayers = manifest.layers.filter((l) => l.mediaType === MEDIA_TYPES.fleetQemuDisk);
  const kernel = atMostOne(manifest, MEDIA_TYPES.fleetQemuKernel);
  const initrd = atMostOne(manifest, MEDIA_TYPES.fleetQemuInitrd);
  const disk = config.disk;
  if (disk && diskLayers.length === 0) throw new VmImageError('bad-manifest', 'the config describes a disk but the manifest has no disk layers');
  if (!disk && diskLayers.length > 0) throw new VmImageError('bad-manifest', 'the manifest has disk layers but the config describes no disk');
  if (config.boot.kind === 'kernel' && !kernel) throw new VmImageError('bad-manifest', 'the config boots a kernel but the manifest has no kernel layer');
  if (config.boot.kind === 'disk' && (kernel || initrd)) throw new VmImageError('bad-manifest', 'the config boots from disk but the manifest has a kernel or initrd layer');
  if (initrd && !kernel) throw new VmImageError('bad-manifest', 'the manifest has an initrd but no kernel');

  const pieces: { desc: Descriptor; offset: number }[] = [];
  let expected = 0;
  for (const [i, l] of diskLayers.entries()) {
    const off = parseOffset(l, i);
    if (off !== expected) throw new VmImageError('bad-manifest', `disk layer ${i} (${l.digest}) starts at offset ${off}, expected ${expected}: disk pieces must be contiguous and in order`);
    pieces.push({ desc: l, offset: off });
    expected += l.size;
  }
  if (disk && expected !== disk.size) throw new VmImageError('bad-manifest', `disk layers add up to ${expected} bytes, the config says the disk is ${disk.size}`);

  const plan: FleetQemuPlan = {};
  if (disk) {
    plan.disk = { file: disk.format === 'qcow2' ? 'disk.qcow2' : 'disk.raw', format: disk.format, virtualSize: disk.virtualSize, size: disk.size, digest: disk.digest, pieces };
  }
  if (kernel) plan.kernel = kernel;
  if (initrd) plan.initrd = initrd;
  if (config.boot.kind === 'kernel') plan.cmdline = config.boot.cmdline;
  return plan;
}

/**
 * Unpacks a pulled fleet-qemu image into destDir from its blob files: the disk (pieces
 * concatenated in order, layout checked by planFleetQemu, whole-file sha256 checked against the
 * config, zero regions left as holes) and the kernel/initrd. Built in a temp sibling directory,
 * renamed into place when complete. (The worker's image cache does not use this for a pull: it
 * writes the pieces straight into the disk file as they download, see docs/images.md.)
 */
export async function unpackFleetQemu(
  manifest: ImageManifest,
  config: FleetQemuConfig,
  blobPath: (digest: string) => string,
  destDir: string,
  opts: { onProgress?: (p: UnpackProgress) => void; signal?: AbortSignal } = {},
): Promise<{ disk?: { path: string; format: 'qcow2' | 'raw'; virtualSize: number }; kernel?: string; initrd?: string; cmdline?: string }> {
  const plan = planFleetQemu(manifest, config);
  const diskLayers = plan.disk?.pieces.map((p) => p.desc) ?? [];
  const { kernel, initrd } = plan;
  const disk = config.disk;

  const bytesTotal = [...diskLayers, ...(kernel ? [kernel] : []), ...(initrd ? [initrd] : [])].reduce((a, l) => a + l.size, 0);
  let bytesDone = 0;
  const signal = opts.signal;
  const diskName = plan.disk?.file ?? 'disk.raw';

  await buildDirAtomically(destDir, 'unpacking fleet qemu image', async (tmp) => {
    if (disk) {
      const fh = await fsp.open(path.join(tmp, diskName), 'wx');
      try {
        await fh.truncate(disk.size);
        const out = new SparseWriter(fh, 0);
        const whole = createHash('sha256');
        for (const [i, l] of diskLayers.entries()) {
          checkAbort(signal);
          const file = blobPath(l.digest);
          let got = 0;
          for await (const chunk of createReadStream(file, { highWaterMark: READ_CHUNK, signal })) {
            const b = chunk as Buffer;
            got += b.length;
            if (got > l.size) break;
            whole.update(b);
            await out.write(b);
            bytesDone += b.length;
            opts.onProgress?.({ bytesDone, bytesTotal });
          }
          if (got !== l.size) throw new VmImageError('digest-mismatch', `disk layer ${i} blob ${l.digest} is ${got > l.size ? 'larger' : `${got} bytes`} on disk, the manifest says ${l.size}`);
        }
        const digest = digestOf(whole);
        if (digest !== disk.digest) throw new VmImageError('digest-mismatch', `the reassembled disk has digest ${digest}, the config says ${disk.digest}`);
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    for (const [l, name] of [
      [kernel, 'kernel'],
      [initrd, 'initrd'],
    ] as const) {
      if (!l) continue;
      checkAbort(signal);
      const file = blobPath(l.digest);
      const st = await fsp.stat(file);
      if (st.size !== l.size) throw new VmImageError('digest-mismatch', `${name} blob ${l.digest} is ${st.size} bytes on disk, the manifest says ${l.size}`);
      await fsp.copyFile(file, path.join(tmp, name));
      bytesDone += l.size;
      opts.onProgress?.({ bytesDone, bytesTotal });
    }
  });

  const root = path.resolve(destDir);
  const result: { disk?: { path: string; format: 'qcow2' | 'raw'; virtualSize: number }; kernel?: string; initrd?: string; cmdline?: string } = {};
  if (disk) result.disk = { path: path.join(root, diskName), format: disk.format, virtualSize: disk.virtualSize };
  if (kernel) result.kernel = path.join(root, 'kernel');
  if (initrd) result.initrd = path.join(root, 'initrd');
  if (config.boot.kind === 'kernel') result.cmdline = config.boot.cmdline;
  return result;
}
