// Original file: fleet/v1/worker.proto

import type { Resize as _fleet_v1_Resize, Resize__Output as _fleet_v1_Resize__Output } from '../../fleet/v1/Resize';
import type { SessionProgress as _fleet_v1_SessionProgress, SessionProgress__Output as _fleet_v1_SessionProgress__Output } from '../../fleet/v1/SessionProgress';
import type { SessionExit as _fleet_v1_SessionExit, SessionExit__Output as _fleet_v1_SessionExit__Output } from '../../fleet/v1/SessionExit';
import type { SessionError as _fleet_v1_SessionError, SessionError__Output as _fleet_v1_SessionError__Output } from '../../fleet/v1/SessionError';

export interface SessionFrame {
  'stdin'?: (Buffer | Uint8Array | string);
  'stdout'?: (Buffer | Uint8Array | string);
  'stderr'?: (Buffer | Uint8Array | string);
  'eof'?: (boolean);
  'resize'?: (_fleet_v1_Resize | null);
  'signal'?: (string);
  'exitCode'?: (number);
  'error'?: (string);
  'progress'?: (_fleet_v1_SessionProgress | null);
  'started'?: (boolean);
  'hostKey'?: (string);
  'exit'?: (_fleet_v1_SessionExit | null);
  'sessionError'?: (_fleet_v1_SessionError | null);
  'payload'?: "stdin"|"stdout"|"stderr"|"eof"|"resize"|"signal"|"exitCode"|"error"|"progress"|"started"|"hostKey"|"exit"|"sessionError";
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
  'progress'?: (_fleet_v1_SessionProgress__Output | null);
  'started'?: (boolean);
  'hostKey'?: (string);
  'exit'?: (_fleet_v1_SessionExit__Output | null);
  'sessionError'?: (_fleet_v1_SessionError__Output | null);
  'payload'?: "stdin"|"stdout"|"stderr"|"eof"|"resize"|"signal"|"exitCode"|"error"|"progress"|"started"|"hostKey"|"exit"|"sessionError";
}
