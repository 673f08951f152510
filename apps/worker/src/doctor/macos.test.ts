// The macOS doctor checks: GUI sessions through a fake launchctl, permissions through real stat()s
// on temp dirs (the same code runs on macOS).
import { statSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CommandResult, RunCommand } from '../macos/run-command.ts';
import { runChecks } from './check.ts';
import { checkDataDirPermissions, checkGuiSession, checkRootOnlyPaths, checkSignedNodePermissions, checkVmUserGuiSessions, resolveVzVmUsers } from './macos.ts';
import { driverChecks } from './driver.ts';

const OK: CommandResult = { code: 0, stdout: '', stderr: '' };
const NO_DOMAIN: CommandResult = { code: 112, stdout: '', stderr: 'Bad request.\nCould not find domain for user gui: 502\n' };

/** launchctl print gui/<uid> succeeds for `loggedIn`; `id` knows `users`; /dev/console belongs to `console`. */
function fakeMac(o: { loggedIn: number[]; users: Record<string, number>; console?: number }): { run: RunCommand; calls: string[][] } {
  const calls: string[][] = [];
  const run: RunCommand = async (cmd, args) => {
    calls.push([cmd, ...args]);
    if (cmd === '/bin/launchctl' && args[0] === 'print') {
      const uid = Number(args[1]!.slice('gui/'.length));
      return o.loggedIn.includes(uid) ? { code: 0, stdout: `gui/${uid} = {}`, stderr: '' } : { ...NO_DOMAIN, stderr: `Bad request.\nCould not find domain for user gui: ${uid}\n` };
    }
    if (cmd === '/usr/bin/stat') return o.console === undefined ? { code: 1, stdout: '', stderr: 'no console' } : { code: 0, stdout: `${o.console}\n`, stderr: '' };
    if (cmd === '/usr/bin/id' && args[0] === '-u') {
      const uid = o.users[args[1]!];
      return uid === undefined ? { code: 1, stdout: '', stderr: `id: ${args[1]}: no such user` } : { code: 0, stdout: `${uid}\n`, stderr: '' };
    }
    if (cmd === '/usr/bin/id' && args[0] === '-nu') {
      const name = Object.entries(o.users).find(([, u]) => u === Number(args[1]))?.[0];
      return name ? { code: 0, stdout: `${name}\n`, stderr: '' } : { code: 1, stdout: '', stderr: 'no such user' };
    }
    return OK;
  };
  return { run, calls };
}

describe('GUI session of the VM users', () => {
  it('passes for a logged-in user and fails with the automatic-login fix for one without a session', async () => {
    const { run, calls } = fakeMac({ loggedIn: [501], users: { ci: 501, ci2: 502 }, console: 501 });
    expect(await checkGuiSession({ uid: 501, name: 'ci' }, run)).toEqual({ status: 'ok', detail: 'ci (uid 501): gui/501 exists (logged in graphically; console user uid 501)' });
    expect(calls[0]).toEqual(['/bin/launchctl', 'print', 'gui/501']);
    const f = await checkGuiSession({ uid: 502, name: 'ci2' }, run);
    expect(f.status).toBe('fail');
    expect(f.detail).toContain('ci2 (uid 502) has no GUI login session');
    expect(f.detail).toContain('VZErrorDomain code 1');
    expect(f.fix).toContain('System Settings → Users & Groups → "Automatically log in as"');
    expect(f.fix).toContain('docs/macos.md');
  });

  it('says to run as root when launchctl may not look at another user\'s domain', async () => {
    const run: RunCommand = async (cmd) => (cmd === '/bin/launchctl' ? { code: 1, stdout: '', stderr: 'Could not print domain: 1: Operation not permitted' } : OK);
    expect(await checkGuiSession({ uid: 501 }, run)).toMatchObject({ status: 'warn', fix: expect.stringContaining('sudo fleet-worker doctor') });
  });

  it('checks every configured VM user (names or uids) and fails if any lacks a session', async () => {
    const { run } = fakeMac({ loggedIn: [501], users: { ci: 501, ci2: 502 } });
    const f = await checkVmUserGuiSessions({ configured: ['ci', '502'], run });
    expect(f.status).toBe('fail');
    expect(f.detail).toMatch(/^ci \(uid 501\): gui\/501 exists .*; ci2 \(uid 502\) has no GUI login session: .* \[VM users: --vm-user\]$/);
    expect(f.fix).toContain('Automatically log in as');
    const good = await checkVmUserGuiSessions({ configured: ['ci'], run });
    expect(good.status).toBe('ok');
    const unknown = await checkVmUserGuiSessions({ configured: ['nobody-here'], run });
    expect(unknown).toMatchObject({ status: 'warn', detail: expect.stringContaining('VM user "nobody-here" does not exist') });
  });

  it('without a VM user there is nothing to check: a warning that names --vm-user', async () => {
    const { run, calls } = fakeMac({ loggedIn: [], users: {} });
    expect(await resolveVzVmUsers({ run })).toEqual({ none: expect.stringContaining('--vm-user NAME') });
    expect(await checkVmUserGuiSessions({ run })).toMatchObject({ status: 'warn', fix: expect.stringContaining('--vm-user NAME') });
    expect(calls).toEqual([]);
  });
});

describe('root-only permissions of the data dir and the signed node copy', () => {
  let base: string;
  const me = process.getuid?.() ?? 0;
  beforeEach(async () => {
    base = await mkdtemp(path.join(tmpdir(), 'fleet-perm-'));
    await chmod(base, 0o755);
  });
  afterEach(async () => {
    await rm(base, { recursive: true, force: true });
  });

  // stopAt: base: the temp dir's own parent (/tmp, sticky and world-writable) is not what is tested.
  it('passes for an owner-only tree', async () => {
    const data = path.join(base, 'data');
    await mkdir(path.join(data, 'vm-host-node'), { recursive: true, mode: 0o755 });
    await writeFile(path.join(data, 'vm-host-node', 'node'), 'x', { mode: 0o755 });
    expect(await checkDataDirPermissions(data, { owner: me, stopAt: base })).toMatchObject({ status: 'ok' });
    const n = await checkSignedNodePermissions(data, { owner: me, stopAt: base });
    expect(n.status).toBe('ok');
    expect(n.detail).toContain(path.join(data, 'vm-host-node', 'node'));
  });

  it('fails for a group/other-writable data dir or node, naming each path and the chmod', async () => {
    const data = path.join(base, 'data');
    await mkdir(path.join(data, 'vm-host-node'), { recursive: true });
    await writeFile(path.join(data, 'vm-host-node', 'node'), 'x');
    await chmod(data, 0o775);
    await chmod(path.join(data, 'vm-host-node', 'node'), 0o757);
    const d = await checkDataDirPermissions(data, { owner: me, stopAt: base });
    expect(d.status).toBe('fail');
    expect(d.detail).toContain(`${data} writable by group/others (mode 0775)`);
    expect(d.fix).toBe(`sudo chown root:wheel ${data} && sudo chmod go-w ${data}   (VM users need no write access here; see docs/macos.md)`);
    // The node's check sees the writable data dir as a parent (not sticky) and the node itself.
    const n = await checkSignedNodePermissions(data, { owner: me, stopAt: base });
    expect(n.status).toBe('fail');
    expect(n.detail).toContain(`${data} a parent directory writable by group/others (mode 0775)`);
    expect(n.detail).toContain(`${path.join(data, 'vm-host-node', 'node')} writable by group/others (mode 0757)`);
  });

  it.runIf(me === 0)('fails when the data dir belongs to another user (e.g. the VM user): that user could swap the node the root worker runs', async () => {
    const data = path.join(base, 'data');
    await mkdir(data, { mode: 0o755 });
    await chown(data, 501, 20);
    const d = await checkDataDirPermissions(data, { stopAt: base });
    expect(d.status).toBe('fail');
    expect(d.detail).toContain(`${data} owned by uid 501`);
    expect(d.detail).toContain('can run code as root');
  });

  it('refuses a world-writable parent, sticky or not (as the worker does), and checks up to / by default', async () => {
    const sticky = path.join(base, 'sticky');
    await mkdir(path.join(sticky, 'data'), { recursive: true, mode: 0o755 });
    await chmod(sticky, 0o1777);
    await chmod(path.join(sticky, 'data'), 0o755);
    const f = await checkRootOnlyPaths([path.join(sticky, 'data')], { owner: me, stopAt: base });
    expect(f.status).toBe('fail');
    expect(f.detail).toContain(`${sticky} a parent directory writable by group/others (mode 1777)`);
  });

  it.runIf((statSync(tmpdir()).mode & 0o022) !== 0)('without stopAt the walk goes up to /: a data dir under a world-writable tmpdir() fails', async () => {
    const f = await checkRootOnlyPaths([base], { owner: me });
    expect(f.status).toBe('fail');
    expect(f.detail).toContain(`${await realpath(tmpdir())} a parent directory writable by group/others`);
  });

  it('skips what does not exist yet (the worker creates it at start)', async () => {
    expect(await checkSignedNodePermissions(path.join(base, 'none'), { owner: me })).toMatchObject({ status: 'skip', detail: expect.stringContaining('does not exist yet') });
  });

  it('checks paths as resolved (symlinks followed, as /var → /private/var on macOS)', async () => {
    const real = path.join(base, 'real');
    await mkdir(real, { mode: 0o755 });
    await chmod(real, 0o777);
    await symlink(real, path.join(base, 'link'));
    const f = await checkDataDirPermissions(path.join(base, 'link'), { owner: me, stopAt: base });
    expect(f.status).toBe('fail');
    expect(f.detail).toContain(`${real} writable by group/others (mode 0777)`);
  });
});

describe('driver checks', () => {
  it('vz on darwin adds the GUI-session and permission checks; Linux drivers are unchanged', () => {
    expect(driverChecks({ driver: 'vz', dataDir: '/x', platform: 'darwin' }).map((c) => c.name)).toEqual(['macOS', 'entitlement', 'gui session', 'data dir permissions', 'signed node permissions']);
    const qemu = driverChecks({ driver: 'qemu', dataDir: '/x', platform: 'linux' }).map((c) => c.name);
    expect(qemu).not.toContain('gui session');
    expect(qemu).not.toContain('data dir permissions');
  });

  it('vz on Linux still reports only that it needs macOS', async () => {
    const report = await runChecks(driverChecks({ driver: 'vz', dataDir: '/x', platform: 'linux' }));
    expect(report.checks.map((c) => c.name)).toEqual(['driver']);
  });
});
