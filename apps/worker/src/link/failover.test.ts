// Several controllers (issue 13): the link dials a list of addresses, moves on when one refuses or
// a stream is lost, and takes the list each Welcome announces (saved in worker.json). Loopback
// only: fake controllers on 127.0.0.1 and ports opened and closed by the test.
import * as grpc from '@grpc/grpc-js';
import { PROTOCOL_VERSION } from '@fleet/proto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CredentialStore } from '../config/credentials.ts';
import { silentLogger } from '../logger.ts';
import { startWorker, type StartWorkerOptions, type WorkerHandle } from '../worker.ts';
import { startFakeController, type FakeController, type FakeStream } from './fake-controller.test-helper.ts';
import { ControllerLink } from './link.ts';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A port on 127.0.0.1 nothing listens on: opened by us and closed again. */
async function closedPort(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

async function controller(onConnect?: (s: FakeStream) => void): Promise<FakeController> {
  const fake = await startFakeController(onConnect ? { onConnect } : {});
  cleanups.push(() => fake.close());
  return fake;
}

async function worker(extra: Partial<StartWorkerOptions>): Promise<WorkerHandle> {
  const handle = await startWorker({
    credentials: grpc.credentials.createInsecure(),
    name: 'w1',
    machineId: 'machine-1',
    hostname: 'host-1',
    capacity: { cpus: 2, memoryMib: 2048, vmSlots: 2, macosSlots: 0 },
    synthetic: { speed: 0, persist: false },
    logger: silentLogger(),
    backoff: { initialMs: 20, maxMs: 100 },
    ...extra,
  });
  cleanups.push(() => handle.stop());
  return handle;
}

async function until(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const welcome = (s: FakeStream, controllerAddresses: string[] = []): void =>
  s.send({ welcome: { protocolVersion: 1, workerId: 'wrk-1', workerName: 'w1', controllerVersion: 'fake', heartbeatIntervalMs: 60_000, fenceAfterMs: 0, controllerAddresses } });

/** An enrolled data dir (dummy PEMs: the tests inject insecure credentials) whose worker.json is `identity`. */
async function dataDirWith(identity: Record<string, unknown>): Promise<string> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'fleet-failover-'));
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
  const store = new CredentialStore(dataDir);
  await store.save({
    identity: { workerId: 'wrk-1', name: 'w1', controller: 'x:1', controllers: ['x:1'], machineId: 'machine-1', enrolledAt: '2025-01-01T00:00:00.000Z' },
    keyPem: 'k',
    certPem: 'c',
    caPem: 'a',
  });
  const { writeFile } = await import('node:fs/promises');
  await writeFile(store.paths.workerJson, JSON.stringify(identity));
  return dataDir;
}

describe('controller failover (several controllers)', () => {
  it('dials the next address when the first refuses the connection', async () => {
    const refused = await closedPort();
    const fake = await controller((s) => welcome(s));
    const w = await worker({ controller: [refused, fake.address] });
    await until(() => w.connected());
    expect(w.controllerAddress()).toBe(fake.address);
    expect(w.controllers()).toEqual([refused, fake.address]);
  });

  it('accepts a comma-separated override', async () => {
    const refused = await closedPort();
    const fake = await controller((s) => welcome(s));
    const w = await worker({ controller: `${refused}, ${fake.address}` });
    await until(() => w.connected());
    expect(w.controllerAddress()).toBe(fake.address);
  });

  it('moves to the next controller at once when the stream is lost, and resyncs there', async () => {
    const a = await controller((s) => welcome(s));
    const b = await controller((s) => welcome(s));
    // A huge backoff: only the "next controller now" rule can reconnect within the test.
    const w = await worker({ controller: [a.address, b.address], backoff: { initialMs: 200, maxMs: 60_000, random: () => 0.5 } });
    const first = await a.stream(0);
    await first.hello();
    await until(() => w.connected());
    const lostAt = Date.now();
    first.fail(grpc.status.UNAVAILABLE, 'controller a stopped');
    const second = await b.stream(0);
    expect((await second.hello()).machineId).toBe('machine-1');
    await until(() => w.connected());
    expect(Date.now() - lostAt).toBeLessThan(1000);
    expect(w.controllerAddress()).toBe(b.address);
    expect(a.streams).toHaveLength(1);
  });

  it('leaves a controller that keeps the stream open but renews no lease (cut off from its database) for the next one', async () => {
    const mute = await controller((s) => s.welcome(50, 5_000)); // never answers a heartbeat with a renewal
    const good = await controller((s) => {
      s.welcome(50, 5_000);
      s.renewLeases(5_000);
    });
    const w = await worker({ controller: [mute.address, good.address] });
    await until(() => w.controllerAddress() === good.address && w.connected(), 5_000);
    const renewed = await good.stream(0);
    await renewed.next((m) => m.payload === 'heartbeat');
    expect(mute.streams.length).toBeGreaterThanOrEqual(1);
  });

  it('stays with a controller that renews', async () => {
    const good = await controller((s) => {
      s.welcome(50, 5_000);
      s.renewLeases(5_000);
    });
    const other = await controller((s) => s.welcome(50, 5_000));
    const w = await worker({ controller: [good.address, other.address] });
    await until(() => w.connected());
    await new Promise((r) => setTimeout(r, 600)); // twelve heartbeat intervals
    expect(w.controllerAddress()).toBe(good.address);
    expect(other.streams).toHaveLength(0);
  });

  it('a hop to the next controller stays within a quarter of the remaining lease', async () => {
    const refused = await closedPort();
    const fake = await controller((s) => welcome(s));
    const link = new ControllerLink({
      addresses: [refused, fake.address],
      credentials: grpc.credentials.createInsecure(),
      logger: silentLogger(),
      // The jitter alone would wait ~9.9 s; 1 s of lease left caps it at 250 ms.
      backoff: { initialMs: 10_000, maxMs: 60_000, random: () => 0.99 },
      leaseRemainingMs: () => 1000,
      handlers: { hello: () => ({ protocolVersion: PROTOCOL_VERSION, vms: [] }), onDesiredState: () => {}, runningVms: () => 0 },
    });
    cleanups.push(() => link.stop());
    const startedAt = Date.now();
    link.start();
    await until(() => link.welcomed, 3000);
    expect(Date.now() - startedAt).toBeLessThan(2000);
    expect(link.address).toBe(fake.address);
  });

  it('gives up on a controller that accepts TCP but never completes the connection, after connectTimeoutMs', async () => {
    // A listener on 127.0.0.1 that takes connections and never answers (a hung controller host).
    const sockets: net.Socket[] = [];
    const silent = net.createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    cleanups.push(async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    });
    const fake = await controller((s) => welcome(s));
    const link = new ControllerLink({
      addresses: [`127.0.0.1:${(silent.address() as net.AddressInfo).port}`, fake.address],
      connectTimeoutMs: 300,
      credentials: grpc.credentials.createInsecure(),
      logger: silentLogger(),
      backoff: { initialMs: 20, maxMs: 100 },
      handlers: { hello: () => ({ protocolVersion: PROTOCOL_VERSION, vms: [] }), onDesiredState: () => {}, runningVms: () => 0 },
    });
    cleanups.push(() => link.stop());
    const startedAt = Date.now();
    link.start();
    await until(() => link.welcomed, 4000);
    expect(sockets.length).toBeGreaterThan(0);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(250);
    expect(link.address).toBe(fake.address);
  });

  it('while every controller fails, tries them all in turn until one answers', async () => {
    const refusing = (name: string, failures: number) =>
      controller((s) => {
        if (seen.push(name) && seen.filter((n) => n === name).length <= failures) s.fail(grpc.status.UNAVAILABLE, `${name} not ready`);
        else welcome(s);
      });
    const seen: string[] = [];
    const a = await refusing('a', 2);
    const b = await refusing('b', 5);
    const w = await worker({ controller: [a.address, b.address] });
    await until(() => w.connected());
    // a, b, a, b, a: a answers on its third stream; the order alternates.
    expect(seen).toEqual(['a', 'b', 'a', 'b', 'a']);
    expect(w.controllerAddress()).toBe(a.address);
  });
});

describe('controller list from Welcome', () => {
  it('replaces the stored list (dialed address first), ignores bad entries, saves worker.json atomically, and fails over to a learned controller', async () => {
    const b = await controller((s) => welcome(s, [b.address]));
    const spare = await closedPort();
    const announced = () => [
      b.address,
      'not an address',
      'ctl:0',
      'ctl:70000',
      'ctl:7443/path',
      'http://ctl:7443',
      'ctl\n:7443',
      spare,
      '',
      'x'.repeat(300) + ':1',
    ];
    let aStreams = 0;
    const a = await controller((s) => {
      aStreams++;
      welcome(s, announced());
    });
    const dataDir = await dataDirWith({ workerId: 'wrk-1', name: 'w1', controller: a.address, machineId: 'machine-1', enrolledAt: '2025-01-01T00:00:00.000Z' });
    const w = await worker({ dataDir });
    await until(() => w.connected());
    await until(() => w.controllers().length > 1);
    expect(w.controllers()).toEqual([a.address, b.address, spare]);
    const workerJson = path.join(dataDir, 'worker.json');
    let saved: { controller: string; controllers: string[]; workerId: string } | undefined;
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline) {
      saved = JSON.parse(await readFile(workerJson, 'utf8')) as typeof saved;
      if (saved!.controllers?.length === 3) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(saved).toMatchObject({ workerId: 'wrk-1', controller: a.address, controllers: [a.address, b.address, spare] });
    // No temp file left behind by the atomic write.
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(dataDir)).filter((f) => f.includes('.tmp'))).toEqual([]);

    // Controller a goes away: the worker reaches b, which it only knows from Welcome.
    (await a.stream(0)).fail(grpc.status.UNAVAILABLE, 'controller a stopped');
    await b.stream(0);
    await until(() => w.connected() && w.controllerAddress() === b.address);
    // b announces only itself: the list becomes [b], saved with b as the primary.
    await until(() => w.controllers().length === 1);
    expect(w.controllers()).toEqual([b.address]);
    await w.stop();
    expect(JSON.parse(await readFile(workerJson, 'utf8'))).toMatchObject({ controller: b.address, controllers: [b.address] });
    expect(aStreams).toBe(1);
  });

  it('a lease renewal naming a controller that joined adds it; one that is down is not dropped until the next Welcome', async () => {
    const other = await closedPort();
    const joined = await closedPort();
    const a = await controller((s) => {
      s.send({ welcome: { protocolVersion: 1, workerId: 'wrk-1', workerName: 'w1', controllerVersion: 'fake', heartbeatIntervalMs: 50, fenceAfterMs: 5_000, controllerAddresses: [a.address, other] } });
      // Renewals announce a changed list: `other` is down right now, `joined` is new.
      s.renewLeases(5_000, [a.address, joined]);
    });
    const w = await worker({ controller: [a.address] });
    await until(() => w.controllers().includes(joined));
    expect(w.controllers()).toEqual([a.address, other, joined]);
  });

  it('an empty list (an older controller) or one with only bad entries keeps the stored list', async () => {
    const fake = await controller((s) => welcome(s, ['garbage', 'ctl:0']));
    const other = await closedPort();
    const identity = { workerId: 'wrk-1', name: 'w1', controller: fake.address, controllers: [fake.address, other], machineId: 'machine-1', enrolledAt: '2025-01-01T00:00:00.000Z' };
    const dataDir = await dataDirWith(identity);
    const w = await worker({ dataDir });
    await until(() => w.connected());
    await new Promise((r) => setTimeout(r, 100));
    expect(w.controllers()).toEqual([fake.address, other]);
    await w.stop();
    expect(JSON.parse(await readFile(path.join(dataDir, 'worker.json'), 'utf8'))).toEqual(identity);
  });

  it('with --controller, the learned list is used but not written to worker.json', async () => {
    const b = await closedPort();
    const fake = await controller((s) => welcome(s, [fake.address, b]));
    const identity = { workerId: 'wrk-1', name: 'w1', controller: fake.address, machineId: 'machine-1', enrolledAt: '2025-01-01T00:00:00.000Z' };
    const dataDir = await dataDirWith(identity);
    const w = await worker({ dataDir, controller: fake.address });
    await until(() => w.controllers().length === 2);
    expect(w.controllers()).toEqual([fake.address, b]);
    await w.stop();
    expect(JSON.parse(await readFile(path.join(dataDir, 'worker.json'), 'utf8'))).toEqual(identity);
  });
});
