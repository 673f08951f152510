// `fleet vm create -f spec.yaml|spec.json|-`: the file's VmCreate fields, flags over them,
// and errors that name the file and the field.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeController, vm } from '../../testing/fake-controller.ts';
import { runCli } from '../../testing/run-cli.ts';

let fake: FakeController;
let dir: string;
let env: Record<string, string>;

beforeEach(async () => {
  fake = await FakeController.start();
  dir = mkdtempSync(join(tmpdir(), 'fleet-cli-spec-'));
  env = { FLEET_URL: fake.url, FLEET_TOKEN: 'fleet_test_s3cr3t', FLEET_CONFIG: join(dir, 'config.json') };
  fake.on('POST', '/v1/vms', (req, res) => {
    const body = req.body as { name: string };
    res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify(vm(body.name)));
  });
});
afterEach(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const fleet = (args: string[], stdin?: string) => runCli(args, { env, ...(stdin !== undefined ? { stdin: Readable.from([stdin]) as never } : {}) });
const sent = () => fake.requestsTo('POST', '/v1/vms').at(-1)?.body;

const YAML = `# a web VM
name: web-1
image: ubuntu:24.04
cpus: 2
memoryMib: 4096
labels:
  team: web
  tier: "1"
network:
  allow: ["@host"]
  blockLocal: true
restartPolicy: on-failure
`;

describe('vm create -f', () => {
  it('YAML: sends the file as the create body', async () => {
    const r = await fleet(['vm', 'create', '-f', file('web.yaml', YAML)]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(sent()).toEqual({
      name: 'web-1',
      image: 'ubuntu:24.04',
      cpus: 2,
      memoryMib: 4096,
      labels: { team: 'web', tier: '1' },
      network: { allow: ['@host'], blockLocal: true },
      restartPolicy: 'on-failure',
    });
  });

  it('JSON from stdin (-f -), with the name as the argument', async () => {
    const r = await fleet(['vm', 'create', 'web-2', '-f', '-'], JSON.stringify({ image: 'ubuntu', cpus: 1 }));
    expect(r.code).toBe(0);
    expect(sent()).toEqual({ name: 'web-2', image: 'ubuntu', cpus: 1 });
  });

  it('flags override the file; labels merge key by key', async () => {
    const r = await fleet(['vm', 'create', 'web-9', '-f', file('web.yaml', YAML), '--cpus', '4', '--memory', '8G', '--image', 'debian:12', '--label', 'team=api', '--stopped']);
    expect(r.code).toBe(0);
    expect(sent()).toMatchObject({ name: 'web-9', image: 'debian:12', cpus: 4, memoryMib: 8192, labels: { team: 'api', tier: '1' }, powerState: 'stopped' });
  });

  it.each([
    ['cpus: 300', /invalid .*web\.yaml: cpus "300": must be between 1 and 256/],
    ['cpu: 2', /invalid .*web\.yaml: field "cpu" is not a VM spec field \(expected one of name, image/],
    ['labels:\n  team:\n    nested: x', /field "labels\.team" must be a string, not a mapping/],
    ['labels:\n  "bad key": x', /web\.yaml: labels "bad key=x": label key "bad key" must be/],
    ['os: windows', /web\.yaml: os "windows": expected one of linux, macos/],
    ['network:\n  allow: [nowhere]', /field "network\.allow\[0\]" must be an IPv4 CIDR/],
    ['memoryMib: lots', /web\.yaml: memoryMib "lots": expected a whole number/],
    ['name: Web_1', /field "name" is not a valid VM name "Web_1"/],
  ])('%s → a usage error naming the field', async (extra, message) => {
    const base = 'name: web-1\nimage: ubuntu\n';
    const r = await fleet(['vm', 'create', '-f', file('web.yaml', extra.startsWith('name:') ? `image: ubuntu\n${extra}\n` : `${base}${extra}\n`)]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(fake.requestsTo('POST', '/v1/vms')).toHaveLength(0);
  });

  it('unreadable, unparsable or shapeless files, and a missing image, are usage errors', async () => {
    expect((await fleet(['vm', 'create', '-f', join(dir, 'nope.yaml')])).stderr).toMatch(/-f: cannot read .*nope\.yaml: ENOENT/);
    expect((await fleet(['vm', 'create', '-f', file('bad.json', '{"name":')])).stderr).toMatch(/bad\.json: not valid JSON/);
    expect((await fleet(['vm', 'create', '-f', file('bad.yaml', 'name: [a\n')])).stderr).toMatch(/bad\.yaml: not valid YAML/);
    expect((await fleet(['vm', 'create', '-f', file('list.yaml', '- a\n- b\n')])).stderr).toMatch(/expected a mapping of VM spec fields .*not a list/);
    const noImage = await fleet(['vm', 'create', '-f', file('noimage.yaml', 'name: web-1\n')]);
    expect(noImage.code).toBe(2);
    expect(noImage.stderr).toMatch(/required option '--image <image>' not specified \(nor "image" in the -f file\)/);
    const noName = await fleet(['vm', 'create', '-f', file('noname.yaml', 'image: ubuntu\n')]);
    expect(noName.stderr).toMatch(/missing the VM name/);
  });
});
