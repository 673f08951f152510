import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  LaunchctlError,
  NoGuiSessionError,
  guiSessionState,
  launchAgentPlist,
  saysNoGuiDomain,
  startLaunchAgent,
  stopLaunchAgent,
  writeLaunchAgentPlist,
  type LaunchAgentSpec,
} from './launch-agent.ts';
import type { CommandResult, RunCommand } from './run-command.ts';

const OK: CommandResult = { code: 0, stdout: '', stderr: '' };
// launchctl's answers as observed on macOS (see the header of launch-agent.ts).
const NO_DOMAIN_PRINT: CommandResult = { code: 112, stdout: '', stderr: 'Bad request.\nCould not find domain for user gui: 501\n' };
const BOOTSTRAP_125: CommandResult = { code: 125, stdout: '', stderr: 'Bootstrap failed: 125: Domain does not support specified action\n' };
const BOOTSTRAP_5: CommandResult = { code: 5, stdout: '', stderr: 'Bootstrap failed: 5: Input/output error\nTry re-running the command as root for richer errors.\n' };
const NOT_LOADED: CommandResult = { code: 3, stdout: '', stderr: 'Boot-out failed: 3: No such process\n' };

/** A fake launchctl: answers by subcommand, records argv. */
function fakeRun(answers: Partial<Record<string, CommandResult | CommandResult[]>>): { run: RunCommand; calls: string[][] } {
  const calls: string[][] = [];
  const run: RunCommand = async (cmd, args) => {
    calls.push([cmd, ...args]);
    const key = cmd === '/usr/bin/stat' ? 'stat' : args[0]!;
    const a = answers[key];
    if (Array.isArray(a)) return a.shift() ?? OK;
    return a ?? OK;
  };
  return { run, calls };
}

const spec = (over: Partial<LaunchAgentSpec> = {}): LaunchAgentSpec => ({
  label: 'dev.fleet.vm.vm-7.1',
  uid: 501,
  programArguments: ['/var/root/.fleet-worker/vm-host-node/node', '/opt/fleet/apps/worker/src/vm-host/darwin/launch.mjs', '/var/root/.fleet-worker/vz/instances/vm-7.1/host.json'],
  workingDirectory: '/var/root/.fleet-worker/vz/instances/vm-7.1',
  stdoutPath: '/var/root/.fleet-worker/vz/instances/vm-7.1/host.log',
  stderrPath: '/var/root/.fleet-worker/vz/instances/vm-7.1/host.err.log',
  env: { FLEET_VM: 'vm-7 & <1>' },
  ...over,
});

describe('launchAgentPlist', () => {
  it('is a one-shot Aqua agent: RunAtLoad, Interactive, no KeepAlive, no AbandonProcessGroup, ExitTimeOut past the graceful stop', () => {
    const xml = launchAgentPlist(spec());
    expect(xml).toContain('<key>Label</key>\n\t<string>dev.fleet.vm.vm-7.1</string>');
    expect(xml).toContain(
      '<key>ProgramArguments</key>\n\t<array>\n\t\t<string>/var/root/.fleet-worker/vm-host-node/node</string>\n\t\t<string>/opt/fleet/apps/worker/src/vm-host/darwin/launch.mjs</string>\n\t\t<string>/var/root/.fleet-worker/vz/instances/vm-7.1/host.json</string>\n\t</array>',
    );
    expect(xml).toContain('<key>RunAtLoad</key>\n\t<true/>');
    expect(xml).toContain('<key>ProcessType</key>\n\t<string>Interactive</string>');
    expect(xml).toContain('<key>LimitLoadToSessionType</key>\n\t<string>Aqua</string>');
    expect(xml).toContain('<key>ExitTimeOut</key>\n\t<integer>45</integer>');
    expect(xml).toContain('<key>FLEET_VM</key>\n\t\t<string>vm-7 &amp; &lt;1&gt;</string>');
    expect(xml).toContain('<key>StandardErrorPath</key>\n\t<string>/var/root/.fleet-worker/vz/instances/vm-7.1/host.err.log</string>');
    expect(xml).not.toContain('KeepAlive');
    expect(xml).not.toContain('AbandonProcessGroup');
    expect(xml).not.toContain('UserName'); // an agent runs as its domain's user
  });

  it('refuses relative paths, root, and labels that would break the service target', () => {
    expect(() => launchAgentPlist(spec({ programArguments: ['node', 'x'] }))).toThrow(/programArguments\[0\] must be an absolute path/);
    expect(() => launchAgentPlist(spec({ stdoutPath: 'host.log' }))).toThrow(/stdoutPath must be an absolute path/);
    expect(() => launchAgentPlist(spec({ workingDirectory: '.' }))).toThrow(/workingDirectory must be an absolute path/);
    expect(() => launchAgentPlist(spec({ uid: 0 }))).toThrow(/uid 0/);
    expect(() => launchAgentPlist(spec({ label: 'dev.fleet/vm' }))).toThrow(/label/);
    expect(() => launchAgentPlist(spec({ programArguments: [] }))).toThrow(/empty/);
  });

  describe('writeLaunchAgentPlist', () => {
    let dir: string;
    beforeEach(async () => {
      dir = await mkdtemp(path.join(tmpdir(), 'fleet-agent-'));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });
    it('writes the plist with mode 0644 (launchd refuses group/other-writable plists)', async () => {
      const file = path.join(dir, 'agents', 'dev.fleet.vm.vm-7.1.plist');
      await writeLaunchAgentPlist(file, spec());
      expect(await readFile(file, 'utf8')).toBe(launchAgentPlist(spec()));
      expect((await stat(file)).mode & 0o777).toBe(0o644);
    });
  });
});

describe('startLaunchAgent', () => {
  const agent = { uid: 501, label: 'dev.fleet.vm.vm-7.1', plistPath: '/var/root/.fleet-worker/vz/instances/vm-7.1/agent.plist' };

  it('runs bootout (failure ignored), enable, bootstrap in the gui/<uid> domain, in that order', async () => {
    const { run, calls } = fakeRun({ bootout: NOT_LOADED });
    const done = await startLaunchAgent(agent, { run });
    expect(done).toEqual([
      ['/bin/launchctl', 'bootout', 'gui/501/dev.fleet.vm.vm-7.1'],
      ['/bin/launchctl', 'enable', 'gui/501/dev.fleet.vm.vm-7.1'],
      ['/bin/launchctl', 'bootstrap', 'gui/501', agent.plistPath],
    ]);
    expect(calls).toEqual(done);
  });

  it('throws NoGuiSessionError naming the fix when the domain does not support the action (125)', async () => {
    const { run, calls } = fakeRun({ bootout: NOT_LOADED, bootstrap: BOOTSTRAP_125 });
    const err = await startLaunchAgent(agent, { run }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoGuiSessionError);
    const e = err as NoGuiSessionError;
    expect(e.uid).toBe(501);
    expect(e.message).toContain('no GUI login session for uid 501');
    expect(e.message).toContain('Domain does not support specified action');
    expect(e.message).toContain('System Settings → Users & Groups → "Automatically log in as"');
    expect(e.message).toContain('docs/macos.md');
    expect(calls.map((c) => c[1])).toEqual(['bootout', 'enable', 'bootstrap']);
    expect(e.commands).toEqual(calls);
  });

  it('recognises "Could not find domain" and "Service cannot load in requested session", from enable or bootstrap', async () => {
    const noDomain = { code: 112, stdout: '', stderr: 'Could not find domain for user gui: 501' };
    const e1 = await startLaunchAgent(agent, fakeRun({ enable: noDomain })).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(NoGuiSessionError);
    const wrongSession = { code: 1, stdout: '', stderr: 'Service cannot load in requested session' };
    const e2 = await startLaunchAgent(agent, fakeRun({ bootstrap: wrongSession })).catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(NoGuiSessionError);
  });

  it('asks launchctl print whether the domain exists after an ambiguous failure (5: Input/output error)', async () => {
    const { run, calls } = fakeRun({ bootstrap: BOOTSTRAP_5, print: NO_DOMAIN_PRINT });
    const err = await startLaunchAgent(agent, { run }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoGuiSessionError);
    expect((err as Error).message).toContain('Input/output error');
    expect((err as Error).message).toContain('Could not find domain for user gui: 501');
    expect(calls.at(-1)).toEqual(['/bin/launchctl', 'print', 'gui/501']);
  });

  it('throws LaunchctlError with launchctl stderr when the session exists but bootstrap fails', async () => {
    const { run } = fakeRun({ bootstrap: BOOTSTRAP_5, print: { code: 0, stdout: 'gui/501 = {\n\ttype = login\n}', stderr: '' } });
    const err = await startLaunchAgent(agent, { run }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LaunchctlError);
    expect((err as Error).message).toBe(`launchctl bootstrap gui/501 ${agent.plistPath} failed: Bootstrap failed: 5: Input/output error\nTry re-running the command as root for richer errors.`);
    expect(err).not.toBeInstanceOf(NoGuiSessionError);
  });

  it('refuses root, relative plist paths and bad labels before running anything', async () => {
    const { run, calls } = fakeRun({});
    await expect(startLaunchAgent({ ...agent, uid: 0 }, { run })).rejects.toThrow(/uid 0/);
    await expect(startLaunchAgent({ ...agent, plistPath: 'agent.plist' }, { run })).rejects.toThrow(/absolute/);
    await expect(startLaunchAgent({ ...agent, label: 'a b' }, { run })).rejects.toThrow(/label/);
    expect(calls).toEqual([]);
  });
});

describe('stopLaunchAgent', () => {
  it('boots the agent out of gui/<uid>; not loaded, gone with the session or still exiting are all fine', async () => {
    for (const answer of [OK, NOT_LOADED, { code: 113, stdout: '', stderr: 'Boot-out failed: 113: Could not find specified service' }, NO_DOMAIN_PRINT, { code: 36, stdout: '', stderr: 'Boot-out failed: 36: Operation now in progress' }]) {
      const { run, calls } = fakeRun({ bootout: answer });
      expect(await stopLaunchAgent({ uid: 501, label: 'dev.fleet.vm.vm-7.1' }, { run })).toEqual([['/bin/launchctl', 'bootout', 'gui/501/dev.fleet.vm.vm-7.1']]);
      expect(calls).toHaveLength(1);
    }
  });

  it('throws on a real failure', async () => {
    const { run } = fakeRun({ bootout: { code: 1, stdout: '', stderr: 'Boot-out failed: 1: Operation not permitted' } });
    await expect(stopLaunchAgent({ uid: 501, label: 'dev.fleet.vm.vm-7.1' }, { run })).rejects.toThrow('launchctl bootout gui/501/dev.fleet.vm.vm-7.1 failed: Boot-out failed: 1: Operation not permitted');
  });
});

describe('guiSessionState', () => {
  it('active when launchctl print gui/<uid> succeeds; the console owner is reported best effort', async () => {
    const { run, calls } = fakeRun({ print: { code: 0, stdout: 'gui/501 = {\n}', stderr: '' }, stat: { code: 0, stdout: '501\n', stderr: '' } });
    const s = await guiSessionState(501, { run });
    expect(s).toEqual({ active: true, consoleUid: 501, isConsoleUser: true, detail: 'gui/501 exists (logged in graphically; console user uid 501)' });
    expect(calls).toEqual([
      ['/bin/launchctl', 'print', 'gui/501'],
      ['/usr/bin/stat', '-f', '%u', '/dev/console'],
    ]);
  });

  it('inactive with launchctl\'s answer; login window and unknown console owner are said plainly', async () => {
    const s = await guiSessionState(501, fakeRun({ print: NO_DOMAIN_PRINT, stat: { code: 0, stdout: '0\n', stderr: '' } }));
    expect(s.active).toBe(false);
    expect(s.isConsoleUser).toBe(false);
    expect(s.detail).toBe('gui/501 does not exist (exit 112: Bad request. Could not find domain for user gui: 501; nobody at the console (login window))');
    const u = await guiSessionState(502, fakeRun({ stat: { code: 1, stdout: '', stderr: 'stat: /dev/console: No such file' } }));
    expect(u).toEqual({ active: true, detail: 'gui/502 exists (logged in graphically; console user unknown)' });
  });

  it('an active session in the background (fast user switching) is still active', async () => {
    const s = await guiSessionState(502, fakeRun({ stat: { code: 0, stdout: '501', stderr: '' } }));
    expect(s).toMatchObject({ active: true, isConsoleUser: false });
    expect(s.detail).toContain('not at the console');
  });
});

describe('saysNoGuiDomain', () => {
  it('matches the observed wordings and codes, not other failures', () => {
    expect(saysNoGuiDomain(NO_DOMAIN_PRINT)).toBe(true);
    expect(saysNoGuiDomain(BOOTSTRAP_125)).toBe(true);
    expect(saysNoGuiDomain({ code: 1, stdout: '', stderr: 'Could not find domain for user gui: 501' })).toBe(true);
    expect(saysNoGuiDomain(BOOTSTRAP_5)).toBe(false);
    expect(saysNoGuiDomain(NOT_LOADED)).toBe(false);
    expect(saysNoGuiDomain(OK)).toBe(false);
  });
});
