// What workers say about images is untrusted input, like everything else they send
// (grpc/worker-input.ts): bounded, typed and turned into the controller's shapes here. Invalid
// entries are dropped with a reason; nothing here throws.
import type { ImageInventory__Output, ImageOperationStatus__Output, TransferProgress__Output } from '@fleet/proto';

export const MAX_IMAGES_PER_INVENTORY = 10_000;
/** Strings from workers are cut to this (a reference is at most 4 KiB by the parser, but 1 KiB is plenty to show). */
export const MAX_STRING = 1024;
/** Largest value a BigInt column takes (SQLite INTEGER / PostgreSQL BIGINT). */
const INT64_MAX = 9_223_372_036_854_775_807n;

const DIGEST = /^sha256:[a-f0-9]{64}$/;
const OP_ID = /^[A-Za-z0-9._-]{1,128}$/;
const IMAGE_STATES: ReadonlySet<string> = new Set(['ready', 'pulling', 'failed']);
const FORMATS: ReadonlySet<string> = new Set(['tart', 'fleet-qemu']);
const OP_STATES: ReadonlySet<string> = new Set(['running', 'succeeded', 'failed']);

export type CachedImageState = 'ready' | 'pulling' | 'failed';
export type ReportedOpState = 'running' | 'succeeded' | 'failed';

export interface InventoryImage {
  digest: string;
  reference: string;
  format: string;
  sizeBytes: bigint;
  lastUsedAt: Date | null;
  inUse: number;
  state: CachedImageState;
  bytesDone: bigint;
  bytesTotal: bigint;
  error: string;
}

export interface Inventory {
  images: InventoryImage[];
  usedBytes: bigint;
  limitBytes: bigint;
}

export interface OperationReport {
  id: string;
  state: ReportedOpState;
  message: string;
  bytesDone: bigint;
  bytesTotal: bigint;
  /** "" unless a valid sha256 digest. */
  digest: string;
}

// eslint-disable-next-line no-control-regex
const clip = (s: unknown, max = MAX_STRING) => (typeof s === 'string' ? s.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '').slice(0, max) : '');

/** A uint64 as proto-loader hands it over (a decimal string), bounded to a BigInt column; anything else is 0. */
export function uint64(v: unknown): bigint {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? BigInt(v) : 0n;
  if (typeof v !== 'string' || !/^[0-9]{1,20}$/.test(v)) return 0n;
  const n = BigInt(v);
  return n > INT64_MAX ? INT64_MAX : n;
}

function progressOf(p: TransferProgress__Output | null | undefined): { bytesDone: bigint; bytesTotal: bigint } {
  const bytesTotal = uint64(p?.bytesTotal);
  let bytesDone = uint64(p?.bytesDone);
  if (bytesTotal > 0n && bytesDone > bytesTotal) bytesDone = bytesTotal;
  return { bytesDone, bytesTotal };
}

export function imageInventory(inv: ImageInventory__Output | null | undefined): { inventory: Inventory; rejected: string[] } {
  const rejected: string[] = [];
  const images: InventoryImage[] = [];
  const seen = new Set<string>();
  const list = Array.isArray(inv?.images) ? inv.images : [];
  for (const img of list.slice(0, MAX_IMAGES_PER_INVENTORY)) {
    if (!img || typeof img.digest !== 'string' || !DIGEST.test(img.digest)) {
      rejected.push(`image with malformed digest ${JSON.stringify(clip(img?.digest, 80))}`);
      continue;
    }
    if (seen.has(img.digest)) {
      rejected.push(`image ${img.digest} listed twice`);
      continue;
    }
    seen.add(img.digest);
    const state = typeof img.state === 'string' && IMAGE_STATES.has(img.state) ? (img.state as CachedImageState) : null;
    if (!state) {
      rejected.push(`image ${img.digest} with unknown state ${JSON.stringify(clip(img.state, 40))}`);
      continue;
    }
    const lastUsedMs = uint64(img.lastUsedUnixMs);
    images.push({
      digest: img.digest,
      reference: clip(img.reference),
      format: typeof img.format === 'string' && FORMATS.has(img.format) ? img.format : clip(img.format, 32),
      sizeBytes: uint64(img.sizeBytes),
      // Dates beyond year 275760 do not exist in JS; 0 = never used.
      lastUsedAt: lastUsedMs > 0n && lastUsedMs < 8_640_000_000_000_000n ? new Date(Number(lastUsedMs)) : null,
      inUse: typeof img.inUse === 'number' && Number.isInteger(img.inUse) && img.inUse >= 0 ? Math.min(img.inUse, 1_000_000) : 0,
      state,
      ...progressOf(img.progress),
      error: clip(img.error),
    });
  }
  if (list.length > MAX_IMAGES_PER_INVENTORY) rejected.push(`${list.length - MAX_IMAGES_PER_INVENTORY} images over the per-inventory limit`);
  return { inventory: { images, usedBytes: uint64(inv?.usedBytes), limitBytes: uint64(inv?.limitBytes) }, rejected };
}

/** An ImageOperationStatus, or the reason it is dropped. */
export function operationReport(s: ImageOperationStatus__Output | null | undefined): OperationReport | { rejected: string } {
  if (!s || typeof s.id !== 'string' || !OP_ID.test(s.id)) return { rejected: `image operation status with malformed id ${JSON.stringify(clip(s?.id, 80))}` };
  if (typeof s.state !== 'string' || !OP_STATES.has(s.state)) return { rejected: `image operation ${s.id}: unknown state ${JSON.stringify(clip(s.state, 40))}` };
  return {
    id: s.id,
    state: s.state as ReportedOpState,
    message: clip(s.message),
    ...progressOf(s.progress),
    digest: typeof s.digest === 'string' && DIGEST.test(s.digest) ? s.digest : '',
  };
}
