// Bookkeeping both VM-host-process drivers (qemu, vz) share: merging a status change and telling
// listeners only when something changed, waiting for a start to settle, and writing an
// instance record atomically.
import { rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DriverError, type InstanceStatus, type InstanceStatusListener } from './driver.ts';

/** The driver's subscribers; `publish` merges a change into a status and notifies them if it changed. */
export class StatusListeners {
  private readonly listeners = new Set<InstanceStatusListener>();

  subscribe(listener: InstanceStatusListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  clear(): void {
    this.listeners.clear();
  }

  /** `current` + `change` (undefined fields removed); listeners hear about it only if it differs and `emit`. */
  publish(current: InstanceStatus, change: Partial<InstanceStatus>, emit = true): InstanceStatus {
    const before = JSON.stringify(current);
    const next: InstanceStatus = { ...current, ...change };
    for (const k of Object.keys(next) as Array<keyof InstanceStatus>) if (next[k] === undefined) delete next[k];
    if (emit && JSON.stringify(next) !== before) {
      for (const l of this.listeners) {
        try {
          l({ ...next });
        } catch {
          /* a listener's problem */
        }
      }
    }
    return next;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until the instance leaves "starting"; resolves if it runs, rejects with why it did not. */
export async function waitUntilRunning(status: () => InstanceStatus, name: string, timeoutMs: number): Promise<InstanceStatus> {
  const deadline = Date.now() + timeoutMs;
  while (status().state === 'starting') {
    if (Date.now() > deadline) throw new DriverError(`start ${name}: not running after ${timeoutMs} ms`);
    await sleep(20);
  }
  const s = status();
  if (s.state !== 'running') throw new DriverError(`start ${name}: ${s.message ?? s.state}`);
  return { ...s };
}

/** instance.json in a run dir, replaced atomically (a crash never leaves half a record). */
export async function writeInstanceRecord(dir: string, record: unknown): Promise<void> {
  const tmp = path.join(dir, 'instance.json.tmp');
  await writeFile(tmp, JSON.stringify(record, null, 2), { mode: 0o600 });
  await rename(tmp, path.join(dir, 'instance.json'));
}
