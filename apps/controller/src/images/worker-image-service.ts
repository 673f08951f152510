// Workers' image caches as they last reported them (ImageInventory, sent after Hello and after
// every change). Whichever controller holds the worker's stream records it in the database, so
// every controller's API and the leader's scheduler see the same inventory.
import type { FleetDb, WorkerImage } from '@fleet/db';
import { badRequest, notFound } from '../errors.ts';
import type { Inventory, InventoryImage } from './image-input.ts';
import { progressView, toWorkerImageView, type ProgressView, type WorkerImageView } from './image-views.ts';

export interface WorkerImagesView {
  worker: string;
  usedBytes: number;
  limitBytes: number;
  items: WorkerImageView[];
}

export interface ImageSummaryView {
  digest: string;
  reference: string;
  format: string;
  sizeBytes: number;
  workers: { name: string; state: string; inUse: number; lastUsedAt: string | null; progress: ProgressView | null }[];
}

/** digest → workerId → state, for the images the scheduler may prefer workers by. */
export type ImageHoldings = Map<string, Map<string, 'ready' | 'pulling'>>;

const DIGEST = /^sha256:[a-f0-9]{64}$/;
const CHUNK = 500;

function chunks<T>(list: readonly T[], size = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < list.length; i += size) out.push(list.slice(i, i + size));
  return out;
}

function sameRow(row: WorkerImage, img: InventoryImage): boolean {
  return (
    row.reference === img.reference &&
    row.format === img.format &&
    row.sizeBytes === img.sizeBytes &&
    row.state === img.state &&
    row.bytesDone === img.bytesDone &&
    row.bytesTotal === img.bytesTotal &&
    row.error === img.error &&
    row.inUse === img.inUse &&
    (row.lastUsedAt?.getTime() ?? null) === (img.lastUsedAt?.getTime() ?? null)
  );
}

/**
 * The workers holding any of `digests` in state ready or pulling, with one query: what the
 * scheduler needs for a whole pass (scheduler-loop.ts).
 */
export async function loadImageHoldings(db: FleetDb, digests: Iterable<string>): Promise<ImageHoldings> {
  const wanted = [...new Set(digests)].filter((d) => DIGEST.test(d));
  const out: ImageHoldings = new Map();
  if (wanted.length === 0) return out;
  for (const part of chunks(wanted)) {
    const rows = await db.workerImage.findMany({ where: { digest: { in: part }, state: { in: ['ready', 'pulling'] } }, select: { workerId: true, digest: true, state: true } });
    for (const r of rows) {
      let m = out.get(r.digest);
      if (!m) out.set(r.digest, (m = new Map()));
      m.set(r.workerId, r.state === 'ready' ? 'ready' : 'pulling');
    }
  }
  return out;
}

export class WorkerImageService {
  constructor(private readonly db: FleetDb) {}

  /**
   * Replaces what the database knows of a worker's cache with `inv`, in one transaction: images
   * no longer listed are removed, changed ones rewritten (unchanged rows are left alone, so the
   * frequent inventories of a pull in progress stay cheap). Returns the number of rows written.
   */
  async record(workerId: string, inv: Inventory): Promise<{ added: number; changed: number; removed: number }> {
    return this.db.$transaction(
      async (tx) => {
        const existing = await tx.workerImage.findMany({ where: { workerId } });
        const byDigest = new Map(existing.map((r) => [r.digest, r]));
        const present = new Set(inv.images.map((i) => i.digest));
        const gone = existing.filter((r) => !present.has(r.digest)).map((r) => r.digest);
        for (const part of chunks(gone)) await tx.workerImage.deleteMany({ where: { workerId, digest: { in: part } } });
        const fresh: InventoryImage[] = [];
        let changed = 0;
        for (const img of inv.images) {
          const row = byDigest.get(img.digest);
          if (!row) fresh.push(img);
          else if (!sameRow(row, img)) {
            const { digest, ...data } = img;
            await tx.workerImage.update({ where: { workerId_digest: { workerId, digest } }, data });
            changed++;
          }
        }
        for (const part of chunks(fresh)) await tx.workerImage.createMany({ data: part.map((img) => ({ workerId, ...img })) });
        await tx.worker.updateMany({ where: { id: workerId }, data: { imageCacheBytes: inv.usedBytes, imageCacheLimit: inv.limitBytes } });
        return { added: fresh.length, changed, removed: gone.length };
      },
      { timeout: 30_000 },
    );
  }

  async listForWorker(name: string): Promise<WorkerImagesView> {
    const w = await this.db.worker.findUnique({ where: { name }, select: { id: true, name: true, imageCacheBytes: true, imageCacheLimit: true } });
    if (!w) throw notFound('worker', name);
    const rows = await this.db.workerImage.findMany({ where: { workerId: w.id }, orderBy: [{ lastUsedAt: 'desc' }, { digest: 'asc' }] });
    return { worker: w.name, usedBytes: Number(w.imageCacheBytes), limitBytes: Number(w.imageCacheLimit), items: rows.map(toWorkerImageView) };
  }

  /** The image of one worker (404 when it holds no such image). */
  async get(workerId: string, workerName: string, digest: string): Promise<WorkerImage> {
    if (!DIGEST.test(digest)) throw badRequest(`invalid image digest ${JSON.stringify(digest.slice(0, 100))}: expected sha256: followed by 64 lower-case hex digits`);
    const row = await this.db.workerImage.findUnique({ where: { workerId_digest: { workerId, digest } } });
    if (!row) throw notFound(`image ${digest} on worker`, workerName);
    return row;
  }

  /** Every worker's images, grouped by digest (by reference, then digest). */
  async listAll(): Promise<ImageSummaryView[]> {
    const rows = await this.db.workerImage.findMany({ include: { worker: { select: { name: true } } }, orderBy: [{ digest: 'asc' }] });
    const byDigest = new Map<string, ImageSummaryView>();
    for (const r of rows) {
      let s = byDigest.get(r.digest);
      if (!s) {
        s = { digest: r.digest, reference: r.reference, format: r.format, sizeBytes: Number(r.sizeBytes), workers: [] };
        byDigest.set(r.digest, s);
      }
      // A ready copy says more about the image than one still pulling.
      if (r.state === 'ready' && (s.sizeBytes === 0 || !s.reference)) {
        s.sizeBytes = Number(r.sizeBytes);
        s.reference ||= r.reference;
        s.format ||= r.format;
      }
      s.workers.push({
        name: r.worker.name,
        state: r.state,
        inUse: r.inUse,
        lastUsedAt: r.lastUsedAt ? r.lastUsedAt.toISOString() : null,
        progress: r.state === 'pulling' ? progressView(r.bytesDone, r.bytesTotal) : null,
      });
    }
    const out = [...byDigest.values()];
    for (const s of out) s.workers.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return out.sort((a, b) => (a.reference < b.reference ? -1 : a.reference > b.reference ? 1 : a.digest < b.digest ? -1 : 1));
  }

  /** Workers holding `digest` ready (for the scheduler: see `loadImageHoldings` for a whole pass). */
  async workersHolding(digest: string): Promise<Set<string>> {
    const holdings = await loadImageHoldings(this.db, [digest]);
    const out = new Set<string>();
    for (const [id, state] of holdings.get(digest) ?? []) if (state === 'ready') out.add(id);
    return out;
  }
}
