// Several controllers (issue 13): the API client and the session WebSocket move to the next URL
// of a context when no connection can be made, and stay with the first that answers. Loopback
// only: fake controllers on 127.0.0.1 and ports opened and closed by the test.
import http from 'node:http';
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { ApiError, CliError, UnreachableError } from '../errors.ts';
import { SessionSocket } from '../commands/session-socket.ts';
import { FakeController, sendJson, streamNdjson, vm } from '../testing/fake-controller.ts';
import { ApiClient } from './api-client.ts';
import { endpointsFor, registerControllerUrls, resetControllerEndpoints } from './controller-endpoints.ts';

const cleanups: Array<() => Promise<void>> = [];
beforeEach(() => resetControllerEndpoints());
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  resetControllerEndpoints();
});

/** An http:// URL on 127.0.0.1 nothing listens on: a port opened by us and closed again. */
async function closedUrl(): Promise<string> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

async function fake(): Promise<FakeController> {
  const f = await FakeController.start();
  cleanups.push(() => f.close());
  return f;
}

function client(urls: string[], notes: string[] = []): ApiClient {
  registerControllerUrls(urls);
  return new ApiClient({ url: urls[0]!, token: 'fleet_t_s', timeoutMs: 5000, onRetry: (m) => notes.push(m), retry: { attempts: 1 } });
}

describe('API client failover', () => {
  it('moves on when the first controller refuses the connection, says so, and sticks with the one that answered', async () => {
    const down = await closedUrl();
    const up = await fake();
    up.reply('GET', '/v1/vms', 200, { vms: [vm('a')] });
    const notes: string[] = [];
    const c = client([down, up.url], notes);
    expect((await c.listVms()).vms.map((v) => v.name)).toEqual(['a']);
    expect(c.url).toBe(up.url);
    expect(notes).toEqual([expect.stringMatching(new RegExp(`cannot reach the controller at ${down} \\(connection refused\\); trying ${up.url}`))]);
    // Later requests, and new clients for the same context, go straight to it.
    const again: string[] = [];
    const c2 = new ApiClient({ url: down, token: null, onRetry: (m) => again.push(m) });
    await c2.listVms();
    expect(again).toEqual([]);
    expect(up.requestsTo('GET', '/v1/vms')).toHaveLength(2);
    expect(endpointsFor(down).active).toBe(up.url);
  });

  it('an HTTP error is an answer: no failover on 4xx/5xx', async () => {
    const a = await fake();
    const b = await fake();
    a.fail('GET', '/v1/vms', 503, 'storage_unavailable', 'the database is unavailable');
    b.reply('GET', '/v1/vms', 200, { vms: [] });
    const error = await client([a.url, b.url]).listVms().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(503);
    expect(b.requests).toHaveLength(0);
    a.fail('GET', '/v1/workers', 404, 'not_found', 'nope');
    await expect(client([a.url, b.url]).listWorkers()).rejects.toMatchObject({ status: 404 });
    expect(b.requests).toHaveLength(0);
  });

  it('every controller down: one error naming each', async () => {
    const d1 = await closedUrl();
    const d2 = await closedUrl();
    const error = await client([d1, d2]).listVms().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnreachableError);
    expect((error as Error).message).toContain(`${d1}: connection refused`);
    expect((error as Error).message).toContain(`${d2}: connection refused`);
  });

  it('a connection reset before the answer moves a GET on, but not a plain POST (it may have been done)', async () => {
    const resetting = await fake();
    const up = await fake();
    resetting.on('GET', '/v1/vms', (_req, res) => res.socket?.destroy());
    resetting.on('POST', '/v1/tokens', (_req, res) => res.socket?.destroy());
    up.reply('GET', '/v1/vms', 200, { vms: [] });
    up.reply('POST', '/v1/tokens', 201, { name: 'x' });
    await expect(client([resetting.url, up.url]).listVms()).resolves.toEqual({ vms: [] });
    resetControllerEndpoints();
    const error = await client([resetting.url, up.url]).createToken({ name: 'x', roles: ['read'] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnreachableError);
    expect(up.requestsTo('POST', '/v1/tokens')).toHaveLength(0);
  });

  it('a TLS handshake failure is reported, not skipped', async () => {
    // https:// against a plain HTTP server: the handshake fails.
    const plain = await fake();
    const b = await fake();
    const httpsUrl = plain.url.replace('http:', 'https:');
    b.reply('GET', '/v1/vms', 200, { vms: [] });
    // (A context cannot mix schemes; the client is given the list directly so that a failover would show.)
    const error = await client([httpsUrl, b.url]).listVms().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CliError);
    expect((error as Error).message).toContain(httpsUrl);
    expect((error as Error).message).not.toContain('any controller');
    expect(b.requests).toHaveLength(0);
  });

  it('a watch stream fails over too', async () => {
    const down = await closedUrl();
    const up = await fake();
    up.on('GET', '/v1/vms', (_req, res) => void streamNdjson(res, [{ type: 'ADDED', vm: vm('w') }]));
    const events = [];
    for await (const e of client([down, up.url]).watchVms()) events.push(e);
    expect(events.map((e) => e.vm.name)).toEqual(['w']);
  });
});

describe('session WebSocket failover', () => {
  it('opens the session on the next controller when the first refuses, and uses it for later sessions', async () => {
    const server = http.createServer((_req, res) => sendJson(res, 404, { error: { code: 'not_found', message: 'no' } }));
    const wss = new WebSocketServer({ server });
    let connections = 0;
    wss.on('connection', (ws) => {
      connections++;
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (isBinary) return;
        const m = JSON.parse(data.toString()) as { type: string };
        if (m.type === 'start') {
          ws.send(JSON.stringify({ type: 'started', sessionId: 's-1' }));
          ws.send(Buffer.concat([Buffer.from([1]), Buffer.from('hello\n')]));
          ws.send(JSON.stringify({ type: 'exit', code: 0, signal: null }));
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanups.push(async () => {
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    });
    const up = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const down = await closedUrl();
    registerControllerUrls([down, up]);
    const session = SessionSocket.open(down, 'fleet_t_s', 'vm-1', { start: { kind: 'exec', command: ['echo', 'hello'] } });
    let out = '';
    session.on('stdout', (d) => (out += d.toString()));
    await expect(session.outcome).resolves.toEqual({ kind: 'exit', code: 0, signal: null });
    expect(out).toBe('hello\n');
    expect(connections).toBe(1);
    expect(endpointsFor(down).active).toBe(up);
  });

  it('every controller down: unreachable, naming the others tried', async () => {
    const d1 = await closedUrl();
    const d2 = await closedUrl();
    registerControllerUrls([d1, d2]);
    const session = SessionSocket.open(d1, null, 'vm-1', { start: { kind: 'exec', command: ['true'] } });
    const error = await session.outcome.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnreachableError);
    expect((error as Error).message).toContain(d2);
    expect((error as Error).message).toContain(`also tried ${d1}`);
  });
});
