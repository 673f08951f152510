// Original file: fleet/v1/worker.proto

export const SessionKind = {
  SESSION_KIND_UNSPECIFIED: 'SESSION_KIND_UNSPECIFIED',
  SESSION_KIND_EXEC: 'SESSION_KIND_EXEC',
  SESSION_KIND_SSH: 'SESSION_KIND_SSH',
  SESSION_KIND_PORT_FORWARD: 'SESSION_KIND_PORT_FORWARD',
  SESSION_KIND_VNC: 'SESSION_KIND_VNC',
} as const;

export type SessionKind =
  | 'SESSION_KIND_UNSPECIFIED'
  | 0
  | 'SESSION_KIND_EXEC'
  | 1
  | 'SESSION_KIND_SSH'
  | 2
  | 'SESSION_KIND_PORT_FORWARD'
  | 3
  | 'SESSION_KIND_VNC'
  | 4

export type SessionKind__Output = typeof SessionKind[keyof typeof SessionKind]
