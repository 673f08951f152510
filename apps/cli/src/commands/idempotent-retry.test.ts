// Commands that create or act send an Idempotency-Key and survive a lost answer: the retry
// carries the same key and body, so the controller replays the first outcome.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeController, sendJson, vm, worker } from '../testing/fake-controller.ts';
import { runCli } from '../testing/run-cli.ts';

let fake: FakeController;
let dir: string;
let env: Record<string, string>;

beforeEach(async () => {
  fake = await FakeController.start();
  dir = mkdtempSync(join(tmpdir(), 'fleet-cli-retry-'));
  env = { FLEET_URL: fake.url, FLEET_TOKEN: 'fleet_test_s3cr3t', FLEET_CONFIG: join(dir, 'config.json') };
});
afterEach(async () => {
  await fake.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('Idempotency-Key in commands', () => {
  it('fleet vm create: a dropped connection is retried with the same key and body, and says so on stderr', async () => {
    let calls = 0;
    fake.on('POST', '/v1/vms', (req, res) => {
      if (++calls === 1) return res.socket?.destroy(); // the controller died before answering
      res.writeHead(201, { 'content-type': 'application/json', 'idempotent-replayed': 'true' }).end(JSON.stringify(vm('web-1', { image: (req.body as { image: string }).image })));
    });
    const r = await runCli(['vm', 'create', 'web-1', '--image', 'ubuntu:24.04', '--cpus', '1'], { env });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('vm "web-1" created (pending: waiting for the scheduler)\n');
    expect(r.stderr).toMatch(/^fleet: POST \/v1\/vms: connection .*; retrying in \d+ms \(attempt 2 of 5, same Idempotency-Key\)\n$/);
    const [first, second] = fake.requestsTo('POST', '/v1/vms');
    expect(first!.headers['idempotency-key']).toMatch(/^[0-9a-f-]{36}$/);
    expect(second!.headers['idempotency-key']).toBe(first!.headers['idempotency-key']);
    expect(second!.body).toEqual(first!.body);
  });

  it('a new invocation is a new key; a 409 for a taken name is not retried', async () => {
    fake.fail('POST', '/v1/vms', 409, 'conflict', 'vm "web-1" already exists');
    expect((await runCli(['vm', 'create', 'web-1', '--image', 'ubuntu'], { env })).code).toBe(6);
    expect((await runCli(['vm', 'create', 'web-1', '--image', 'ubuntu'], { env })).code).toBe(6);
    const [a, b] = fake.requestsTo('POST', '/v1/vms');
    expect(fake.requestsTo('POST', '/v1/vms')).toHaveLength(2);
    expect(a!.headers['idempotency-key']).not.toBe(b!.headers['idempotency-key']);
  });

  it('fleet worker drain / resume send a key too', async () => {
    fake.on('POST', '/v1/workers/mac-1/drain', (_req, res) => sendJson(res, 200, worker('mac-1', { paused: true })));
    fake.on('POST', '/v1/workers/mac-1/resume', (_req, res) => sendJson(res, 200, worker('mac-1')));
    expect((await runCli(['worker', 'drain', 'mac-1'], { env })).code).toBe(0);
    expect((await runCli(['worker', 'resume', 'mac-1'], { env })).code).toBe(0);
    for (const r of fake.requests) expect(r.headers['idempotency-key'], r.path).toMatch(/^[0-9a-f-]{36}$/);
  });
});
