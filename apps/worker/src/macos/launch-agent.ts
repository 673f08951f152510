// VM host processes as LaunchAgents in the VM user's GUI login session (launchd domain
// `gui/<uid>`), started by the root worker.
//
// Why: Virtualization.framework's VM service for macOS guests 15.2 and later uses the keychain /
// cryptography subsystem, which needs the user's login session (an unlocked login keychain).
// Started from a LaunchDaemon, or over ssh, such a VM fails with "VZErrorDomain Code=1 … The
// virtual machine failed to start." (reported by Tart: cirruslabs/tart#1025, #1075). A process
// launched by launchd *inside* that user's `gui/<uid>` domain has the session. That domain exists
// only while the user is logged in graphically (automatic login, or a login via Screen Sharing;
// the screen may lock afterwards).
//
// launchctl's wording for "no such session", as observed (it is not API, so we match loosely):
//   `launchctl print gui/501`            exit 112, "Bad request.\nCould not find domain for user gui: 501"
//   `launchctl bootstrap gui/501 <plist>` exit 125, "Bootstrap failed: 125: Domain does not support specified action"
//                                        or "Could not find domain for user gui: 501"
//                                        or "Service cannot load in requested session" (not an Aqua session)
//                                        or exit 5, "Bootstrap failed: 5: Input/output error" (ambiguous: then
//                                        we ask `launchctl print gui/<uid>` whether the domain exists)
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { toPlist } from './plist.ts';
import { runCommand, type CommandResult, type RunCommand } from './run-command.ts';

export const LAUNCHCTL = '/bin/launchctl';
/** Seconds launchd waits after SIGTERM before SIGKILL on `bootout`: the host's graceful stop (30 s) plus margin. */
export const DEFAULT_AGENT_EXIT_TIMEOUT_S = 45;

export interface LaunchAgentSpec {
  /** Unique per VM host (e.g. dev.fleet.vm.<vmId>.<attempt>): letters, digits, '.', '_', '-'. */
  label: string;
  /** The VM user; the agent runs as this user in `gui/<uid>`. Never 0. */
  uid: number;
  /** argv; the first entry is an absolute path (the signed node copy). */
  programArguments: string[];
  workingDirectory: string;
  stdoutPath: string;
  stderrPath: string;
  env?: Record<string, string>;
  /** launchd ExitTimeOut (SIGTERM → SIGKILL on bootout). Default DEFAULT_AGENT_EXIT_TIMEOUT_S. */
  exitTimeoutSeconds?: number;
}

export interface LaunchAgentOps {
  run?: RunCommand;
}

const LABEL_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function checkUid(uid: number): void {
  if (!Number.isInteger(uid) || uid < 0) throw new Error(`launch agent: uid must be a non-negative integer, not ${uid}`);
  if (uid === 0) throw new Error('launch agent: uid 0 (root) has no GUI session to run VM hosts in; use the VM user');
}

function checkLabel(label: string): void {
  // The label becomes part of a service target (gui/<uid>/<label>): no '/', no spaces.
  if (!LABEL_RE.test(label)) throw new Error(`launch agent: label ${JSON.stringify(label)} may hold only letters, digits, '.', '_' and '-'`);
}

/**
 * The agent's plist. Choices:
 * - RunAtLoad, no KeepAlive: one VM host per agent, started by `bootstrap`; when the VM ends the
 *   host exits and launchd must not restart it (the worker decides what happens next).
 * - ProcessType Interactive: a running VM is user-facing work; a Background/Standard job may be
 *   throttled (CPU, I/O) by the system.
 * - LimitLoadToSessionType Aqua: the job loads only into a GUI login session, so a bootstrap into
 *   anything else fails at once instead of starting a host whose macOS guest then fails with
 *   VZErrorDomain code 1.
 * - AbandonProcessGroup not set (false): when the host exits, launchd kills whatever is left in
 *   its process group, so a host cannot leave strays behind (it starts none; the VM itself runs
 *   in Apple's XPC service, outside the group).
 * - ExitTimeOut: bootout sends SIGTERM; the host then stops the VM gracefully (up to 30 s)
 *   before launchd's SIGKILL.
 */
export function launchAgentPlist(spec: LaunchAgentSpec): string {
  checkLabel(spec.label);
  checkUid(spec.uid);
  if (spec.programArguments.length === 0) throw new Error('launch agent: programArguments is empty');
  const paths = { 'programArguments[0]': spec.programArguments[0]!, workingDirectory: spec.workingDirectory, stdoutPath: spec.stdoutPath, stderrPath: spec.stderrPath };
  for (const [k, v] of Object.entries(paths)) {
    if (!path.isAbsolute(v)) throw new Error(`launch agent plist: ${k} must be an absolute path, not ${JSON.stringify(v)}`);
  }
  const exitTimeout = spec.exitTimeoutSeconds ?? DEFAULT_AGENT_EXIT_TIMEOUT_S;
  if (!Number.isInteger(exitTimeout) || exitTimeout < 1) throw new Error(`launch agent: exitTimeoutSeconds must be a positive integer, not ${exitTimeout}`);
  return toPlist({
    Label: spec.label,
    ProgramArguments: spec.programArguments,
    WorkingDirectory: spec.workingDirectory,
    // launchd gives agents a minimal environment: say what the host may rely on.
    EnvironmentVariables: { PATH: '/usr/bin:/bin:/usr/sbin:/sbin', ...(spec.env ?? {}) },
    RunAtLoad: true,
    ProcessType: 'Interactive',
    LimitLoadToSessionType: 'Aqua',
    ExitTimeOut: exitTimeout,
    StandardOutPath: spec.stdoutPath,
    StandardErrorPath: spec.stderrPath,
  });
}

/**
 * Writes the plist atomically with mode 0644. launchd refuses plists writable by group or
 * others; written by the root worker, the file is root-owned, so the VM user cannot change what
 * runs in their session on the worker's behalf.
 */
export async function writeLaunchAgentPlist(file: string, spec: LaunchAgentSpec): Promise<void> {
  if (!path.isAbsolute(file)) throw new Error(`launch agent plist path must be absolute, not ${JSON.stringify(file)}`);
  const text = launchAgentPlist(spec);
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode: 0o644 });
  await rename(tmp, file);
}

/** launchctl failed for another reason than a missing GUI session. */
export class LaunchctlError extends Error {
  override readonly name = 'LaunchctlError';
  constructor(
    readonly args: readonly string[],
    readonly code: number,
    readonly stderr: string,
    /** Every launchctl command run so far, in order. */
    readonly commands: string[][],
  ) {
    super(`launchctl ${args.join(' ')} failed: ${stderr.trim() || `exit ${code}`}`);
  }
}

/** The user has no GUI login session (`gui/<uid>` does not exist): macOS guests cannot start. */
export class NoGuiSessionError extends Error {
  override readonly name = 'NoGuiSessionError';
  constructor(
    readonly uid: number,
    /** What launchctl said. */
    readonly detail: string,
    readonly commands: string[][] = [],
  ) {
    super(noGuiSessionMessage(uid, detail));
  }
}

/** The fix, in one place (NoGuiSessionError and the doctor check). */
export function noGuiSessionFix(uid: number): string {
  return (
    `enable automatic login for the VM user (uid ${uid}): System Settings → Users & Groups → "Automatically log in as" ` +
    `(not offered while FileVault is on), then restart; or log in as that user once graphically (e.g. Screen Sharing — ` +
    `the screen may lock afterwards). See docs/macos.md`
  );
}

function noGuiSessionMessage(uid: number, detail: string): string {
  return `no GUI login session for uid ${uid} (launchd domain gui/${uid}: ${detail}); macOS guests need one (without it they fail with VZErrorDomain code 1). Fix: ${noGuiSessionFix(uid)}`;
}

/** Whether launchctl's answer says the `gui/<uid>` domain (an Aqua session) is not there. */
export function saysNoGuiDomain(r: CommandResult): boolean {
  if (r.code === 0) return false;
  const t = `${r.stderr}\n${r.stdout}`;
  return (
    r.code === 112 ||
    r.code === 125 ||
    /could not find domain for/i.test(t) ||
    /domain does not support specified action/i.test(t) ||
    /service cannot load in requested session/i.test(t)
  );
}

/**
 * bootout answers that mean "nothing (more) to do": not loaded (3 "No such process", 113 "Could
 * not find specified service"), the whole domain gone with the session, or 36 "Operation now in
 * progress" (the job is still exiting within its ExitTimeOut).
 */
function saysGoneOrGoing(r: CommandResult): boolean {
  const t = `${r.stderr}\n${r.stdout}`;
  return r.code === 3 || r.code === 113 || r.code === 36 || /no such process|could not find (specified )?service|operation now in progress/i.test(t) || saysNoGuiDomain(r);
}

function oneLine(r: CommandResult): string {
  const text = (r.stderr.trim() || r.stdout.trim()).split('\n').map((l) => l.trim()).filter(Boolean).join(' ');
  return `exit ${r.code}${text ? `: ${text}` : ''}`;
}

export interface GuiSessionState {
  /** `gui/<uid>` exists: the user is logged in graphically. */
  active: boolean;
  detail: string;
  /** Owner of /dev/console (the user at the screen; 0 at the login window). Best effort: absent if unknown. */
  consoleUid?: number;
  /** Whether `uid` is that console user (best effort; a session switched to the background is still active). */
  isConsoleUser?: boolean;
}

/** `launchctl print gui/<uid>` (exit 0 = the domain exists), plus who owns /dev/console. */
export async function guiSessionState(uid: number, ops: LaunchAgentOps = {}): Promise<GuiSessionState> {
  const run = ops.run ?? runCommand;
  const p = await run(LAUNCHCTL, ['print', `gui/${uid}`]);
  const c = await run('/usr/bin/stat', ['-f', '%u', '/dev/console']);
  const consoleUid = c.code === 0 && /^\d+$/.test(c.stdout.trim()) ? Number(c.stdout.trim()) : undefined;
  const state: GuiSessionState = { active: p.code === 0, detail: '' };
  if (consoleUid !== undefined) {
    state.consoleUid = consoleUid;
    state.isConsoleUser = consoleUid === uid;
  }
  const who = consoleUid === undefined ? 'console user unknown' : consoleUid === 0 ? 'nobody at the console (login window)' : `console user uid ${consoleUid}`;
  state.detail = state.active
    ? `gui/${uid} exists (logged in graphically${state.isConsoleUser === false ? ', not at the console' : ''}; ${who})`
    : `gui/${uid} does not exist (${oneLine(p)}; ${who})`;
  return state;
}

/**
 * (Re)starts the agent: `bootout gui/<uid>/<label>` (failure ignored: usually not loaded),
 * `enable gui/<uid>/<label>` (a label marked disabled cannot be bootstrapped),
 * `bootstrap gui/<uid> <plist>`. Returns the commands run. Throws NoGuiSessionError when the
 * user has no GUI session, LaunchctlError (with launchctl's stderr) otherwise.
 */
export async function startLaunchAgent(a: { uid: number; label: string; plistPath: string }, ops: LaunchAgentOps = {}): Promise<string[][]> {
  checkUid(a.uid);
  checkLabel(a.label);
  if (!path.isAbsolute(a.plistPath)) throw new Error(`launch agent plist path must be absolute, not ${JSON.stringify(a.plistPath)}`);
  const run = ops.run ?? runCommand;
  const done: string[][] = [];
  const call = async (args: string[]): Promise<CommandResult> => {
    done.push([LAUNCHCTL, ...args]);
    return run(LAUNCHCTL, args);
  };
  const target = `gui/${a.uid}/${a.label}`;
  await call(['bootout', target]);
  for (const args of [['enable', target], ['bootstrap', `gui/${a.uid}`, a.plistPath]]) {
    const r = await call(args);
    if (r.code === 0) continue;
    if (saysNoGuiDomain(r)) throw new NoGuiSessionError(a.uid, oneLine(r), done);
    // Ambiguous failures (e.g. bootstrap's "5: Input/output error"): does the domain exist at all?
    const probe = await call(['print', `gui/${a.uid}`]);
    if (probe.code !== 0 && saysNoGuiDomain(probe)) throw new NoGuiSessionError(a.uid, `${oneLine(r)}; ${oneLine(probe)}`, done);
    throw new LaunchctlError(args, r.code, r.stderr, done);
  }
  return done;
}

/** `bootout gui/<uid>/<label>`: stops the host (SIGTERM, then SIGKILL after ExitTimeOut) and unloads it. Idempotent. */
export async function stopLaunchAgent(a: { uid: number; label: string }, ops: LaunchAgentOps = {}): Promise<string[][]> {
  checkUid(a.uid);
  checkLabel(a.label);
  const run = ops.run ?? runCommand;
  const args = ['bootout', `gui/${a.uid}/${a.label}`];
  const r = await run(LAUNCHCTL, args);
  const done = [[LAUNCHCTL, ...args]];
  if (r.code !== 0 && !saysGoneOrGoing(r)) throw new LaunchctlError(args, r.code, r.stderr, done);
  return done;
}
