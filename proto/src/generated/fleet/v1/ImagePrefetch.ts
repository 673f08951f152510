// Original file: fleet/v1/worker.proto

import type { ImagePull as _fleet_v1_ImagePull, ImagePull__Output as _fleet_v1_ImagePull__Output } from '../../fleet/v1/ImagePull';

export interface ImagePrefetch {
  'pull'?: (_fleet_v1_ImagePull | null);
}

export interface ImagePrefetch__Output {
  'pull': (_fleet_v1_ImagePull__Output | null);
}
