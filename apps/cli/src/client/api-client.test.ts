import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiError, ExitCode, InterruptedError, UnreachableError } from '../errors.ts';
import { FakeController, sendJson, streamNdjson, vm, worker } from '../testing/fake-controller.ts';
import { ApiClient, parseRetryAfter, type VmWatchEvent } from './api-client.ts';

let fake: FakeController;
beforeEach(async () => {
  fake = await FakeController.start();
});
afterEach(() => fake.close());

async function drain(gen: AsyncGenerator<VmWatchEvent>): Promise<VmWatchEvent[]> {
  const out: VmWatchEvent[] = [];
  for await (const ev of gen) out.push(ev);
  return out;
}

describe('ApiClient', () => {
  it('encodes path segments and drops empty query values', async () => {
    fake.reply('GET', '/v1/vms', 200, { vms: [] });
    const c = new ApiClient({ url: `${fake.url}/`, token: 't' });
    await c.listVms({ state: 'running', worker: undefined });
    expect(fake.requests[0]!.query.toString()).toBe('state=running');
  });

  it('maps error bodies to ApiError with the exit code for the status', async () => {
    fake.fail('GET', '/v1/vms/x', 409, 'conflict', 'busy');
    const err = await new ApiClient({ url: fake.url, token: 't' }).getVm('x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 409, code: 'conflict', message: 'busy', exitCode: ExitCode.CONFLICT });
  });

  it('reports a stalled watch stream as unreachable', async () => {
    fake.on('GET', '/v1/vms', (_req, res) => streamNdjson(res, [{ type: 'ADDED', vm: vm('a') }], true));
    const c = new ApiClient({ url: fake.url, token: 't', streamIdleMs: 200 });
    const seen: string[] = [];
    const err = await (async () => {
      for await (const ev of c.watchVms()) seen.push(ev.vm.name);
    })().catch((e: unknown) => e);
    expect(seen).toEqual(['a']);
    expect(err).toBeInstanceOf(UnreachableError);
    expect((err as Error).message).toMatch(/lost the watch stream from .*: no data for 200ms/);
  });

  it('a stop signal ends a watch quietly; the user signal is an interrupt', async () => {
    fake.on('GET', '/v1/vms/a', (_req, res) => streamNdjson(res, [{ type: 'ADDED', vm: vm('a') }], true));
    const stop = new AbortController();
    setTimeout(() => stop.abort(), 150);
    const events = await drain(new ApiClient({ url: fake.url, token: 't' }).watchVm('a', { stop: stop.signal }));
    expect(events.map((e) => e.type)).toEqual(['ADDED']);

    const user = new AbortController();
    setTimeout(() => user.abort(), 150);
    const err = await drain(new ApiClient({ url: fake.url, token: 't', signal: user.signal }).watchVm('a')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
  });

  it('skips line types it does not know (a newer controller)', async () => {
    fake.on('GET', '/v1/vms', (_req, res) => streamNdjson(res, [{ type: 'BOOKMARK', at: 5 }, { type: 'ADDED', vm: vm('a') }]));
    const events = await drain(new ApiClient({ url: fake.url, token: 't' }).watchVms());
    expect(events.map((e) => e.vm.name)).toEqual(['a']);
  });

  it('a body that is not JSON is a clear error', async () => {
    fake.on('GET', '/v1/workers', (_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>'));
    await expect(new ApiClient({ url: fake.url, token: 't' }).listWorkers()).rejects.toThrow(/not JSON \(HTTP 200\); is it a Fleet controller\?/);
  });
});

describe('ApiClient retries (Idempotency-Key)', () => {
  const spec = { name: 'web-1', image: 'ubuntu:24.04' };
  const fast = { attempts: 4, baseDelayMs: 10, maxDelayMs: 2000 };
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  it('retries a create after a dropped connection with the same key and body', async () => {
    let calls = 0;
    fake.on('POST', '/v1/vms', (_req, res) => {
      // The first answer is lost: the connection drops after the request arrived.
      if (++calls === 1) return res.socket?.destroy();
      sendJson(res, 201, vm('web-1'));
    });
    const notes: string[] = [];
    const created = await new ApiClient({ url: fake.url, token: 't', retry: fast, onRetry: (m) => notes.push(m) }).createVm(spec);
    expect(created.name).toBe('web-1');
    const [first, second] = fake.requestsTo('POST', '/v1/vms');
    expect(first!.headers['idempotency-key']).toMatch(UUID);
    expect(second!.headers['idempotency-key']).toBe(first!.headers['idempotency-key']);
    expect(second!.body).toEqual(first!.body);
    expect(notes).toHaveLength(1);
    expect(notes[0]).toMatch(/^POST \/v1\/vms: connection (reset|closed unexpectedly); retrying in \d+ms \(attempt 2 of 4, same Idempotency-Key\)$/);
  });

  it('retries connection refused (a controller restarting) until it answers', async () => {
    const port = Number(new URL(fake.url).port);
    await fake.close();
    const c = new ApiClient({ url: `http://127.0.0.1:${port}`, token: 't', retry: { ...fast, attempts: 40, baseDelayMs: 20, maxDelayMs: 50 } });
    const pending = c.drainWorker('mac-1');
    await new Promise((r) => setTimeout(r, 150));
    // The same port again, as a restarted controller would.
    fake = await FakeController.start(port);
    fake.reply('POST', '/v1/workers/mac-1/drain', 200, worker('mac-1', { paused: true }));
    expect((await pending).paused).toBe(true);
    expect(fake.requests[0]!.headers['idempotency-key']).toMatch(UUID);
  });

  it('honours Retry-After on 503 and on 409 idempotency_key_in_flight', async () => {
    let calls = 0;
    fake.on('POST', '/v1/vms', (_req, res) => {
      calls++;
      if (calls === 1) return res.writeHead(503, { 'retry-after': '1', 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'unavailable', message: 'database busy' } }));
      if (calls === 2) return res.writeHead(409, { 'retry-after': '1', 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'idempotency_key_in_flight', message: 'still running' } }));
      res.writeHead(201, { 'content-type': 'application/json', 'idempotent-replayed': 'true' }).end(JSON.stringify(vm('web-1')));
    });
    const t0 = Date.now();
    await new ApiClient({ url: fake.url, token: 't', retry: fast }).createVm(spec);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
    const keys = new Set(fake.requests.map((r) => r.headers['idempotency-key']));
    expect(fake.requests).toHaveLength(3);
    expect(keys.size).toBe(1);
  });

  it('never retries another 4xx, and gives up on 5xx after the attempts', async () => {
    fake.fail('POST', '/v1/vms', 409, 'conflict', 'vm "web-1" already exists');
    await expect(new ApiClient({ url: fake.url, token: 't', retry: fast }).createVm(spec)).rejects.toMatchObject({ status: 409, exitCode: ExitCode.CONFLICT });
    expect(fake.requests).toHaveLength(1);

    fake.fail('POST', '/v1/vms', 500, 'internal', 'boom');
    fake.requests.length = 0;
    await expect(new ApiClient({ url: fake.url, token: 't', retry: fast }).createVm(spec)).rejects.toMatchObject({ status: 500 });
    expect(fake.requests).toHaveLength(1); // 500 is not one of 502/503/504

    fake.fail('POST', '/v1/vms', 502, 'bad_gateway', 'proxy');
    fake.requests.length = 0;
    await expect(new ApiClient({ url: fake.url, token: 't', retry: fast }).createVm(spec)).rejects.toMatchObject({ status: 502 });
    expect(fake.requests).toHaveLength(4);

    // The controller's own 502 about an image registry it could not reach: its answer, not retried.
    fake.fail('POST', '/v1/vms', 502, 'registry_unreachable', 'cannot resolve r.example/x:1: registry r.example is unreachable');
    fake.requests.length = 0;
    await expect(new ApiClient({ url: fake.url, token: 't', retry: fast }).createVm(spec)).rejects.toMatchObject({
      status: 502,
      code: 'registry_unreachable',
      message: 'cannot resolve r.example/x:1: registry r.example is unreachable',
    });
    expect(fake.requests).toHaveLength(1);
  });

  it('a fresh key per call; requests without one (reads, token creation) are never retried', async () => {
    fake.reply('POST', '/v1/vms', 201, vm('web-1'));
    const c = new ApiClient({ url: fake.url, token: 't', retry: fast });
    await c.createVm(spec);
    await c.createVm(spec);
    const [a, b] = fake.requestsTo('POST', '/v1/vms');
    expect(a!.headers['idempotency-key']).not.toBe(b!.headers['idempotency-key']);

    fake.on('GET', '/v1/vms', (_req, res) => res.socket?.destroy());
    fake.on('POST', '/v1/tokens', (_req, res) => res.socket?.destroy());
    await expect(c.listVms()).rejects.toBeInstanceOf(UnreachableError);
    await expect(c.createToken({ name: 'ci', roles: ['read'] })).rejects.toBeInstanceOf(UnreachableError);
    expect(fake.requestsTo('GET', '/v1/vms')).toHaveLength(1);
    expect(fake.requestsTo('POST', '/v1/tokens')).toHaveLength(1);
    expect(fake.requestsTo('POST', '/v1/tokens')[0]!.headers['idempotency-key']).toBeUndefined();
  });

  it('an interrupt during the backoff ends the retries', async () => {
    fake.on('POST', '/v1/vms', (_req, res) => res.writeHead(503, { 'retry-after': '5' }).end());
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    await expect(new ApiClient({ url: fake.url, token: 't', signal: ac.signal, retry: { ...fast, maxDelayMs: 10_000 } }).createVm(spec)).rejects.toBeInstanceOf(InterruptedError);
    expect(fake.requests).toHaveLength(1);
  });

  it('parses Retry-After as seconds or an HTTP date', () => {
    expect(parseRetryAfter('1')).toBe(1000);
    expect(parseRetryAfter(' 3 ')).toBe(3000);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4000)).toBe(6000);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(null)).toBeUndefined();
  });
});
