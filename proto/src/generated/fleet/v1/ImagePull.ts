// Original file: fleet/v1/worker.proto

import type { RegistryAccess as _fleet_v1_RegistryAccess, RegistryAccess__Output as _fleet_v1_RegistryAccess__Output } from '../../fleet/v1/RegistryAccess';

export interface ImagePull {
  'reference'?: (string);
  'access'?: (_fleet_v1_RegistryAccess | null);
}

export interface ImagePull__Output {
  'reference': (string);
  'access': (_fleet_v1_RegistryAccess__Output | null);
}
