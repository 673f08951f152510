// The controller's side of its launcher (apps/controller/bin/relaunch.cjs): `fleet-controller
// run` starts node again with settings that only count at process start (the young generation's
// size, glibc malloc's arenas) and stays as the parent, forwarding signals.
import net from 'node:net';

/** Variables the launcher added to the environment (comma-separated names); relaunch.cjs sets it. */
export const ADDED_ENV = 'FLEET_CONTROLLER_ADDED_ENV';
/** The fd of a pipe from the launcher; relaunch.cjs sets it. */
export const PARENT_FD_ENV = 'FLEET_CONTROLLER_PARENT_FD';

/**
 * Drops from the environment what the launcher added (glibc read it at start; whatever the
 * controller starts gets the operator's environment) and the launcher's own variables; returns
 * the fd of the launcher's pipe, if any.
 */
export function takeLauncherEnv(env: NodeJS.ProcessEnv): number | undefined {
  const added = env[ADDED_ENV];
  const fd = Number(env[PARENT_FD_ENV]);
  delete env[ADDED_ENV];
  delete env[PARENT_FD_ENV];
  for (const name of (added ?? '').split(',')) if (name) delete env[name];
  return Number.isInteger(fd) && fd >= 3 ? fd : undefined;
}

/**
 * When started by the launcher: calls onOrphaned once the launcher is gone (its pipe closed:
 * killed with -9, say), so the controller does not run on without the process its supervisor
 * knows. Does not keep the process alive by itself.
 */
export function watchLauncher(fd: number | undefined, onOrphaned: () => void): void {
  if (fd === undefined) return;
  let pipe: net.Socket;
  try {
    pipe = new net.Socket({ fd, readable: true, writable: false });
  } catch {
    return; // not a pipe (a variable left over from elsewhere): nothing to watch
  }
  pipe.on('error', () => {});
  pipe.on('data', () => {});
  pipe.once('close', onOrphaned);
  pipe.unref();
}

/**
 * Shutdown on SIGINT/SIGTERM. A signal sent to the whole process group (Ctrl-C in a terminal,
 * systemd's KillMode=control-group) reaches the controller both directly and through the
 * launcher: a repeat within repeatMs of the first is the same request. A later one ends the
 * process at once (the default action), as before the launcher.
 */
export function onShutdownSignals(shutdown: (signal: NodeJS.Signals) => void, repeatMs = 1000, proc: NodeJS.Process = process): void {
  let first: number | undefined;
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];
  const handler = (signal: NodeJS.Signals) => {
    if (first === undefined) {
      first = Date.now();
      shutdown(signal);
      return;
    }
    if (Date.now() - first < repeatMs) return;
    for (const s of signals) proc.removeListener(s, handler);
    proc.kill(proc.pid, signal);
  };
  for (const s of signals) proc.on(s, handler);
}
