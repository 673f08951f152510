// The real binary: `node apps/cli/bin/fleet.js` (the bundle once setup built it) as a separate
// process, so the wrapper, the exit codes and stderr are checked end to end.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeController, vm } from './testing/fake-controller.ts';

const BIN = fileURLToPath(new URL('../bin/fleet.js', import.meta.url));

function fleet(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // async (not spawnSync): the fake controller lives in this process and must keep answering
    execFile(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '', HOME: '/nonexistent', ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let fake: FakeController;
beforeAll(async () => {
  fake = await FakeController.start();
  fake.reply('GET', '/v1/vms', 200, { vms: [vm('web-1', { state: 'running' })] });
  fake.fail('GET', '/v1/vms/nope', 404, 'not_found', 'vm "nope" not found');
});
afterAll(() => fake.close());

describe('bin/fleet.js', () => {
  it('--help: exit 0 with the exit-code table', async () => {
    const r = await fleet(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Exit codes:');
  });

  it('lists VMs as JSON and exits 0', async () => {
    const r = await fleet(['vm', 'list', '--json'], { FLEET_URL: fake.url, FLEET_TOKEN: 't' });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).vms[0].name).toBe('web-1');
  });

  it('404: exit 3 and a single line on stderr', async () => {
    const r = await fleet(['vm', 'get', 'nope'], { FLEET_URL: fake.url, FLEET_TOKEN: 't' });
    expect(r).toEqual({ code: 3, stdout: '', stderr: 'fleet: vm "nope" not found\n' });
  });

  it('a YAML spec file: the YAML parser (loaded only for -f) reports the bad line, exit 2', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'fleet-bin-'));
    try {
      writeFileSync(path.join(dir, 'vm.yaml'), 'name: [oops\n');
      const r = await fleet(['vm', 'create', '-f', path.join(dir, 'vm.yaml')], { FLEET_URL: fake.url, FLEET_TOKEN: 't' });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^fleet: invalid .*vm\.yaml: not valid YAML: .*line 2/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a usage error: exit 2', async () => {
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'x', '--memory', 'lots'], { FLEET_URL: fake.url });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('fleet: invalid --memory "lots": expected a size like 4G, 4096M or 4096 (MiB)\n');
  });
});
