// The image and registry objects of the REST API (issue 15): the controller's own TypeBox types
// (`@fleet/api`, packages/api), under the names the CLI uses, plus small helpers.
import type {
  ImageOperationObject,
  ImagePrefetchResult,
  ImageSummaryObject,
  TransferProgressObject,
  WorkerImageObject,
} from '@fleet/api';

export type { RegistryObject, RegistryPut, WorkerImageList } from '@fleet/api';

/** Bytes of a pull, a push or a prefetch; `percent` is 0..100 (bytesTotal 0 = not known yet). */
export type TransferProgress = TransferProgressObject;
/** An image in one worker's cache (`GET /v1/workers/{name}/images`). */
export type WorkerImage = WorkerImageObject;
/** An image somewhere in the fleet, with the workers holding it (`GET /v1/images`). */
export type FleetImage = ImageSummaryObject;
/** One worker's copy of an image in `GET /v1/images`. */
export type ImageCopy = ImageSummaryObject['workers'][number];
/** A prefetch, delete or push asked of one worker. */
export type ImageOperation = ImageOperationObject;
/** `POST /v1/images/prefetch` → 202: the reference resolved to one digest, one operation per worker. */
export type PrefetchResult = ImagePrefetchResult;

export function isFinished(op: Pick<ImageOperation, 'state'>): boolean {
  return op.state === 'succeeded' || op.state === 'failed';
}

/** How many VMs use an image (a controller's count; anything else counts as none or one). */
export function inUseCount(v: number | boolean | null | undefined): number {
  if (typeof v === 'number') return v;
  return v ? 1 : 0;
}
