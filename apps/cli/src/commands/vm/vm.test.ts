// `fleet vm …` against a fake controller: request bodies, --wait over the
// NDJSON watch stream, watch output, multi-name delete, logs paging/follow.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EventObject, VmObject } from '@fleet/api';
import { FakeController, sendJson, streamNdjson, vm, worker } from '../../testing/fake-controller.ts';
import { runCli } from '../../testing/run-cli.ts';

let fake: FakeController;
let dir: string;
let env: Record<string, string>;

beforeEach(async () => {
  fake = await FakeController.start();
  dir = mkdtempSync(join(tmpdir(), 'fleet-cli-vm-'));
  env = { FLEET_URL: fake.url, FLEET_TOKEN: 'fleet_test_s3cr3t', FLEET_CONFIG: join(dir, 'config.json') };
});
afterEach(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

const fleet = (args: string[], opts: { signal?: AbortSignal; onStdout?: (s: string) => void } = {}) => runCli(args, { env, ...opts });

const pending = vm('web-1', { state: 'pending', reason: 'no worker has 4 free CPUs' });
const scheduled = vm('web-1', { state: 'scheduled', reason: 'placed on mac-1', worker: 'mac-1' });
const running = vm('web-1', { state: 'running', reason: 'running on mac-1', worker: 'mac-1', ip: '10.0.0.5' });
const failed = vm('web-1', { state: 'failed', reason: 'create failed: image "nope" not found', worker: 'mac-1' });

const added = (v: VmObject) => ({ type: 'ADDED', vm: v });
const modified = (v: VmObject) => ({ type: 'MODIFIED', vm: v });

function event(id: number, kind: string, message: string): EventObject {
  return { id, at: `2025-01-01T00:00:${String(id).padStart(2, '0')}.000Z`, kind, level: 'info', message, vm: 'web-1', vmId: 'id-web-1', workerId: null, actor: 'controller', data: {} };
}

describe('vm create', () => {
  it('sends the spec built from the flags', async () => {
    fake.on('POST', '/v1/vms', (req, res) => sendJson(res, 201, vm('web-1', req.body as Partial<VmObject>)));
    const r = await fleet([
      'vm', 'create', 'web-1', '--image', 'ubuntu:24.04', '--os', 'linux', '--driver', 'qemu', '--cpus', '4', '--memory', '4G',
      '--disk', '40G', '--label', 'team=web', '--label', 'tier=fe', '--selector', 'pool=ci', '--priority', '-5',
      '--restart', 'on-failure', '--on-disconnect', 'wait', '--username', 'admin', '--stopped',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('vm "web-1" created (pending: waiting for the scheduler)\n');
    expect(fake.requests[0]!.body).toEqual({
      name: 'web-1',
      image: 'ubuntu:24.04',
      os: 'linux',
      driver: 'qemu',
      cpus: 4,
      memoryMib: 4096,
      diskGib: 40,
      labels: { team: 'web', tier: 'fe' },
      selector: { pool: 'ci' },
      priority: -5,
      disconnectPolicy: 'wait',
      restartPolicy: 'on-failure',
      username: 'admin',
      powerState: 'stopped',
    });
  });

  it('--wait: follows pending → running over the watch stream and prints the IP', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) =>
      // split lines and keepalives on purpose; the stream stays open like the real one
      streamNdjson(res, [added(pending), 30, '\n', modified(scheduled), 30, JSON.stringify(modified(running)).slice(0, 25), 30, JSON.stringify(modified(running)).slice(25) + '\n'], true),
    );
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu', '--wait']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('10.0.0.5\n');
    expect(r.stderr).toBe(
      [
        'vm "web-1" created; waiting up to 5m for it to be running',
        '  pending: no worker has 4 free CPUs',
        '  scheduled: placed on mac-1',
        '  running: running on mac-1',
        '',
      ].join('\n'),
    );
    const watch = fake.requestsTo('GET', '/v1/vms/web-1')[0]!;
    expect(watch.query.get('watch')).toBe('true');
    expect(watch.headers.authorization).toBe('Bearer fleet_test_s3cr3t');
  });

  it('--wait: exit 7 with the reason when the VM fails', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added(pending), 20, modified(scheduled), 20, modified(failed)], true));
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'nope', '--wait', '1m']);
    expect(r.code).toBe(7);
    expect(r.stdout).toBe('');
    expect(r.stderr.trimEnd().split('\n').at(-1)).toBe('fleet: vm "web-1" failed: create failed: image "nope" not found');
  });

  it('--wait --json: the final VM as one document, also on failure', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added(pending), modified(running)], true));
    const ok = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu', '--wait', '--json']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual(running);
    expect(ok.stderr).toBe('');

    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added(pending), modified(failed)], true));
    const bad = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu', '--wait', '--json']);
    expect(bad.code).toBe(7);
    expect(JSON.parse(bad.stdout)).toEqual(failed);
  });

  it('--wait: keeps waiting through a failure that will be restarted', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    const willRestart = { ...failed, restartPolicy: 'on-failure' as const, restartAt: '2025-01-01T01:00:05.000Z' };
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added(pending), modified(willRestart), modified(pending), modified(running)], true));
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu', '--restart', 'on-failure', '--wait']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('10.0.0.5\n');
    expect(r.stderr).toMatch(/failed; restarting .* \(restart policy on-failure\)/);
  });

  it('--wait: exit 7 on timeout, saying what the VM is waiting for', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added(pending)], true));
    const started = Date.now();
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu', '--wait', '400ms']);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/fleet: timed out after 400ms waiting for vm "web-1" to be running with an IP address; it is pending: no worker has 4 free CPUs\n$/);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('--wait: exit 7 when the VM is deleted meanwhile', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added(pending), { type: 'DELETED', vm: pending }]));
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu', '--wait']);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/vm "web-1" was deleted while waiting for it to be running/);
  });

  it('--wait: reconnects when the controller closes the stream', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    let calls = 0;
    fake.on('GET', '/v1/vms/web-1', (_req, res) => {
      calls += 1;
      return calls === 1 ? streamNdjson(res, [added(pending)]) : streamNdjson(res, [added(running)], true);
    });
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu', '--wait']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('10.0.0.5\n');
    expect(calls).toBe(2);
  });

  it('--wait: waiting for the IP is part of the wait (running first, the address later)', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added(pending), modified({ ...running, ip: null }), 100, modified(running)], true));
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu', '--wait', '10s']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('10.0.0.5\n');
    expect(r.stderr).toMatch(/running: running on mac-1\n  waiting for it to report an IP address\n/);
    expect(r.stderr).not.toMatch(/no IP address/);
  });

  it('--wait: running without an IP until the deadline is a timeout (exit 7) that says it waited for the IP', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added({ ...running, ip: null })], true));
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu', '--wait', '500ms']);
    expect(r.code).toBe(7);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/fleet: timed out after 500ms waiting for vm "web-1" to report an IP address; it is running on mac-1 but has none yet/);
  });

  it('--wait --json: a timeout waiting for the IP still prints the VM as last seen', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added({ ...running, ip: null })], true));
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu', '--wait', '300ms', '--json']);
    expect(r.code).toBe(7);
    expect(JSON.parse(r.stdout)).toMatchObject({ name: 'web-1', state: 'running', ip: null });
  });

  it('--stopped --wait: waits for the stopped state', async () => {
    const stopped = vm('web-1', { state: 'stopped', reason: 'stopped on mac-1', worker: 'mac-1', powerState: 'stopped' });
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added(pending), modified(stopped)], true));
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu', '--stopped', '--wait']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/waiting up to 5m for it to be stopped/);
  });

  it('--wait: Ctrl-C exits 130', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added(pending)], true));
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu', '--wait'], { signal: ac.signal });
    expect(r.code).toBe(130);
    expect(r.stderr).toMatch(/fleet: interrupted\n$/);
  });
});

describe('vm create --wait with an image pull (issue 15)', () => {
  const GiB = 1024 ** 3;
  const DIGEST = `sha256:${'c'.repeat(64)}`;
  const REF = '127.0.0.1:5000/fleet/guest:1';
  const pulling = (pct: number) =>
    ({
      ...vm('web-1', { state: 'scheduled', worker: 'mac-1', image: REF, reason: `pulling image ${REF}@${DIGEST}: ${pct} %` }),
      imageDigest: DIGEST,
      pull: { bytesDone: Math.round((pct / 100) * 3.4 * GiB), bytesTotal: Math.round(3.4 * GiB), percent: pct },
    }) as VmObject;
  const starting = { ...vm('web-1', { state: 'starting', worker: 'mac-1', image: REF, reason: 'booting' }), imageDigest: DIGEST, pull: null } as VmObject;
  const up = { ...running, image: REF, imageDigest: DIGEST, pull: null } as VmObject;
  const stream = [added(pending), modified(pulling(0)), modified(pulling(3)), modified(pulling(5)), modified(pulling(12)), modified(pulling(37)), modified(pulling(38)), modified(starting), modified(up)];

  it('off a terminal: a progress line per 10 %, not one per change; the IP on stdout', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, stream, true));
    const r = await fleet(['vm', 'create', 'web-1', '--image', REF, '--wait']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('10.0.0.5\n');
    expect(r.stderr).toBe(
      [
        'vm "web-1" created; waiting up to 5m for it to be running',
        '  pending: no worker has 4 free CPUs',
        `pulling ${REF}  [          ]   0 %  0/3.4 GiB`,
        `pulling ${REF}  [#         ]  12 %  0.4/3.4 GiB`,
        `pulling ${REF}  [####      ]  37 %  1.3/3.4 GiB`,
        `pulling ${REF}  [##########] 100 %  3.4/3.4 GiB  done`,
        '  starting: booting',
        '  running: running on mac-1',
        '',
      ].join('\n'),
    );
  });

  it('on a terminal: one bar redrawn in place', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, stream, true));
    const r = await runCli(['vm', 'create', 'web-1', '--image', REF, '--wait'], { env, stderrTty: true });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`\x1b[2Kpulling ${REF}  [          ]   0 %  0/3.4 GiB\n`);
    expect(r.stderr).toContain(`\r\x1b[1A\x1b[J\x1b[2Kpulling ${REF}  [####      ]  37 %  1.3/3.4 GiB\n`);
    // every percent is drawn (the same line rewritten), and the state lines stay below the bar
    expect(r.stderr.match(/\x1b\[2Kpulling/g)!.length).toBe(7);
    expect(r.stderr).toMatch(/100 %  3.4\/3.4 GiB  done\n  starting: booting\n  running: running on mac-1\n$/);
  });

  it('--json: nothing on stderr off a terminal, the VM with its digest on stdout', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, stream, true));
    const r = await fleet(['vm', 'create', 'web-1', '--image', REF, '--wait', '--json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toMatchObject({ name: 'web-1', imageDigest: DIGEST, pull: null });
  });

  it('a pull that fails: exit 7 with the reason, the bar left as it was', async () => {
    fake.reply('POST', '/v1/vms', 201, pending);
    const failedPull = { ...vm('web-1', { state: 'failed', worker: 'mac-1', image: REF, reason: `pull of ${REF}@${DIGEST} failed: blob sha256:… does not match its digest` }), imageDigest: DIGEST, pull: null } as VmObject;
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added(pending), modified(pulling(40)), modified(failedPull)], true));
    const r = await fleet(['vm', 'create', 'web-1', '--image', REF, '--wait']);
    expect(r.code).toBe(7);
    expect(r.stderr).not.toContain('done');
    expect(r.stderr).toMatch(/fleet: vm "web-1" failed: pull of .* does not match its digest\n$/);
  });

  it('vm get shows the digest and the pull', async () => {
    fake.reply('GET', '/v1/vms/web-1', 200, pulling(37));
    fake.reply('GET', '/v1/vms/web-1/events', 200, { events: [], nextCursor: null });
    const r = await fleet(['vm', 'get', 'web-1']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Image digest:\\s+${DIGEST} \\(the tag as resolved at create; every attempt runs it\\)$`, 'm'));
    expect(r.stdout).toMatch(/^Pull:\s+37 % \(1.3\/3.4 GiB\) on mac-1$/m);
    fake.reply('GET', '/v1/vms/web-1', 200, vm('web-1'));
    const local = await fleet(['vm', 'get', 'web-1']);
    expect(local.stdout).toMatch(/^Image digest:\s+- \(a local image\)$/m);
    expect(local.stdout).not.toMatch(/^Pull:/m);
  });
});

describe('get -o wide', () => {
  it('vm get -o wide asks for the last 20 events (5 by default); worker get -o wide lists its VMs as a table', async () => {
    fake.reply('GET', '/v1/vms/web-1', 200, vm('web-1'));
    fake.reply('GET', '/v1/vms/web-1/events', 200, { events: [], nextCursor: null });
    expect((await fleet(['vm', 'get', 'web-1'])).code).toBe(0);
    expect((await fleet(['-o', 'wide', 'vm', 'get', 'web-1'])).code).toBe(0);
    const limits = fake.requests.filter((r) => r.path === '/v1/vms/web-1/events').map((r) => r.query.get('limit'));
    expect(limits).toEqual(['5', '20']);

    fake.reply('GET', '/v1/workers/mac-1', 200, worker('mac-1'));
    fake.reply('GET', '/v1/vms', 200, { vms: [vm('web-1', { worker: 'mac-1', state: 'running', ip: '192.168.64.7' })], nextCursor: null });
    const narrow = (await fleet(['worker', 'get', 'mac-1'])).stdout;
    expect(narrow).toMatch(/^VMs \(1\):\n  web-1\s+running$/m);
    const wide = (await fleet(['-o', 'wide', 'worker', 'get', 'mac-1'])).stdout;
    expect(wide).toMatch(/^NAME\s+STATE\s+WORKER\s+IP\s+CPUS\s+MEMORY\s+AGE$/m);
    expect(wide).toMatch(/^web-1\s+running\s+mac-1\s+192\.168\.64\.7\s/m);
  });
});

describe('network mode and custom MAC (issue 18)', () => {
  const created = () => fake.on('POST', '/v1/vms', (req, res) => sendJson(res, 201, vm('web-1', req.body as Partial<VmObject>)));
  it('--network-mode and --mac go into the spec (the MAC lower case), merged with the rules', async () => {
    created();
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'img', '--network-mode', 'host-only', '--allow', '@host', '--mac', '02:AA:BB:CC:DD:EE']);
    expect(r.code, r.stderr).toBe(0);
    expect(fake.requests[0]!.body).toEqual({ name: 'web-1', image: 'img', network: { mode: 'host-only', allow: ['@host'], block: [] }, mac: '02:aa:bb:cc:dd:ee' });
  });
  it('refuses bad values before asking the controller, in its words', async () => {
    const cases: [string[], RegExp][] = [
      [['--network-mode', 'bridged'], /invalid --network-mode "bridged": expected one of nat, host-only, none/],
      [['--mac', '01:00:5e:00:00:01'], /invalid --mac: MAC "01:00:5e:00:00:01" is a multicast address/],
      [['--mac', 'ff:ff:ff:ff:ff:ff'], /broadcast/],
      [['--mac', '00:00:00:00:00:00'], /all zero/],
      [['--mac', '02-00-5e-10-00-01'], /separate the six octets with ":"/],
      [['--mac', '02:00:5e:10:00'], /not six two-digit hex octets/],
      [['--network-mode', 'none', '--allow', '10.0.0.0/8'], /network mode "none" has no NIC to apply allow to/],
      [['--network-mode', 'none', '--mac', '02:00:00:00:00:01'], /no NIC to give a MAC to/],
    ];
    for (const [flags, why] of cases) {
      const r = await fleet(['vm', 'create', 'web-1', '--image', 'img', ...flags]);
      expect(r.code, flags.join(' ')).toBe(2);
      expect(r.stderr, flags.join(' ')).toMatch(why);
    }
    expect(fake.requests).toHaveLength(0);
  });
  it('takes mode and mac from a spec file, flags overriding', async () => {
    created();
    const file = join(dir, 'vm.yaml');
    writeFileSync(file, 'name: web-1\nimage: img\nnetwork: { mode: none }\n');
    expect((await fleet(['vm', 'create', '-f', file])).code).toBe(0);
    expect(fake.requests[0]!.body).toMatchObject({ network: { mode: 'none' } });
    writeFileSync(file, 'name: web-1\nimage: img\nnetwork: { mode: host-only, block: [10.0.0.0/8] }\nmac: "02:00:00:00:00:0A"\n');
    expect((await fleet(['vm', 'create', '-f', file, '--network-mode', 'nat'])).code).toBe(0);
    expect(fake.requests[1]!.body).toMatchObject({ network: { mode: 'nat', block: ['10.0.0.0/8'] }, mac: '02:00:00:00:00:0a' });
    writeFileSync(file, 'name: web-1\nimage: img\nmac: "ff:ff:ff:ff:ff:ff"\n');
    const bad = await fleet(['vm', 'create', '-f', file]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/invalid .*vm\.yaml: mac: MAC "ff:ff:ff:ff:ff:ff" is the broadcast address/);
    writeFileSync(file, 'name: web-1\nimage: img\nnetwork: { mode: none, blockLocal: true }\n');
    expect((await fleet(['vm', 'create', '-f', file])).stderr).toMatch(/no NIC to apply blockLocal/);
    writeFileSync(file, 'name: web-1\nimage: img\nnetwork: { mode: shared }\n');
    expect((await fleet(['vm', 'create', '-f', file])).stderr).toMatch(/network\.mode "shared": expected one of nat, host-only, none/);
    expect(fake.requests).toHaveLength(2);
  });
  it('vm update --network-mode / --mac / --clear-mac send a PATCH', async () => {
    fake.on('PATCH', '/v1/vms/web-1', (req, res) => sendJson(res, 200, vm('web-1')));
    expect((await fleet(['vm', 'update', 'web-1', '--network-mode', 'host-only', '--mac', '02:00:00:00:00:01'])).code).toBe(0);
    expect(fake.requests[0]!.body).toEqual({ network: { mode: 'host-only' }, mac: '02:00:00:00:00:01' });
    expect((await fleet(['vm', 'update', 'web-1', '--clear-mac'])).code).toBe(0);
    expect(fake.requests[1]!.body).toEqual({ mac: null });
    expect((await fleet(['vm', 'update', 'web-1', '--mac', '02:00:00:00:00:01', '--clear-mac'])).code).toBe(2);
  });
  it('vm get shows the mode and where the MAC comes from', async () => {
    fake.reply('GET', '/v1/vms/web-1', 200, vm('web-1', { network: { mode: 'host-only', allow: ['@host'], block: [], blockLocal: false }, mac: '02:00:00:00:00:01', macSource: 'custom' }));
    const out = (await fleet(['vm', 'get', 'web-1'])).stdout;
    expect(out).toMatch(/MAC:\s+02:00:00:00:00:01 \(custom\)/);
    expect(out).toMatch(/Network:\s+host-only: the worker's host-only network, never beyond; allow @host/);
    fake.reply('GET', '/v1/vms/web-2', 200, vm('web-2', { network: { mode: 'none', allow: [], block: [], blockLocal: false } }));
    const none = (await fleet(['vm', 'get', 'web-2'])).stdout;
    expect(none).toMatch(/MAC:\s+- \(no NIC\)/);
    expect(none).toMatch(/Network:\s+none \(no NIC\)/);
  });
});

describe('vm watch', () => {
  it('prints a line per change; the stream ending is exit 5', async () => {
    fake.on('GET', '/v1/vms', (_req, res) =>
      streamNdjson(res, [added(pending), '\n', JSON.stringify(modified(running)).slice(0, 40), 20, JSON.stringify(modified(running)).slice(40) + '\n', { type: 'DELETED', vm: running }]),
    );
    const r = await fleet(['vm', 'watch']);
    expect(r.code).toBe(5);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^TIME\s+TYPE\s+NAME\s+STATE\s+WORKER\s+IP\s+REASON$/);
    expect(lines[1]).toMatch(/^\d\d:\d\d:\d\d\s+ADDED\s+web-1\s+pending\s+-\s+-\s+no worker has 4 free CPUs$/);
    expect(lines[2]).toMatch(/^\d\d:\d\d:\d\d\s+MODIFIED\s+web-1\s+running\s+mac-1\s+10\.0\.0\.5\s+running on mac-1$/);
    expect(lines[3]).toMatch(/^\d\d:\d\d:\d\d\s+DELETED\s+web-1\s+running/);
    expect(r.stderr).toBe(`fleet: the controller at ${fake.url} closed the watch stream\n`);
    expect(fake.requests[0]!.query.get('watch')).toBe('true');
  });

  it('one VM: ends with exit 0 when it is deleted; --json prints NDJSON', async () => {
    fake.on('GET', '/v1/vms/web-1', (_req, res) => streamNdjson(res, [added(pending), modified(running), { type: 'DELETED', vm: running }], true));
    const r = await fleet(['vm', 'watch', 'web-1', '--json']);
    expect(r.code).toBe(0);
    const docs = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { type: string; vm: VmObject });
    expect(docs.map((d) => `${d.type} ${d.vm.state}`)).toEqual(['ADDED pending', 'MODIFIED running', 'DELETED running']);
  });

  it('Ctrl-C ends a watch with exit 0', async () => {
    fake.on('GET', '/v1/vms', (_req, res) => streamNdjson(res, [added(pending)], true));
    const ac = new AbortController();
    const r = await fleet(['vm', 'watch'], { signal: ac.signal, onStdout: (s) => s.includes('ADDED') && ac.abort() });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/ADDED\s+web-1/);
  });

  it('an ERROR line from the controller: exit 1 with its message', async () => {
    fake.on('GET', '/v1/vms', (_req, res) =>
      streamNdjson(res, [added(pending), { type: 'ERROR', error: { code: 'slow_consumer', message: 'watch stream closed: client is not reading fast enough' } }]),
    );
    const r = await fleet(['vm', 'watch']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('fleet: the controller ended the watch: watch stream closed: client is not reading fast enough\n');
  });

  it('an unknown VM: exit 3', async () => {
    fake.fail('GET', '/v1/vms/nope', 404, 'not_found', 'vm "nope" not found');
    const r = await fleet(['vm', 'watch', 'nope']);
    expect(r.code).toBe(3);
    expect(r.stderr).toBe('fleet: vm "nope" not found\n');
  });
});

describe('vm delete', () => {
  it('deletes every name, reports a missing one, and exits with its code', async () => {
    fake.reply('DELETE', '/v1/vms/a', 204);
    fake.fail('DELETE', '/v1/vms/b', 404, 'not_found', 'vm "b" not found');
    fake.reply('DELETE', '/v1/vms/c', 202, vm('c', { state: 'deleting' }));
    const r = await fleet(['vm', 'delete', 'a', 'b', 'c']);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('vm "a" deleted\nvm "c" is being deleted (its worker removes it)\n');
    expect(r.stderr).toBe('fleet: vm "b" not found\n');
    expect(fake.requests.map((q) => `${q.method} ${q.path}`)).toEqual(['DELETE /v1/vms/a', 'DELETE /v1/vms/b', 'DELETE /v1/vms/c']);
  });

  it('--ignore-missing: exit 0; --json: one result per name', async () => {
    fake.reply('DELETE', '/v1/vms/a', 204);
    fake.fail('DELETE', '/v1/vms/b', 404, 'not_found', 'vm "b" not found');
    const r = await fleet(['vm', 'delete', 'a', 'b', '--ignore-missing', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      results: [
        { name: 'a', result: 'deleted', vm: null },
        { name: 'b', result: 'not-found', vm: null },
      ],
    });
  });

  it('--wait: polls until the VM is gone', async () => {
    fake.reply('DELETE', '/v1/vms/a', 202, vm('a', { state: 'deleting' }));
    let gets = 0;
    fake.on('GET', '/v1/vms/a', (_req, res) => {
      gets += 1;
      if (gets < 3) sendJson(res, 200, vm('a', { state: 'deleting', reason: 'waiting for the worker' }));
      else sendJson(res, 404, { error: { code: 'not_found', message: 'vm "a" not found' } });
    });
    const r = await fleet(['vm', 'delete', 'a', '--wait']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('vm "a" deleted\n');
    expect(gets).toBe(3);
  });

  it('--wait: exit 7 when the VM is still there at the deadline', async () => {
    fake.reply('DELETE', '/v1/vms/a', 202, vm('a', { state: 'deleting' }));
    fake.reply('GET', '/v1/vms/a', 200, vm('a', { state: 'deleting', reason: 'waiting for the worker to remove it' }));
    const r = await fleet(['vm', 'delete', 'a', '--wait', '300ms']);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/timed out after 300ms waiting for vm "a" to be deleted; it is deleting: waiting for the worker to remove it/);
  });
});

describe('vm logs', () => {
  it('prints all events oldest first, paging with the cursor', async () => {
    fake.on('GET', '/v1/vms/web-1/events', (req, res) => {
      const cursor = req.query.get('cursor');
      if (!cursor) sendJson(res, 200, { events: [event(1, 'vm.created', 'created'), event(2, 'vm.state', 'pending → scheduled')], nextCursor: 2 });
      else sendJson(res, 200, { events: [event(3, 'vm.state', 'scheduled → running')], nextCursor: null });
    });
    const r = await fleet(['vm', 'logs', 'web-1']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        '2025-01-01T00:00:01Z  vm.created      created',
        '2025-01-01T00:00:02Z  vm.state        pending → scheduled',
        '2025-01-01T00:00:03Z  vm.state        scheduled → running',
        '',
      ].join('\n'),
    );
    expect(fake.requests.map((q) => Object.fromEntries(q.query))).toEqual([
      { order: 'asc', limit: '1000' },
      { order: 'asc', limit: '1000', cursor: '2' },
    ]);
  });

  it('--limit N: the last N, still oldest first', async () => {
    fake.reply('GET', '/v1/vms/web-1/events', 200, { events: [event(9, 'vm.state', 'nine'), event(8, 'vm.state', 'eight')], nextCursor: 8 });
    const r = await fleet(['vm', 'logs', 'web-1', '--limit', '2']);
    expect(r.stdout.split('\n').filter(Boolean).map((l) => l.split(/\s+/).at(-1))).toEqual(['eight', 'nine']);
    expect(Object.fromEntries(fake.requests[0]!.query)).toEqual({ order: 'desc', limit: '2' });
  });

  it('--follow: polls after the last event and stops when the VM is deleted', async () => {
    let calls = 0;
    fake.on('GET', '/v1/vms/web-1/events', (req, res) => {
      calls += 1;
      if (calls === 1) return sendJson(res, 200, { events: [event(1, 'vm.created', 'created')], nextCursor: null });
      expect(req.query.get('cursor')).toBe('1');
      sendJson(res, 200, { events: [event(2, 'vm.deleted', 'deleted by token:admin')], nextCursor: null });
    });
    const r = await fleet(['vm', 'logs', 'web-1', '--follow']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/created\n.*vm\.deleted\s+deleted by token:admin\n$/);
    expect(r.stderr).toMatch(/was deleted; nothing more to follow/);
  });

  it('an unknown VM: exit 3', async () => {
    fake.fail('GET', '/v1/vms/nope/events', 404, 'not_found', 'vm "nope" not found');
    expect((await fleet(['vm', 'logs', 'nope'])).code).toBe(3);
  });
});

describe('vm update', () => {
  it('merges label edits into the current labels and sends one PATCH', async () => {
    fake.reply('GET', '/v1/vms/web-1', 200, vm('web-1', { labels: { team: 'web', old: 'x' } }));
    fake.on('PATCH', '/v1/vms/web-1', (req, res) => sendJson(res, 200, vm('web-1', { ...(req.body as object), generation: 2 })));
    const r = await fleet(['vm', 'update', 'web-1', '--label', 'tier=fe', '--label', 'old-', '--priority', '5', '--memory', '8G', '--stop']);
    expect(r.code).toBe(0);
    expect(fake.requestsTo('PATCH', '/v1/vms/web-1')[0]!.body).toEqual({
      labels: { team: 'web', tier: 'fe' },
      priority: 5,
      memoryMib: 8192,
      powerState: 'stopped',
    });
    expect(r.stdout).toMatch(/vm "web-1" updated \(.*generation 2\)/);
  });

  it('sends the version it merged into (If-Match) and, when the VM changed meanwhile (412), reads it again', async () => {
    let reads = 0;
    fake.on('GET', '/v1/vms/web-1', (_req, res) => {
      reads++;
      // Someone else added team=web between our first read and our PATCH.
      sendJson(res, 200, vm('web-1', reads === 1 ? { labels: {}, updatedAt: '2025-01-01T00:00:01.000Z' } : { labels: { team: 'web' }, updatedAt: '2025-01-01T00:00:02.000Z' }));
    });
    fake.on('PATCH', '/v1/vms/web-1', (req, res) => {
      if (req.headers['if-match'] !== '"2025-01-01T00:00:02.000Z"') return sendJson(res, 412, { error: { code: 'precondition_failed', message: 'vm "web-1" changed since it was read' } });
      sendJson(res, 200, vm('web-1', { ...(req.body as object), generation: 3 }));
    });
    const r = await fleet(['vm', 'update', 'web-1', '--label', 'tier=fe']);
    expect(r.code, r.stderr).toBe(0);
    const patches = fake.requestsTo('PATCH', '/v1/vms/web-1');
    expect(patches.map((p) => p.headers['if-match'])).toEqual(['"2025-01-01T00:00:01.000Z"', '"2025-01-01T00:00:02.000Z"']);
    expect(patches[1]!.body).toEqual({ labels: { team: 'web', tier: 'fe' } }); // nobody's label lost
  });

  it('gives up after 5 changed reads with exit 6', async () => {
    fake.reply('GET', '/v1/vms/web-1', 200, vm('web-1'));
    fake.fail('PATCH', '/v1/vms/web-1', 412, 'precondition_failed', 'vm "web-1" changed since it was read');
    const r = await fleet(['vm', 'update', 'web-1', '--label', 'a=b']);
    expect(r.code).toBe(6);
    expect(fake.requestsTo('PATCH', '/v1/vms/web-1')).toHaveLength(5);
  });

  it('a 409 (e.g. resizing a placed VM) is exit 6', async () => {
    fake.fail('PATCH', '/v1/vms/web-1', 409, 'conflict', 'cannot change CPUs or memory of vm "web-1" while it is placed on a worker');
    const r = await fleet(['vm', 'update', 'web-1', '--cpus', '8']);
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/cannot change CPUs or memory/);
  });
});

describe('vm passwords', () => {
  const stdinOf = (text: string) => Readable.from([Buffer.from(text)]);

  it('create --password-stdin sends the password without its trailing newline', async () => {
    fake.on('POST', '/v1/vms', (req, res) => sendJson(res, 201, vm('mac-1', { passwordSet: true })));
    const r = await runCli(['vm', 'create', 'mac-1', '--image', 'sonoma', '--username', 'admin', '--password-stdin'], { env, stdin: stdinOf('admin pass\n') });
    expect(r.code, r.stderr).toBe(0);
    expect(fake.requests[0]!.body).toMatchObject({ name: 'mac-1', username: 'admin', password: 'admin pass' });
  });

  it('update --password-file sets it, --clear-password removes it; vm get shows only whether one is set', async () => {
    writeFileSync(join(dir, 'pw'), 'from-file\r\n');
    fake.on('PATCH', '/v1/vms/mac-1', (req, res) => sendJson(res, 200, vm('mac-1', { passwordSet: (req.body as { password: unknown }).password !== null })));
    expect((await fleet(['vm', 'update', 'mac-1', '--password-file', join(dir, 'pw')])).code).toBe(0);
    expect((await fleet(['vm', 'update', 'mac-1', '--clear-password'])).code).toBe(0);
    expect(fake.requestsTo('PATCH', '/v1/vms/mac-1').map((q) => q.body)).toEqual([{ password: 'from-file' }, { password: null }]);
    fake.reply('GET', '/v1/vms/mac-1', 200, vm('mac-1', { passwordSet: true }));
    expect((await fleet(['vm', 'get', 'mac-1'])).stdout).toMatch(/Password:\s+set \(sessions try the fleet key first/);
  });

  it('refuses bad passwords and conflicting flags before calling the API; there is no flag taking the password itself', async () => {
    const bad = async (args: string[], stdin: string | null, message: RegExp) => {
      const r = await runCli(args, { env, ...(stdin !== null ? { stdin: stdinOf(stdin) } : {}) });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(message);
    };
    await bad(['vm', 'create', 'm', '--image', 'i', '--password-stdin'], '\n', /password is empty/);
    await bad(['vm', 'create', 'm', '--image', 'i', '--password-stdin'], 'a\tb', /control character/);
    await bad(['vm', 'update', 'm', '--password-stdin', '--clear-password'], 'x', /cannot be combined/);
    await bad(['vm', 'update', 'm', '--password-file', join(dir, 'missing')], null, /cannot read .*ENOENT/);
    await bad(['vm', 'create', 'm', '--image', 'i', '--password', 'secret'], null, /unknown option '--password'/);
    expect(fake.requests).toHaveLength(0);
  });
});

describe('vm create network policy', () => {
  it('sends --allow/--block/--block-local as the network policy', async () => {
    fake.on('POST', '/v1/vms', (req, res) => sendJson(res, 201, vm('web-1', req.body as Partial<VmObject>)));
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'fleet-guest', '--allow', '10.0.0.0/8', '--allow', '@host', '--block', '1.2.3.4', '--block-local']);
    expect(r.code).toBe(0);
    expect((fake.requests[0]!.body as { network: unknown }).network).toEqual({ allow: ['10.0.0.0/8', '@host'], block: ['1.2.3.4'], blockLocal: true });
  });

  it('refuses a rule that is not a CIDR before calling the API', async () => {
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'fleet-guest', '--allow', 'example.com']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/invalid --allow "example.com"/);
    expect(fake.requests).toHaveLength(0);
  });
});

describe('ip', () => {
  const noIp = vm('web-1', { state: 'running', reason: 'running on mac-1', worker: 'mac-1' });

  it('prints the IP of a VM that has one', async () => {
    fake.reply('GET', '/v1/vms/web-1', 200, running);
    const r = await fleet(['ip', 'web-1']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('10.0.0.5\n');
  });

  it('without --wait: exit 7 and a hint when there is no IP yet', async () => {
    fake.reply('GET', '/v1/vms/web-1', 200, noIp);
    const r = await fleet(['ip', 'web-1']);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/has no IP yet .*use --wait/);
  });

  it('--wait: keeps waiting past the running-without-IP grace until the lease arrives', async () => {
    fake.on('GET', '/v1/vms/web-1', (req, res) => {
      if (req.query.get('watch') !== 'true') return sendJson(res, 200, noIp);
      void streamNdjson(res, [added(noIp), 200, modified(running)], true);
    });
    const r = await fleet(['ip', 'web-1', '--wait', '10s', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ name: 'web-1', ip: '10.0.0.5', state: 'running' });
  });

  it('--wait: exit 7 naming the state when no IP arrives in time', async () => {
    fake.on('GET', '/v1/vms/web-1', (req, res) => {
      if (req.query.get('watch') !== 'true') return sendJson(res, 200, pending);
      void streamNdjson(res, [added(pending)], true);
    });
    const r = await fleet(['ip', 'web-1', '--wait', '300ms']);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/timed out after 300ms waiting for vm "web-1" to be running with an IP address; it is pending/);
  });
});
