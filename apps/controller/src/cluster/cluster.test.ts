// Several controllers on one PostgreSQL database, in one process: one leader they all name, a
// hand-over when it stops, a VM created through a follower placed by the leader, and a second
// CA refused. (Processes, kill -9, partitions and real workers: test/ha-controllers.test.ts.)
import { cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findPostgresBin, startScratchPostgres, type ScratchPostgres } from '../../../../prisma/src/pg-scratch.ts';
import { startController, type ControllerHandle } from '../controller.ts';

const havePostgres = findPostgresBin() !== undefined;
if (!havePostgres) console.warn('cluster.test.ts: PostgreSQL is not installed (apt-get install postgresql): skipping');

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(!havePostgres)('controllers sharing a PostgreSQL database', () => {
  let pg: ScratchPostgres;
  let root = '';
  const running: ControllerHandle[] = [];
  const token = 'fleet_admin_' + 'a'.repeat(40);

  beforeAll(async () => {
    pg = await startScratchPostgres();
    root = await mkdtemp(path.join(os.tmpdir(), 'fleet-cluster-'));
  }, 60_000);
  afterAll(async () => {
    for (const c of running) await c.stop().catch(() => undefined);
    await pg?.stop();
    await rm(root, { recursive: true, force: true });
  });

  async function start(url: string, name: string, caFrom?: string, extra: { workerOfflineTimeoutMs?: number; withoutSecretsKey?: boolean } = {}): Promise<ControllerHandle> {
    const dataDir = path.join(root, `${path.basename(url)}-${name}`);
    if (caFrom) {
      await mkdir(path.join(dataDir, 'pki'), { recursive: true, mode: 0o700 });
      for (const f of ['ca.pem', 'ca-key.pem']) await cp(path.join(caFrom, 'pki', f), path.join(dataDir, 'pki', f));
      if (!extra.withoutSecretsKey) await cp(path.join(caFrom, 'secrets.key'), path.join(dataDir, 'secrets.key'));
    }
    const { withoutSecretsKey: _, ...timing } = extra;
    const c = await startController({ dataDir, databaseUrl: url, apiPort: 0, grpcPort: 0, grpcHost: '127.0.0.1', controllerName: name, leaderLeaseMs: 1_500, bootstrapAdminToken: token, logLevel: 'silent', ...timing });
    running.push(c);
    return c;
  }

  const health = async (c: ControllerHandle) => (await (await fetch(`${c.apiUrl}/v1/health`)).json()) as { controller: { name: string; role: string; leader: string | null } };
  const api = async (c: ControllerHandle, method: string, p: string, body?: unknown) => {
    const res = await fetch(`${c.apiUrl}${p}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  it('one leader that every controller names; it hands over when stopped; a follower’s create is placed by the leader', async () => {
    const url = await pg.createDatabase('cluster_basic');
    const a = await start(url, 'ctl-a');
    const b = await start(url, 'ctl-b', path.join(root, 'cluster_basic-ctl-a'));
    expect((await health(a)).controller).toMatchObject({ name: 'ctl-a', role: 'leader', leader: 'ctl-a' });
    expect((await health(b)).controller).toMatchObject({ name: 'ctl-b', role: 'follower', leader: 'ctl-a' });
    const listed = await until('both controllers alive in the registry', async () => {
      const items = (await api(b, 'GET', '/v1/controllers')).body['items'] as { name: string; role: string; alive: boolean }[];
      return items.length === 2 && items.every((i) => i.alive) ? items : undefined;
    });
    expect(listed.map((i) => [i.name, i.role]).sort()).toEqual([
      ['ctl-a', 'leader'],
      ['ctl-b', 'follower'],
    ]);

    // A worker with room (its stream is not needed to place): created through the follower, placed by the leader.
    await a.db.worker.create({ data: { id: 'w-1', name: 'w-1', machineId: 'm', status: 'online', cpus: 8, memoryMib: 16384, vmSlots: 4, drivers: '["synthetic"]', lastSeenAt: new Date() } });
    const created = await api(b, 'POST', '/v1/vms', { name: 'through-b', image: 'img', cpus: 1, memoryMib: 512 });
    expect(created.status).toBe(201);
    const placed = await until('the leader to place the VM', async () => {
      const vm = await a.db.vm.findUnique({ where: { name: 'through-b' } });
      return vm?.state === 'scheduled' ? vm : undefined;
    }, 5_000);
    expect(placed).toMatchObject({ workerId: 'w-1', attempt: 1 });

    // The leader goes away cleanly: the follower takes over at once and schedules.
    await a.stop();
    running.splice(running.indexOf(a), 1);
    const took = Date.now();
    await until('b to lead', async () => ((await health(b)).controller.role === 'leader' ? true : undefined), 5_000);
    expect(Date.now() - took).toBeLessThan(3_000);
    const second = await api(b, 'POST', '/v1/vms', { name: 'after-handover', image: 'img', cpus: 1, memoryMib: 512 });
    expect(second.status).toBe(201);
    await until('b to place it', async () => ((await b.db.vm.findUnique({ where: { name: 'after-handover' } }))?.state === 'scheduled' ? true : undefined), 5_000);
    const lease = await b.db.controllerLease.findUniqueOrThrow({ where: { id: 'leader' } });
    expect(lease).toMatchObject({ holderName: 'ctl-b', token: 2 });
    await b.stop();
    running.splice(running.indexOf(b), 1);
  }, 60_000);

  it('a controller with another CA than the fleet’s refuses to start, saying what to copy', async () => {
    const url = await pg.createDatabase('cluster_ca');
    const a = await start(url, 'ctl-a');
    await expect(start(url, 'ctl-other')).rejects.toThrow(/not the fleet's CA recorded in the database .*copy pki\/ca.pem and pki\/ca-key.pem/);
    // Same CA, other failure timings while ctl-a runs: refused (a worker could be re-placed before it fenced).
    await expect(start(url, 'ctl-slow', path.join(root, 'cluster_ca-ctl-a'), { workerOfflineTimeoutMs: 60_000 })).rejects.toThrow(
      /the controllers running on this database use .*--worker-offline-timeout 30000ms.*this one was started with .*--worker-offline-timeout 60000ms/,
    );
    // Same CA, its own secrets key: refused (it would seal VM secrets the others cannot open).
    await expect(start(url, 'ctl-nokey', path.join(root, 'cluster_ca-ctl-a'), { withoutSecretsKey: true })).rejects.toThrow(
      /secrets key .* is not the fleet's key [0-9a-f]{16} recorded in the database.*copy secrets.key/,
    );
    await a.stop();
    running.splice(running.indexOf(a), 1);
  }, 60_000);
});
