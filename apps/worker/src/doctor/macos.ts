// macOS (vz driver) doctor checks:
// - every VM user has a GUI login session (`gui/<uid>`): macOS guests 15.2+ fail with
//   VZErrorDomain code 1 without one (../macos/launch-agent.ts);
// - the data dir and the signed node copy are root-owned and not writable by group/others: the
//   root worker signs and runs <data-dir>/vm-host-node/node, so anyone who can replace it (or
//   rename a directory above it) runs code as root.
// The permission checks are plain stat()s and run on any platform (tested on Linux); the driver
// list adds them only on darwin.
import { realpath, stat as fsStat } from 'node:fs/promises';
import path from 'node:path';
import { guiSessionState, noGuiSessionFix } from '../macos/launch-agent.ts';
import { signedNodePaths } from '../macos/codesign.ts';
import { runCommand, type RunCommand } from '../macos/run-command.ts';
import { fail, ok, skip, warn, type Finding } from './check.ts';

export interface VmUser {
  uid: number;
  /** Login name, when known. */
  name?: string;
}

export type StatFn = (p: string) => Promise<{ uid: number; mode: number }>;

const label = (u: VmUser): string => (u.name ? `${u.name} (uid ${u.uid})` : `uid ${u.uid}`);

/** uid → login name via `id -nu` (best effort: undefined if unknown). */
async function nameOf(uid: number, run: RunCommand): Promise<string | undefined> {
  const r = await run('/usr/bin/id', ['-nu', String(uid)]);
  const n = r.stdout.trim();
  return r.code === 0 && n !== '' ? n : undefined;
}

export type VmUsersResolution = { users: VmUser[]; source: string } | { none: string };

/**
 * The VM users of a vz worker: what `fleet-worker run --vm-user` names (names or uids). There is
 * no fallback: the vz driver refuses to start without one, and the data dir's owner is root.
 */
export async function resolveVzVmUsers(o: { configured?: readonly string[]; run?: RunCommand }): Promise<VmUsersResolution> {
  const run = o.run ?? runCommand;
  if (!o.configured || o.configured.length === 0) {
    return { none: 'no VM user given, so no GUI session to check (the vz driver needs `fleet-worker run --vm-user NAME`)' };
  }
  const users: VmUser[] = [];
  for (const c of o.configured) {
    if (/^\d+$/.test(c)) {
      const uid = Number(c);
      const name = await nameOf(uid, run);
      users.push(name ? { uid, name } : { uid });
      continue;
    }
    const r = await run('/usr/bin/id', ['-u', c]);
    if (r.code !== 0 || !/^\d+$/.test(r.stdout.trim())) return { none: `VM user ${JSON.stringify(c)} does not exist (id -u: ${r.stderr.trim() || `exit ${r.code}`})` };
    users.push({ uid: Number(r.stdout.trim()), name: c });
  }
  return { users, source: '--vm-user' };
}

/** One VM user's GUI session (`launchctl print gui/<uid>`). */
export async function checkGuiSession(user: VmUser, run: RunCommand = runCommand): Promise<Finding> {
  const s = await guiSessionState(user.uid, { run });
  if (s.active) return ok(`${label(user)}: ${s.detail}`);
  if (/not permitted/i.test(s.detail)) return warn(`${label(user)}: cannot look at gui/${user.uid} (${s.detail})`, 'run doctor as root: sudo fleet-worker doctor --driver vz');
  return fail(`${label(user)} has no GUI login session: ${s.detail}; macOS guests fail to start (VZErrorDomain code 1)`, noGuiSessionFix(user.uid));
}

/** Every VM user has a GUI login session. */
export async function checkVmUserGuiSessions(o: { configured?: readonly string[]; run?: RunCommand }): Promise<Finding> {
  const run = o.run ?? runCommand;
  const resolved = await resolveVzVmUsers({ ...o, run });
  if ('none' in resolved) {
    return warn(resolved.none, 'fleet-worker doctor --driver vz --vm-user NAME (the user VMs run as, logged in graphically: automatic login; docs/macos.md)');
  }
  const results = await Promise.all(resolved.users.map((u) => checkGuiSession(u, run)));
  const worst = results.find((r) => r.status === 'fail') ?? results.find((r) => r.status === 'warn');
  const detail = `${results.map((r) => r.detail).join('; ')} [VM users: ${resolved.source}]`;
  if (!worst) return ok(detail);
  return { status: worst.status, detail, fix: worst.fix! };
}

/** "/a/b/c" → ["/", "/a", "/a/b", "/a/b/c"]. */
function withParents(p: string): string[] {
  const out: string[] = [];
  let cur = p;
  for (;;) {
    out.unshift(cur);
    const up = path.dirname(cur);
    if (up === cur) return out;
    cur = up;
  }
}

const octal = (mode: number): string => (mode & 0o7777).toString(8).padStart(4, '0');

/**
 * Each target and every directory above it (up to `stopAt`, default /) must be owned by root
 * (`owner`) and not writable by group or others — the rule the worker itself applies before it
 * runs the signed node as root. No exception for sticky directories: the worker makes none.
 * Paths are checked as resolved (realpath: /var → /private/var). Missing targets are reported,
 * not failed: the worker creates them at start.
 */
export async function checkRootOnlyPaths(targets: readonly string[], o: { owner?: number; stat?: StatFn; what?: string; stopAt?: string } = {}): Promise<Finding> {
  const owner = o.owner ?? 0;
  const st = o.stat ?? fsStat;
  const problems: Array<{ p: string; why: string }> = [];
  const missing: string[] = [];
  const leaves: string[] = [];
  for (const t of targets) {
    try {
      leaves.push(await realpath(t));
    } catch {
      missing.push(t);
    }
  }
  const stop = o.stopAt ? await realpath(o.stopAt) : undefined;
  const checked = new Set<string>();
  for (const real of leaves) {
    const chain = withParents(real);
    const from = stop !== undefined && chain.includes(stop) ? chain.indexOf(stop) : 0;
    for (const p of chain.slice(from)) {
      if (checked.has(p)) continue;
      checked.add(p);
      const s = await st(p);
      const parent = leaves.includes(p) ? '' : 'a parent directory ';
      if (s.uid !== owner) problems.push({ p, why: `${parent}owned by uid ${s.uid}` });
      if ((s.mode & 0o022) !== 0) problems.push({ p, why: `${parent}writable by group/others (mode ${octal(s.mode)})` });
    }
  }
  const what = o.what ?? targets.join(', ');
  if (problems.length > 0) {
    const paths = [...new Set(problems.map((x) => x.p))];
    return fail(
      `${what}: ${problems.map((x) => `${x.p} ${x.why}`).join('; ')} — the root worker runs code from here, so whoever can write it can run code as root`,
      `sudo chown root:wheel ${paths.join(' ')} && sudo chmod go-w ${paths.join(' ')}   (VM users need no write access here; see docs/macos.md)`,
    );
  }
  if (leaves.length === 0) return skip(`${missing.join(', ')} does not exist yet (created at worker start)`);
  const tail = missing.length > 0 ? `; ${missing.join(', ')} does not exist yet` : '';
  return ok(`${leaves.join(', ')} and the directories above: owned by root, not writable by group/others${tail}`);
}

/** The data dir itself. */
export function checkDataDirPermissions(dataDir: string, o: { owner?: number; stat?: StatFn; stopAt?: string } = {}): Promise<Finding> {
  return checkRootOnlyPaths([dataDir], { ...o, what: `data dir ${dataDir}` });
}

/** <data-dir>/vm-host-node and the signed node in it. */
export function checkSignedNodePermissions(dataDir: string, o: { owner?: number; stat?: StatFn; stopAt?: string } = {}): Promise<Finding> {
  const p = signedNodePaths(dataDir);
  return checkRootOnlyPaths([p.dir, p.node], { ...o, what: `signed node copy ${p.node}` });
}
