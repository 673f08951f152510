import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { packFleetQemu, type PackedImage } from '@fleet/vm-image';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ImageCache, ImageCacheError } from './image-cache.ts';

/** A registry in this process (127.0.0.1): serves pushed images by digest and counts blob requests. */
class FakeRegistry {
  readonly manifests = new Map<string, { type: string; body: Buffer }>();
  readonly blobs = new Map<string, Buffer>();
  blobGets = 0;
  /** Digests served with one byte flipped (a registry serving corrupted data). */
  readonly corrupt = new Set<string>();
  /** Delay before each blob response (to overlap pulls). */
  delayMs = 0;
  /** Digests whose next response breaks off after half the bytes (a registry that drops mid-pull). */
  readonly dropOnce = new Set<string>();
  readonly ranges: string[] = [];
  server = http.createServer((req, res) => void this.handle(req, res));
  host = '';

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.host = `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async add(repo: string, image: PackedImage): Promise<string> {
    for (const blob of [image.config, ...image.layers]) this.blobs.set(blob.descriptor.digest, await readFile(blob.path));
    this.manifests.set(`${repo}@${image.manifestDigest}`, { type: image.manifest.mediaType, body: image.manifestBytes });
    return `${this.host}/${repo}@${image.manifestDigest}`;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = req.url ?? '';
    if (url === '/v2/') return void res.writeHead(200).end('{}');
    let m = /^\/v2\/(.+)\/manifests\/(sha256:[a-f0-9]{64})$/.exec(url);
    if (m) {
      const found = this.manifests.get(`${m[1]}@${m[2]}`);
      if (!found) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
      res.writeHead(200, { 'content-type': found.type, 'docker-content-digest': m[2]!, 'content-length': found.body.length });
      return void res.end(req.method === 'HEAD' ? undefined : found.body);
    }
    m = /^\/v2\/(.+)\/blobs\/(sha256:[a-f0-9]{64})$/.exec(url);
    if (m) {
      let body = this.blobs.get(m[2]!);
      if (!body) return void res.writeHead(404).end();
      this.blobGets++;
      if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
      if (this.corrupt.has(m[2]!)) {
        body = Buffer.from(body);
        body[Math.floor(body.length / 2)]! ^= 0xff;
      }
      const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      if (range) {
        this.ranges.push(`${m[2]} ${range[1]}`);
        const from = Number(range[1]);
        res.writeHead(206, { 'content-type': 'application/octet-stream', 'content-length': body.length - from, 'content-range': `bytes ${from}-${body.length - 1}/${body.length}` });
        return void res.end(body.subarray(from));
      }
      if (this.dropOnce.delete(m[2]!)) {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
        res.write(body.subarray(0, Math.floor(body.length / 2)));
        await new Promise((r) => setTimeout(r, 20));
        return void res.destroy();
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
      return void res.end(body);
    }
    res.writeHead(404).end();
  }
}

const quiet = { info() {}, warn() {} };
let tmp = '';
let registry: FakeRegistry;

async function guestLikeImage(name: string, sizeKib: number): Promise<PackedImage> {
  const dir = path.join(tmp, 'src', name);
  await mkdir(dir, { recursive: true });
  const kernel = path.join(dir, 'kernel');
  const initrd = path.join(dir, 'initrd');
  await writeFile(kernel, Buffer.alloc(sizeKib * 1024, name));
  await writeFile(initrd, Buffer.alloc(sizeKib * 512, `${name}-initrd`));
  return packFleetQemu({ kernel, initrd, cmdline: `console=ttyS0 image=${name}`, architecture: 'amd64' }, path.join(dir, 'packed'));
}

/** A Fleet qemu image of a raw disk made of `pieces` (packed in `chunk`-byte layers). */
async function diskImage(name: string, pieces: Buffer[], chunk: number): Promise<{ image: PackedImage; disk: Buffer }> {
  const dir = path.join(tmp, 'src', name);
  await mkdir(dir, { recursive: true });
  const disk = Buffer.concat(pieces);
  await writeFile(path.join(dir, 'disk.raw'), disk);
  const image = await packFleetQemu({ disk: path.join(dir, 'disk.raw'), diskFormat: 'raw', architecture: 'amd64' }, path.join(dir, 'packed'), { chunkSize: chunk });
  return { image, disk };
}

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function cache(opts: { limitBytes?: number; inUse?: Set<string>; reserveBytes?: number; dir?: string } = {}): ImageCache {
  return new ImageCache({
    dir: opts.dir ?? path.join(tmp, 'cache'),
    limitBytes: opts.limitBytes ?? 0,
    platform: { os: 'linux', architecture: 'amd64' },
    formats: ['fleet-qemu'],
    inUse: async () => opts.inUse ?? new Set(),
    log: quiet,
    ...(opts.reserveBytes !== undefined ? { reserveBytes: opts.reserveBytes } : { reserveBytes: 0 }),
  });
}

const insecure = { insecure: true };
const digestOf = (ref: string) => ref.slice(ref.indexOf('@') + 1);

beforeAll(async () => {
  registry = new FakeRegistry();
  await registry.start();
});
afterAll(async () => {
  await new Promise((r) => registry.server.close(r));
});
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'fleet-imgcache-'));
  registry.blobGets = 0;
  registry.delayMs = 0;
  registry.corrupt.clear();
  registry.dropOnce.clear();
  registry.ranges.length = 0;
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('ImageCache', () => {
  it('pulls an image once for concurrent requests, unpacks it read-only, and reuses it from disk after a restart', async () => {
    const ref = await registry.add('fleet/guest', await guestLikeImage('a', 64));
    const c = cache();
    registry.delayMs = 50;
    const progress: number[] = [];
    const [x, y, z] = await Promise.all([c.acquire({ reference: ref, access: insecure }, (p) => progress.push(p.bytesDone)), c.acquire({ reference: ref, access: insecure }), c.acquire({ reference: ref, access: insecure })]);
    expect(registry.blobGets).toBe(3); // config + kernel + initrd, once
    expect(x.image.digest).toBe(digestOf(ref));
    expect(y.image.kernel).toBe(x.image.kernel);
    expect(z.image.cmdline).toBe('console=ttyS0 image=a');
    expect((await readFile(x.image.kernel!)).length).toBe(64 * 1024);
    expect(progress.at(-1)).toBeGreaterThan(0);
    for (const h of [x, y, z]) h.release();
    const inv = await c.inventory();
    expect(inv.images).toEqual([expect.objectContaining({ digest: digestOf(ref), state: 'ready', format: 'fleet-qemu', inUse: 0 })]);
    expect(Number(inv.usedBytes)).toBeGreaterThan(0);

    // A new process finds it on disk: no download.
    const again = cache();
    const h = await again.acquire({ reference: ref, access: insecure });
    expect(registry.blobGets).toBe(3);
    expect(h.image.kernel).toBe(x.image.kernel);
    h.release();
  });

  it('refuses a reference not pinned to a digest, and an image of a format the driver cannot run', async () => {
    const c = cache();
    await expect(c.acquire({ reference: `${registry.host}/fleet/guest:1`, access: insecure })).rejects.toThrow(/not pinned to a digest/);
    const tart = new ImageCache({ dir: path.join(tmp, 'tart'), limitBytes: 0, platform: { os: 'darwin', architecture: 'arm64' }, formats: ['tart'], inUse: async () => new Set(), log: quiet, reserveBytes: 0 });
    const ref = await registry.add('fleet/qemu-only', await guestLikeImage('q', 4));
    await expect(tart.acquire({ reference: ref, access: insecure })).rejects.toThrow(/Fleet qemu image.*this worker runs Tart/);
  });

  it('a blob whose bytes do not match its digest fails the pull clearly and leaves no image behind', async () => {
    const image = await guestLikeImage('bad', 32);
    const ref = await registry.add('fleet/bad', image);
    registry.corrupt.add(image.layers[0]!.descriptor.digest);
    const c = cache();
    const err = await c.acquire({ reference: ref, access: insecure }).catch((e: unknown) => e as ImageCacheError);
    expect(err).toBeInstanceOf(ImageCacheError);
    expect((err as Error).message).toMatch(/digest/i);
    expect(await readdir(path.join(tmp, 'cache', 'images'))).toEqual([]);
    expect((await readdir(path.join(tmp, 'cache', 'tmp'))).filter((n) => !n.startsWith('deleted-'))).toEqual([]);
    const inv = await c.inventory();
    expect(inv.images).toEqual([expect.objectContaining({ digest: digestOf(ref), state: 'failed' })]);
    // Fixed registry: the next attempt succeeds.
    registry.corrupt.clear();
    (await c.acquire({ reference: ref, access: insecure })).release();
    expect((await c.inventory()).images).toEqual([expect.objectContaining({ digest: digestOf(ref), state: 'ready' })]);
  });

  it('a registry that drops mid-blob: the pull resumes where it broke off (HTTP Range) and the image is whole', async () => {
    const image = await guestLikeImage('drop', 512);
    const ref = await registry.add('fleet/drop', image);
    const kernel = image.layers.find((l) => l.descriptor.mediaType.endsWith('kernel.v1'))!;
    registry.dropOnce.add(kernel.descriptor.digest);
    const h = await cache().acquire({ reference: ref, access: insecure });
    expect(registry.ranges).toHaveLength(1);
    expect(registry.ranges[0]).toMatch(new RegExp(`^${kernel.descriptor.digest} [1-9]\\d*$`));
    expect(await readFile(h.image.kernel!)).toEqual(await readFile(kernel.path));
    h.release();
  });

  it('a disk is written straight into its file: every piece verified, a zero piece fetched once, holes kept, a drop resumed', async () => {
    const K = 256 * 1024;
    const data = [randomBytes(K), randomBytes(K), randomBytes(100_000)];
    const { image, disk } = await diskImage('disk', [data[0]!, Buffer.alloc(K), data[1]!, Buffer.alloc(K), Buffer.alloc(K), data[2]!], K);
    expect(image.layers).toHaveLength(6);
    const ref = await registry.add('fleet/disk', image);
    registry.dropOnce.add(sha(data[1]!));
    const progress: { bytesDone: number; bytesTotal: number }[] = [];
    const h = await cache().acquire({ reference: ref, access: insecure }, (p) => progress.push(p));
    const file = h.image.disk!.path;
    expect(h.image.disk!.format).toBe('raw');
    expect((await readFile(file)).equals(disk)).toBe(true);
    // config + 3 data pieces + the zero piece once + the resumed piece's second request
    expect(registry.blobGets).toBe(6);
    expect(registry.ranges).toEqual([expect.stringMatching(new RegExp(`^${sha(data[1]!)} [1-9]\\d*$`))]);
    expect((await stat(file)).blocks * 512).toBeLessThan(disk.length); // the zero pieces are holes
    expect(await readdir(path.join(tmp, 'cache', 'blobs'))).toEqual([]); // no blob files on the way
    expect(progress.at(-1)).toEqual({ bytesDone: progress.at(-1)!.bytesTotal, bytesTotal: progress.at(-1)!.bytesTotal });
    h.release();
  });

  it('a disk piece whose bytes do not match its digest fails the pull with both digests, and leaves nothing', async () => {
    const K = 128 * 1024;
    const { image } = await diskImage('baddisk', [randomBytes(K), randomBytes(K), randomBytes(K)], K);
    const ref = await registry.add('fleet/baddisk', image);
    const bad = image.layers[1]!.descriptor.digest;
    registry.corrupt.add(bad);
    const c = cache();
    const err = await c.acquire({ reference: ref, access: insecure }).catch((e: unknown) => e as ImageCacheError);
    expect(err).toBeInstanceOf(ImageCacheError);
    expect((err as Error).message).toMatch(/digest/i);
    expect((err as Error).message).toContain(`expected ${bad}`);
    expect(await readdir(path.join(tmp, 'cache', 'images'))).toEqual([]);
    expect((await readdir(path.join(tmp, 'cache', 'tmp'))).filter((n) => !n.startsWith('deleted-'))).toEqual([]);
    registry.corrupt.clear();
    const h = await c.acquire({ reference: ref, access: insecure });
    expect(await readFile(h.image.disk!.path)).toEqual(await readFile(path.join(tmp, 'src', 'baddisk', 'disk.raw')));
    h.release();
  });

  it('a disk layout that is not contiguous is refused before any piece is downloaded', async () => {
    const K = 64 * 1024;
    const { image } = await diskImage('gap', [randomBytes(K), randomBytes(K)], K);
    const m = JSON.parse(image.manifestBytes.toString('utf8')) as { layers: { annotations: Record<string, string> }[] };
    m.layers[1]!.annotations['org.fleet.disk.offset'] = String(K + 512);
    const body = Buffer.from(JSON.stringify(m));
    for (const blob of [image.config, ...image.layers]) registry.blobs.set(blob.descriptor.digest, await readFile(blob.path));
    registry.manifests.set(`fleet/gap@${sha(body)}`, { type: image.manifest.mediaType, body });
    await expect(cache().acquire({ reference: `${registry.host}/fleet/gap@${sha(body)}`, access: insecure })).rejects.toThrow(/contiguous/);
    expect(registry.blobGets).toBe(1); // the config only
    expect((await readdir(path.join(tmp, 'cache', 'tmp'))).filter((n) => !n.startsWith('deleted-'))).toEqual([]);
  });

  it('a full disk mid-pull (a real ENOSPC on a 4 MiB tmpfs) fails it as disk-full and leaves nothing', async (ctx) => {
    const mnt = path.join(tmp, 'small');
    await mkdir(mnt);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt], { stdio: 'ignore' });
    } catch {
      console.warn('image cache: cannot mount a small tmpfs here (not root?); skipping the real ENOSPC test');
      return ctx.skip();
    }
    try {
      const K = 512 * 1024;
      const { image } = await diskImage('full', [randomBytes(K), randomBytes(K), randomBytes(K), randomBytes(K), randomBytes(K), randomBytes(K)], K);
      const ref = await registry.add('fleet/full', image);
      const c = cache({ dir: path.join(mnt, 'cache') });
      await c.init();
      registry.delayMs = 200;
      const pull = c.acquire({ reference: ref, access: insecure }).catch((e: unknown) => e as ImageCacheError);
      // The space check passed (3 MiB of layers, 4 MiB free): fill the disk once the config is asked for.
      while (registry.blobGets === 0) await new Promise((r) => setTimeout(r, 5));
      await writeFile(path.join(mnt, 'filler'), Buffer.alloc(2 * 1024 * 1024, 1));
      const err = await pull;
      expect(err).toBeInstanceOf(ImageCacheError);
      expect((err as ImageCacheError).code).toBe('disk-full');
      expect((err as Error).message).toMatch(/no space left/);
      expect(await readdir(path.join(mnt, 'cache', 'images'))).toEqual([]);
      expect(await readdir(path.join(mnt, 'cache', 'tmp'))).toEqual([]);
    } finally {
      execFileSync('umount', [mnt], { stdio: 'ignore' });
    }
  });

  it('a container image (not a VM image) fails the pull with a message saying so', async () => {
    const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    const layer = Buffer.from('not really a tarball');
    const d = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
    registry.blobs.set(d(config), config);
    registry.blobs.set(d(layer), layer);
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d(config), size: config.length }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d(layer), size: layer.length }] }));
    registry.manifests.set(`library/app@${d(manifest)}`, { type: 'application/vnd.oci.image.manifest.v1+json', body: manifest });
    await expect(cache().acquire({ reference: `${registry.host}/library/app@${d(manifest)}`, access: insecure })).rejects.toThrow(/container image/);
    expect(registry.blobGets).toBe(0);
  });

  it('evicts least-recently-used images above the limit, never one in use or pinned; delete refuses one in use', async () => {
    const refs = [];
    for (const n of ['l1', 'l2', 'l3']) refs.push(await registry.add(`fleet/${n}`, await guestLikeImage(n, 256)));
    const inUse = new Set<string>();
    let now = 1000;
    const c = new ImageCache({ dir: path.join(tmp, 'lru'), limitBytes: 0, platform: { os: 'linux', architecture: 'amd64' }, formats: ['fleet-qemu'], inUse: async () => inUse, log: quiet, reserveBytes: 0, now: () => now++ });
    for (const r of refs) (await c.acquire({ reference: r, access: insecure })).release();
    const one = c.usedBytes() / 3;
    inUse.add(digestOf(refs[0]!)); // oldest, but a VM's disk depends on it
    // Restarted with a limit of 1.5 images; l2 is pinned (an instance is being created from it).
    const limited = new ImageCache({ dir: path.join(tmp, 'lru'), limitBytes: Math.ceil(one * 1.5), platform: { os: 'linux', architecture: 'amd64' }, formats: ['fleet-qemu'], inUse: async () => inUse, log: quiet, reserveBytes: 0 });
    const pinned = await limited.acquire({ reference: refs[1]!, access: insecure });
    expect(registry.blobGets).toBe(9); // from disk, not pulled again
    await limited.gc();
    const left = (await limited.inventory()).images!.map((i) => i.digest).sort();
    // l3 was the least recently used image that nobody needs: gone. l1 (in use) and l2 stay, over the limit.
    expect(left).toEqual([digestOf(refs[0]!), digestOf(refs[1]!)].sort());
    await expect(limited.delete(digestOf(refs[0]!))).rejects.toThrow(/used by VM instances/);
    inUse.clear();
    expect(await limited.delete(digestOf(refs[0]!))).toBe(true);
    expect(existsSync(path.join(tmp, 'lru', 'images', digestOf(refs[0]!).replace(':', '-')))).toBe(false);
    pinned.release();
  });

  it('says how much space a pull needs when the disk cannot hold it', async () => {
    const ref = await registry.add('fleet/huge', await guestLikeImage('h', 16));
    const c = cache({ reserveBytes: Number.MAX_SAFE_INTEGER / 2 });
    await expect(c.acquire({ reference: ref, access: insecure })).rejects.toThrow(/not enough disk space to pull .* needs/);
    expect(registry.blobGets).toBe(0);
  });

  it('drops unfinished unpacks and unreadable image dirs at start', async () => {
    const dir = path.join(tmp, 'restart');
    await mkdir(path.join(dir, 'tmp', 'half-unpacked'), { recursive: true });
    await mkdir(path.join(dir, 'images', `sha256-${'0'.repeat(64)}`), { recursive: true });
    await mkdir(path.join(dir, 'blobs'), { recursive: true });
    await writeFile(path.join(dir, 'blobs', 'sha256-old.partial'), 'x');
    await writeFile(path.join(dir, 'blobs', 'sha256-new.partial'), 'y');
    const dayAgo = new Date(Date.now() - 25 * 3600_000);
    await utimes(path.join(dir, 'blobs', 'sha256-old.partial'), dayAgo, dayAgo);
    const c = cache({ dir });
    await c.init();
    expect(await readdir(path.join(dir, 'blobs'))).toEqual(['sha256-new.partial']); // a recent partial is kept for resume
    expect(await readdir(path.join(dir, 'tmp'))).toEqual([]);
    expect(await readdir(path.join(dir, 'images'))).toEqual([]);
    expect(createHash('sha256')).toBeTruthy();
  });
});
