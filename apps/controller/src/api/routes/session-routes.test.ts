// The session WebSocket endpoint over a real socket, with the broker's database, worker
// streams and token store faked: subprotocol token auth and revocation of a live session.
import Fastify, { type FastifyInstance } from 'fastify';
import websocket from '@fastify/websocket';
import type { FleetDb } from '@fleet/db';
import type { ControllerMessage } from '@fleet/proto';
import pino from 'pino';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { TokenRejected, type TokenService } from '../../auth/token-service.ts';
import type { EventLog } from '../../events/event-log.ts';
import { FleetBus } from '../../fleet-bus.ts';
import type { WorkerStreams } from '../../grpc/worker-streams.ts';
import { SessionBroker } from '../../sessions/session-broker.ts';
import type { ApiContext } from '../context.ts';
import { MAX_CLIENT_FRAME, selectSubprotocol, sessionRoutes } from './session-routes.ts';
import { VmSecrets } from '../../secrets/vm-secrets.ts';

const VM = { id: 'vm-1', name: 'web-1', state: 'running', desiredPower: 'running', workerId: 'w-1', attempt: 1, reason: '', username: '' };
const TOKEN = 'fleet_abc_secret';

async function server(isValid: () => boolean) {
  const access = { vmId: VM.id, username: 'fleet', publicKey: 'ssh-ed25519 AAAA', privateKey: 'PRIVATE', password: null, hostKey: null, hostKeyAttempt: null, hostKeyBootAt: null, hostKeySeenAt: null, createdAt: new Date() };
  const db = {
    vm: { findUnique: async () => ({ ...VM }) },
    vmAccess: { findMany: async () => [access], findUnique: async () => access, upsert: async () => access, updateMany: async () => ({ count: 0 }) },
  } as unknown as FleetDb;
  const opens: ControllerMessage[] = [];
  const streams = { get: () => ({ workerId: 'w-1', workerName: 'worker-1', closed: false, send: (m: ControllerMessage) => opens.push(m) }) } as unknown as WorkerStreams;
  const events = { append: async () => undefined } as unknown as EventLog;
  const broker = new SessionBroker({ db, streams, bus: new FleetBus(), events, secrets: VmSecrets.ephemeral(), log: pino({ level: 'silent' }) });
  const tokens = {
    authenticate: async (t: string) => {
      if (t !== TOKEN) throw new TokenRejected('unknown token');
      if (!isValid()) throw new TokenRejected('token "ci" was revoked');
      return { tokenId: 'abc', name: 'ci', roles: ['connect'] };
    },
  } as unknown as TokenService;
  const app = Fastify();
  await app.register(websocket, { options: { maxPayload: MAX_CLIENT_FRAME, handleProtocols: selectSubprotocol } });
  const vms = { findByName: async () => ({ ...VM }) };
  await app.register(sessionRoutes({ tokens, vms } as unknown as ApiContext, broker, { tokenRecheckMs: 50 }));
  await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, opens, broker };
}

let app: FastifyInstance | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

describe('GET /v1/vms/:name/session', () => {
  it('accepts the token as a subprotocol and ends the live session once the token is revoked', async () => {
    let valid = true;
    const s = await server(() => valid);
    app = s.app;
    const { port } = s.app.server.address() as { port: number };
    const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/vms/web-1/session`, ['fleet.v1', `fleet.bearer.${TOKEN}`]);
    const texts: Array<Record<string, unknown>> = [];
    ws.on('message', (d, binary) => {
      if (!binary) texts.push(JSON.parse(d.toString()) as Record<string, unknown>);
    });
    const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    expect(ws.protocol).toBe('fleet.v1');
    ws.send(JSON.stringify({ type: 'start', kind: 'exec', command: ['sleep', '1000'] }));
    for (let i = 0; i < 100 && s.opens.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(s.opens[0]?.sessionOpen?.command).toEqual(['sleep', '1000']);
    expect(s.broker.size).toBe(1);
    valid = false;
    await closed;
    expect(texts.at(-1)).toMatchObject({ type: 'error', code: 'unauthorized' });
    expect(s.broker.size).toBe(0);
  });

  it('refuses a browser WebSocket from another origin (403) before looking at the token; same origin and no Origin pass', async () => {
    const s = await server(() => true);
    app = s.app;
    const { port } = s.app.server.address() as { port: number };
    const attempt = (headers: Record<string, string>) =>
      new Promise<{ status: number; body: string } | 'open'>((resolve) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/vms/web-1/session`, ['fleet.v1', `fleet.bearer.${TOKEN}`], { headers });
        ws.once('open', () => {
          ws.close();
          resolve('open');
        });
        ws.once('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        ws.once('error', () => undefined);
      });
    for (const origin of ['https://evil.example', `http://127.0.0.1:${port + 1}`, 'null', 'file://']) {
      const r = await attempt({ origin });
      expect(r, origin).not.toBe('open');
      const { status, body } = r as { status: number; body: string };
      expect(status).toBe(403);
      expect(body).toMatch(/cross-origin WebSocket refused/); // (the bare test server: the API's error handler shapes it as {error: {code: forbidden}})
    }
    expect(await attempt({ origin: `http://127.0.0.1:${port}` })).toBe('open');
    expect(await attempt({})).toBe('open'); // no Origin: not a browser (the CLI)
    expect(await attempt({ origin: 'https://fleet.example', 'x-forwarded-host': 'fleet.example' })).toBe('open'); // behind a proxy
  });
});
