// Original file: fleet/v1/worker.proto

import type { SessionKind as _fleet_v1_SessionKind, SessionKind__Output as _fleet_v1_SessionKind__Output } from '../../fleet/v1/SessionKind';

export interface SessionOpen {
  'sessionId'?: (string);
  'vmId'?: (string);
  'kind'?: (_fleet_v1_SessionKind);
  'port'?: (number);
  'command'?: (string)[];
  'env'?: ({[key: string]: string});
  'workdir'?: (string);
  'tty'?: (boolean);
  'rows'?: (number);
  'cols'?: (number);
  'username'?: (string);
  'privateKey'?: (string);
  'password'?: (string);
  'hostKey'?: (string);
  'waitMs'?: (number);
  'timeoutMs'?: (number);
  'attempt'?: (number);
}

export interface SessionOpen__Output {
  'sessionId': (string);
  'vmId': (string);
  'kind': (_fleet_v1_SessionKind__Output);
  'port': (number);
  'command': (string)[];
  'env': ({[key: string]: string});
  'workdir': (string);
  'tty': (boolean);
  'rows': (number);
  'cols': (number);
  'username': (string);
  'privateKey': (string);
  'password': (string);
  'hostKey': (string);
  'waitMs': (number);
  'timeoutMs': (number);
  'attempt': (number);
}
