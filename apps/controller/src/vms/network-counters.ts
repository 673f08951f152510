// Packet-filter counters of running VMs, as their workers last reported them. Kept in memory
// only: they change every second, are cheap to re-learn (workers send them every few seconds)
// and are only ever shown, never used for a decision.
import type { VmNetworkCounters__Output } from '@fleet/proto';

export interface NetworkCounters {
  attempt: number;
  /** Frames the VM sent, by verdict ("pass", "ip_spoof", ...); zero counts are left out. */
  fromVm: Record<string, number>;
  /** Frames for the VM, by verdict. */
  fromHost: Record<string, number>;
  sampledAt: string;
}

const VERDICT = /^[a-z][a-z0-9_]{0,31}$/;
const VM_ID = /^[A-Za-z0-9_.:-]{1,64}$/;
/** A report about a VM that is not re-sent for this long is dropped (stopped, moved, deleted). */
const STALE_MS = 5 * 60_000;
const MAX_ENTRIES = 100_000;
const MAX_DATE_MS = 8.64e15;

export class NetworkCounterStore {
  private readonly byVm = new Map<string, NetworkCounters & { workerId: string; receivedAt: number }>();

  /** Takes a worker's report; malformed entries are skipped and counted. */
  record(workerId: string, reports: VmNetworkCounters__Output[], now = Date.now()): { accepted: number; rejected: number } {
    let accepted = 0;
    let rejected = 0;
    for (const r of reports) {
      const fromVm = counts(r.fromVm);
      const fromHost = counts(r.fromHost);
      if (!VM_ID.test(r.vmId ?? '') || !Number.isInteger(r.attempt) || !fromVm || !fromHost) {
        rejected++;
        continue;
      }
      const sampled = Number(r.sampledAtUnixMs);
      if (this.byVm.size >= MAX_ENTRIES && !this.byVm.has(r.vmId)) this.prune(now);
      if (this.byVm.size >= MAX_ENTRIES && !this.byVm.has(r.vmId)) {
        rejected++;
        continue;
      }
      this.byVm.set(r.vmId, {
        workerId,
        attempt: r.attempt,
        fromVm,
        fromHost,
        // Date's range ends at 8.64e15 ms; past it toISOString() throws (a uint64 from a worker can be anything).
        sampledAt: new Date(Number.isFinite(sampled) && sampled > 0 && sampled <= MAX_DATE_MS ? sampled : now).toISOString(),
        receivedAt: now,
      });
      accepted++;
    }
    return { accepted, rejected };
  }

  /** The latest counters of this VM's current attempt, reported by the worker it is placed on, or null. */
  get(vmId: string, attempt: number, workerId: string | null, now = Date.now()): NetworkCounters | null {
    const c = this.byVm.get(vmId);
    if (!c || c.attempt !== attempt || c.workerId !== workerId || now - c.receivedAt > STALE_MS) return null;
    return { attempt: c.attempt, fromVm: c.fromVm, fromHost: c.fromHost, sampledAt: c.sampledAt };
  }

  private prune(now: number): void {
    for (const [id, c] of this.byVm) if (now - c.receivedAt > STALE_MS) this.byVm.delete(id);
  }
}

function counts(map: Record<string, string> | undefined): Record<string, number> | null {
  const out: Record<string, number> = {};
  const entries = Object.entries(map ?? {});
  if (entries.length > 64) return null;
  for (const [k, v] of entries) {
    const n = Number(v);
    if (!VERDICT.test(k) || !Number.isSafeInteger(n) || n < 0) return null;
    if (n > 0) out[k] = n;
  }
  return out;
}
