// Original file: fleet/v1/worker.proto

import type { Resize as _fleet_v1_Resize, Resize__Output as _fleet_v1_Resize__Output } from '../../fleet/v1/Resize';

export interface SessionFrame {
  'stdin'?: (Buffer | Uint8Array | string);
  'stdout'?: (Buffer | Uint8Array | string);
  'stderr'?: (Buffer | Uint8Array | string);
  'eof'?: (boolean);
  'resize'?: (_fleet_v1_Resize | null);
  'signal'?: (string);
  'exitCode'?: (number);
  'error'?: (string);
  'payload'?: "stdin"|"stdout"|"stderr"|"eof"|"resize"|"signal"|"exitCode"|"error";
}

export interface SessionFrame__Output {
  'stdin'?: (Buffer);
  'stdout'?: (Buffer);
  'stderr'?: (Buffer);
  'eof'?: (boolean);
  'resize'?: (_fleet_v1_Resize__Output | null);
  'signal'?: (string);
  'exitCode'?: (number);
  'error'?: (string);
  'payload'?: "stdin"|"stdout"|"stderr"|"eof"|"resize"|"signal"|"exitCode"|"error";
}
