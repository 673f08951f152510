// Image operations the controller asks of this worker (issue 15): prefetch an image into the cache,
// delete one, push a stopped VM's disk to a registry. Level-triggered like VM assignments: an
// operation stays in every DesiredState until the worker reports it finished; one seen again after
// it finished gets its final status again (the first report may have been lost), and one seen
// after a worker restart runs again (all three are idempotent).
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { ImageOperation__Output, ImageOperationStatus, RegistryAccess__Output } from '@fleet/proto';
import type { Driver } from '../drivers/driver.ts';
import type { ImageCache } from './image-cache.ts';
import { describeImageError } from './image-errors.ts';
import { clientAccess } from './registry-access.ts';
import type { RegistryAccess } from '@fleet/oci';

export interface ImageOperationsOptions {
  cache: ImageCache;
  driver: Driver;
  /** Sends a status to the controller (dropped while disconnected: the op is then re-sent by the controller). */
  send: (status: ImageOperationStatus) => void;
  /** Scratch space for pushes (flattened disks, packed blobs). */
  workDir: string;
  log: { info(o: object, m?: string): void; warn(o: object, m?: string): void };
  now?: () => number;
}

type Final = { state: 'succeeded' | 'failed'; message: string; digest: string };

/** At most one progress report per operation per this many ms. */
const PROGRESS_INTERVAL_MS = 1000;
/** Finished operations remembered (to answer a re-sent op without running it again). */
const REMEMBER = 1000;

export class ImageOperations {
  readonly #o: ImageOperationsOptions;
  readonly #running = new Map<string, Promise<void>>();
  readonly #finished = new Map<string, Final>();

  constructor(options: ImageOperationsOptions) {
    this.#o = options;
  }

  /** The operations in the latest DesiredState. */
  setDesired(ops: readonly ImageOperation__Output[]): void {
    for (const op of ops) {
      if (!op.id || op.id.length > 128) continue;
      const done = this.#finished.get(op.id);
      if (done) {
        this.#o.send({ id: op.id, ...done });
        continue;
      }
      if (this.#running.has(op.id)) continue;
      const run = this.#run(op)
        .then((final) => this.#finish(op.id, final))
        .catch((error: unknown) => this.#finish(op.id, { state: 'failed', message: (error as Error).message ?? String(error), digest: '' }))
        .finally(() => this.#running.delete(op.id));
      this.#running.set(op.id, run);
    }
  }

  /** Resolves when no operation is running (tests). */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.allSettled([...this.#running.values()]);
  }

  #finish(id: string, final: Final): void {
    this.#finished.set(id, final);
    if (this.#finished.size > REMEMBER) this.#finished.delete(this.#finished.keys().next().value!);
    this.#o.log[final.state === 'succeeded' ? 'info' : 'warn']({ op: id, state: final.state, message: final.message }, 'image operation finished');
    this.#o.send({ id, ...final });
  }

  #progress(id: string): (p: { bytesDone: number; bytesTotal: number }) => void {
    let last = 0;
    return (p) => {
      const now = (this.#o.now ?? Date.now)();
      if (now - last < PROGRESS_INTERVAL_MS) return;
      last = now;
      this.#o.send({ id, state: 'running', message: '', digest: '', progress: { bytesDone: String(p.bytesDone), bytesTotal: String(p.bytesTotal) } });
    };
  }

  async #run(op: ImageOperation__Output): Promise<Final> {
    this.#o.send({ id: op.id, state: 'running', message: '', digest: '' });
    switch (op.op) {
      case 'prefetch': {
        const pull = op.prefetch?.pull;
        if (!pull?.reference) return { state: 'failed', message: 'prefetch names no image', digest: '' };
        try {
          const image = await this.#o.cache.prefetch({ reference: pull.reference, access: accessOf(pull.access) }, this.#progress(op.id));
          return { state: 'succeeded', message: `${pull.reference} is in the cache`, digest: image.digest };
        } catch (error) {
          return { state: 'failed', message: describeImageError(error, pull.reference).message, digest: '' };
        }
      }
      case 'delete': {
        const digest = op.delete?.digest ?? '';
        try {
          const deleted = await this.#o.cache.delete(digest);
          return { state: 'succeeded', message: deleted ? `deleted ${digest}` : `${digest} was not in the cache`, digest };
        } catch (error) {
          return { state: 'failed', message: (error as Error).message, digest };
        }
      }
      case 'push':
        return this.#push(op);
      default:
        return { state: 'failed', message: `unknown image operation ${JSON.stringify(op.op ?? '')} (this worker is older than its controller)`, digest: '' };
    }
  }

  async #push(op: ImageOperation__Output): Promise<Final> {
    const push = op.push;
    if (!push?.vmId || !push.reference) return { state: 'failed', message: 'push names no VM or no reference', digest: '' };
    const driver = this.#o.driver;
    if (!driver.exportImage) return { state: 'failed', message: `the ${driver.name} driver cannot push images`, digest: '' };
    const work = path.join(this.#o.workDir, `push-${randomBytes(6).toString('hex')}`);
    await mkdir(work, { recursive: true, mode: 0o700 });
    try {
      const { parseImageReference, RegistryClient } = await import('@fleet/oci');
      const { packFleetQemu, packTartBundle } = await import('@fleet/vm-image');
      const ref = parseImageReference(push.reference);
      if (!ref.tag || ref.digest) throw new Error(`push to ${push.reference}: name a tag (registry/repository:tag), not a digest`);
      const exported = await driver.exportImage({ vmId: push.vmId, attempt: push.attempt }, work);
      const packDir = path.join(work, 'blobs');
      await mkdir(packDir, { recursive: true });
      const packed =
        exported.format === 'tart'
          ? await packTartBundle(exported.bundleDir, packDir)
          : await packFleetQemu(
              {
                ...(exported.disk ? { disk: exported.disk } : {}),
                ...(exported.diskFormat ? { diskFormat: exported.diskFormat } : {}),
                ...(exported.kernel ? { kernel: exported.kernel } : {}),
                ...(exported.initrd ? { initrd: exported.initrd } : {}),
                ...(exported.cmdline !== undefined ? { cmdline: exported.cmdline } : {}),
                architecture: exported.architecture,
                ...(exported.minDiskGib ? { minDiskGib: exported.minDiskGib } : {}),
              },
              packDir,
            );
      const client = new RegistryClient({ registry: ref.registry, ...accessOf(push.access) });
      const blobs = [packed.config, ...packed.layers];
      const total = blobs.reduce((n, b) => n + b.descriptor.size, 0);
      const progress = this.#progress(op.id);
      let done = 0;
      for (const blob of blobs) {
        const before = done;
        await client.uploadBlob(ref.repository, blob.path, blob.descriptor, { onProgress: (n) => progress({ bytesDone: before + n, bytesTotal: total }) });
        done += blob.descriptor.size;
        progress({ bytesDone: done, bytesTotal: total });
      }
      const digest = await client.putManifest(ref.repository, ref.tag, packed.manifestBytes, packed.manifest.mediaType);
      return { state: 'succeeded', message: `pushed ${push.reference} (${exported.format}) as ${digest}`, digest };
    } catch (error) {
      return { state: 'failed', message: describeImageError(error, push.reference).message, digest: '' };
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
}

function accessOf(a: RegistryAccess__Output | null | undefined): RegistryAccess {
  return clientAccess(a);
}
