/**
 * Tart's VM image format, byte-compatible with `tart push` / `tart pull` (see docs/images.md for
 * the Tart sources this follows). A Tart bundle is a directory with config.json, disk.img and
 * nvram.bin; its image is an OCI manifest whose layers are, in order:
 *   1. config.json as-is                        application/vnd.cirruslabs.tart.config.v1
 *   2. disk.img in 512 MiB pieces, each one
 *      Apple-LZ4 stream, with uncompressed size
 *      and digest annotations                   application/vnd.cirruslabs.tart.disk.v2
 *   3. nvram.bin as-is                          application/vnd.cirruslabs.tart.nvram.v1
 * and whose config is a small OCI image config ("stub") with os/architecture and a disk-format label.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { AppleLz4Decoder, AppleLz4Encoder, Lz4FormatError } from './apple-lz4.ts';
import { VmImageError, asVmImageError } from './errors.ts';
import { BlobWriter, READ_CHUNK, SparseWriter, buildDirAtomically, checkAbort, digestOf, readSmallFile, writeAllAt, MiB } from './fsutil.ts';
import { ANNOTATIONS, MEDIA_TYPES, detectFormat, isDigest, serializeManifest, sha256Digest, type Descriptor, type ImageManifest } from './manifest.ts';
import type { BlobFile, PackedImage, UnpackProgress } from './types.ts';

/** Tart's disk layer size (DiskV2.layerLimitBytes): 512 MiB of uncompressed disk per layer. */
export const TART_DISK_CHUNK_SIZE = 512 * MiB;
const MAX_CONFIG_BYTES = 1 * MiB;
const MAX_NVRAM_BYTES = 64 * MiB;

export interface TartConfigInfo {
  os: 'darwin' | 'linux';
  arch: 'arm64' | 'amd64';
  diskFormat: string;
}

function badConfig(msg: string): VmImageError {
  return new VmImageError('bad-config', msg);
}

/**
 * Checks a Tart config.json the way Tart's VMConfig decoder would (the keys it requires), so an
 * image we pack does not fail only after someone pulls it. os/arch default to darwin/arm64 as in Tart.
 */
export function parseTartConfig(bytes: Buffer): TartConfigInfo {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw badConfig(`Tart config.json is not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badConfig('Tart config.json must be a JSON object');
  const c = v as Record<string, unknown>;
  const os = c.os ?? 'darwin';
  const arch = c.arch ?? 'arm64';
  if (os !== 'darwin' && os !== 'linux') throw badConfig(`Tart config.json "os" must be "darwin" or "linux", got ${JSON.stringify(c.os)}`);
  if (arch !== 'arm64' && arch !== 'amd64') throw badConfig(`Tart config.json "arch" must be "arm64" or "amd64", got ${JSON.stringify(c.arch)}`);
  for (const k of ['version', 'cpuCountMin', 'cpuCount', 'memorySizeMin', 'memorySize']) {
    if (typeof c[k] !== 'number' || !Number.isSafeInteger(c[k])) throw badConfig(`Tart config.json "${k}" must be an integer (Tart requires it)`);
  }
  const required = os === 'darwin' ? ['macAddress', 'ecid', 'hardwareModel'] : ['macAddress'];
  for (const k of required) {
    if (typeof c[k] !== 'string') throw badConfig(`Tart config.json "${k}" must be a string (Tart requires it for ${os} VMs)`);
  }
  const diskFormat = c.diskFormat ?? 'raw';
  if (typeof diskFormat !== 'string') throw badConfig('Tart config.json "diskFormat" must be a string');
  return { os, arch, diskFormat };
}

/** Tart's OCI config stub: JSON with sorted keys, as Tart's encoder writes it. */
function tartOciConfig(info: TartConfigInfo): Buffer {
  const stub = { architecture: info.arch, config: { Labels: { [ANNOTATIONS.tartDiskFormatLabel]: info.diskFormat } }, os: info.os };
  return Buffer.from(JSON.stringify(stub), 'utf8');
}

/** Tart's upload-time format: ISO 8601 UTC without fractional seconds ("2023-11-28T12:18:38Z"). */
function isoSeconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

async function runPool<T>(count: number, concurrency: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array<T>(count);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < count) {
      const i = next++;
      try {
        results[i] = await task(i);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker));
  const rejected = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (rejected) throw rejected.reason;
  return results;
}

/**
 * Packs a Tart bundle (config.json, disk.img, nvram.bin) into blobs under workDir and returns the
 * manifest Tart expects. Disk pieces are compressed as Tart does (512 MiB each by default). The
 * compressor runs on this thread; `concurrency` only overlaps one piece's file I/O with another's work.
 */
export async function packTartBundle(
  bundleDir: string,
  workDir: string,
  opts: { chunkSize?: number; concurrency?: number; onProgress?: (p: UnpackProgress) => void } = {},
): Promise<PackedImage> {
  const chunkSize = opts.chunkSize ?? TART_DISK_CHUNK_SIZE;
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) throw new RangeError(`packTartBundle: chunkSize must be a positive integer, got ${chunkSize}`);
  const configPath = path.join(bundleDir, 'config.json');
  const diskPath = path.join(bundleDir, 'disk.img');
  const nvramPath = path.join(bundleDir, 'nvram.bin');

  const configBytes = await readSmallFile(configPath, MAX_CONFIG_BYTES, 'Tart config');
  const info = parseTartConfig(configBytes);
  const nvramBytes = await readSmallFile(nvramPath, MAX_NVRAM_BYTES, 'Tart NVRAM');
  const diskSize = (
    await fsp.stat(diskPath).catch((err: unknown) => {
      throw asVmImageError(err, `packing Tart bundle: reading ${diskPath}`);
    })
  ).size;
  if (diskSize === 0) throw badConfig(`Tart disk ${diskPath} is empty`);

  const blobs = new BlobWriter(workDir);
  const total = diskSize + configBytes.length + nvramBytes.length;
  let done = 0;
  const progress = (n: number): void => {
    done += n;
    opts.onProgress?.({ bytesDone: done, bytesTotal: total });
  };

  try {
    await blobs.init();
    const configLayer: BlobFile = {
      descriptor: { mediaType: MEDIA_TYPES.tartConfig, digest: sha256Digest(configBytes), size: configBytes.length },
      path: '',
    };
    configLayer.path = await blobs.writeBytes(configBytes, configLayer.descriptor.digest);
    progress(configBytes.length);

    const chunks = Math.ceil(diskSize / chunkSize);
    const diskLayers = await runPool(chunks, opts.concurrency ?? 2, async (i) => {
      const start = i * chunkSize;
      const end = Math.min(diskSize, start + chunkSize);
      return compressDiskChunk(diskPath, start, end, blobs, progress);
    });

    const nvramLayer: BlobFile = {
      descriptor: { mediaType: MEDIA_TYPES.tartNvram, digest: sha256Digest(nvramBytes), size: nvramBytes.length },
      path: '',
    };
    nvramLayer.path = await blobs.writeBytes(nvramBytes, nvramLayer.descriptor.digest);
    progress(nvramBytes.length);

    const ociConfig = tartOciConfig(info);
    const config: BlobFile = { descriptor: { mediaType: MEDIA_TYPES.ociConfig, digest: sha256Digest(ociConfig), size: ociConfig.length }, path: '' };
    config.path = await blobs.writeBytes(ociConfig, config.descriptor.digest);

    const layers = [configLayer, ...diskLayers, nvramLayer];
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: config.descriptor,
      layers: layers.map((l) => l.descriptor),
      annotations: {
        [ANNOTATIONS.tartUncompressedDiskSize]: String(diskSize),
        [ANNOTATIONS.tartUploadTime]: isoSeconds(new Date()),
      },
    };
    const manifestBytes = serializeManifest(manifest);
    return { manifest, manifestBytes, manifestDigest: sha256Digest(manifestBytes), config, layers };
  } catch (err) {
    await blobs.cleanup();
    throw asVmImageError(err, `packing Tart bundle ${bundleDir}`);
  }
}

async function compressDiskChunk(diskPath: string, start: number, end: number, blobs: BlobWriter, progress: (n: number) => void): Promise<BlobFile> {
  const enc = new AppleLz4Encoder();
  const rawHash = createHash('sha256');
  const compHash = createHash('sha256');
  const { fh, tmpPath } = await blobs.openTemp();
  let written = 0;
  const emit = async (b: Buffer): Promise<void> => {
    if (b.length === 0) return;
    compHash.update(b);
    await writeAllAt(fh, b, written);
    written += b.length;
  };
  try {
    for await (const chunk of createReadStream(diskPath, { start, end: end - 1, highWaterMark: READ_CHUNK })) {
      const buf = chunk as Buffer;
      rawHash.update(buf);
      await emit(enc.write(buf));
      progress(buf.length);
    }
    await emit(enc.end());
    await fh.sync();
  } finally {
    await fh.close();
  }
  const digest = digestOf(compHash);
  const file = await blobs.commit(tmpPath, digest);
  return {
    descriptor: {
      mediaType: MEDIA_TYPES.tartDiskV2,
      digest,
      size: written,
      annotations: {
        [ANNOTATIONS.tartUncompressedSize]: String(end - start),
        [ANNOTATIONS.tartUncompressedContentDigest]: digestOf(rawHash),
      },
    },
    path: file,
  };
}

function exactlyOne(m: ImageManifest, mediaType: string): Descriptor {
  const found = m.layers.filter((l) => l.mediaType === mediaType);
  if (found.length !== 1) throw new VmImageError('bad-manifest', `a Tart image needs exactly one ${mediaType} layer, this one has ${found.length}`);
  return found[0]!;
}

function parseSizeAnnotation(d: Descriptor, key: string, where: string): number {
  const v = d.annotations?.[key];
  if (v === undefined) throw new VmImageError('bad-manifest', `${where} has no ${key} annotation (Tart requires it)`);
  if (!/^\d{1,16}$/.test(v) || !Number.isSafeInteger(Number(v))) throw new VmImageError('bad-manifest', `${where} annotation ${key} is not a byte count: ${JSON.stringify(v)}`);
  return Number(v);
}

async function copyBlob(src: string, d: Descriptor, dest: string, what: string): Promise<void> {
  const st = await fsp.stat(src);
  if (st.size !== d.size) throw new VmImageError('digest-mismatch', `${what} blob ${d.digest} is ${st.size} bytes on disk, the manifest says ${d.size}`);
  await fsp.copyFile(src, dest);
}

/**
 * Unpacks a pulled Tart image into destDir as config.json, disk.img and nvram.bin. Every disk layer
 * is decompressed, checked against its uncompressed size and digest annotations, and written with
 * zero regions left as holes; disk.img gets its exact final size. The bundle is built in a temp
 * sibling directory and renamed into place only when complete.
 */
export async function unpackTartImage(
  manifest: ImageManifest,
  blobPath: (digest: string) => string,
  destDir: string,
  opts: { onProgress?: (p: UnpackProgress) => void; signal?: AbortSignal } = {},
): Promise<void> {
  if (detectFormat(manifest) !== 'tart') throw new VmImageError('unsupported-media-type', `not a Tart image (config ${manifest.config.mediaType})`);
  const configLayer = exactlyOne(manifest, MEDIA_TYPES.tartConfig);
  const nvramLayer = exactlyOne(manifest, MEDIA_TYPES.tartNvram);
  const v2 = manifest.layers.filter((l) => l.mediaType === MEDIA_TYPES.tartDiskV2);
  const v1 = manifest.layers.filter((l) => l.mediaType === MEDIA_TYPES.tartDiskV1);
  if (v2.length > 0 && v1.length > 0) throw new VmImageError('bad-manifest', 'a Tart image cannot mix disk.v1 and disk.v2 layers');
  if (v2.length === 0 && v1.length === 0) throw new VmImageError('bad-manifest', 'a Tart image needs at least one disk layer');

  const sizes = v2.map((l, i) => parseSizeAnnotation(l, ANNOTATIONS.tartUncompressedSize, `disk layer ${i} (${l.digest})`));
  for (const [i, l] of v2.entries()) {
    const d = l.annotations?.[ANNOTATIONS.tartUncompressedContentDigest];
    if (d === undefined) throw new VmImageError('bad-manifest', `disk layer ${i} (${l.digest}) has no ${ANNOTATIONS.tartUncompressedContentDigest} annotation (Tart requires it)`);
    if (!isDigest(d)) throw new VmImageError('bad-manifest', `disk layer ${i} (${l.digest}) annotation ${ANNOTATIONS.tartUncompressedContentDigest} is not a sha256 digest: ${JSON.stringify(d)}`);
  }
  const declaredDisk = manifest.annotations?.[ANNOTATIONS.tartUncompressedDiskSize];
  const diskTotal = sizes.reduce((a, b) => a + b, 0);
  if (v2.length > 0 && declaredDisk !== undefined && declaredDisk !== String(diskTotal)) {
    throw new VmImageError('bad-manifest', `manifest says the disk is ${declaredDisk} bytes but its disk layers add up to ${diskTotal}`);
  }

  const diskLayers = v2.length > 0 ? v2 : v1;
  const bytesTotal = [configLayer, ...diskLayers, nvramLayer].reduce((a, l) => a + l.size, 0);
  let bytesDone = 0;
  const progress = (n: number): void => {
    bytesDone += n;
    opts.onProgress?.({ bytesDone, bytesTotal });
  };
  const signal = opts.signal;

  await buildDirAtomically(destDir, 'unpacking Tart image', async (tmp) => {
    checkAbort(signal);
    await copyBlob(blobPath(configLayer.digest), configLayer, path.join(tmp, 'config.json'), 'Tart config');
    parseTartConfigLoosely(await fsp.readFile(path.join(tmp, 'config.json')));
    progress(configLayer.size);

    const fh = await fsp.open(path.join(tmp, 'disk.img'), 'wx');
    try {
      if (v2.length > 0) {
        await fh.truncate(diskTotal);
        let offset = 0;
        for (const [i, layer] of v2.entries()) {
          checkAbort(signal);
          await unpackDiskV2Layer(fh, offset, layer, i, sizes[i]!, blobPath(layer.digest), progress, signal);
          offset += sizes[i]!;
        }
      } else {
        await unpackDiskV1(fh, v1, blobPath, declaredDisk, progress, signal);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }

    checkAbort(signal);
    await copyBlob(blobPath(nvramLayer.digest), nvramLayer, path.join(tmp, 'nvram.bin'), 'Tart NVRAM');
    progress(nvramLayer.size);
  });
}

/** The pulled config must at least be a JSON object; Tart itself decides what else it needs. */
function parseTartConfigLoosely(bytes: Buffer): void {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw badConfig(`the image's Tart config.json is not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badConfig("the image's Tart config.json is not a JSON object");
}

async function checkBlobSize(file: string, d: Descriptor, what: string): Promise<void> {
  const st = await fsp.stat(file);
  if (st.size !== d.size) throw new VmImageError('digest-mismatch', `${what} blob ${d.digest} is ${st.size} bytes on disk, the manifest says ${d.size}`);
}

async function unpackDiskV2Layer(
  fh: FileHandle,
  offset: number,
  layer: Descriptor,
  index: number,
  expectedSize: number,
  file: string,
  progress: (n: number) => void,
  signal: AbortSignal | undefined,
): Promise<void> {
  const what = `disk layer ${index} (${layer.digest})`;
  await checkBlobSize(file, layer, what);
  const dec = new AppleLz4Decoder();
  const hash = createHash('sha256');
  const out = new SparseWriter(fh, offset);
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: MiB, signal })) {
      for (const piece of dec.write(chunk as Buffer)) {
        if (dec.decodedBytes > expectedSize) {
          throw new VmImageError('digest-mismatch', `${what} decompresses to more than its ${ANNOTATIONS.tartUncompressedSize} of ${expectedSize} bytes`);
        }
        hash.update(piece);
        await out.write(piece);
      }
      progress((chunk as Buffer).length);
    }
    dec.end();
  } catch (err) {
    if (err instanceof Lz4FormatError) throw new VmImageError('digest-mismatch', `${what} is not a valid Apple LZ4 stream: ${err.message}`, { cause: err });
    throw err;
  }
  if (dec.decodedBytes !== expectedSize) {
    throw new VmImageError('digest-mismatch', `${what} decompresses to ${dec.decodedBytes} bytes, its ${ANNOTATIONS.tartUncompressedSize} annotation says ${expectedSize}`);
  }
  const got = digestOf(hash);
  const want = layer.annotations?.[ANNOTATIONS.tartUncompressedContentDigest];
  if (got !== want) throw new VmImageError('digest-mismatch', `${what} decompresses to content ${got}, its ${ANNOTATIONS.tartUncompressedContentDigest} annotation says ${want}`);
}

/**
 * Legacy disk.v1 (Tart removed it in 2026 but older images exist): ONE Apple-LZ4 stream of the whole
 * disk, cut into ~500 MB compressed slices; no per-layer annotations, so nothing to verify but the
 * stream itself and the manifest's disk size annotation when present.
 */
async function unpackDiskV1(
  fh: FileHandle,
  layers: Descriptor[],
  blobPath: (digest: string) => string,
  declaredDisk: string | undefined,
  progress: (n: number) => void,
  signal: AbortSignal | undefined,
): Promise<void> {
  const dec = new AppleLz4Decoder();
  const out = new SparseWriter(fh, 0);
  try {
    for (const [i, layer] of layers.entries()) {
      const file = blobPath(layer.digest);
      await checkBlobSize(file, layer, `disk.v1 layer ${i}`);
      for await (const chunk of createReadStream(file, { highWaterMark: MiB, signal })) {
        for (const piece of dec.write(chunk as Buffer)) await out.write(piece);
        progress((chunk as Buffer).length);
      }
    }
    dec.end();
  } catch (err) {
    if (err instanceof Lz4FormatError) throw new VmImageError('digest-mismatch', `Tart disk.v1 layers are not a valid Apple LZ4 stream: ${err.message}`, { cause: err });
    throw err;
  }
  if (declaredDisk !== undefined && declaredDisk !== String(dec.decodedBytes)) {
    throw new VmImageError('digest-mismatch', `Tart disk.v1 layers decompress to ${dec.decodedBytes} bytes, the manifest says ${declaredDisk}`);
  }
  // Trailing zeros were skipped, not written: give the file its full size.
  await fh.truncate(dec.decodedBytes);
}

/** os/architecture from Tart's manifest config stub ({os, architecture}) or from its config.json ({os, arch}). */
export function tartPlatform(config: Buffer): { os: string; architecture: string } {
  let v: unknown;
  try {
    v = JSON.parse(config.toString('utf8'));
  } catch (err) {
    throw badConfig(`Tart image config is not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badConfig('Tart image config is not a JSON object');
  const c = v as Record<string, unknown>;
  const os = c.os ?? 'darwin';
  const architecture = c.architecture ?? c.arch ?? 'arm64';
  if (os !== 'darwin' && os !== 'linux') throw badConfig(`Tart image config has os ${JSON.stringify(c.os)}; expected "darwin" or "linux"`);
  if (architecture !== 'arm64' && architecture !== 'amd64') throw badConfig(`Tart image config has architecture ${JSON.stringify(architecture)}; expected "arm64" or "amd64"`);
  return { os, architecture };
}
