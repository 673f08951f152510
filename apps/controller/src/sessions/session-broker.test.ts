// The broker between fake client sockets and fake worker streams (no network, no database).
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import type { FleetDb } from '@fleet/db';
import type { ControllerMessage, SessionFrame } from '@fleet/proto';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { EventLog, NewEvent } from '../events/event-log.ts';
import { FleetBus } from '../fleet-bus.ts';
import type { WorkerStreams } from '../grpc/worker-streams.ts';
import { parseOpening, type StartRequest } from './client-messages.ts';
import { MAX_RETAINED_PER_ACTOR, SessionBroker, type ClientSocket, type SessionCall } from './session-broker.ts';
import { VmSecrets } from '../secrets/vm-secrets.ts';

class FakeClient extends EventEmitter implements ClientSocket {
  readyState = 1;
  sent: Array<Buffer | string> = [];
  pending: Array<() => void> = [];
  autoFlush = true;
  paused = false;
  closed: { code?: number; reason?: string } | null = null;
  send(data: Buffer | string, cb?: (err?: Error) => void): void {
    this.sent.push(data);
    if (this.autoFlush) cb?.();
    else if (cb) this.pending.push(() => cb());
  }
  close(code?: number, reason?: string): void {
    if (this.closed) return;
    this.closed = { ...(code !== undefined ? { code } : {}), ...(reason !== undefined ? { reason } : {}) };
    this.readyState = 3;
    this.emit('close');
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  json(): Array<Record<string, unknown>> {
    return this.sent.filter((s): s is string => typeof s === 'string').map((s) => JSON.parse(s) as Record<string, unknown>);
  }
  binary(): Buffer[] {
    return this.sent.filter((s): s is Buffer => Buffer.isBuffer(s));
  }
}

class FakeCall extends EventEmitter {
  written: SessionFrame[] = [];
  paused = false;
  ended = false;
  errors: Array<{ code: number }> = [];
  readonly metadata = new grpc.Metadata();
  constructor(sessionId: string) {
    super();
    this.metadata.set('fleet-session-id', sessionId);
    this.on('error', (e: { code: number }) => this.errors.push(e));
  }
  write(f: SessionFrame): boolean {
    this.written.push(f);
    return true;
  }
  end(): void {
    this.ended = true;
  }
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
}

const VM = { id: 'vm-1', name: 'web-1', state: 'running', desiredPower: 'running', workerId: 'w-1', attempt: 1, reason: '', username: '' };

function world(accessLookup: Promise<void> = Promise.resolve()) {
  const opens: ControllerMessage[] = [];
  const events: NewEvent[] = [];
  const accessDeleted: string[] = [];
  const access = { vmId: VM.id, username: 'fleet', publicKey: 'ssh-ed25519 AAAA', privateKey: 'PRIVATE', password: null, hostKey: null, hostKeyAttempt: null, hostKeyBootAt: null, hostKeySeenAt: null, createdAt: new Date() };
  const db = {
    vm: { findUnique: async () => ({ ...VM }) },
    vmAccess: {
      findMany: async () => {
        await accessLookup;
        return [access];
      },
      findUnique: async () => access,
      update: async () => access,
      updateMany: async () => ({ count: 0 }),
      upsert: async () => access,
      deleteMany: async ({ where }: { where: { vmId: string } }) => {
        accessDeleted.push(where.vmId);
        return { count: 1 };
      },
    },
  } as unknown as FleetDb;
  const streams = { get: (id: string) => (id === 'w-1' ? { workerId: 'w-1', workerName: 'worker-1', closed: false, send: (m: ControllerMessage) => opens.push(m) } : undefined) } as unknown as WorkerStreams;
  const eventLog = { append: async (e: NewEvent[]) => void events.push(...e) } as unknown as EventLog;
  const bus = new FleetBus();
  const broker = new SessionBroker({ db, streams, bus, events: eventLog, secrets: VmSecrets.ephemeral(), log: pino({ level: 'silent' }) });
  return { broker, opens, events, bus, accessDeleted };
}

const start = (over: object = {}): StartRequest => parseOpening(JSON.stringify({ type: 'start', kind: 'exec', command: ['cat'], ...over })) as StartRequest;
const tick = () => new Promise((r) => setImmediate(r));

async function openSession(w: ReturnType<typeof world>, client: FakeClient, req = start()) {
  await w.broker.start(client, 'web-1', req, 'token:ci');
  const open = w.opens.at(-1)!.sessionOpen!;
  const call = new FakeCall(open.sessionId!);
  w.broker.acceptWorkerCall(call as unknown as SessionCall, 'w-1');
  return { open, call };
}

describe('SessionBroker', () => {
  it('sends SessionOpen with the VM credentials, pipes both ways and records the audit trail', async () => {
    const w = world();
    const client = new FakeClient();
    const { open, call } = await openSession(w, client, start({ env: { A: 'b' } }));
    expect(open).toMatchObject({ vmId: 'vm-1', kind: 'SESSION_KIND_EXEC', command: ['cat'], env: { A: 'b' }, username: 'fleet', privateKey: 'PRIVATE', hostKey: '' });
    client.emit('message', Buffer.from([0, 104, 105]), true); // stdin "hi"
    client.emit('message', Buffer.from('{"type":"eof"}'), false);
    expect(call.written).toEqual([{ stdin: Buffer.from('hi') }, { eof: true }]);
    call.emit('data', { payload: 'started', started: true });
    call.emit('data', { payload: 'stdout', stdout: Buffer.from('hi') });
    call.emit('data', { payload: 'stderr', stderr: Buffer.from('warn') });
    call.emit('data', { payload: 'exit', exit: { code: 3, signal: '' } });
    await tick();
    expect(client.binary()).toEqual([Buffer.from([1, 104, 105]), Buffer.concat([Buffer.from([2]), Buffer.from('warn')])]);
    expect(client.json()).toEqual([{ type: 'started', sessionId: open.sessionId }, { type: 'exit', code: 3, signal: null }]);
    expect(client.closed?.code).toBe(1000);
    expect(call.ended).toBe(true);
    expect(w.events.map((e) => e.kind)).toEqual(['session.started', 'session.ended']);
    expect(w.events[1]).toMatchObject({ actor: 'token:ci', vmName: 'web-1', data: { exitCode: 3 } });
    expect(w.broker.size).toBe(0);
  });

  it("refuses a worker that tries to attach another worker's session", async () => {
    const w = world();
    const client = new FakeClient();
    await w.broker.start(client, 'web-1', start(), 'token:ci');
    const id = w.opens[0]!.sessionOpen!.sessionId!;
    const intruder = new FakeCall(id);
    w.broker.acceptWorkerCall(intruder as unknown as SessionCall, 'w-2');
    expect(intruder.errors[0]?.code).toBe(grpc.status.PERMISSION_DENIED);
    const unknown = new FakeCall('00000000-0000-0000-0000-000000000000');
    w.broker.acceptWorkerCall(unknown as unknown as SessionCall, 'w-1');
    expect(unknown.errors[0]?.code).toBe(grpc.status.NOT_FOUND);
  });

  it('does not ask the worker to open a session whose client left while the VM key was looked up', async () => {
    let release = () => {};
    const w = world(new Promise<void>((r) => (release = r)));
    const client = new FakeClient();
    const started = w.broker.start(client, 'web-1', start(), 'token:ci');
    await tick();
    client.close(1006);
    release();
    await started;
    expect(w.opens).toEqual([]);
    expect(w.broker.size).toBe(0);
    expect(w.events.map((e) => e.kind)).toEqual(['session.cancelled']);
  });

  it('fails the session at once when the worker stream was cancelled before the broker took it', async () => {
    const w = world();
    const client = new FakeClient();
    await w.broker.start(client, 'web-1', start(), 'token:ci');
    const call = Object.assign(new FakeCall(w.opens[0]!.sessionOpen!.sessionId!), { cancelled: true });
    w.broker.acceptWorkerCall(call as unknown as SessionCall, 'w-1');
    await tick();
    expect(client.json().at(-1)).toMatchObject({ type: 'error', code: 'worker-disconnected' });
    expect(client.closed).not.toBeNull();
    expect(w.broker.size).toBe(0);
  });

  it("removes a deleted VM's access row (its private key) and keeps those of other changes", async () => {
    const w = world();
    w.bus.vmChanged({ type: 'MODIFIED', vm: { ...VM, state: 'stopped' } as never });
    w.bus.vmChanged({ type: 'DELETED', vm: { ...VM } as never });
    await tick();
    expect(w.accessDeleted).toEqual(['vm-1']);
  });

  it('pauses the worker stream while the client has more than 1 MiB unflushed, resumes when it drains', async () => {
    const w = world();
    const client = new FakeClient();
    client.autoFlush = false;
    const { call } = await openSession(w, client);
    call.emit('data', { payload: 'started', started: true });
    for (let i = 0; i < 20; i++) call.emit('data', { payload: 'stdout', stdout: Buffer.alloc(64 * 1024) });
    expect(call.paused).toBe(true);
    for (const flush of client.pending.splice(0)) flush();
    expect(call.paused).toBe(false);
  });

  it('stops reading the client while input waits for the worker, and keeps it in order', async () => {
    const w = world();
    const client = new FakeClient();
    await w.broker.start(client, 'web-1', start(), 'token:ci');
    for (let i = 0; i < 20; i++) client.emit('message', Buffer.concat([Buffer.from([0]), Buffer.alloc(64 * 1024, i)]), true);
    expect(client.paused).toBe(true);
    const call = new FakeCall(w.opens[0]!.sessionOpen!.sessionId!);
    w.broker.acceptWorkerCall(call as unknown as SessionCall, 'w-1');
    expect(call.written.map((f) => (f.stdin as Buffer)[0])).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(client.paused).toBe(false);
  });

  it('tells the client at once when the worker connection breaks mid-session', async () => {
    const w = world();
    const client = new FakeClient();
    const { call } = await openSession(w, client);
    call.emit('data', { payload: 'started', started: true });
    call.emit('error', new Error('Connection dropped'));
    await tick();
    expect(client.json().at(-1)).toMatchObject({ type: 'error', code: 'worker-disconnected' });
    expect(client.closed).not.toBeNull();
  });

  it('records a started session whose client closed its connection (an OpenSSH ProxyCommand exiting) as session.closed, info', async () => {
    const w = world();
    const client = new FakeClient();
    const { call } = await openSession(w, client, start({ kind: 'port-forward', port: 22, command: undefined }));
    call.emit('data', { payload: 'started', started: true });
    client.emit('message', Buffer.from([0, 83, 83, 72]), true);
    client.close(1006);
    await tick();
    expect(call.errors[0]?.code).toBe(grpc.status.CANCELLED);
    expect(w.events.map((e) => [e.kind, e.level])).toEqual([
      ['session.started', 'info'],
      ['session.closed', 'info'],
    ]);
    expect(w.events[1]).toMatchObject({ message: expect.stringMatching(/port-forward to port 22 on web-1 by token:ci closed: the client closed the connection/), data: { bytesIn: 3 } });
    expect(w.broker.size).toBe(0);
  });

  it('still records a real cancellation (a malformed frame, a client gone before the start) as session.cancelled, warn', async () => {
    const w = world();
    const client = new FakeClient();
    const { call } = await openSession(w, client);
    call.emit('data', { payload: 'started', started: true });
    client.emit('message', Buffer.from([7]), true);
    await tick();
    expect(w.events.map((e) => [e.kind, e.level])).toEqual([
      ['session.started', 'info'],
      ['session.cancelled', 'warn'],
    ]);
    const early = new FakeClient();
    await openSession(w, early);
    early.close(1006);
    await tick();
    expect(w.events.at(-1)).toMatchObject({ kind: 'session.cancelled', level: 'warn', message: expect.stringMatching(/before the session started/) });
  });

  it('closes with 1008 on malformed control frames and cancels the VM side', async () => {
    const w = world();
    const client = new FakeClient();
    const { call } = await openSession(w, client);
    client.emit('message', Buffer.from([7, 1, 2]), true); // unknown channel
    expect(client.closed?.code).toBe(1008);
    expect(client.json().at(-1)).toMatchObject({ type: 'error', code: 'bad-request' });
    expect(call.errors[0]?.code).toBe(grpc.status.CANCELLED);
  });

  it('keeps a retained exec running when the client drops and replays it on attach', async () => {
    const w = world();
    const first = new FakeClient();
    const { open, call } = await openSession(w, first, start({ retainMs: 60_000 }));
    call.emit('data', { payload: 'started', started: true });
    call.emit('data', { payload: 'stdout', stdout: Buffer.from('one ') });
    first.close(1006);
    call.emit('data', { payload: 'stdout', stdout: Buffer.from('two') });
    call.emit('data', { payload: 'exit', exit: { code: 0, signal: '' } });
    expect(call.errors).toEqual([]);
    const second = new FakeClient();
    w.broker.attach(second, 'web-1', { type: 'attach', sessionId: open.sessionId!, stdoutOffset: 0, stderrOffset: 0 }, 'token:ci');
    await tick();
    expect(Buffer.concat(second.binary().map((b) => b.subarray(1))).toString()).toBe('one two');
    expect(second.json().at(-1)).toEqual({ type: 'exit', code: 0, signal: null });
    const stranger = new FakeClient();
    w.broker.attach(stranger, 'web-1', { type: 'attach', sessionId: open.sessionId!, stdoutOffset: 0, stderrOffset: 0 }, 'token:other');
    expect(stranger.json()[0]).toMatchObject({ type: 'error' });
  });

  it('refuses a reconnectable exec beyond the per-token limit, and accepts one again when a session ends', async () => {
    const w = world();
    const calls: FakeCall[] = [];
    for (let i = 0; i < MAX_RETAINED_PER_ACTOR; i++) calls.push((await openSession(w, new FakeClient(), start({ retainMs: 60_000 }))).call);
    const opensBefore = w.opens.length;
    const refused = new FakeClient();
    await w.broker.start(refused, 'web-1', start({ retainMs: 60_000 }), 'token:ci');
    expect(refused.json()[0]).toMatchObject({ type: 'error', code: 'unavailable' });
    expect(String(refused.json()[0]!.message)).toContain(`limit is ${MAX_RETAINED_PER_ACTOR}`);
    expect(refused.closed?.code).toBe(1013);
    expect(w.opens.length).toBe(opensBefore); // the worker was never asked
    // Another token, and a plain (not retained) exec of the same token, are not affected.
    const other = new FakeClient();
    await w.broker.start(other, 'web-1', start({ retainMs: 60_000 }), 'token:other');
    expect(other.closed).toBeNull();
    const plain = new FakeClient();
    await w.broker.start(plain, 'web-1', start(), 'token:ci');
    expect(plain.closed).toBeNull();
    // A retained session that fails frees its place.
    calls[0]!.emit('error', new Error('Connection dropped'));
    await tick();
    const again = new FakeClient();
    await w.broker.start(again, 'web-1', start({ retainMs: 60_000 }), 'token:ci');
    expect(again.closed).toBeNull();
  });
});
