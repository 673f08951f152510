// Images and image operations as the API shows them (api/schemas.ts: WorkerImage, ImageOperation).
// Byte counts are BigInt in the database and plain numbers here (exact up to 8 PiB).
import type { ImageOperation, WorkerImage } from '@fleet/db';

export interface ProgressView {
  bytesDone: number;
  bytesTotal: number;
  /** 0-100, rounded down (100 only when done); 0 while the total is unknown. */
  percent: number;
}

export interface WorkerImageView {
  digest: string;
  reference: string;
  format: string;
  sizeBytes: number;
  state: string;
  progress: ProgressView | null;
  error: string;
  inUse: number;
  lastUsedAt: string | null;
}

export interface ImageOperationView {
  id: string;
  kind: string;
  worker: string;
  vm: string | null;
  reference: string;
  digest: string;
  state: string;
  message: string;
  progress: ProgressView | null;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

export function progressView(bytesDone: bigint, bytesTotal: bigint): ProgressView {
  const done = bytesTotal > 0n && bytesDone > bytesTotal ? bytesTotal : bytesDone;
  return {
    bytesDone: Number(done),
    bytesTotal: Number(bytesTotal),
    percent: bytesTotal > 0n ? Number((done * 100n) / bytesTotal) : 0,
  };
}

export function toWorkerImageView(r: WorkerImage): WorkerImageView {
  return {
    digest: r.digest,
    reference: r.reference,
    format: r.format,
    sizeBytes: Number(r.sizeBytes),
    state: r.state,
    // Progress is about a pull under way; a ready or failed image shows none.
    progress: r.state === 'pulling' ? progressView(r.bytesDone, r.bytesTotal) : null,
    error: r.error,
    inUse: r.inUse,
    lastUsedAt: r.lastUsedAt ? r.lastUsedAt.toISOString() : null,
  };
}

export function toImageOperationView(op: ImageOperation, workerName: string, vmName: string | null): ImageOperationView {
  return {
    id: op.id,
    kind: op.kind,
    worker: workerName,
    vm: op.vmId === null ? null : (vmName ?? op.vmId),
    reference: op.reference,
    digest: op.digest,
    state: op.state,
    message: op.message,
    progress: op.bytesTotal > 0n || op.bytesDone > 0n ? progressView(op.bytesDone, op.bytesTotal) : null,
    createdBy: op.createdBy,
    createdAt: op.createdAt.toISOString(),
    updatedAt: op.updatedAt.toISOString(),
  };
}
