// The worker's image cache (issue 15): VM images pulled from OCI registries, content-addressed by
// manifest digest and shared by every VM that runs them.
//
// Layout under <data dir>/image-cache:
//   images/sha256-<hex>/   one unpacked image: image.json (what it is) + its files (a qcow2 or raw
//                          disk, kernel, initrd for the qemu driver; a Tart bundle for vz). A
//                          directory here is complete by construction: it is renamed into place
//                          only after every blob was verified (and, for Tart, unpacked).
//   blobs/                 Tart downloads in progress (`*.partial` are resumed by the next pull, also
//                          after a restart) and verified Tart blobs waiting to be unpacked; emptied
//                          after each unpack.
//   tmp/                   images being assembled; cleared at start.
//
// How a pull writes:
// - fleet-qemu (qemu driver): in one pass. planFleetQemu checks the layout first (disk pieces
//   contiguous from offset 0, adding up to the disk's size; kernel/initrd as the config says).
//   The disk file is created in a tmp/ work dir at its full size and each piece is downloaded
//   straight into its region (@fleet/oci pullBlobs → RegistryClient.downloadBlobInto: positioned
//   writes, up to `downloadConcurrency` pieces at once, each piece's sha256 verified as its bytes
//   arrive, all-zero 64 KiB pieces left as holes, a digest shared by several pieces fetched once
//   and copied locally). Kernel and initrd are downloaded as files next to it. One fsync of the
//   disk at the end; then image.json, and the work dir is renamed into images/. The whole-disk
//   sha256 of the config is not recomputed: every piece is verified and the pieces tile the file.
//   Resuming: a connection that drops mid-piece is resumed with HTTP Range from what that piece
//   already has (up to 5 times per piece). A failed pull deletes its work dir, and a restarted
//   worker clears tmp/: the next pull of that image starts its disk from zero (pieces are not
//   journaled, so there is nothing trustworthy to resume from; each costs one download).
// - tart (vz driver): layers downloaded as blob files into blobs/ (resumable across restarts),
//   then unpacked (LZ4-decompressed) into tmp/, then renamed into images/.
//
// Rules:
// - One pull per digest at a time: concurrent requests for one image share it (and its progress).
// - An image an instance depends on (its disk's backing file, its kernel) is never deleted: the
//   driver says which digests its instances use, and a pull in progress pins its image until the
//   instance that asked for it exists.
// - Above `limitBytes`, least-recently-used images nobody uses are deleted until the cache fits.
// - Nothing half-written is ever used: a failed pull leaves no image (only resumable Tart partials).
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readdir, readFile, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { RegistryClient, downloadBlobs, parseImageReference, pullBlobs, type BlobJob, type Platform } from '@fleet/oci';
import {
  detectFormat,
  imageLayerBytes,
  parseFleetQemuConfig,
  parseImageManifest,
  planFleetQemu,
  unpackTartImage,
  type FleetQemuPlan,
  type ImageFormat,
  type ImageManifest,
} from '@fleet/vm-image';
import type { CachedImage, ImageInventory } from '@fleet/proto';
import type { PulledImage } from '../drivers/driver.ts';
import { describeImageError } from './image-errors.ts';
import { clientAccess, type AccessFields } from './registry-access.ts';

export interface ImageCacheOptions {
  /** <data dir>/image-cache */
  dir: string;
  /** Bytes the cache may use before unused images are evicted (0 = no limit). */
  limitBytes: number;
  /** The platform picked from image indexes (os/architecture of the worker's VMs). */
  platform: Platform;
  /** Image formats this worker's driver runs (qemu: fleet-qemu; vz: tart). */
  formats: readonly ImageFormat[];
  /** Digests that instances held by the driver depend on (never evicted or deleted). */
  inUse: () => Promise<Set<string>>;
  log: { info(o: object, m?: string): void; warn(o: object, m?: string): void };
  /** Called after every change of what list() returns (throttle on the caller's side). */
  onChange?: () => void;
  /** Blob downloads per pull (default 4). */
  downloadConcurrency?: number;
  /** Pulls of different images at once (default 2); others wait. */
  maxConcurrentPulls?: number;
  /** Free space to leave on the file system after a pull (default 1 GiB). */
  reserveBytes?: number;
  now?: () => number;
}

export interface PullRequest {
  /** Pinned reference: registry/repository@sha256:… */
  reference: string;
  access: AccessFields;
}

export interface PullProgress {
  bytesDone: number;
  bytesTotal: number;
}

/** image.json: everything needed to use an unpacked image. Paths are relative to its directory. */
interface ImageMeta {
  version: 1;
  digest: string;
  reference: string;
  format: ImageFormat;
  sizeBytes: number;
  pulledAt: number;
  lastUsedAt: number;
  files: { disk?: { file: string; format: 'qcow2' | 'raw'; virtualSize: number }; kernel?: string; initrd?: string; cmdline?: string; bundle?: string };
}

interface Pull {
  digest: string;
  reference: string;
  promise: Promise<ImageMeta>;
  progress: PullProgress;
  listeners: Set<(p: PullProgress) => void>;
}

export class ImageCacheError extends Error {
  constructor(
    message: string,
    readonly code: 'bad-reference' | 'disk-full' | 'in-use' | 'not-found' | 'wrong-format' | 'pull-failed',
  ) {
    super(message);
    this.name = 'ImageCacheError';
  }
}

const GIB = 1024 ** 3;
/** Leftover downloads in blobs/ older than this are deleted at start. */
const STALE_DOWNLOAD_MS = 24 * 3600_000;
const DIGEST = /^sha256:[a-f0-9]{64}$/;

export class ImageCache {
  readonly #o: ImageCacheOptions;
  readonly #images = new Map<string, ImageMeta>();
  readonly #pulls = new Map<string, Pull>();
  /** Failed pulls, kept for the inventory until the next attempt. */
  readonly #failed = new Map<string, { reference: string; error: string; at: number }>();
  /** Digests pinned by callers between a pull and the instance that will use it. */
  readonly #pins = new Map<string, number>();
  #running = 0;
  readonly #waiting: (() => void)[] = [];
  #initialized: Promise<void> | undefined;

  constructor(options: ImageCacheOptions) {
    this.#o = options;
  }

  get dir(): string {
    return this.#o.dir;
  }

  get limitBytes(): number {
    return this.#o.limitBytes;
  }

  /** Loads what earlier runs left: complete images stay, unpacks in progress are discarded. */
  init(): Promise<void> {
    this.#initialized ??= (async () => {
      await mkdir(this.#imagesDir, { recursive: true, mode: 0o711 });
      await mkdir(this.#blobsDir, { recursive: true, mode: 0o700 });
      // Downloads nobody came back for within a day (a VM deleted while its pull kept failing) would
      // otherwise hold disk space that the cache's accounting does not see.
      const staleBefore = this.#now() - STALE_DOWNLOAD_MS;
      for (const name of await readdir(this.#blobsDir)) {
        const file = path.join(this.#blobsDir, name);
        const st = await stat(file).catch(() => undefined);
        if (st && st.mtimeMs < staleBefore) await rm(file, { recursive: true, force: true });
      }
      await rm(this.#tmpDir, { recursive: true, force: true });
      await mkdir(this.#tmpDir, { recursive: true, mode: 0o711 });
      // VM users read backing files and kernels through these directories.
      await chmod(this.#o.dir, 0o711).catch(() => {});
      await chmod(this.#imagesDir, 0o711).catch(() => {});
      for (const name of await readdir(this.#imagesDir)) {
        const dir = path.join(this.#imagesDir, name);
        try {
          const meta = parseMeta(JSON.parse(await readFile(path.join(dir, 'image.json'), 'utf8')));
          if (dirNameOf(meta.digest) !== name) throw new Error('digest does not match the directory name');
          this.#images.set(meta.digest, meta);
        } catch (error) {
          this.#o.log.warn({ dir, err: error }, 'image cache: removing an unreadable image directory');
          await rm(dir, { recursive: true, force: true });
        }
      }
    })();
    return this.#initialized;
  }

  /**
   * The image, pulled if needed, pinned until `release()` (call it once the instance that uses it
   * exists; from then on the driver's inUse() protects it).
   */
  async acquire(request: PullRequest, onProgress?: (p: PullProgress) => void): Promise<{ image: PulledImage; release: () => void }> {
    await this.init();
    const digest = pinnedDigest(request.reference);
    this.#pin(digest);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.#unpin(digest);
    };
    try {
      let meta = this.#images.get(digest);
      if (!meta) {
        meta = await this.#pullOnce(digest, request, onProgress);
      }
      meta.lastUsedAt = this.#now();
      await this.#writeMeta(meta).catch(() => {});
      return { image: this.#pulledImage(meta), release };
    } catch (error) {
      release();
      throw error;
    }
  }

  /** Pulls without pinning (prefetch): resolves once the image is in the cache. */
  async prefetch(request: PullRequest, onProgress?: (p: PullProgress) => void): Promise<PulledImage> {
    const { image, release } = await this.acquire(request, onProgress);
    release();
    return image;
  }

  /** A cached image (no pull), or undefined. */
  get(digest: string): PulledImage | undefined {
    const meta = this.#images.get(digest);
    return meta && this.#pulledImage(meta);
  }

  /** Deletes an unused image; refuses one an instance uses or a pull holds. */
  async delete(digest: string): Promise<boolean> {
    await this.init();
    if (!DIGEST.test(digest)) throw new ImageCacheError(`${JSON.stringify(digest)} is not an image digest (sha256:<64 hex>)`, 'bad-reference');
    this.#failed.delete(digest);
    if (this.#pulls.has(digest)) throw new ImageCacheError(`image ${digest} is being pulled; delete it once the pull ends`, 'in-use');
    const meta = this.#images.get(digest);
    if (!meta) return false;
    const used = await this.#o.inUse();
    if (used.has(digest) || (this.#pins.get(digest) ?? 0) > 0) {
      throw new ImageCacheError(`image ${digest} is used by VM instances on this worker; delete those VMs first`, 'in-use');
    }
    await this.#remove(meta);
    this.#changed();
    return true;
  }

  /** Evicts least-recently-used unused images until the cache fits its limit. Returns bytes freed. */
  async gc(): Promise<number> {
    await this.init();
    if (this.#o.limitBytes <= 0) return 0;
    return this.#evict(this.usedBytes() - this.#o.limitBytes);
  }

  usedBytes(): number {
    let total = 0;
    for (const meta of this.#images.values()) total += meta.sizeBytes;
    return total;
  }

  /** What the cache holds and pulls, as sent to the controller. */
  async inventory(): Promise<ImageInventory> {
    await this.init();
    const used = await this.#o.inUse().catch(() => new Set<string>());
    const images: CachedImage[] = [];
    for (const meta of this.#images.values()) {
      images.push({
        digest: meta.digest,
        reference: meta.reference,
        format: meta.format,
        sizeBytes: String(meta.sizeBytes),
        lastUsedUnixMs: String(meta.lastUsedAt),
        inUse: (used.has(meta.digest) ? 1 : 0) + (this.#pins.get(meta.digest) ?? 0),
        state: 'ready',
        error: '',
      });
    }
    for (const pull of this.#pulls.values()) {
      images.push({
        digest: pull.digest,
        reference: pull.reference,
        format: '',
        sizeBytes: '0',
        lastUsedUnixMs: String(this.#now()),
        inUse: this.#pins.get(pull.digest) ?? 0,
        state: 'pulling',
        progress: { bytesDone: String(pull.progress.bytesDone), bytesTotal: String(pull.progress.bytesTotal) },
        error: '',
      });
    }
    for (const [digest, failure] of this.#failed) {
      if (this.#images.has(digest) || this.#pulls.has(digest)) continue;
      images.push({ digest, reference: failure.reference, format: '', sizeBytes: '0', lastUsedUnixMs: String(failure.at), inUse: 0, state: 'failed', error: failure.error });
    }
    return { images, usedBytes: String(this.usedBytes()), limitBytes: String(this.#o.limitBytes) };
  }

  // ------------------------------------------------------------------ pulling

  #pullOnce(digest: string, request: PullRequest, onProgress?: (p: PullProgress) => void): Promise<ImageMeta> {
    let pull = this.#pulls.get(digest);
    if (!pull) {
      const progress: PullProgress = { bytesDone: 0, bytesTotal: 0 };
      const listeners = new Set<(p: PullProgress) => void>();
      const promise = this.#withSlot(() => this.#pull(digest, request, (p) => {
        progress.bytesDone = p.bytesDone;
        progress.bytesTotal = p.bytesTotal;
        for (const listener of listeners) listener(p);
      }))
        .then((meta) => {
          this.#failed.delete(digest);
          return meta;
        })
        .catch((error: unknown) => {
          this.#failed.set(digest, { reference: request.reference, error: (error as Error).message, at: this.#now() });
          throw error;
        })
        .finally(() => {
          this.#pulls.delete(digest);
          this.#changed();
        });
      // Registered before anything can settle (the pull itself starts no sooner than a tick later).
      pull = { digest, reference: request.reference, progress, listeners, promise };
      this.#pulls.set(digest, pull);
      this.#failed.delete(digest);
      this.#changed();
    }
    if (onProgress) {
      pull.listeners.add(onProgress);
      if (pull.progress.bytesTotal > 0) onProgress({ ...pull.progress });
      void pull.promise.catch(() => {}).finally(() => pull.listeners.delete(onProgress));
    }
    return pull.promise;
  }

  async #pull(digest: string, request: PullRequest, progress: (p: PullProgress) => void): Promise<ImageMeta> {
    const ref = parseImageReference(request.reference);
    const client = new RegistryClient({ registry: ref.registry, ...clientAccess(request.access) });
    const started = this.#now();
    let layerDigests: string[] = [];
    try {
      const { manifest: fetched } = await client.getImageManifest(ref.repository, digest, this.#o.platform);
      const manifest = parseImageManifest(fetched.json);
      layerDigests = manifest.layers.map((l) => l.digest);
      const format = detectFormat(manifest);
      if (!this.#o.formats.includes(format)) {
        throw new ImageCacheError(
          `${request.reference} is a ${formatName(format)}; this worker runs ${this.#o.formats.map(formatName).join(' or ')} (schedule it with a selector that picks a suitable worker)`,
          'wrong-format',
        );
      }
      const total = imageLayerBytes(manifest);
      progress({ bytesDone: 0, bytesTotal: total });
      await this.#ensureSpace(manifest, format, request.reference);
      const config = await client.getBlob(ref.repository, manifest.config, 4 * 1024 * 1024);
      const configBytes = manifest.config.size;
      const onProgress = (p: { bytesDone: number }): void => progress({ bytesDone: Math.min(total, p.bytesDone + configBytes), bytesTotal: total });
      const work = path.join(this.#tmpDir, `${digest.slice(7, 23)}-${randomBytes(4).toString('hex')}`);
      let files: ImageMeta['files'];
      let blobFiles: string[] = [];
      if (format === 'fleet-qemu') {
        // Layout checked before any layer is fetched; then every piece goes straight to its place.
        const plan = planFleetQemu(manifest, parseFleetQemuConfig(config));
        await mkdir(work, { recursive: true, mode: 0o755 });
        files = await this.#pullFleetQemu(client, ref.repository, plan, work, onProgress);
      } else {
        const blobs = await downloadBlobs(client, ref.repository, manifest.layers, this.#blobsDir, { concurrency: this.#concurrency, onProgress });
        blobFiles = [...new Set(blobs.values())];
        const blobPath = (d: string): string => {
          const file = blobs.get(d);
          if (!file) throw new ImageCacheError(`blob ${d} of ${request.reference} was not downloaded`, 'pull-failed');
          return file;
        };
        await mkdir(work, { recursive: true, mode: 0o755 });
        const bundle = path.join(work, 'bundle');
        await unpackTartImage(manifest, blobPath, bundle);
        files = { bundle: 'bundle' };
      }
      const final = path.join(this.#imagesDir, dirNameOf(digest));
      const meta: ImageMeta = { version: 1, digest, reference: request.reference, format, sizeBytes: 0, pulledAt: this.#now(), lastUsedAt: this.#now(), files };
      meta.sizeBytes = await diskUsage(work);
      await writeFile(path.join(work, 'image.json'), JSON.stringify(meta, null, 2), { mode: 0o644 });
      await makeReadable(work);
      await rm(final, { recursive: true, force: true });
      await rename(work, final);
      for (const file of blobFiles) await rm(file, { force: true });
      this.#images.set(digest, meta);
      progress({ bytesDone: total, bytesTotal: total });
      this.#o.log.info({ reference: request.reference, format, sizeBytes: meta.sizeBytes, ms: this.#now() - started }, 'image pulled');
      this.#changed();
      if (this.#o.limitBytes > 0) await this.gc().catch((error: unknown) => this.#o.log.warn({ err: error }, 'image cache: eviction failed'));
      return meta;
    } catch (error) {
      await this.#cleanTmp(digest);
      const described = describeImageError(error, request.reference);
      if (described.code === 'disk-full') {
        // This pull's partials are worth nothing but the space they take (other pulls' stay).
        for (const d of layerDigests) {
          const file = path.join(this.#blobsDir, d.replace(':', '-'));
          await rm(file, { force: true });
          await rm(`${file}.partial`, { force: true });
        }
      }
      this.#o.log.warn({ reference: request.reference, err: described.message }, 'image pull failed');
      throw new ImageCacheError(described.message, described.code === 'disk-full' ? 'disk-full' : 'pull-failed');
    } finally {
      client.close();
    }
  }

  get #concurrency(): number {
    return this.#o.downloadConcurrency ?? 4;
  }

  /**
   * A fleet-qemu image in one pass: the disk file is created in `work` at its full size and every
   * disk piece is downloaded straight into its region (positioned writes, sha256 verified as the
   * bytes arrive, all-zero 64 KiB pieces left as holes), `concurrency` pieces at a time; kernel
   * and initrd are downloaded as files next to it. The disk is fsynced once, at the end. The
   * caller renames `work` into images/ only after this resolved, i.e. after every piece verified.
   */
  async #pullFleetQemu(client: RegistryClient, repository: string, plan: FleetQemuPlan, work: string, onProgress: (p: { bytesDone: number }) => void): Promise<ImageMeta['files']> {
    const jobs: BlobJob[] = [];
    if (plan.kernel) jobs.push({ desc: plan.kernel, file: path.join(work, 'kernel') });
    if (plan.initrd) jobs.push({ desc: plan.initrd, file: path.join(work, 'initrd') });
    if (!plan.disk) {
      await pullBlobs(client, repository, jobs, { concurrency: this.#concurrency, onProgress });
    } else {
      // Read + write: a piece that repeats (zeros) is copied from where it was first written.
      const fh = await open(path.join(work, plan.disk.file), 'wx+', 0o644);
      try {
        await fh.truncate(plan.disk.size);
        for (const piece of plan.disk.pieces) jobs.push({ desc: piece.desc, fh, offset: piece.offset });
        await pullBlobs(client, repository, jobs, { concurrency: this.#concurrency, onProgress, sparse: true });
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    return {
      ...(plan.disk ? { disk: { file: plan.disk.file, format: plan.disk.format, virtualSize: plan.disk.virtualSize } } : {}),
      ...(plan.kernel ? { kernel: 'kernel' } : {}),
      ...(plan.initrd ? { initrd: 'initrd' } : {}),
      ...(plan.cmdline !== undefined ? { cmdline: plan.cmdline } : {}),
    };
  }

  /**
   * Room for the image (and, for Tart, its downloaded blobs, which are unpacked into a second
   * copy) plus the reserve, after evicting what may go. A fleet-qemu pull writes each byte once.
   */
  async #ensureSpace(manifest: ImageManifest, format: ImageFormat, reference: string): Promise<void> {
    const download = format === 'tart' ? imageLayerBytes(manifest) : 0;
    const needed = estimateUnpackedBytes(manifest) + download + (this.#o.reserveBytes ?? GIB);
    let free = await freeBytes(this.#o.dir);
    if (free >= needed) return;
    await this.#evict(needed - free);
    free = await freeBytes(this.#o.dir);
    if (free >= needed) return;
    throw new ImageCacheError(
      `not enough disk space to pull ${reference}: it needs ${gib(needed)} (${download > 0 ? 'download + unpacked' : 'the image'} + ${gib(this.#o.reserveBytes ?? GIB)} reserve) in ${this.#o.dir}, ${gib(free)} is free after evicting unused images`,
      'disk-full',
    );
  }

  async #evict(bytes: number): Promise<number> {
    if (bytes <= 0) return 0;
    const used = await this.#o.inUse();
    const candidates = [...this.#images.values()]
      .filter((m) => !used.has(m.digest) && (this.#pins.get(m.digest) ?? 0) === 0)
      .sort((a, b) => a.lastUsedAt - b.lastUsedAt);
    let freed = 0;
    for (const meta of candidates) {
      if (freed >= bytes) break;
      await this.#remove(meta);
      freed += meta.sizeBytes;
      this.#o.log.info({ digest: meta.digest, reference: meta.reference, sizeBytes: meta.sizeBytes }, 'image cache: evicted least-recently-used image');
    }
    if (freed > 0) this.#changed();
    return freed;
  }

  async #remove(meta: ImageMeta): Promise<void> {
    this.#images.delete(meta.digest);
    // Renamed away first: a crash mid-delete leaves a tmp dir (cleared at start), never a broken image.
    const gone = path.join(this.#tmpDir, `deleted-${dirNameOf(meta.digest)}-${randomBytes(4).toString('hex')}`);
    await rename(path.join(this.#imagesDir, dirNameOf(meta.digest)), gone).catch(() => {});
    await rm(gone, { recursive: true, force: true });
  }

  async #cleanTmp(digest: string): Promise<void> {
    const prefix = digest.slice(7, 23);
    for (const name of await readdir(this.#tmpDir).catch(() => [] as string[])) {
      if (name.startsWith(prefix)) await rm(path.join(this.#tmpDir, name), { recursive: true, force: true });
    }
  }

  async #withSlot<T>(fn: () => Promise<T>): Promise<T> {
    const max = this.#o.maxConcurrentPulls ?? 2;
    while (this.#running >= max) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    this.#running++;
    try {
      return await fn();
    } finally {
      this.#running--;
      this.#waiting.shift()?.();
    }
  }

  #pulledImage(meta: ImageMeta): PulledImage {
    const dir = path.join(this.#imagesDir, dirNameOf(meta.digest));
    const f = meta.files;
    return {
      digest: meta.digest,
      reference: meta.reference,
      format: meta.format,
      dir,
      ...(f.disk ? { disk: { path: path.join(dir, f.disk.file), format: f.disk.format, virtualSize: f.disk.virtualSize } } : {}),
      ...(f.kernel ? { kernel: path.join(dir, f.kernel) } : {}),
      ...(f.initrd ? { initrd: path.join(dir, f.initrd) } : {}),
      ...(f.cmdline !== undefined ? { cmdline: f.cmdline } : {}),
      ...(f.bundle ? { bundleDir: path.join(dir, f.bundle) } : {}),
    };
  }

  async #writeMeta(meta: ImageMeta): Promise<void> {
    const file = path.join(this.#imagesDir, dirNameOf(meta.digest), 'image.json');
    const tmp = `${file}.${randomBytes(4).toString('hex')}`;
    await writeFile(tmp, JSON.stringify(meta, null, 2), { mode: 0o644 });
    await rename(tmp, file);
  }

  #pin(digest: string): void {
    this.#pins.set(digest, (this.#pins.get(digest) ?? 0) + 1);
  }

  #unpin(digest: string): void {
    const n = (this.#pins.get(digest) ?? 0) - 1;
    if (n > 0) this.#pins.set(digest, n);
    else this.#pins.delete(digest);
  }

  #changed(): void {
    this.#o.onChange?.();
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
  }

  get #imagesDir(): string {
    return path.join(this.#o.dir, 'images');
  }

  get #blobsDir(): string {
    return path.join(this.#o.dir, 'blobs');
  }

  get #tmpDir(): string {
    return path.join(this.#o.dir, 'tmp');
  }
}

/** The digest a pinned reference names; anything else is refused (a tag would mean other bits on every attempt). */
export function pinnedDigest(reference: string): string {
  let digest: string | undefined;
  try {
    digest = parseImageReference(reference).digest;
  } catch (error) {
    throw new ImageCacheError(`image reference ${JSON.stringify(reference)}: ${(error as Error).message}`, 'bad-reference');
  }
  if (!digest) throw new ImageCacheError(`image reference ${JSON.stringify(reference)} is not pinned to a digest (the controller resolves tags)`, 'bad-reference');
  return digest;
}

function dirNameOf(digest: string): string {
  return digest.replace(':', '-');
}

function formatName(format: ImageFormat): string {
  return format === 'tart' ? 'Tart image (macOS/Linux guests on the vz driver)' : 'Fleet qemu image (Linux guests on the qemu driver)';
}

/** Bytes the unpacked files take: Tart layers say their uncompressed size; Fleet layers are stored as is. */
function estimateUnpackedBytes(manifest: ImageManifest): number {
  let total = 0;
  for (const layer of manifest.layers) {
    const uncompressed = Number(layer.annotations?.['org.cirruslabs.tart.uncompressed-size']);
    total += Number.isSafeInteger(uncompressed) && uncompressed > 0 ? uncompressed : layer.size;
  }
  return total;
}

async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return Number(s.bavail) * Number(s.bsize);
}

/** Allocated bytes under dir (sparse files count what they really take). */
async function diskUsage(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) total += await diskUsage(p);
    else if (entry.isFile()) total += (await stat(p)).blocks * 512;
  }
  return total;
}

/** Image files are read by VM users (qcow2 backing files, kernels): readable, never writable by them. */
async function makeReadable(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) await makeReadable(p);
    else if (entry.isFile()) await chmod(p, 0o644);
  }
}

function gib(bytes: number): string {
  return `${(bytes / GIB).toFixed(1)} GiB`;
}

function parseMeta(value: unknown): ImageMeta {
  const m = value as ImageMeta;
  if (typeof m !== 'object' || m === null || m.version !== 1) throw new Error('not an image.json of version 1');
  if (typeof m.digest !== 'string' || !DIGEST.test(m.digest)) throw new Error('bad digest');
  if (m.format !== 'tart' && m.format !== 'fleet-qemu') throw new Error('bad format');
  if (typeof m.sizeBytes !== 'number' || typeof m.lastUsedAt !== 'number' || typeof m.files !== 'object' || m.files === null) throw new Error('bad fields');
  for (const f of [m.files.disk?.file, m.files.kernel, m.files.initrd, m.files.bundle]) {
    if (f !== undefined && (typeof f !== 'string' || f.includes('..') || path.isAbsolute(f))) throw new Error('bad file name');
  }
  return m;
}
