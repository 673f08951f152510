// The client <-> controller session protocol (docs/api.md "Sessions"): validation of the
// JSON text frames a client sends, and the shapes of those the controller sends.
// Every field is checked; anything else is a bad-request error, never a crash.

export type SessionKindName = 'exec' | 'ssh' | 'port-forward' | 'vnc';

export interface StartRequest {
  type: 'start';
  kind: SessionKindName;
  command: string[];
  tty: boolean;
  rows: number;
  cols: number;
  env: Record<string, string>;
  workdir: string;
  port: number;
  waitMs: number;
  timeoutMs: number;
  /** Keep the command running this long after the client disconnects (exec without tty). */
  retainMs: number;
}

/** Re-attach to a retained exec session and replay its output from these byte offsets. */
export interface AttachRequest {
  type: 'attach';
  sessionId: string;
  stdoutOffset: number;
  stderrOffset: number;
}

export type ControlMessage =
  | { type: 'resize'; rows: number; cols: number }
  | { type: 'signal'; name: string }
  | { type: 'eof' };

export type ServerMessage =
  | { type: 'progress'; stage: string; message: string }
  | { type: 'started'; sessionId: string; hostKeyFingerprint?: string; replayFrom?: { stdout: number; stderr: number } }
  | { type: 'exit'; code: number; signal: string | null }
  | { type: 'error'; code: string; message: string; stage?: string };

export const MAX_WAIT_MS = 10 * 60_000;
export const DEFAULT_WAIT_MS = 60_000;
export const MAX_TIMEOUT_MS = 7 * 24 * 3600_000;
export const MAX_RETAIN_MS = 60 * 60_000;
const MAX_ARGS = 4096;
const MAX_COMMAND_BYTES = 128 * 1024;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const SIGNALS = new Set(['INT', 'TERM', 'HUP', 'KILL', 'QUIT', 'USR1', 'USR2']);
const SESSION_ID = /^[0-9a-f-]{36}$/;

export class BadRequest extends Error {}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function int(v: unknown, name: string, min: number, max: number, dflt: number): number {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new BadRequest(`"${name}" must be an integer in ${min}..${max}`);
  return v;
}

export function parseJson(text: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new BadRequest('text frames must be JSON objects');
  }
  if (!isObject(v) || typeof v.type !== 'string') throw new BadRequest('a text frame must be a JSON object with a string "type"');
  return v;
}

export function parseOpening(text: string): StartRequest | AttachRequest {
  const m = parseJson(text);
  if (m.type === 'attach') {
    if (typeof m.sessionId !== 'string' || !SESSION_ID.test(m.sessionId)) throw new BadRequest('"sessionId" must be a session id');
    return { type: 'attach', sessionId: m.sessionId, stdoutOffset: int(m.stdoutOffset, 'stdoutOffset', 0, Number.MAX_SAFE_INTEGER, 0), stderrOffset: int(m.stderrOffset, 'stderrOffset', 0, Number.MAX_SAFE_INTEGER, 0) };
  }
  if (m.type !== 'start') throw new BadRequest(`the first frame must be {"type":"start",...} or {"type":"attach",...}, not "${String(m.type).slice(0, 40)}"`);
  const kind = m.kind;
  if (kind !== 'exec' && kind !== 'ssh' && kind !== 'port-forward' && kind !== 'vnc') throw new BadRequest('"kind" must be "exec", "ssh", "port-forward" or "vnc"');
  let command: string[] = [];
  if (m.command !== undefined) {
    if (!Array.isArray(m.command) || m.command.length > MAX_ARGS || !m.command.every((a) => typeof a === 'string')) throw new BadRequest('"command" must be an array of strings');
    command = m.command as string[];
    if (command.some((a) => a.includes('\0'))) throw new BadRequest('"command" arguments must not contain NUL');
    if (command.reduce((n, a) => n + Buffer.byteLength(a), 0) > MAX_COMMAND_BYTES) throw new BadRequest(`"command" is longer than ${MAX_COMMAND_BYTES} bytes`);
  }
  if (kind === 'exec' && command.length === 0) throw new BadRequest('exec needs a non-empty "command"');
  if (m.tty !== undefined && typeof m.tty !== 'boolean') throw new BadRequest('"tty" must be a boolean');
  const env: Record<string, string> = {};
  if (m.env !== undefined) {
    if (!isObject(m.env)) throw new BadRequest('"env" must be an object of strings');
    const entries = Object.entries(m.env);
    if (entries.length > 256) throw new BadRequest('"env" has more than 256 entries');
    for (const [k, v] of entries) {
      if (!ENV_NAME.test(k)) throw new BadRequest(`"env" name ${JSON.stringify(k.slice(0, 40))} is not a valid variable name`);
      if (typeof v !== 'string' || v.includes('\0') || v.length > 32_768) throw new BadRequest(`"env" value of ${k} must be a string without NUL`);
      env[k] = v;
    }
  }
  let workdir = '';
  if (m.workdir !== undefined) {
    if (typeof m.workdir !== 'string' || m.workdir.includes('\0') || m.workdir.length > 4096) throw new BadRequest('"workdir" must be a path');
    workdir = m.workdir;
  }
  const port = int(m.port, 'port', 1, 65535, kind === 'ssh' ? 22 : 0);
  if (kind === 'port-forward' && port === 0) throw new BadRequest('port-forward needs "port" (1..65535)');
  const tty = m.tty === true || (kind === 'ssh' && m.tty === undefined);
  return {
    type: 'start',
    kind,
    command,
    tty,
    rows: int(m.rows, 'rows', 1, 1000, 24),
    cols: int(m.cols, 'cols', 1, 1000, 80),
    env,
    workdir,
    port,
    waitMs: int(m.waitMs, 'waitMs', 0, MAX_WAIT_MS, DEFAULT_WAIT_MS),
    timeoutMs: int(m.timeoutMs, 'timeoutMs', 0, MAX_TIMEOUT_MS, 0),
    retainMs: int(m.retainMs, 'retainMs', 0, MAX_RETAIN_MS, 0),
  };
}

export function parseControl(text: string): ControlMessage {
  const m = parseJson(text);
  switch (m.type) {
    case 'resize':
      return { type: 'resize', rows: int(m.rows, 'rows', 1, 1000, 24), cols: int(m.cols, 'cols', 1, 1000, 80) };
    case 'signal': {
      const name = typeof m.name === 'string' ? m.name.replace(/^SIG/, '') : '';
      if (!SIGNALS.has(name)) throw new BadRequest(`"signal" name must be one of ${[...SIGNALS].join(', ')}`);
      return { type: 'signal', name };
    }
    case 'eof':
      return { type: 'eof' };
    default:
      throw new BadRequest(`unknown control frame type "${String(m.type).slice(0, 40)}" (expected resize, signal or eof)`);
  }
}

/** Binary data frames: first byte is the channel (0 stdin, 1 stdout, 2 stderr). */
export const CHANNEL_STDIN = 0;
export const CHANNEL_STDOUT = 1;
export const CHANNEL_STDERR = 2;
