import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiError, ExitCode, InterruptedError, UnreachableError } from '../errors.ts';
import { FakeController, streamNdjson, vm } from '../testing/fake-controller.ts';
import { ApiClient, type VmWatchEvent } from './api-client.ts';

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
