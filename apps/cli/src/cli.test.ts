// Command-level tests: the real CLI (run(), the same function bin/fleet.js
// calls) against a fake controller on 127.0.0.1:0. Exit codes, messages and
// --json shapes are the contract scripts rely on.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeController, sendJson, vm, worker } from './testing/fake-controller.ts';
import { runCli } from './testing/run-cli.ts';

let fake: FakeController;
let dir: string;
let env: Record<string, string>;

beforeEach(async () => {
  fake = await FakeController.start();
  dir = mkdtempSync(join(tmpdir(), 'fleet-cli-'));
  env = { FLEET_URL: fake.url, FLEET_TOKEN: 'fleet_test_s3cr3t', FLEET_CONFIG: join(dir, 'config.json') };
});
afterEach(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

const fleet = (args: string[], extra: Record<string, string | undefined> = {}, opts: { tty?: boolean } = {}) =>
  runCli(args, { env: { ...env, ...extra }, ...opts });

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('exit codes and error messages', () => {
  it('200: success, exit 0, the bearer token is sent', async () => {
    fake.reply('GET', '/v1/vms', 200, { vms: [vm('web-1', { state: 'running', worker: 'mac-1', ip: '10.0.0.5' })] });
    const r = await fleet(['vm', 'list']);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toContain('web-1');
    expect(fake.requests[0]!.headers.authorization).toBe('Bearer fleet_test_s3cr3t');
  });

  it('400: exit 2 with the API message', async () => {
    fake.fail('POST', '/v1/vms', 400, 'invalid_request', 'invalid body: body/image must NOT have fewer than 1 characters');
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'x']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('fleet: invalid body: body/image must NOT have fewer than 1 characters\n');
  });

  it('401: exit 4, says to log in again', async () => {
    fake.fail('GET', '/v1/vms', 401, 'unauthorized', 'token revoked');
    const r = await fleet(['vm', 'list']);
    expect(r.code).toBe(4);
    expect(r.stderr).toBe('fleet: authentication failed: token revoked; log in again with "fleet login URL --token T"\n');
  });

  it('401 without any token: exit 4, says how to configure one', async () => {
    fake.fail('GET', '/v1/vms', 401, 'unauthorized', 'missing Authorization header');
    const r = await fleet(['vm', 'list'], { FLEET_TOKEN: undefined });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/not authenticated: no token configured; run "fleet login URL --token T" or set FLEET_TOKEN/);
    expect(fake.requests[0]!.headers.authorization).toBeUndefined();
  });

  it('403: exit 4 with the missing role', async () => {
    fake.fail('DELETE', '/v1/workers/mac-1', 403, 'forbidden', 'token "ci" lacks the "admin" role (has: write)');
    const r = await fleet(['worker', 'delete', 'mac-1', '--yes']);
    expect(r.code).toBe(4);
    expect(r.stderr).toBe('fleet: permission denied: token "ci" lacks the "admin" role (has: write)\n');
  });

  it('404: exit 3, one line, no stack trace', async () => {
    fake.fail('GET', '/v1/vms/web-1', 404, 'not_found', 'vm "web-1" not found');
    const r = await fleet(['vm', 'get', 'web-1']);
    expect(r).toEqual({ code: 3, stdout: '', stderr: 'fleet: vm "web-1" not found\n' });
  });

  it('409: exit 6', async () => {
    fake.fail('POST', '/v1/vms', 409, 'conflict', 'vm "web-1" already exists');
    const r = await fleet(['vm', 'create', 'web-1', '--image', 'ubuntu']);
    expect(r.code).toBe(6);
    expect(r.stderr).toBe('fleet: vm "web-1" already exists\n');
  });

  it('500: exit 1', async () => {
    fake.fail('GET', '/v1/workers', 500, 'internal', 'internal error; see the controller log');
    const r = await fleet(['worker', 'list']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('fleet: the controller failed (HTTP 500): internal error; see the controller log\n');
  });

  it('a non-JSON error page (a proxy): exit by status, message names the URL', async () => {
    fake.on('GET', '/v1/vms', (_q, res) => res.writeHead(502, { 'content-type': 'text/html' }).end('<h1>Bad Gateway</h1>'));
    const r = await fleet(['vm', 'list']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`HTTP 502 Bad Gateway from ${fake.url}`);
  });

  it('unreachable (connection refused): exit 5, names the URL, suggests fleet login', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const r = await fleet(['vm', 'list'], { FLEET_URL: url });
    expect(r.code).toBe(5);
    expect(r.stderr).toBe(
      `fleet: cannot reach the controller at ${url}: connection refused; is it running? Check the URL, or run "fleet login URL --token T"\n`,
    );
  });

  it('unreachable (DNS): exit 5', async () => {
    const r = await fleet(['vm', 'list'], { FLEET_URL: 'http://fleet-controller.invalid:8080' });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/cannot reach the controller at http:\/\/fleet-controller\.invalid:8080: (host not found|DNS lookup failed)/);
  });

  it('a controller that does not answer: exit 5 after --request-timeout', async () => {
    fake.on('GET', '/v1/vms', () => {}); // never answers
    const started = Date.now();
    const r = await fleet(['--request-timeout', '300ms', 'vm', 'list']);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/cannot reach the controller at .*: no answer within 300ms/);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('client-side validation: exit 2 and no request is sent', async () => {
    const cases: [string[], RegExp][] = [
      [['vm', 'create', 'Web_1', '--image', 'x'], /invalid VM name "Web_1"/],
      [['vm', 'create', 'web-1', '--image', 'x', '--memory', '4X'], /invalid --memory "4X": expected a size like 4G, 4096M or 4096/],
      [['vm', 'create', 'web-1', '--image', 'x', '--disk', 'big'], /invalid --disk "big"/],
      [['vm', 'create', 'web-1', '--image', 'x', '--label', 'team'], /invalid --label "team": expected key=value/],
      [['vm', 'create', 'web-1', '--image', 'x', '--cpus', '0'], /invalid --cpus "0"/],
      [['vm', 'create', 'web-1', '--image', 'x', '--os', 'windows'], /invalid --os "windows"/],
      [['vm', 'create', 'web-1', '--image', 'x', '--wait', 'forever'], /invalid --wait "forever"/],
      [['vm', 'list', '--state', 'sleeping'], /invalid --state "sleeping"/],
      [['vm', 'update', 'web-1', '--start', '--stop'], /cannot be used together/],
      [['vm', 'update', 'web-1'], /nothing to update/],
      [['token', 'create', 'ci', '--role', 'root'], /invalid --role "root"/],
      [['token', 'create', 'ci'], /missing --role/],
      [['token', 'create', 'ci', '--role', 'read', '--expires', '90m'], /whole hours/],
      [['scheduler', 'set', 'random'], /expected one of pack, spread/],
      [['events', '--limit', '0'], /invalid --limit "0"/],
      [['vm', 'create', 'web-1'], /required option '--image <image>' not specified/],
      [['vm', 'list', '--bogus'], /unknown option '--bogus'/],
      [['vm', 'frobnicate'], /unknown command 'frobnicate'/],
    ];
    for (const [args, message] of cases) {
      const r = await fleet(args);
      expect({ args, code: r.code }).toEqual({ args, code: 2 });
      expect(r.stderr).toMatch(/^fleet: /);
      expect(r.stderr).toMatch(message);
    }
    expect(fake.requests).toEqual([]);
  });

  it('no controller configured: exit 2 with what to do', async () => {
    const r = await fleet(['vm', 'list'], { FLEET_URL: undefined, FLEET_TOKEN: undefined });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('fleet: no controller configured: run "fleet login URL --token T", or pass --url / set FLEET_URL\n');
  });

  it('--help exits 0 and documents the exit codes; no command is a usage error', async () => {
    const help = await fleet(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Exit codes:');
    expect(help.stdout).toMatch(/5\s+controller unreachable/);
    expect((await fleet([])).code).toBe(2);
  });

  it('FLEET_DEBUG=1 adds the stack trace', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const r = await fleet(['vm', 'list'], { FLEET_URL: url, FLEET_DEBUG: '1' });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/UnreachableError: cannot reach/);
    expect(r.stderr).toMatch(/caused by:/);
  });
});

describe('--json output: the API objects, one document', () => {
  it('vm list', async () => {
    const vms = [vm('web-1'), vm('web-2', { state: 'running' })];
    fake.reply('GET', '/v1/vms', 200, { vms });
    const r = await fleet(['vm', 'list', '--json', '--state', 'running', '--worker', 'mac-1']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ vms });
    expect(fake.requests[0]!.query.get('state')).toBe('running');
    expect(fake.requests[0]!.query.get('worker')).toBe('mac-1');
  });

  it('vm get, worker list, global flag before the command', async () => {
    fake.reply('GET', '/v1/vms/web-1', 200, vm('web-1'));
    fake.reply('GET', '/v1/workers', 200, { workers: [worker('mac-1')] });
    expect(JSON.parse((await fleet(['--json', 'vm', 'get', 'web-1'])).stdout)).toEqual(vm('web-1'));
    expect(JSON.parse((await fleet(['worker', 'list', '--json'])).stdout)).toEqual({ workers: [worker('mac-1')] });
  });

  it('token create: the TokenCreated object', async () => {
    const created = {
      token: 'fleet_new_s3cr3t',
      info: { id: 't1', name: 'ci', roles: ['write'], createdBy: 'token:admin', createdAt: '2025-01-01T00:00:00.000Z', expiresAt: null, lastUsedAt: null, revokedAt: null },
    };
    fake.reply('POST', '/v1/tokens', 201, created);
    const r = await fleet(['token', 'create', 'ci', '--role', 'write', '--json']);
    expect(JSON.parse(r.stdout)).toEqual(created);
  });

  it('delete-like commands print a small result object', async () => {
    fake.reply('DELETE', '/v1/tokens/ci', 204);
    const r = await fleet(['token', 'revoke', 'ci', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ revoked: 'ci' });
  });
});

describe('human output', () => {
  it('vm list --wide shows the pending reason; ages are compact', async () => {
    fake.reply('GET', '/v1/vms', 200, {
      vms: [
        vm('web-1', { state: 'pending', reason: 'no worker has 4 free CPUs', createdAt: '2025-01-01T00:55:00.000Z' }),
        vm('db-1', { state: 'running', reason: 'running on mac-1', worker: 'mac-1', ip: '10.0.0.7', labels: { team: 'db' }, createdAt: '2024-12-31T23:00:00.000Z' }),
      ],
    });
    const r = await fleet(['vm', 'list', '--wide']);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+STATE\s+WORKER\s+IP\s+CPUS\s+MEMORY\s+AGE\s+OS\s+DRIVER\s+IMAGE\s+PRIORITY\s+RESTARTS\s+LABELS\s+REASON$/);
    expect(lines[1]).toMatch(/^web-1\s+pending\s+-\s+-\s+2\s+4G\s+5m\s+linux\s+any\s+ubuntu:24.04\s+0\s+0\s+-\s+no worker has 4 free CPUs$/);
    expect(lines[2]).toMatch(/^db-1\s+running\s+mac-1\s+10\.0\.0\.7\s+2\s+4G\s+2h\s+.*team=db\s+running on mac-1$/);
    // columns line up
    expect(lines[1]!.indexOf('pending')).toBe(lines[0]!.indexOf('STATE'));
    expect(lines[2]!.indexOf('running')).toBe(lines[0]!.indexOf('STATE'));
    const narrow = await fleet(['vm', 'list']);
    expect(narrow.stdout).not.toContain('REASON');
  });

  it('vm get shows the reason and recent events', async () => {
    fake.reply('GET', '/v1/vms/web-1', 200, vm('web-1', { reason: 'no worker matches selector pool=gpu (2 online)' }));
    fake.reply('GET', '/v1/vms/web-1/events', 200, {
      events: [{ id: 2, at: '2025-01-01T00:59:00.000Z', kind: 'vm.created', level: 'info', message: 'created by token:admin', vm: 'web-1', vmId: 'id-web-1', workerId: null, actor: 'token:admin', data: {} }],
      nextCursor: null,
    });
    const r = await fleet(['vm', 'get', 'web-1']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Reason:\s+no worker matches selector pool=gpu \(2 online\)$/m);
    expect(r.stdout).toMatch(/^Memory:\s+4G$/m);
    expect(r.stdout).toContain('Recent events:\n  2025-01-01T00:59:00Z  vm.created      created by token:admin');
  });

  it('no colours when stdout is not a TTY or NO_COLOR is set; colours on a TTY', async () => {
    fake.reply('GET', '/v1/vms', 200, { vms: [vm('web-1', { state: 'failed' })] });
    expect((await fleet(['vm', 'list'])).stdout).not.toContain('\x1b[');
    expect((await fleet(['vm', 'list'], { NO_COLOR: '1' }, { tty: true })).stdout).not.toContain('\x1b[');
    expect((await fleet(['vm', 'list'], {}, { tty: true })).stdout).toContain('\x1b[31mfailed\x1b[39m');
  });

  it('worker list shows use over capacity and the drained state', async () => {
    fake.reply('GET', '/v1/workers', 200, { workers: [worker('mac-1'), worker('mac-2', { paused: true, status: 'offline', lastSeenAt: null })] });
    const r = await fleet(['worker', 'list']);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+STATUS\s+VMS\s+MACOS\s+CPUS\s+MEMORY\s+LAST SEEN\s+AGE$/);
    expect(lines[1]).toMatch(/^mac-1\s+online\s+1\/8\s+0\/2\s+2\/8\s+4G\/16G\s+5s ago\s+25h$/);
    expect(lines[2]).toMatch(/^mac-2\s+offline,drained\s+.*never/);
  });

  it('worker get shows when the client certificate expires, or that none is valid', async () => {
    fake.reply('GET', '/v1/workers/mac-1', 200, worker('mac-1'));
    expect((await fleet(['worker', 'get', 'mac-1'])).stdout).toMatch(/Certificate:\s+expires 2025-12-01T00:00:00Z \(in .+\); renewed automatically before/);
    fake.reply('GET', '/v1/workers/mac-2', 200, worker('mac-2', { certificateExpiresAt: null }));
    expect((await fleet(['worker', 'get', 'mac-2'])).stdout).toMatch(/Certificate:\s+none valid: re-enroll this worker/);
  });

  it('worker get shows the VM addresses of its NAT network in use', async () => {
    fake.reply('GET', '/v1/workers/mac-1', 200, worker('mac-1'));
    expect((await fleet(['worker', 'get', 'mac-1'])).stdout).toMatch(/VM addresses:\s+not limited/);
    const limited = (vms: number) => worker('lin-1', { capacity: { cpus: 8, memoryMib: 16384, vmSlots: 300, macosSlots: 0, natAddresses: 253 }, used: { cpus: 0, memoryMib: 0, vms, macosVms: 0, natAddresses: vms } });
    fake.reply('GET', '/v1/workers/lin-1', 200, limited(3));
    expect((await fleet(['worker', 'get', 'lin-1'])).stdout).toMatch(/VM addresses:\s+3 of 253 in use \(one per NAT VM the worker holds, stopped ones included\)\n/);
    fake.reply('GET', '/v1/workers/lin-1', 200, limited(253));
    expect((await fleet(['worker', 'get', 'lin-1'])).stdout).toMatch(/VM addresses:\s+253 of 253 in use .*: none free, no new VMs here until a VM on it is deleted/);
  });

  it('worker get shows its networks (issue 18), or that it reported none; -o json carries them', async () => {
    fake.reply('GET', '/v1/workers/mac-1', 200, worker('mac-1'));
    expect((await fleet(['worker', 'get', 'mac-1'])).stdout).toMatch(/Networks:\s+not reported: NAT only \(an older worker, or the synthetic driver\)/);
    const networks = [
      { mode: 'nat' as const, subnet: '192.168.64.0/24', gateway: '192.168.64.1', addresses: 253, interface: 'fleet0', used: 3 },
      { mode: 'host-only' as const, subnet: '192.168.128.0/24', gateway: '192.168.128.1', addresses: 0, interface: 'vmnet host', used: 1 },
    ];
    fake.reply('GET', '/v1/workers/lin-1', 200, worker('lin-1', { networks }));
    const out = (await fleet(['worker', 'get', 'lin-1'])).stdout;
    expect(out).toMatch(/Network nat:\s+192\.168\.64\.0\/24, gateway 192\.168\.64\.1 on fleet0; 3 of 253 addresses in use\n/);
    expect(out).toMatch(/Network host-only:\s+192\.168\.128\.0\/24, gateway 192\.168\.128\.1 on vmnet host; 1 addresses in use \(not limited\)\n/);
    fake.reply('GET', '/v1/workers/lin-1', 200, worker('lin-1', { networks }));
    expect(JSON.parse((await fleet(['worker', 'get', 'lin-1', '-o', 'json'])).stdout).networks).toEqual(networks);
  });

  it('worker drain/resume/delete', async () => {
    fake.reply('POST', '/v1/workers/mac-1/drain', 200, worker('mac-1', { paused: true }));
    fake.reply('POST', '/v1/workers/mac-1/resume', 200, worker('mac-1'));
    fake.reply('DELETE', '/v1/workers/mac-1', 204);
    expect((await fleet(['worker', 'drain', 'mac-1'])).stdout).toBe('worker "mac-1" drained: it keeps its 1 VM(s) and gets no new ones\n');
    expect((await fleet(['worker', 'resume', 'mac-1'])).stdout).toMatch(/resumed/);
    const refused = await fleet(['worker', 'delete', 'mac-1']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/refusing to delete worker "mac-1" without --yes/);
    expect(fake.requestsTo('DELETE', '/v1/workers/mac-1')).toHaveLength(0);
    const deleted = await fleet(['worker', 'delete', 'mac-1', '--yes']);
    expect(deleted.code).toBe(0);
    expect(fake.requestsTo('DELETE', '/v1/workers/mac-1')).toHaveLength(1);
    // A worker that may still run its VMs is refused by the controller; --force says the host is gone.
    fake.on('DELETE', '/v1/workers/mac-2', (req, res) => {
      if (req.query.get('force') === 'true') res.writeHead(204).end();
      else sendJson(res, 409, { error: { code: 'conflict', message: 'worker mac-2 is connected: its VMs may still be running there' } });
    });
    const busy = await fleet(['worker', 'delete', 'mac-2', '--yes']);
    expect(busy.code).not.toBe(0);
    expect(busy.stderr).toMatch(/may still be running there/);
    expect((await fleet(['worker', 'delete', 'mac-2', '--yes', '--force'])).code).toBe(0);
    expect(fake.requestsTo('DELETE', '/v1/workers/mac-2').map((r) => r.query.get('force'))).toEqual([null, 'true']);
  });

  it('worker delete asks on a terminal and only deletes on "y"', async () => {
    fake.reply('DELETE', '/v1/workers/mac-1', 204);
    const tty = (answer: string) => Object.assign(Readable.from([answer]), { isTTY: true });
    const no = await runCli(['worker', 'delete', 'mac-1'], { env, stdin: tty('n\n') });
    expect(no.code).toBe(1);
    expect(no.stderr).toMatch(/Delete worker "mac-1"\? .*\[y\/N\] fleet: worker "mac-1" not deleted\n$/);
    expect(fake.requestsTo('DELETE', '/v1/workers/mac-1')).toHaveLength(0);
    const yes = await runCli(['worker', 'delete', 'mac-1'], { env, stdin: tty('y\n') });
    expect(yes.code).toBe(0);
    expect(fake.requestsTo('DELETE', '/v1/workers/mac-1')).toHaveLength(1);
  });

  it('token create prints the token alone on stdout and the warning on stderr', async () => {
    fake.on('POST', '/v1/tokens', (req, res) =>
      sendJson(res, 201, {
        token: 'fleet_new_s3cr3t',
        info: { id: 't1', name: 'ci', roles: ['read', 'write'], createdBy: 'token:admin', createdAt: '2025-01-01T01:00:00.000Z', expiresAt: '2025-01-08T01:00:00.000Z', lastUsedAt: null, revokedAt: null },
        echo: req.body,
      }),
    );
    const r = await fleet(['token', 'create', 'ci', '--role', 'read', '--role', 'write', '--role', 'read', '--expires', '7d']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('fleet_new_s3cr3t\n');
    expect(r.stderr).toContain('it is not shown again');
    expect(r.stderr).toContain('expires in 7d');
    expect(fake.requests[0]!.body).toEqual({ name: 'ci', roles: ['read', 'write'], expiresInHours: 168 });
  });

  it('bootstrap-token create prints the token and the enroll command', async () => {
    fake.reply('POST', '/v1/bootstrap-tokens', 201, {
      token: 'fleet-bootstrap-v1.abc.def.fp',
      info: { id: 'b1', name: 'boot-1', usesLeft: 1, createdBy: 'token:admin', createdAt: '2025-01-01T01:00:00.000Z', expiresAt: '2025-01-02T01:00:00.000Z', lastUsedAt: null, revokedAt: null },
      enrollCommand: 'fleet-worker enroll --controller 10.0.0.1:7443 --token fleet-bootstrap-v1.abc.def.fp && fleet-worker run',
    });
    const r = await fleet(['bootstrap-token', 'create', '--name', 'boot-1', '--uses', '1', '--expires', '24h']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('token: fleet-bootstrap-v1.abc.def.fp');
    expect(r.stdout).toContain('  fleet-worker enroll --controller 10.0.0.1:7443 --token fleet-bootstrap-v1.abc.def.fp && fleet-worker run');
    expect(fake.requests[0]!.body).toEqual({ name: 'boot-1', uses: 1, expiresInHours: 24 });
  });

  it('token list shows status', async () => {
    const base = { roles: ['read'], createdBy: 'token:admin', createdAt: '2025-01-01T00:00:00.000Z', lastUsedAt: null };
    fake.reply('GET', '/v1/tokens', 200, {
      tokens: [
        { ...base, id: '1', name: 'ok', expiresAt: null, revokedAt: null },
        { ...base, id: '2', name: 'old', expiresAt: '2025-01-01T00:30:00.000Z', revokedAt: null },
        { ...base, id: '3', name: 'gone', expiresAt: null, revokedAt: '2025-01-01T00:10:00.000Z' },
      ],
    });
    const r = await fleet(['token', 'list']);
    expect(r.stdout).toMatch(/^ok\s+read\s+active\s+never/m);
    expect(r.stdout).toMatch(/^old\s+read\s+expired\s+30m ago/m);
    expect(r.stdout).toMatch(/^gone\s+read\s+revoked/m);
  });

  it('events passes its filters and prints a table', async () => {
    fake.reply('GET', '/v1/events', 200, {
      events: [{ id: 9, at: '2025-01-01T00:59:00.000Z', kind: 'worker.offline', level: 'warn', message: 'worker mac-1 is offline', vm: null, vmId: null, workerId: 'w', actor: 'controller', data: {} }],
      nextCursor: null,
    });
    const r = await fleet(['events', '--worker', 'mac-1', '--kind', 'worker.offline', '--actor', 'controller', '--limit', '5']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^2025-01-01T00:59:00Z\s+worker\.offline\s+-\s+controller\s+worker mac-1 is offline$/m);
    const q = fake.requests[0]!.query;
    expect(Object.fromEntries(q)).toEqual({ worker: 'mac-1', kind: 'worker.offline', actor: 'controller', limit: '5' });
  });

  it('scheduler get/set', async () => {
    fake.reply('GET', '/v1/settings/scheduler', 200, { profile: 'pack' });
    fake.on('PUT', '/v1/settings/scheduler', (req, res) => sendJson(res, 200, req.body));
    expect((await fleet(['scheduler', 'get'])).stdout).toBe('pack\n');
    expect((await fleet(['scheduler', 'set', 'spread'])).stdout).toBe('scheduler profile set to spread\n');
    expect(fake.requestsTo('PUT', '/v1/settings/scheduler')[0]!.body).toEqual({ profile: 'spread' });
  });

  it('version: client and controller; --client works offline', async () => {
    fake.reply('GET', '/v1/info', 200, { version: '0.1.0', protocolVersion: 1, grpcAddress: '127.0.0.1:7443', caFingerprint: 'ab', schedulerProfile: 'pack' });
    const r = await fleet(['version', '--json']);
    expect(JSON.parse(r.stdout)).toMatchObject({ client: { version: '0.1.0' }, controller: { version: '0.1.0', url: fake.url } });
    const offline = await fleet(['version', '--client'], { FLEET_URL: 'http://127.0.0.1:1' });
    expect(offline).toMatchObject({ code: 0, stdout: 'client:     fleet 0.1.0\n' });
  });
});

describe('login and contexts', () => {
  it('login checks the token with /v1/whoami and saves a 0600 context that later commands use', async () => {
    fake.reply('GET', '/v1/whoami', 200, { name: 'admin', roles: ['admin'] });
    fake.reply('GET', '/v1/vms', 200, { vms: [] });
    const noEnv = { FLEET_URL: undefined, FLEET_TOKEN: undefined };
    const r = await fleet(['login', fake.url, '--token', 'fleet_ctx_s3cr3t', '--context', 'local'], noEnv);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('logged in to');
    expect(fake.requests[0]!.headers.authorization).toBe('Bearer fleet_ctx_s3cr3t');
    const path = join(dir, 'config.json');
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(path, 'utf8'))).toEqual({
      currentContext: 'local',
      contexts: { local: { url: fake.url, token: 'fleet_ctx_s3cr3t', user: 'admin', roles: ['admin'] } },
    });
    // the saved context is used when nothing overrides it
    expect((await fleet(['vm', 'list'], noEnv)).code).toBe(0);
    expect(fake.requests.at(-1)!.headers.authorization).toBe('Bearer fleet_ctx_s3cr3t');
    // env beats the context, the flag beats env
    await fleet(['vm', 'list'], { FLEET_URL: undefined, FLEET_TOKEN: 'fleet_env_s' });
    expect(fake.requests.at(-1)!.headers.authorization).toBe('Bearer fleet_env_s');
    await fleet(['vm', 'list', '--token', 'fleet_flag_s'], { FLEET_URL: undefined, FLEET_TOKEN: 'fleet_env_s' });
    expect(fake.requests.at(-1)!.headers.authorization).toBe('Bearer fleet_flag_s');

    const list = await fleet(['context', 'list'], noEnv);
    expect(list.stdout).toMatch(/^\*\s+local\s+http:\/\/127\.0\.0\.1:\d+\s+admin\s+admin$/m);
    expect(list.stdout).not.toContain('s3cr3t');
    const show = JSON.parse((await fleet(['context', 'show', '--json'], { FLEET_URL: undefined })).stdout);
    expect(show).toMatchObject({ context: 'local', url: fake.url, urlSource: 'context', token: 'fleet_test_****', tokenSource: 'env' });
  });

  it('a rejected token is not saved: exit 4', async () => {
    fake.fail('GET', '/v1/whoami', 401, 'unauthorized', 'unknown token');
    const r = await fleet(['login', fake.url, '--token', 'fleet_bad_x']);
    expect(r.code).toBe(4);
    expect(() => statSync(join(dir, 'config.json'))).toThrow();
  });

  it('context use / delete, and unknown names', async () => {
    fake.reply('GET', '/v1/whoami', 200, { name: 'admin', roles: ['admin'] });
    await fleet(['login', fake.url, '--context', 'a']);
    await fleet(['login', fake.url, '--context', 'b']);
    expect((await fleet(['context', 'use', 'a'])).stdout).toMatch(/switched to context "a"/);
    expect(JSON.parse((await fleet(['context', 'list', '--json'])).stdout).currentContext).toBe('a');
    expect((await fleet(['context', 'use', 'zzz'])).code).toBe(2);
    expect((await fleet(['vm', 'list', '--context', 'zzz'])).stderr).toMatch(/context "zzz" \(from --context\) not found/);
    expect((await fleet(['context', 'delete', 'a'])).code).toBe(0);
    expect(JSON.parse((await fleet(['context', 'list', '--json'])).stdout)).toMatchObject({ currentContext: null, contexts: [{ name: 'b' }] });
  });

  it('context add with several --url: saved with every URL, listed and shown; commands fail over from a closed port', async () => {
    fake.reply('GET', '/v1/whoami', 200, { name: 'admin', roles: ['admin'] });
    fake.reply('GET', '/v1/vms', 200, { vms: [] });
    const down = `http://127.0.0.1:${await closedPort()}`;
    const noEnv = { FLEET_URL: undefined, FLEET_TOKEN: undefined };
    const add = await fleet(['context', 'add', 'ha', '--url', down, '--url', fake.url, '--token', 'fleet_ha_s3cr3t'], noEnv);
    expect(add.code).toBe(0);
    expect(add.stdout).toContain(`logged in to ${fake.url}`);
    expect(add.stdout).toContain(`tried in order: ${down}, ${fake.url}`);
    expect(add.stderr).toContain(`cannot reach the controller at ${down} (connection refused); trying ${fake.url}`);
    expect(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).contexts.ha).toEqual({
      url: down,
      urls: [down, fake.url],
      token: 'fleet_ha_s3cr3t',
      user: 'admin',
      roles: ['admin'],
    });
    const list = await fleet(['context', 'list'], noEnv);
    expect(list.stdout).toContain(`${down},${fake.url}`);
    expect(JSON.parse((await fleet(['context', 'list', '--json'], noEnv)).stdout).contexts[0]).toMatchObject({ name: 'ha', url: down, urls: [down, fake.url] });
    const show = await fleet(['context', 'show'], noEnv);
    expect(show.stdout).toMatch(new RegExp(`URLs:\\s+${down}, ${fake.url} \\(from context, tried in order\\)`));
    expect(JSON.parse((await fleet(['context', 'show', '--json'], noEnv)).stdout)).toMatchObject({ url: down, urls: [down, fake.url], tokenSource: 'context' });
    // A command with the context: the first URL refuses, the second answers with the context's token.
    const r = await fleet(['vm', 'list'], noEnv);
    expect(r.code).toBe(0);
    expect(fake.requests.at(-1)!.headers.authorization).toBe('Bearer fleet_ha_s3cr3t');
    // The token stays with the context's URLs: --url naming another one does not get it.
    const other = `http://127.0.0.1:${await closedPort()}`;
    expect((await fleet(['context', 'show', '--json', '--url', fake.url, '--url', other], noEnv)).stdout).toMatch(/"token": null/);
  });

  it('FLEET_URL and --url take comma-separated lists; a single --url keeps working; schemes must not mix', async () => {
    fake.reply('GET', '/v1/vms', 200, { vms: [] });
    const down = `http://127.0.0.1:${await closedPort()}`;
    expect((await fleet(['vm', 'list'], { FLEET_URL: `${down},${fake.url}` })).code).toBe(0);
    expect((await fleet(['vm', 'list', '--url', `${down}, ${fake.url}`])).code).toBe(0);
    expect((await fleet(['vm', 'list', '--url', fake.url])).code).toBe(0);
    const mixed = await fleet(['vm', 'list', '--url', fake.url, '--url', fake.url.replace('http:', 'https:')]);
    expect(mixed.code).toBe(2);
    expect(mixed.stderr).toMatch(/mixes http:\/\/ and https:\/\//);
  });

  it('login without a token is a usage error', async () => {
    const r = await fleet(['login', fake.url], { FLEET_TOKEN: undefined });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/missing --token/);
  });
});
