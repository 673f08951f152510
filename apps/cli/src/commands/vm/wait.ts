// --wait: following a VM until it runs (or stops), and until it is gone.
import type { VmObject } from '@fleet/api';
import type { ApiClient } from '../../client/api-client.ts';
import type { TransferProgress } from '../../client/image-types.ts';
import { ApiError, InterruptedError, UnreachableError, WaitFailedError } from '../../errors.ts';
import { sleep } from '../../io.ts';
import { formatDuration, relativeTime } from '../../output/durations.ts';
import type { ProgressDisplay } from '../../output/progress.ts';
import type { Runtime } from '../../runtime.ts';
import { describe } from './shared.ts';
import { pullOf } from './views.ts';

export type WaitGoal = 'running' | 'stopped';

/**
 * Watches a VM until it reaches `goal` (for `running`: running AND with an IP
 * address, both within `timeoutMs`). Fails with WaitFailedError when it fails
 * without a restart planned, is deleted, or the deadline passes. Reconnects
 * when the stream drops.
 */
export async function waitForVm(
  rt: Runtime,
  client: ApiClient,
  name: string,
  goal: WaitGoal,
  timeoutMs: number,
  progress: (line: string) => void,
  opts: { display?: ProgressDisplay | null } = {},
): Promise<VmObject> {
  const deadline = Date.now() + timeoutMs;
  let last: VmObject | null = null;
  let shown = '';
  let lostConnection: UnreachableError | null = null;
  let awaitingIp = false;
  // While the worker pulls the VM's image (issue 15) the reason changes with every percent: the
  // pull is drawn as a bar (lines every 10 % off a terminal) instead of one line per change.
  let pulling: { label: string; last: TransferProgress } | null = null;
  const show = (vm: VmObject) => {
    const pull = pullOf(vm);
    const display = opts.display;
    if (pull) {
      const label = `pulling ${vm.image}`;
      if (display) display.update([{ key: 'pull', label, progress: pull }]);
      else if (!pulling) progress(`  ${label}`);
      pulling = { label, last: pull };
      shown = '';
      return;
    }
    if (pulling) {
      // The pull ended: complete when the VM moved on to start, as last seen otherwise.
      const moved = vm.state === 'starting' || vm.state === 'running';
      const total = pulling.last.bytesTotal;
      display?.end(moved && total > 0 ? [{ key: 'pull', label: pulling.label, progress: { bytesDone: total, bytesTotal: total, percent: 100 }, status: 'done' }] : undefined);
      pulling = null;
    }
    const line = describe(vm);
    if (line !== shown) progress(`  ${line}`);
    shown = line;
  };
  // What the wait was still waiting for when it ran out: to run, or (running) for an address.
  const timedOut = () => {
    const limit = `timed out after ${formatDuration(timeoutMs)}`;
    if (goal === 'running' && last?.state === 'running' && !last.ip) {
      return new WaitFailedError(
        `${limit} waiting for vm "${name}" to report an IP address; it is running${last.worker ? ` on ${last.worker}` : ''} but has none yet (the worker learns it from the VM's DHCP request: is the guest's network up?)`,
        last,
      );
    }
    const what = goal === 'running' ? 'to be running with an IP address' : `to be ${goal}`;
    return new WaitFailedError(`${limit} waiting for vm "${name}" ${what}${last ? `; it is ${describe(last)}` : ''}`, last);
  };
  try {
    return await watchUntil();
  } finally {
    // A wait that ends mid-pull (failure, timeout, Ctrl-C) leaves the bar as last drawn.
    if (pulling) opts.display?.end();
  }

  async function watchUntil(): Promise<VmObject> {
    for (;;) {
      if (Date.now() >= deadline) {
        if (lostConnection) throw lostConnection;
        throw timedOut();
      }
      const stop = new AbortController();
      const stopTimer = setTimeout(() => stop.abort(), deadline - Date.now());
      try {
        for await (const ev of client.watchVm(name, { stop: stop.signal })) {
          lostConnection = null;
          if (ev.type === 'DELETED') throw new WaitFailedError(`vm "${name}" was deleted while waiting for it to be ${goal}`, ev.vm);
          const vm = ev.vm;
          last = vm;
          show(vm);
          if (vm.state === goal) {
            if (goal !== 'running' || vm.ip) return vm;
            // Running: the address follows once the guest asks DHCP for one.
            if (!awaitingIp) progress('  waiting for it to report an IP address');
            awaitingIp = true;
            continue;
          }
          if (vm.state === 'failed') {
            if (vm.restartAt) {
              progress(`  failed; restarting ${relativeTime(vm.restartAt, Date.now())} (restart policy on-failure)`);
              continue;
            }
            throw new WaitFailedError(`vm "${name}" failed: ${vm.reason || 'no reason given'}`, vm);
          }
          if (vm.state === 'deleting') throw new WaitFailedError(`vm "${name}" is being deleted`, vm);
          if (goal === 'running' && vm.state === 'stopped' && vm.powerState === 'stopped') {
            throw new WaitFailedError(`vm "${name}" is stopped and its desired power state is stopped`, vm);
          }
        }
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          throw new WaitFailedError(`vm "${name}" was deleted while waiting for it to be ${goal}`, last);
        }
        if (!(err instanceof UnreachableError)) throw err;
        if (!lostConnection) progress(`  lost the connection to the controller (${err.message}); retrying`);
        lostConnection = err;
      } finally {
        clearTimeout(stopTimer);
      }
      // The stream ended: the deadline passed, or the controller closed it.
      if (!stop.signal.aborted) await sleep(Math.min(1_000, Math.max(0, deadline - Date.now())), rt.signal).catch(() => {
        throw new InterruptedError();
      });
    }
  }
}

/** Polls until GET says 404, or the deadline passes. */
export async function waitForDeletion(rt: Runtime, client: ApiClient, name: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: VmObject | null = null;
  for (;;) {
    try {
      last = await client.getVm(name);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return;
      throw err;
    }
    if (Date.now() >= deadline) {
      throw new WaitFailedError(`timed out after ${formatDuration(timeoutMs)} waiting for vm "${name}" to be deleted; it is ${describe(last)}`, last);
    }
    await sleep(Math.min(500, Math.max(0, deadline - Date.now())), rt.signal).catch(() => {
      throw new InterruptedError();
    });
  }
}
