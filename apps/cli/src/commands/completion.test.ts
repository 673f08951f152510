// `fleet completion bash|zsh|fish`: scripts generated from the command tree.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../testing/run-cli.ts';

const hasBash = spawnSync('bash', ['-c', 'true']).status === 0;

describe('fleet completion', () => {
  it('bash: names the top-level commands and the vm subcommands', async () => {
    const r = await runCli(['completion', 'bash']);
    expect(r.code).toBe(0);
    const top = r.stdout.match(/^ {4}"fleet"\) echo '([^']*)'/m)?.[1]?.split(' ') ?? [];
    for (const c of ['vm', 'worker', 'image', 'exec', 'ssh', 'cp', 'events', 'version', 'completion']) expect(top).toContain(c);
    const vm = r.stdout.match(/^ {4}"fleet vm"\) echo '([^']*)'/m)?.[1]?.split(' ') ?? [];
    expect(vm).toEqual(expect.arrayContaining(['create', 'list', 'ls', 'get', 'update', 'delete', 'logs', 'watch']));
    expect(r.stdout).toMatch(/"fleet vm create"\) echo '[^']*--wait/);
    expect(r.stdout).toMatch(/complete -o default -F _fleet fleet/);
  });

  it.skipIf(!hasBash)('bash: completes commands, subcommands after global flags, flags and -o values', async () => {
    const { stdout } = await runCli(['completion', 'bash']);
    const dir = mkdtempSync(join(tmpdir(), 'fleet-completion-'));
    try {
      writeFileSync(join(dir, 'fleet.bash'), stdout);
      const complete = (...words: string[]) => {
        const script = `source ${JSON.stringify(join(dir, 'fleet.bash'))}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; COMPREPLY=(); _fleet; echo "\${COMPREPLY[*]}"`;
        const r = spawnSync('bash', ['-c', script], { encoding: 'utf8' });
        expect(r.stderr).toBe('');
        return r.stdout.trim().split(/\s+/).filter(Boolean);
      };
      expect(complete('fleet', 'v')).toEqual(['vm', 'vnc', 'version']);
      expect(complete('fleet', '--context', 'x', 'vm', 'c')).toEqual(['create']);
      expect(complete('fleet', 'vm', 'list', '-o', '')).toEqual(['json', 'wide', 'name']);
      expect(complete('fleet', 'vm', 'create', 'web-1', '--wa')).toEqual(['--wait']);
      // Issue 18: the network modes, and the MAC flag.
      expect(complete('fleet', 'vm', 'create', 'web-1', '--network-mode', '')).toEqual(['nat', 'host-only', 'none']);
      expect(complete('fleet', 'vm', 'create', 'web-1', '--network-mode', 'h')).toEqual(['host-only']);
      expect(complete('fleet', 'vm', 'update', 'web-1', '--network-mode', 'n')).toEqual(['nat', 'none']);
      expect(complete('fleet', 'vm', 'create', 'web-1', '--ma')).toEqual(['--mac']);
      expect(complete('fleet', 'vm', 'create', 'web-1', '--mac', '')).toEqual([]);
      expect(complete('fleet', 'vm', 'create', 'web-1', '--on-disconnect', '')).toEqual(['reschedule', 'wait']);
      // Saved contexts for `context use` / `context delete`, asked of `fleet context list -o name`.
      writeFileSync(join(dir, 'fleet'), '#!/bin/sh\n[ "$1 $2 $3 $4" = "context list -o name" ] && printf "prod\\nstaging\\n"\n', { mode: 0o755 });
      const withStub = (...words: string[]) => {
        const script = `PATH=${JSON.stringify(dir)}:$PATH; source ${JSON.stringify(join(dir, 'fleet.bash'))}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; COMPREPLY=(); _fleet; echo "\${COMPREPLY[*]}"`;
        return spawnSync('bash', ['-c', script], { encoding: 'utf8' }).stdout.trim().split(/\s+/).filter(Boolean);
      };
      expect(withStub('fleet', 'context', 'use', '')).toEqual(['prod', 'staging']);
      expect(withStub('fleet', 'context', 'delete', 's')).toEqual(['staging']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('zsh and fish scripts come from the same tree', async () => {
    const zsh = await runCli(['completion', 'zsh']);
    expect(zsh.code).toBe(0);
    expect(zsh.stdout).toMatch(/^#compdef fleet/);
    expect(zsh.stdout).toMatch(/bashcompinit/);
    expect(zsh.stdout).toMatch(/"fleet vm"\) echo 'create list/);
    const fish = await runCli(['completion', 'fish']);
    expect(fish.code).toBe(0);
    expect(fish.stdout).toMatch(/complete -c fleet -n '__fleet_at '\\''fleet vm'\\''' -a 'create'/);
    expect(fish.stdout).toMatch(/-a '\(fleet vm list -o name 2>\/dev\/null\)'/);
    expect(fish.stdout).toMatch(/-l 'network-mode' -r -a 'nat host-only none'/);
  });

  it('an unknown shell is a usage error', async () => {
    const r = await runCli(['completion', 'powershell']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/invalid shell "powershell": expected one of bash, zsh, fish/);
  });
});
