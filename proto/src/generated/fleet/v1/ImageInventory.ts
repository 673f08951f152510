// Original file: fleet/v1/worker.proto

import type { CachedImage as _fleet_v1_CachedImage, CachedImage__Output as _fleet_v1_CachedImage__Output } from '../../fleet/v1/CachedImage';
import type { Long } from '@grpc/proto-loader';

export interface ImageInventory {
  'images'?: (_fleet_v1_CachedImage)[];
  'usedBytes'?: (number | string | Long);
  'limitBytes'?: (number | string | Long);
}

export interface ImageInventory__Output {
  'images': (_fleet_v1_CachedImage__Output)[];
  'usedBytes': (string);
  'limitBytes': (string);
}
