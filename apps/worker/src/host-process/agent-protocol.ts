// What the root network host and the unprivileged VM agent say to each other (issue 17).
//
// The agent runs as the VM user in that user's GUI session (a LaunchAgent), the root side in the
// worker's daemon context. They meet on a unix stream socket in a root-owned directory: the agent
// connects, root checks its uid (peer credentials), then sends ONE message carrying the job as
// JSON and — for a VM — the VM end of the NIC socketpair (SCM_RIGHTS). After that the same
// connection carries newline-delimited JSON: commands root → agent, events agent → root.
//
// Root treats everything the agent says as untrusted input (the agent runs as a tenant-facing
// user): every line is size-capped, parsed and validated here before anything acts on it.
import type { InstallRequest } from '../vz/install.ts';
import type { VzHostConfig } from './vz-host-config.ts';

export const AGENT_PROTOCOL_VERSION = 1;
/** Longest line either side accepts. */
export const MAX_AGENT_LINE = 64 * 1024;

/** What the VM agent needs to run one VM: the machine, not the network (root keeps that). */
export type VmJob = Pick<VzHostConfig, 'vmId' | 'attempt' | 'name' | 'guest' | 'bundleDir' | 'cpus' | 'memoryBytes' | 'mac' | 'linuxKernel' | 'display' | 'stopTimeoutMs' | 'recovery'> & {
  kind: 'vm';
  /** Where the agent writes the guest's serial console (in the VM user's own directory). */
  serialLogPath: string;
  /** Network mode "none" (issue 18): the VM has no NIC, and no fd comes with the job. */
  noNetwork?: boolean;
};

export type InstallJob = { kind: 'install'; request: InstallRequest };

export type AgentJob = VmJob | InstallJob;

export interface AgentHandover {
  v: typeof AGENT_PROTOCOL_VERSION;
  job: AgentJob;
}

export type AgentCommand = { cmd: 'stop' } | { cmd: 'kill'; reason?: string } | { cmd: 'pause'; id: number } | { cmd: 'resume'; id: number };

export type AgentVmState = 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

export type AgentEvent =
  /** First line after the handover: the agent took the job (and, for a VM, the NIC fd). */
  | { event: 'accepted'; pid: number }
  | { event: 'state'; state: AgentVmState; message?: string; failureKind?: string; paused?: boolean }
  | { event: 'note'; text: string }
  | { event: 'reply'; id: number; ok: boolean; error?: string; paused?: boolean }
  /** Installer progress (the bundle's config is re-read by root from the bundle, never taken from here). */
  | { event: 'install'; message: string; percent?: number; done?: boolean }
  | { event: 'install-failed'; message: string };

const STATES: ReadonlySet<string> = new Set(['starting', 'running', 'stopping', 'stopped', 'failed']);
const TEXT_MAX = 4096;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optText(v: unknown, what: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new Error(`${what} must be a string`);
  // Kept short and printable: it ends up in status lines and the API.
  return v.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, TEXT_MAX);
}

/** One line from the agent → a validated event; throws with what was wrong. */
export function parseAgentEvent(line: string): AgentEvent {
  if (line.length > MAX_AGENT_LINE) throw new Error(`line of ${line.length} bytes is too long`);
  const v: unknown = JSON.parse(line);
  if (!isRecord(v) || typeof v.event !== 'string') throw new Error('not an event object');
  switch (v.event) {
    case 'accepted':
      if (!Number.isInteger(v.pid) || (v.pid as number) <= 0) throw new Error('accepted: pid must be a positive integer');
      return { event: 'accepted', pid: v.pid as number };
    case 'state': {
      if (typeof v.state !== 'string' || !STATES.has(v.state)) throw new Error(`state: unknown state ${JSON.stringify(v.state)}`);
      const message = optText(v.message, 'state.message');
      const failureKind = optText(v.failureKind, 'state.failureKind');
      if (v.paused !== undefined && typeof v.paused !== 'boolean') throw new Error('state.paused must be a boolean');
      return { event: 'state', state: v.state as AgentVmState, ...(message !== undefined ? { message } : {}), ...(failureKind !== undefined ? { failureKind: failureKind.slice(0, 64) } : {}), ...(v.paused !== undefined ? { paused: v.paused as boolean } : {}) };
    }
    case 'note':
      return { event: 'note', text: optText(v.text, 'note.text') ?? '' };
    case 'reply': {
      if (!Number.isInteger(v.id)) throw new Error('reply: id must be an integer');
      if (typeof v.ok !== 'boolean') throw new Error('reply: ok must be a boolean');
      const error = optText(v.error, 'reply.error');
      if (v.paused !== undefined && typeof v.paused !== 'boolean') throw new Error('reply.paused must be a boolean');
      return { event: 'reply', id: v.id as number, ok: v.ok, ...(error !== undefined ? { error } : {}), ...(v.paused !== undefined ? { paused: v.paused as boolean } : {}) };
    }
    case 'install': {
      const message = optText(v.message, 'install.message') ?? '';
      if (v.percent !== undefined && (typeof v.percent !== 'number' || !Number.isFinite(v.percent) || v.percent < 0 || v.percent > 100)) throw new Error('install: percent out of range');
      if (v.done !== undefined && typeof v.done !== 'boolean') throw new Error('install: done must be a boolean');
      return { event: 'install', message, ...(v.percent !== undefined ? { percent: Math.round(v.percent as number) } : {}), ...(v.done !== undefined ? { done: v.done as boolean } : {}) };
    }
    case 'install-failed':
      return { event: 'install-failed', message: optText(v.message, 'install-failed.message') ?? 'failed' };
    default:
      throw new Error(`unknown event ${JSON.stringify(v.event).slice(0, 40)}`);
  }
}

/** One line from root → a validated command (the agent checks too: it must not crash on input). */
export function parseAgentCommand(line: string): AgentCommand {
  if (line.length > MAX_AGENT_LINE) throw new Error('line too long');
  const v: unknown = JSON.parse(line);
  if (!isRecord(v) || typeof v.cmd !== 'string') throw new Error('not a command object');
  switch (v.cmd) {
    case 'stop':
      return { cmd: 'stop' };
    case 'kill': {
      const reason = optText(v.reason, 'kill.reason');
      return reason !== undefined ? { cmd: 'kill', reason } : { cmd: 'kill' };
    }
    case 'pause':
    case 'resume':
      if (!Number.isInteger(v.id)) throw new Error(`${v.cmd}: id must be an integer`);
      return { cmd: v.cmd, id: v.id as number };
    default:
      throw new Error(`unknown command ${JSON.stringify(v.cmd).slice(0, 40)}`);
  }
}

/** The optional machine fields: checked here too, so that a bad job fails at the handover with its field named. */
function checkOptionalVmFields(job: Record<string, unknown>): void {
  const lk = job.linuxKernel;
  if (lk !== undefined) {
    if (!isRecord(lk) || typeof lk.kernelPath !== 'string' || typeof lk.cmdline !== 'string') throw new Error('vm job: "linuxKernel" needs kernelPath and cmdline strings');
    if (lk.initrdPath !== undefined && typeof lk.initrdPath !== 'string') throw new Error('vm job: "linuxKernel.initrdPath" must be a string');
  }
  const d = job.display;
  if (d !== undefined) {
    const dim = (n: unknown): boolean => Number.isInteger(n) && (n as number) > 0 && (n as number) <= 16384;
    if (!isRecord(d) || !dim(d.width) || !dim(d.height)) throw new Error('vm job: "display" needs width and height in 1..16384');
  }
  if (job.stopTimeoutMs !== undefined && (!Number.isInteger(job.stopTimeoutMs) || (job.stopTimeoutMs as number) < 0)) throw new Error('vm job: "stopTimeoutMs" must be a non-negative integer');
  for (const k of ['recovery', 'noNetwork'] as const) if (job[k] !== undefined && typeof job[k] !== 'boolean') throw new Error(`vm job: "${k}" must be a boolean`);
}

/** The handover message (what root sends with the fd) → a validated job. */
export function parseHandover(data: string): AgentHandover {
  const v: unknown = JSON.parse(data);
  if (!isRecord(v) || v.v !== AGENT_PROTOCOL_VERSION || !isRecord(v.job)) throw new Error(`not a version ${AGENT_PROTOCOL_VERSION} handover`);
  const job = v.job;
  if (job.kind === 'vm') {
    for (const k of ['vmId', 'name', 'guest', 'bundleDir', 'mac', 'serialLogPath'] as const) if (typeof job[k] !== 'string') throw new Error(`vm job: "${k}" must be a string`);
    for (const k of ['attempt', 'cpus', 'memoryBytes'] as const) if (!Number.isInteger(job[k]) || (job[k] as number) < 0) throw new Error(`vm job: "${k}" must be a non-negative integer`);
    if (job.guest !== 'macos' && job.guest !== 'linux') throw new Error('vm job: guest must be macos or linux');
    checkOptionalVmFields(job);
    return { v: AGENT_PROTOCOL_VERSION, job: job as unknown as VmJob };
  }
  if (job.kind === 'install') {
    const r = job.request;
    if (!isRecord(r) || typeof r.ipsw !== 'string' || typeof r.bundleDir !== 'string') throw new Error('install job: request needs ipsw and bundleDir');
    return { v: AGENT_PROTOCOL_VERSION, job: job as unknown as InstallJob };
  }
  throw new Error('unknown job kind');
}

/** Splits a byte stream into lines of at most MAX_AGENT_LINE; an over-long line is an error. */
export class LineSplitter {
  private buf = '';
  constructor(private readonly onLine: (line: string) => void, private readonly onTooLong: () => void) {}

  push(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (line.length > 0) this.onLine(line);
    }
    if (this.buf.length > MAX_AGENT_LINE) {
      this.buf = '';
      this.onTooLong();
    }
  }
}
