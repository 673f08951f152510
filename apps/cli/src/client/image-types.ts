// The image and registry objects of the REST API (issue 15), as the CLI reads them.
//
// They mirror the contract of `apps/controller/src/api/schemas.ts` (routes in
// `api/routes/image-routes.ts` and `registry-routes.ts`); fields a newer controller adds are
// ignored, and the VM fields are optional so that a controller older than issue 15 still works.
import type { VmObject } from '@fleet/controller/api-schemas';

/** Bytes of a pull, a push or a prefetch; `percent` is 0..100 (bytesTotal 0 = not known yet). */
export interface TransferProgress {
  bytesDone: number;
  bytesTotal: number;
  percent: number;
}

export interface RegistryObject {
  host: string;
  username: string;
  passwordSet: boolean;
  insecure: boolean;
  caSet: boolean;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

/** `PUT /v1/registries/{host}`: credentials are write-only; `verify` asks the controller to try them first. */
export interface RegistryPut {
  username?: string;
  password?: string;
  insecure?: boolean;
  caPem?: string;
  verify?: boolean;
}

export type ImageFormat = 'tart' | 'fleet-qemu';
export type WorkerImageState = 'ready' | 'pulling' | 'failed';

export interface WorkerImage {
  digest: string;
  reference: string;
  format: ImageFormat | string;
  sizeBytes: number;
  state: WorkerImageState | string;
  progress: TransferProgress | null;
  error: string;
  /** VMs on the worker that use the image (a count; older drafts of the contract sent a boolean). */
  inUse: number | boolean;
  lastUsedAt: string | null;
}

/** `GET /v1/workers/{name}/images`. `limitBytes` 0 = no limit. */
export interface WorkerImageList {
  worker: string;
  usedBytes: number;
  limitBytes: number;
  items: WorkerImage[];
}

/** One worker's copy of an image in `GET /v1/images`. */
export interface ImageCopy {
  name: string;
  state: WorkerImageState | string;
  inUse: number | boolean;
  lastUsedAt: string | null;
  progress: TransferProgress | null;
}

/** An image somewhere in the fleet (`GET /v1/images`). */
export interface FleetImage {
  digest: string;
  reference: string;
  format: ImageFormat | string;
  sizeBytes: number;
  workers: ImageCopy[];
}

export type ImageOperationKind = 'prefetch' | 'delete' | 'push';
export type ImageOperationState = 'pending' | 'running' | 'succeeded' | 'failed';

export interface ImageOperation {
  id: string;
  kind: ImageOperationKind | string;
  worker: string;
  vm: string | null;
  reference: string;
  digest: string;
  state: ImageOperationState | string;
  message: string;
  progress: TransferProgress | null;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

/** `POST /v1/images/prefetch` → 202: the reference resolved to one digest, one operation per worker. */
export interface PrefetchResult {
  reference: string;
  digest: string;
  format: ImageFormat | string;
  operations: ImageOperation[];
}

/** The VM as issue 15 extends it: the digest a registry tag resolved to, and the pull in progress. */
export type VmWithImage = VmObject & {
  imageDigest?: string | null;
  pull?: TransferProgress | null;
};

export function isFinished(op: Pick<ImageOperation, 'state'>): boolean {
  return op.state === 'succeeded' || op.state === 'failed';
}

/** How many VMs use an image (the count, or 1/0 from a boolean). */
export function inUseCount(v: number | boolean | null | undefined): number {
  if (typeof v === 'number') return v;
  return v ? 1 : 0;
}
