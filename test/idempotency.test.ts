// Idempotency-Key against a real controller process killed with SIGKILL: every retry of a create
// (same key, same body) after the restart gets its VM (201, replayed or rebuilt) or a clean
// execution — never a 409 for its own VM, never a second VM. Issue 12, point 3.
import net from 'node:net';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '@fleet/db';
import { requestHash } from '../apps/controller/src/idempotency/idempotency-service.ts';
import { removeDir, startControllerProcess, tempDir, type ControllerProcess } from './support/fleet-processes.ts';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

let controller: ControllerProcess;
let dataDir: string;
let ports: { apiPort: number; grpcPort: number };

beforeAll(async () => {
  dataDir = await tempDir('ctl-idem');
  ports = { apiPort: await freePort(), grpcPort: await freePort() };
  controller = await startControllerProcess({ dataDir, ...ports });
});
afterAll(async () => {
  await controller?.kill();
  await removeDir(dataDir);
});

const spec = (name: string) => ({ name, image: 'synthetic:ok', cpus: 1, memoryMib: 256 });

async function create(body: unknown, key: string): Promise<{ status: number; replayed: boolean; body: any; text: string }> {
  const res = await fetch(`${controller.apiUrl}/v1/vms`, {
    method: 'POST',
    headers: { authorization: `Bearer ${controller.adminToken}`, 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, replayed: res.headers.get('idempotent-replayed') === 'true', body: JSON.parse(text), text };
}

describe('Idempotency-Key across a controller killed with SIGKILL', () => {
  it('replays, refuses reuse, and after kill -9 + restart every retry gets its own VM exactly once', async () => {
    // A plain replay on the real server.
    const first = await create(spec('idem-first'), 'key-first');
    expect(first.status).toBe(201);
    const replay = await create(spec('idem-first'), 'key-first');
    expect(replay).toMatchObject({ status: 201, replayed: true, text: first.text });
    expect((await create(spec('idem-other'), 'key-first')).body.error.code).toBe('idempotency_key_reused');

    // Creates in flight when the controller is killed: some committed and answered, some committed
    // with the response lost, some never reached the database.
    const names = Array.from({ length: 16 }, (_, i) => `idem-${i}`);
    const keys = new Map(names.map((n) => [n, randomUUID()]));
    const inFlight = names.map((n) => create(spec(n), keys.get(n)!).catch(() => null));
    await new Promise((r) => setTimeout(r, 60));
    await controller.kill('SIGKILL');
    await Promise.all(inFlight);

    // The two crash windows made exact, while it is down: a VM committed whose response was never
    // stored (its record rolled back to in_progress), and a key claimed whose VM never committed.
    const db = openDatabase({ url: `file:${path.join(dataDir, 'fleet.db')}` });
    try {
      await db.idempotencyKey.updateMany({ where: { key: 'key-first' }, data: { state: 'in_progress', statusCode: null, responseBody: null, completedAt: null } });
      await db.idempotencyKey.create({
        data: { id: randomUUID(), principal: 'admin', route: 'POST /v1/vms', key: 'key-claimed', requestHash: requestHash('POST', '/v1/vms', spec('idem-claimed')), state: 'in_progress', owner: 'killed' },
      });
    } finally {
      await db.$disconnect();
    }

    controller = await startControllerProcess({ dataDir, ...ports });

    const rebuilt = await create(spec('idem-first'), 'key-first');
    expect(rebuilt).toMatchObject({ status: 201, replayed: true });
    expect(rebuilt.body.id).toBe(first.body.id);
    const executed = await create(spec('idem-claimed'), 'key-claimed');
    expect(executed).toMatchObject({ status: 201, replayed: false });

    const retries = await Promise.all(names.map((n) => create(spec(n), keys.get(n)!)));
    for (const [i, r] of retries.entries()) {
      expect(r.status, `${names[i]}: ${r.text}`).toBe(201);
      expect(r.body.name).toBe(names[i]);
    }
    const vms = await controller.api.vms();
    for (const n of [...names, 'idem-first', 'idem-claimed']) expect(vms.filter((v) => v.name === n), n).toHaveLength(1);
    // Retried again: the same answers, now all stored.
    const again = await Promise.all(names.map((n) => create(spec(n), keys.get(n)!)));
    expect(again.map((r) => [r.status, r.replayed, r.body.id])).toEqual(retries.map((r) => [201, true, r.body.id]));
  });
});
