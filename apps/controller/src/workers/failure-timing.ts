// The timings of the failure model (docs/architecture.md, "Failure model"), checked together:
//
//   heartbeat ─ every heartbeatIntervalMs the worker says it is alive; the controller answers each
//               heartbeat with a lease renewal.
//   suspect   ─ no heartbeat for suspectAfterMs: the worker's live VMs show `unknown`.
//   fence     ─ the worker's lease (its heartbeat's send time + fenceAfterMs) runs out: it stops
//               its "reschedule" VMs itself, also when the worker process is dead (the VM host
//               processes watch the lease file).
//   lost      ─ no heartbeat for lostAfterMs: "reschedule" VMs fail and are re-placed per their
//               restart policy; "wait" VMs stay `unknown`.
//
// lostAfter − fenceAfter is the safety margin: it must cover the worker's forced stop, a lease
// renewal in flight and the liveness tick. Both sides measure durations on their own clock, so
// clock offsets between machines do not matter; only their rates (negligible) do.

export interface FailureTimings {
  heartbeatIntervalMs: number;
  suspectAfterMs: number;
  fenceAfterMs: number;
  lostAfterMs: number;
}

/** Smallest lostAfter − fenceAfter accepted. */
export const MIN_FENCE_MARGIN_MS = 2_000;
/** The controller's liveness tick: a lost worker is noticed at most this late. */
export const LIVENESS_TICK_MS = 1_000;

export function failureTimings(o: { heartbeatIntervalMs: number; lostAfterMs: number; fenceAfterMs?: number | undefined }): FailureTimings {
  const hb = o.heartbeatIntervalMs;
  const lost = o.lostAfterMs;
  if (!(hb > 0)) throw new Error(`the heartbeat interval must be positive (got ${hb} ms)`);
  if (!(lost >= 3 * hb)) throw new Error(`--worker-offline-timeout (${lost} ms) must be at least 3 heartbeat intervals (${3 * hb} ms): one late heartbeat must not lose a worker`);
  const margin = Math.max(MIN_FENCE_MARGIN_MS, 2 * hb, Math.round(lost / 4));
  const fence = o.fenceAfterMs ?? lost - margin;
  if (!(fence >= 2 * hb)) {
    throw new Error(
      `--worker-fence-after (${fence} ms) must be at least 2 heartbeat intervals (${2 * hb} ms), or one late renewal stops VMs; ` +
        `raise --worker-offline-timeout (now ${lost} ms) or lower --heartbeat-interval`,
    );
  }
  if (!(lost - fence >= Math.max(MIN_FENCE_MARGIN_MS, LIVENESS_TICK_MS + hb))) {
    throw new Error(
      `--worker-fence-after (${fence} ms) must end at least ${Math.max(MIN_FENCE_MARGIN_MS, LIVENESS_TICK_MS + hb)} ms before --worker-offline-timeout (${lost} ms): ` +
        'a worker must have stopped its VMs before the controller re-places them',
    );
  }
  return { heartbeatIntervalMs: hb, suspectAfterMs: Math.min(2 * hb + 1_000, fence), fenceAfterMs: fence, lostAfterMs: lost };
}
