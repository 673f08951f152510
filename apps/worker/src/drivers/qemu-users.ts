// Unprivileged VM users for the QEMU driver (issue 14). Every VM instance gets its own numeric
// uid (gid = uid; no /etc/passwd entry needed) from a configured range, persisted in its
// instance.json so a restarted worker adopts it with the same ids, and free again at remove.
// Its VM host process and its QEMU run as that uid with no capabilities (empty bounding set),
// no_new_privs, and QEMU under its seccomp sandbox. Two VMs never share a uid, so plain Unix
// permissions (DAC) keep one VM's disk, sockets and logs away from another VM's processes.
//
// Layout of a run dir with VM users (the worker is root and owns what decides the VM's policy):
//   <dir>/               root:root 0711   instance.json, config.json (root:<vm gid> 0640), host.log (0600)
//   <dir>/disk.qcow2     <uid>:<uid> 0600 QEMU writes it; it cannot replace it (root's dir)
//   <dir>/run/           <uid>:<uid> 0700 control.sock, qmp.sock, status.jsonl, serial.log, qemu.log
import { copyFile, chmod, chown, lstat, mkdir, rename, stat } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import path from 'node:path';

/** The uid range VM instances draw from (`--vm-uid-base`, `--vm-uid-count`). */
export interface VmUserRange {
  base: number;
  count: number;
}

export const DEFAULT_VM_UID_BASE = 200_000;
export const DEFAULT_VM_UID_COUNT = 1000;
/** The subdirectory of a run dir the VM's user owns. */
export const VM_RUN_SUBDIR = 'run';

/** Validates a range: above the system/user ids (≥ 1000, ≠ 65534 nobody), below 2^32-1. */
export function validateVmUserRange(r: VmUserRange): VmUserRange {
  if (!Number.isInteger(r.base) || r.base < 1000) throw new Error(`VM uid base must be an integer >= 1000 (got ${r.base})`);
  if (!Number.isInteger(r.count) || r.count < 1 || r.count > 1_000_000) throw new Error(`VM uid count must be 1..1000000 (got ${r.count})`);
  const last = r.base + r.count - 1;
  if (last >= 0xffff_fffe) throw new Error(`VM uid range ${r.base}..${last} passes 4294967294`);
  if (r.base <= 65534 && last >= 65534) throw new Error(`VM uid range ${r.base}..${last} contains 65534 (nobody); choose another base`);
  return r;
}

/** True when `uid` is a number of the range (persisted instance files are checked with this). */
export function inVmUserRange(r: VmUserRange, uid: unknown): uid is number {
  return typeof uid === 'number' && Number.isInteger(uid) && uid >= r.base && uid < r.base + r.count;
}

/** The lowest uid of the range not in `used`; throws when the range is exhausted. */
export function allocateVmUid(r: VmUserRange, used: ReadonlySet<number>): number {
  for (let uid = r.base; uid < r.base + r.count; uid++) if (!used.has(uid)) return uid;
  throw new Error(`no free VM uid: all ${r.count} of ${r.base}..${r.base + r.count - 1} are in use (raise --vm-uid-count)`);
}

/**
 * The command that starts a VM host process as its VM user: setpriv (util-linux) sets uid/gid,
 * drops supplementary groups, every capability (inheritable, ambient, bounding set) and sets
 * no_new_privs before node runs, so nothing of root survives the exec. Under `ip netns exec`
 * when the NAT network lives in a namespace (the TAP must be opened there).
 */
export function vmHostCommand(o: { uid: number; netns?: string | undefined; node: string; launch: string; configFile: string }): [string, string[]] {
  if (!Number.isInteger(o.uid) || o.uid <= 0) throw new Error(`refusing to start a VM host process as uid ${o.uid}`);
  const priv = [
    'setpriv',
    `--reuid=${o.uid}`,
    `--regid=${o.uid}`,
    '--clear-groups',
    '--inh-caps=-all',
    '--bounding-set=-all',
    '--no-new-privs',
    '--',
    o.node,
    o.launch,
    o.configFile,
  ];
  return o.netns ? ['ip', ['netns', 'exec', o.netns, ...priv]] : [priv[0]!, priv.slice(1)];
}

/** Makes a run dir for VM users (see the layout above); idempotent, repairs owners and modes. */
export async function prepareRunDir(dir: string, uid: number): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o711 });
  await chown(dir, 0, 0);
  await chmod(dir, 0o711);
  const run = path.join(dir, VM_RUN_SUBDIR);
  // The VM's user can write only inside <dir>/run; a symlink there is never followed as a dir.
  const st = await lstat(run).catch(() => undefined);
  if (st && !st.isDirectory()) throw new Error(`${run} is not a directory`);
  if (!st) await mkdir(run, { mode: 0o700 });
  await chown(run, uid, uid);
  await chmod(run, 0o700);
  return run;
}

/** Hands a file (the instance's disk) to the VM's user, readable and writable by it alone. */
export async function giveToVmUser(file: string, uid: number): Promise<void> {
  await chown(file, uid, uid);
  await chmod(file, 0o600);
}

/**
 * Every directory from `/` to `dir` must let others traverse it (o+x), or a VM user cannot reach
 * its run dir. Returns the first one that does not (the fix is `chmod o+x` / 0711 on it).
 */
export async function firstUntraversable(dir: string): Promise<string | undefined> {
  let p = path.resolve(dir);
  const chain: string[] = [];
  for (;;) {
    chain.unshift(p);
    const up = path.dirname(p);
    if (up === p) break;
    p = up;
  }
  for (const d of chain) {
    const st = await stat(d).catch(() => undefined);
    if (!st) return undefined; // created later by the driver (0711)
    if ((st.mode & 0o001) === 0) return d;
  }
  return undefined;
}

/**
 * The guest kernel and initrd usually live in root's cache (~/.cache/fleet, under a 0700 home):
 * a VM user cannot open them there. They are copied once per image version into
 * <qemu data dir>/guest/<version>/ (root-owned, 0755 dirs, 0644 files: read-only for every VM).
 */
export async function publishGuestFiles(into: string, files: { kernel: string; initrd: string }): Promise<{ kernel: string; initrd: string }> {
  const version = path.basename(path.dirname(files.kernel));
  const dir = path.join(into, version);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await chmod(into, 0o755);
  await chmod(dir, 0o755);
  const out = { kernel: path.join(dir, path.basename(files.kernel)), initrd: path.join(dir, path.basename(files.initrd)) };
  for (const k of ['kernel', 'initrd'] as const) {
    const src = await stat(files[k]);
    const dst = await stat(out[k]).catch(() => undefined);
    if (!dst || dst.size !== src.size || dst.mtimeMs < src.mtimeMs) {
      // Unique per call: two VMs starting at once may both copy (the last rename wins, same bytes).
      const tmp = `${out[k]}.${randomUUID()}.tmp`;
      await copyFile(files[k], tmp);
      await chmod(tmp, 0o644);
      await rename(tmp, out[k]);
    }
  }
  return out;
}
