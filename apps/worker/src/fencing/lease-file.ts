// `<worker data dir>/lease.json`: the worker's controller lease as other processes see it. The
// worker (fencing/lease.ts) rewrites it atomically on every renewal; VM host processes of
// "reschedule" VMs read it every few hundred ms and kill their VM when it has run out, so that a
// worker that is dead (kill -9) or cut off still has its VMs stopped before the controller
// re-places them (lost-after > fence-after).
//
//   { "validUntilUnixMs": number | null, "fenceAfterMs": number, "renewedAtUnixMs": number }
//
// validUntilUnixMs null = no fencing (an older controller that sends no leases).
import { chownSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const LEASE_FILE = 'lease.json';

export interface LeaseFile {
  /** Wall clock (ms since the epoch) until which the lease holds; null = never fence. */
  validUntilUnixMs: number | null;
  /** The controller's fence-after (0 with validUntilUnixMs null). */
  fenceAfterMs: number;
  /** When the worker last wrote a renewal (wall clock). */
  renewedAtUnixMs: number;
}

export function leaseFilePath(dataDir: string): string {
  return path.join(dataDir, LEASE_FILE);
}

/** The parsed file, or undefined when the content is not a valid lease file. */
export function parseLeaseFile(content: string | undefined): LeaseFile | undefined {
  if (content === undefined) return undefined;
  let o: unknown;
  try {
    o = JSON.parse(content);
  } catch {
    return undefined;
  }
  if (!o || typeof o !== 'object') return undefined;
  const { validUntilUnixMs, fenceAfterMs, renewedAtUnixMs } = o as Record<string, unknown>;
  if (validUntilUnixMs !== null && !(typeof validUntilUnixMs === 'number' && Number.isFinite(validUntilUnixMs))) return undefined;
  if (!(typeof fenceAfterMs === 'number' && Number.isFinite(fenceAfterMs) && fenceAfterMs >= 0)) return undefined;
  if (!(typeof renewedAtUnixMs === 'number' && Number.isFinite(renewedAtUnixMs))) return undefined;
  // A lease never runs longer than fenceAfter past its renewal: a file that says otherwise (corrupt,
  // hand-edited, written under a clock that was ahead) must not switch fencing off until then.
  if (validUntilUnixMs !== null && validUntilUnixMs > renewedAtUnixMs + fenceAfterMs) return undefined;
  return { validUntilUnixMs, fenceAfterMs, renewedAtUnixMs };
}

/** The file's content, or undefined when it is missing or unreadable. */
export function readLeaseFileContent(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * Replaces the file atomically (temp file + rename): a reader sees the old or the new lease, never
 * half of one. Mode 0644: it holds no secret (a validity time), and on Linux the VM host processes
 * run as unprivileged per-VM users that must read it (the data dir is 0711: they reach this file
 * by name and nothing else in the dir). Synchronous on purpose: when it returns, every VM host process reads
 * the new lease (the worker starts a VM only after that).
 */
export function writeLeaseFile(file: string, lease: LeaseFile, owner?: { uid: number; gid: number }): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(lease) + '\n', { mode: 0o644 });
  // VM host processes that dropped root (macOS) run as the data dir's owner and must read it.
  if (owner) chownSync(tmp, owner.uid, owner.gid);
  renameSync(tmp, file);
}

export type FenceDecision =
  | { due: false; /** The lease now in force (the file's, else the last good one), if any. */ lease?: LeaseFile | undefined }
  | { due: true; message: string; lease?: LeaseFile | undefined };

/**
 * The VM host process's fence decision (pure).
 *
 * - A valid file: fence when `now > validUntilUnixMs`; `validUntilUnixMs: null` never fences.
 * - Missing / unreadable / invalid: the last valid lease this process read still applies (a file
 *   that vanishes extends nothing); without one, fence once `graceMs` have passed since
 *   `startedAt` (the worker writes the file before it starts any VM that has to read it).
 */
export function fenceDue(content: string | undefined, now: number, startedAt: number, graceMs: number, lastGood?: LeaseFile): FenceDecision {
  const parsed = parseLeaseFile(content);
  const lease = parsed ?? lastGood;
  if (!lease) {
    if (now - startedAt > graceMs) {
      return { due: true, message: `fenced: no valid lease file for ${seconds(now - startedAt)}s (${content === undefined ? 'missing or unreadable' : 'invalid'}); the worker holds no lease from the controller (disconnect policy reschedule)` };
    }
    return { due: false };
  }
  if (lease.validUntilUnixMs === null || now <= lease.validUntilUnixMs) return { due: false, lease };
  const since = lease.validUntilUnixMs - lease.fenceAfterMs;
  return {
    due: true,
    lease,
    message: `fenced: no lease from the controller for ${seconds(now - since)}s (lease ran out ${seconds(now - lease.validUntilUnixMs)}s ago; disconnect policy reschedule)`,
  };
}

/** Whole seconds, as fence messages show them. */
export function seconds(ms: number): number {
  return Math.max(0, Math.round(ms / 1000));
}

export interface LeaseFileWatch {
  /** Reads the file now; calls `onFence` (once) if due. */
  check(): FenceDecision;
  stop(): void;
}

/**
 * What a VM host process runs for a "reschedule" VM: reads `leaseFile` every `intervalMs` and
 * calls `onFence(message)` once when fenceDue says so. `startedAt` is when the host started.
 */
export function watchLeaseFile(
  fence: { leaseFile: string; graceMs: number },
  onFence: (message: string) => void,
  options: { intervalMs: number; startedAt: number; now?: () => number },
): LeaseFileWatch {
  const now = options.now ?? Date.now;
  let lastGood: LeaseFile | undefined;
  let fired = false;
  const check = (): FenceDecision => {
    const decision = fenceDue(readLeaseFileContent(fence.leaseFile), now(), options.startedAt, fence.graceMs, lastGood);
    if (decision.lease) lastGood = decision.lease;
    if (decision.due && !fired) {
      fired = true;
      onFence(decision.message);
    }
    return decision;
  };
  const timer = setInterval(check, options.intervalMs);
  return { check, stop: () => clearInterval(timer) };
}
