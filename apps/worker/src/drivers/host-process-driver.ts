// The skeleton both real drivers share (qemu on Linux, vz on macOS): every instance runs in its
// own detached VM host process with a control socket and a status.jsonl, so the VM outlives the
// worker and a new worker re-attaches. This class holds what is the same for both:
//   - the instances and their status (patch/publish, subscribe, list, get, wait until running),
//   - watching a host's control socket, and learning how it ended when the socket closes,
//   - starting a detached host process and waiting for its control socket,
//   - halting: a graceful (or forced) stop request, a hard kill after the budget, the final state.
// The drivers add what differs: what a host's status means (qemu: NAT reservations and orphan
// QEMUs; vz: macOS slots and the lease fallback), where the socket lives, and what to clean up.
import { spawn } from 'node:child_process';
import { closeSync, constants as fsc, existsSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { STATUS_LOG, type VmHostStatus } from '../host-process/qemu-host-config.ts';
import { controlRequest, watchControl, type ControlWatch } from '../host-process/control-client.ts';
import { DriverError, fencedMessage, instanceKey, type InstanceRef, type InstanceSpec, type InstanceStatus, type InstanceStatusListener } from './driver.ts';
import { StatusListeners, waitUntilRunning } from './instance-status.ts';

/** What every driver records about an instance (instance.json). */
export interface InstanceRecordBase {
  vmId: string;
  attempt: number;
  name: string;
  generation: string;
  spec: InstanceSpec;
  mac: string;
}

export interface HeldInstance<R extends InstanceRecordBase> {
  rec: R;
  /** The instance's directory (instance.json, the host's config, its logs). */
  dir: string;
  status: InstanceStatus;
  watch?: ControlWatch | undefined;
  /** Set while this driver is stopping/removing it (a host exit is then expected). */
  stopping?: boolean;
}

/** The last line a host process wrote to status.jsonl. */
export interface LastStatus {
  state: string;
  ip?: string | null;
  message?: string;
  failureKind?: string;
  qemuPid?: number;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The directory name of an instance (vmId made file-name safe, then its attempt). */
export function instanceDirName(ref: InstanceRef): string {
  return `${encodeURIComponent(ref.vmId).replace(/\./g, '%2E')}.${ref.attempt}`;
}

/** What every control request names, so that only this instance's host process obeys it. */
export function targetOf(rec: { vmId: string; attempt: number }): { vmId: string; attempt: number } {
  return { vmId: rec.vmId, attempt: rec.attempt };
}

/**
 * A file a VM's user may have written (status.jsonl of an unprivileged host), read by root
 * without following a symlink (it could otherwise point at any file root can read).
 */
export function readHostFile(file: string): string {
  const fd = openSync(file, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  try {
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/** Every status line in `hostDir`'s status.jsonl (empty when there is none). */
export function statusLines(hostDir: string): LastStatus[] {
  try {
    return readHostFile(path.join(hostDir, STATUS_LOG))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as LastStatus);
  } catch {
    return [];
  }
}

/** The last line of status.jsonl in `hostDir`, or undefined. */
export function lastStatusLine(hostDir: string): LastStatus | undefined {
  return statusLines(hostDir).at(-1);
}

/** A detached host process: it survives the worker; `exited` tells whether it already ended. */
export interface DetachedHost {
  exited: Promise<void>;
  hasExited(): boolean;
}

/**
 * Spawns a host process detached, its stdout/stderr appended to `logFile` (root's, 0600).
 * `inheritFds`: fds the child gets as its fds 3, 4, … (the caller closes its own copies afterwards).
 */
export function spawnDetachedHost(cmd: string, args: string[], o: { logFile: string; env?: NodeJS.ProcessEnv; inheritFds?: readonly number[] }): DetachedHost {
  const logFd = openSync(o.logFile, 'a', 0o600);
  const stdio: Array<'ignore' | number> = ['ignore', logFd, logFd, ...(o.inheritFds ?? [])];
  const child = spawn(cmd, args, { detached: true, stdio, ...(o.env ? { env: o.env } : {}) });
  closeSync(logFd);
  child.unref();
  let gone = false;
  const exited = new Promise<void>((r) =>
    child.once('exit', () => {
      gone = true;
      r();
    }),
  );
  return { exited, hasExited: () => gone };
}

export abstract class HostProcessDriver<R extends InstanceRecordBase, H extends HeldInstance<R>> {
  protected readonly held = new Map<string, H>();
  protected readonly listeners = new StatusListeners();
  protected closed = false;

  /** How long start() waits for the host to report running. */
  protected abstract startTimeoutMs(): number;
  /** The host's graceful stop budget (the host stops hard after it). */
  protected abstract stopTimeoutMs(): number;
  /** Scans the instance dirs once: re-attaches to live hosts, reports dead ones. */
  protected abstract load(): Promise<void>;
  /** The control socket to talk to for this instance (the driver checks it is trustworthy). */
  protected abstract controlSocket(h: H): string;
  /** A status the host reported (from `watch` or `status`). */
  protected abstract fromHost(h: H, s: VmHostStatus, emit: boolean): void;
  /** The host process is gone: its last status line says how the VM ended. */
  protected abstract fromDeadHost(h: H, emit: boolean): void;

  /** Records how an instance ended; drivers extend it (vz frees its macOS slot). */
  protected ended(h: H, state: 'stopped' | 'failed', message: string | undefined, _failureKind?: string, emit = true): void {
    this.patch(h, { state, ip: undefined, message: state === 'failed' ? message : fencedMessage(message) }, emit);
  }

  /** After a halt, once the host is gone or given up on (qemu: the TAP goes). */
  protected async afterHalt(_h: H): Promise<void> {}

  subscribe(listener: InstanceStatusListener): () => void {
    return this.listeners.subscribe(listener);
  }

  async list(): Promise<InstanceStatus[]> {
    await this.load();
    return [...this.held.values()].map((h) => ({ ...h.status }));
  }

  protected async get(ref: InstanceRef): Promise<H> {
    await this.load();
    const h = this.held.get(instanceKey(ref));
    if (!h) throw new DriverError(`no instance ${instanceKey(ref)} on this worker`);
    return h;
  }

  protected patch(h: H, p: Partial<InstanceStatus>, emit = true): InstanceStatus {
    h.status = this.listeners.publish(h.status, p, emit);
    return { ...h.status };
  }

  protected waitRunning(h: H): Promise<InstanceStatus> {
    return waitUntilRunning(() => h.status, h.rec.name, this.startTimeoutMs());
  }

  /** Asks a host for its status (undefined: no host answers there). */
  protected probe(h: H, timeoutMs = 2000): Promise<VmHostStatus | undefined> {
    return controlRequest(this.controlSocket(h), 'status', timeoutMs, targetOf(h.rec)).then(
      (r) => r.status,
      () => undefined,
    );
  }

  /** Follows the host's status until its socket closes, then learns how it ended. */
  protected attach(h: H): void {
    h.watch?.close();
    const w = watchControl(this.controlSocket(h), (s) => this.fromHost(h, s, true), undefined, targetOf(h.rec));
    h.watch = w;
    void w.closed.then(() => {
      if (h.watch !== w || this.closed) return;
      h.watch = undefined;
      this.fromDeadHost(h, true);
    });
  }

  /**
   * Waits until the just-started host's control socket exists. Resolves when it does; otherwise
   * (the host exited, or did not answer in time) resolves with its last status line and why.
   */
  protected async waitForControlSocket(sock: string, host: DetachedHost, hostDir: string, logFile: string): Promise<{ ok: true } | { ok: false; why: string; last: LastStatus | undefined }> {
    const deadline = Date.now() + this.startTimeoutMs();
    while (!existsSync(sock)) {
      if (host.hasExited() || Date.now() > deadline) {
        const last = lastStatusLine(hostDir);
        return { ok: false, last, why: last?.message ?? `VM host process ${host.hasExited() ? 'exited' : 'did not answer'} (see ${logFile})` };
      }
      await sleep(25);
    }
    return { ok: true };
  }

  /**
   * Stop (graceful) or kill (hard, `reason` recorded): asks the host, waits for it to end within
   * its stop budget plus 5 s, kills it hard after that, and records the instance stopped (a
   * failure the host reported stays, unless this was a requested stop or kill with a reason).
   */
  protected async halt(h: H, how: 'stop' | 'kill', reason?: string): Promise<InstanceStatus> {
    const sock = this.controlSocket(h);
    if (!h.watch) {
      // Maybe alive but not watched (e.g. start() failed half way): ask directly.
      if (!(await this.probe(h, 1000))) {
        if (h.status.state !== 'failed') this.ended(h, 'stopped', h.status.state === 'stopped' ? h.status.message : undefined);
        await this.afterHalt(h);
        return { ...h.status };
      }
      this.attach(h);
    }
    h.stopping = true;
    const w = h.watch!;
    await controlRequest(sock, how, 3000, { ...targetOf(h.rec), ...(reason ? { reason } : {}) }).catch(() => {});
    const timedOut = await Promise.race([w.closed.then(() => false), sleep(this.stopTimeoutMs() + 5000).then(() => true)]);
    if (timedOut) {
      await controlRequest(sock, 'kill', 3000, targetOf(h.rec)).catch(() => {});
      await Promise.race([w.closed, sleep(5000)]);
    }
    await this.afterHalt(h);
    // The watcher's close handler has recorded how it ended; a requested stop is "stopped".
    await sleep(0);
    if (h.status.state !== 'failed' || how === 'stop' || reason) this.ended(h, 'stopped', reason);
    return { ...h.status };
  }

  /** Stops following every host (the VMs keep running) and drops the listeners. */
  protected detachAll(): void {
    this.closed = true;
    for (const h of this.held.values()) h.watch?.close();
    this.listeners.clear();
  }
}
