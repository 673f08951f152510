// -o json|wide|name on list and get commands (kubectl style); --json stays an alias of -o json.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeController, vm, worker } from '../testing/fake-controller.ts';
import { runCli } from '../testing/run-cli.ts';

let fake: FakeController;
let dir: string;
let env: Record<string, string>;

beforeEach(async () => {
  fake = await FakeController.start();
  dir = mkdtempSync(join(tmpdir(), 'fleet-cli-output-'));
  env = { FLEET_URL: fake.url, FLEET_TOKEN: 'fleet_test_s3cr3t', FLEET_CONFIG: join(dir, 'config.json') };
  const vms = [vm('web-1', { state: 'running', worker: 'mac-1', ip: '10.0.0.5' }), vm('web-2')];
  fake.reply('GET', '/v1/vms', 200, { vms });
  fake.reply('GET', '/v1/vms/web-1', 200, vms[0]);
  fake.reply('GET', '/v1/workers', 200, { workers: [worker('mac-1'), worker('mac-2')] });
});
afterEach(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

const fleet = (args: string[]) => runCli(args, { env });

describe('-o / --output', () => {
  it('-o name prints one name per line', async () => {
    expect((await fleet(['vm', 'list', '-o', 'name'])).stdout).toBe('web-1\nweb-2\n');
    expect((await fleet(['worker', 'list', '--output', 'name'])).stdout).toBe('mac-1\nmac-2\n');
    expect((await fleet(['vm', 'get', 'web-1', '-o', 'name'])).stdout).toBe('web-1\n');
  });

  it('-o json is the same document as --json, before or after the command', async () => {
    const a = await fleet(['vm', 'list', '--json']);
    const b = await fleet(['vm', 'list', '-o', 'json']);
    const c = await fleet(['-o', 'json', 'vm', 'list']);
    expect(a.code).toBe(0);
    expect(b.stdout).toBe(a.stdout);
    expect(c.stdout).toBe(a.stdout);
    expect(JSON.parse(b.stdout).vms.map((v: { name: string }) => v.name)).toEqual(['web-1', 'web-2']);
  });

  it('-o wide adds the columns of --wide', async () => {
    const plain = await fleet(['vm', 'list']);
    const wide = await fleet(['vm', 'list', '-o', 'wide']);
    expect(plain.stdout.split('\n')[0]).not.toMatch(/DRIVER/);
    expect(wide.stdout.split('\n')[0]).toMatch(/NAME +STATE .*DRIVER +IMAGE/);
    expect((await fleet(['vm', 'list', '--wide'])).stdout).toBe(wide.stdout);
    expect((await fleet(['worker', 'list', '-o', 'wide'])).stdout.split('\n')[0]).toMatch(/HOSTNAME/);
  });

  it('an unknown format, or --json with another format, is a usage error', async () => {
    const bad = await fleet(['vm', 'list', '-o', 'yaml']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/invalid --output "yaml": expected one of json, wide, name/);
    const both = await fleet(['vm', 'list', '--json', '-o', 'name']);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--json and -o name cannot be used together/);
  });

  it('vm create -o name prints the name alone', async () => {
    fake.reply('POST', '/v1/vms', 201, vm('web-3'));
    const r = await fleet(['vm', 'create', 'web-3', '--image', 'ubuntu', '-o', 'name']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('web-3\n');
  });
});
