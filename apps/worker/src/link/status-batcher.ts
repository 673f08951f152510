// Coalesces bursts of VmStatus changes into one VmStatusReport. The first change after a
// flush arms a single timer; everything that changes until it fires goes out together,
// latest status per (vmId, attempt) winning. So a status is never held longer than
// `flushMs`, and an idle worker has no timer at all.
import type { VmStatus } from '@fleet/proto';

export class StatusBatcher {
  readonly #flushMs: number;
  readonly #send: (vms: VmStatus[]) => void;
  #pending = new Map<string, VmStatus>();
  #timer: NodeJS.Timeout | undefined;

  constructor(flushMs: number, send: (vms: VmStatus[]) => void) {
    this.#flushMs = flushMs;
    this.#send = send;
  }

  add(status: VmStatus): void {
    this.#pending.set(`${status.vmId}#${status.attempt}`, status);
    if (this.#timer) return;
    if (this.#flushMs <= 0) {
      this.flush();
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.flush();
    }, this.#flushMs);
  }

  get size(): number {
    return this.#pending.size;
  }

  flush(): void {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#pending.size === 0) return;
    const vms = [...this.#pending.values()];
    this.#pending = new Map();
    this.#send(vms);
  }

  /** Drops pending statuses (a fresh Hello will carry the full state). */
  clear(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pending = new Map();
  }
}
