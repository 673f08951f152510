// Original file: fleet/v1/worker.proto

import type { ImagePrefetch as _fleet_v1_ImagePrefetch, ImagePrefetch__Output as _fleet_v1_ImagePrefetch__Output } from '../../fleet/v1/ImagePrefetch';
import type { ImageDelete as _fleet_v1_ImageDelete, ImageDelete__Output as _fleet_v1_ImageDelete__Output } from '../../fleet/v1/ImageDelete';
import type { ImagePush as _fleet_v1_ImagePush, ImagePush__Output as _fleet_v1_ImagePush__Output } from '../../fleet/v1/ImagePush';

export interface ImageOperation {
  'id'?: (string);
  'prefetch'?: (_fleet_v1_ImagePrefetch | null);
  'delete'?: (_fleet_v1_ImageDelete | null);
  'push'?: (_fleet_v1_ImagePush | null);
  'op'?: "prefetch"|"delete"|"push";
}

export interface ImageOperation__Output {
  'id': (string);
  'prefetch'?: (_fleet_v1_ImagePrefetch__Output | null);
  'delete'?: (_fleet_v1_ImageDelete__Output | null);
  'push'?: (_fleet_v1_ImagePush__Output | null);
  'op'?: "prefetch"|"delete"|"push";
}
