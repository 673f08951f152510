// `fleet controller list|status` against fake controllers: the table and --json shapes, the
// aliases, an older controller without the route, and /v1/health's report (also its 503, and
// through a context with several URLs whose first cannot be reached).
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { HealthReport } from '../client/api-client.ts';
import { FakeController, controllerObject } from '../testing/fake-controller.ts';
import { runCli } from '../testing/run-cli.ts';

let fake: FakeController;
let dir: string;
let env: Record<string, string | undefined>;

beforeEach(async () => {
  fake = await FakeController.start();
  dir = mkdtempSync(join(tmpdir(), 'fleet-cli-controller-'));
  env = { FLEET_URL: fake.url, FLEET_TOKEN: 'fleet_test_s3cr3t', FLEET_CONFIG: join(dir, 'config.json') };
});
afterEach(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

const fleet = (args: string[], extra: Record<string, string | undefined> = {}, opts: { tty?: boolean } = {}) => runCli(args, { env: { ...env, ...extra }, ...opts });

const three = [
  controllerObject('ctl-a', { role: 'leader', connectedWorkers: 3 }),
  controllerObject('ctl-b', { connectedWorkers: 2, lastSeenAt: '2025-01-01T00:59:59.000Z' }),
  controllerObject('ctl-c', { alive: false, version: '0.0.9', lastSeenAt: '2025-01-01T00:55:00.000Z' }),
];

const health = (over: Partial<HealthReport> = {}): HealthReport => ({
  status: 'ok',
  checks: { storage: { ok: true } },
  controller: { id: 'ctl-ctl-b', name: 'ctl-b', role: 'follower', leader: 'ctl-a' },
  ...over,
});

describe('fleet controller list', () => {
  it('prints one row per controller: role, alive, worker streams, version, API, gRPC, last seen', async () => {
    fake.reply('GET', '/v1/controllers', 200, { items: three });
    const r = await fleet(['controller', 'list']);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+ROLE\s+ALIVE\s+WORKERS\s+VERSION\s+API\s+GRPC\s+LAST SEEN$/);
    expect(lines[1]).toMatch(/^ctl-a\s+leader\s+yes\s+3\s+0\.1\.0\s+https:\/\/ctl-a\.example:8080\s+ctl-a\.example:7443\s+2s ago$/);
    expect(lines[2]).toMatch(/^ctl-b\s+follower\s+yes\s+2\s+0\.1\.0\s+.*1s ago$/);
    expect(lines[3]).toMatch(/^ctl-c\s+follower\s+no\s+0\s+0\.0\.9\s+.*5m ago$/);
    expect(lines).toHaveLength(4);
    expect(fake.requestsTo('GET', '/v1/controllers')[0]!.headers.authorization).toBe('Bearer fleet_test_s3cr3t');
  });

  it('a single (SQLite) controller is one row, the leader', async () => {
    fake.reply('GET', '/v1/controllers', 200, { items: [controllerObject('solo', { role: 'leader', connectedWorkers: 1 })] });
    const lines = (await fleet(['controller', 'list'])).stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/^solo\s+leader\s+yes\s+1\s/);
  });

  it('"fleet controllers", "fleet controller" and "fleet controller ls" list too', async () => {
    fake.reply('GET', '/v1/controllers', 200, { items: three });
    const expected = (await fleet(['controller', 'list'])).stdout;
    for (const args of [['controllers'], ['controller'], ['controller', 'ls'], ['controllers', 'list']]) {
      expect(await fleet(args), args.join(' ')).toMatchObject({ code: 0, stdout: expected });
    }
  });

  it('--json: {"controllers":[…]} with the API objects', async () => {
    fake.reply('GET', '/v1/controllers', 200, { items: three });
    expect(JSON.parse((await fleet(['controller', 'list', '--json'])).stdout)).toEqual({ controllers: three });
    expect(JSON.parse((await fleet(['--json', 'controllers'])).stdout)).toEqual({ controllers: three });
  });

  it('colours on a terminal: the leader bold, alive green, down red', async () => {
    fake.reply('GET', '/v1/controllers', 200, { items: three });
    const out = (await fleet(['controller', 'list'], {}, { tty: true })).stdout;
    expect(out).toContain('\x1b[1mleader\x1b[22m');
    expect(out).toContain('\x1b[32myes\x1b[39m');
    expect(out).toContain('\x1b[31mno\x1b[39m');
  });

  it('an empty list is a note on stderr; an older controller without the route: exit 3 saying so', async () => {
    fake.reply('GET', '/v1/controllers', 200, { items: [] });
    expect(await fleet(['controller', 'list'])).toMatchObject({ code: 0, stdout: '', stderr: 'The controller lists no controllers.\n' });
    fake.fail('GET', '/v1/controllers', 404, 'not_found', 'Route GET:/v1/controllers not found');
    const r = await fleet(['controller', 'list']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/does not list controllers .*predates several-controller support/);
  });

  it('a token without the read role: exit 4', async () => {
    fake.fail('GET', '/v1/controllers', 403, 'forbidden', 'token "ssh" lacks the "read" role (has: connect)');
    expect(await fleet(['controller', 'list'])).toMatchObject({ code: 4, stderr: 'fleet: permission denied: token "ssh" lacks the "read" role (has: connect)\n' });
  });
});

describe('fleet controller status', () => {
  it('a follower answering names the leader', async () => {
    fake.reply('GET', '/v1/health', 200, health());
    const r = await fleet(['controller', 'status']);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(new RegExp(`^URL:\\s+${fake.url}$`, 'm'));
    expect(r.stdout).toMatch(/^Controller:\s+ctl-b \(follower\)$/m);
    expect(r.stdout).toMatch(/^Leader:\s+ctl-a$/m);
    expect(r.stdout).toMatch(/^Controller ID:\s+ctl-ctl-b$/m);
    expect(r.stdout).toMatch(/^Storage:\s+ok$/m);
  });

  it('the leader answering, and no leader at all', async () => {
    fake.reply('GET', '/v1/health', 200, health({ controller: { id: 'ctl-1', name: 'solo', role: 'leader', leader: 'solo' } }));
    let r = await fleet(['controller', 'status']);
    expect(r.stdout).toMatch(/^Controller:\s+solo \(leader\)$/m);
    expect(r.stdout).toMatch(/^Leader:\s+solo \(this one\)$/m);
    fake.reply('GET', '/v1/health', 200, health({ controller: { id: 'ctl-2', name: 'b', role: 'follower', leader: null } }));
    r = await fleet(['controller', 'status']);
    expect(r.stdout).toMatch(/^Leader:\s+none right now/m);
  });

  it('needs no token', async () => {
    fake.reply('GET', '/v1/health', 200, health());
    expect((await fleet(['controller', 'status'], { FLEET_TOKEN: undefined })).code).toBe(0);
    expect(fake.requestsTo('GET', '/v1/health')[0]!.headers.authorization).toBeUndefined();
  });

  it('--json: the health report with the URL that answered', async () => {
    fake.reply('GET', '/v1/health', 200, health());
    expect(JSON.parse((await fleet(['controller', 'status', '--json'])).stdout)).toEqual({ url: fake.url, ...health() });
  });

  it('degraded (503): the report is still printed, with why; exit 1', async () => {
    const degraded = health({ status: 'degraded', checks: { storage: { ok: false, code: 'SQLITE_FULL', error: 'database or disk is full', since: '2025-01-01T00:58:00.000Z' } } });
    fake.reply('GET', '/v1/health', 503, degraded);
    const r = await fleet(['controller', 'status']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^Storage:\s+degraded: the database cannot take writes since 2025-01-01T00:58:00Z \(2m ago\); SQLITE_FULL: database or disk is full$/m);
    expect(r.stdout).toMatch(/^Leader:\s+ctl-a$/m);
    const json = await fleet(['controller', 'status', '--json']);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ status: 'degraded', checks: { storage: { ok: false } } });
    // Not retried: one request per command.
    expect(fake.requestsTo('GET', '/v1/health')).toHaveLength(2);
  });

  it('a controller older than issue 13 (no controller field), and something that is not a controller', async () => {
    fake.reply('GET', '/v1/health', 200, { status: 'ok', checks: { storage: { ok: true } } });
    const r = await fleet(['controller', 'status']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Controller:\s+not reported/m);
    fake.reply('GET', '/v1/health', 503, { error: { code: 'unavailable', message: 'proxy says no' } });
    const bad = await fleet(['controller', 'status']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/not a health report/);
  });

  it('several URLs: the first cannot be reached, the one that answered is shown', async () => {
    const srv = createServer();
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const closed = `http://127.0.0.1:${(srv.address() as { port: number }).port}`;
    await new Promise<void>((resolve) => srv.close(() => resolve()));
    fake.reply('GET', '/v1/health', 200, health());
    const r = await fleet(['controller', 'status'], { FLEET_URL: `${closed},${fake.url}` });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^URL:\\s+${fake.url}$`, 'm'));
    expect(r.stderr).toMatch(/cannot reach the controller at .* trying /);
  });
});
