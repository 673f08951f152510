/**
 * Several controllers (issue 13, point 4): how long a write made through one controller takes to
 * reach a worker whose stream another controller holds, against the same write through the
 * controller holding the stream, in the same run.
 *
 *   pnpm exec tsx bench/cross-controller-push.ts [--samples 200]
 *
 * Two controllers in this process on one scratch PostgreSQL (Debian's postgresql binaries, or
 * FLEET_PG_BIN; fsync off); one synthetic worker connected to controller B only. Each sample
 * flips a VM's power state with PATCH /v1/vms/p, alternately through A (the change crosses over
 * PostgreSQL NOTIFY to B, which pushes it) and through B (pushed directly). Measured from the
 * request being sent to the worker's driver being asked to stop/start the VM (so it includes the
 * HTTP request, the commit, the notification, the desired-state read and the gRPC push, plus the
 * worker's reconcile step). Loopback only.
 */
import { cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { startController, type ControllerHandle } from '@fleet/controller';
import { enrollWorker, silentLogger, startWorker, SyntheticDriver, type InstanceRef, type InstanceStatus } from '@fleet/worker';
import { findPostgresBin, startScratchPostgres } from '../prisma/src/pg-scratch.ts';

const { values } = parseArgs({ options: { samples: { type: 'string', default: '200' } } });
const SAMPLES = Number(values.samples);
if (!(SAMPLES >= 10)) {
  console.error('usage: pnpm exec tsx bench/cross-controller-push.ts [--samples N>=10]');
  process.exit(2);
}
if (!findPostgresBin()) {
  console.error('bench/cross-controller-push.ts: PostgreSQL is not installed (apt-get install postgresql)');
  process.exit(2);
}

/** A synthetic driver that says when the worker asked it to stop or start an instance. */
class TimedDriver extends SyntheticDriver {
  waiting: { kind: 'stop' | 'start'; resolve: (t: number) => void } | undefined;
  override async stop(ref: InstanceRef): Promise<InstanceStatus> {
    this.fire('stop');
    return super.stop(ref);
  }
  override async start(ref: InstanceRef): Promise<InstanceStatus> {
    this.fire('start');
    return super.start(ref);
  }
  private fire(kind: 'stop' | 'start'): void {
    const t = performance.now();
    if (this.waiting?.kind === kind) {
      const w = this.waiting;
      this.waiting = undefined;
      w.resolve(t);
    }
  }
  next(kind: 'stop' | 'start'): Promise<number> {
    return new Promise((resolve) => (this.waiting = { kind, resolve }));
  }
}

const token = 'fleet_bench_' + 'b'.repeat(40);
const root = await mkdtemp(path.join(os.tmpdir(), 'fleet-push-bench-'));
const pg = await startScratchPostgres();
const controllers: ControllerHandle[] = [];
const stops: Array<() => Promise<unknown>> = [];
try {
  const url = await pg.createDatabase('push_bench');
  const start = async (name: string, caFrom?: string) => {
    const dataDir = path.join(root, name);
    if (caFrom) {
      await mkdir(path.join(dataDir, 'pki'), { recursive: true, mode: 0o700 });
      for (const f of ['ca.pem', 'ca-key.pem']) await cp(path.join(caFrom, 'pki', f), path.join(dataDir, 'pki', f));
      await cp(path.join(caFrom, 'secrets.key'), path.join(dataDir, 'secrets.key'));
    }
    const c = await startController({ dataDir, databaseUrl: url, apiPort: 0, grpcPort: 0, grpcHost: '127.0.0.1', controllerName: name, bootstrapAdminToken: token, logLevel: 'silent' });
    controllers.push(c);
    return c;
  };
  const a = await start('ctl-a');
  const b = await start('ctl-b', path.join(root, 'ctl-a'));
  const api = async (c: ControllerHandle, method: string, p: string, body?: unknown) => {
    const res = await fetch(`${c.apiUrl}${p}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${await res.text()}`);
    return (await res.json()) as Record<string, unknown>;
  };
  const boot = (await api(a, 'POST', '/v1/bootstrap-tokens', { name: 'bench' }))['token'] as string;
  const workerDir = path.join(root, 'worker');
  await enrollWorker({ controller: b.grpcAddress, token: boot, name: 'w1', dataDir: workerDir, logger: silentLogger() });
  const driver = new TimedDriver({ speed: 0 });
  // Pinned to B for the whole run (an override is never saved, and there is nowhere else to go).
  const worker = await startWorker({ dataDir: workerDir, controller: b.grpcAddress, driver, logger: silentLogger(), capacity: { cpus: 4, memoryMib: 8192, vmSlots: 4, macosSlots: 0 } });
  stops.push(() => worker.stop());
  const until = async (what: string, cond: () => Promise<boolean>) => {
    const t0 = Date.now();
    while (!(await cond())) {
      if (Date.now() - t0 > 20_000) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await until('the worker on B', async () => worker.connected());
  await api(a, 'POST', '/v1/vms', { name: 'p', image: 'synthetic', cpus: 1, memoryMib: 512 });
  const state = async () => ((await api(b, 'GET', '/v1/vms/p')) as { state: string }).state;
  await until('p running', async () => (await state()) === 'running');

  const cross: number[] = [];
  const local: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const via = i % 2 === 0 ? a : b;
    for (const [power, kind, settled] of [
      ['stopped', 'stop', 'stopped'],
      ['running', 'start', 'running'],
    ] as const) {
      const applied = driver.next(kind);
      const t0 = performance.now();
      await api(via, 'PATCH', '/v1/vms/p', { powerState: power });
      const t1 = await Promise.race([applied, new Promise<number>((_, reject) => setTimeout(() => reject(new Error(`no ${kind} within 10 s`)), 10_000))]);
      (via === a ? cross : local).push(t1 - t0);
      await until(`p ${settled}`, async () => (await state()) === settled);
    }
  }
  const q = (xs: number[], p: number) => {
    const s = [...xs].sort((x, y) => x - y);
    return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
  };
  const row = (name: string, xs: number[]) => `| ${name} | ${xs.length} | ${q(xs, 50).toFixed(1)} | ${q(xs, 99).toFixed(1)} | ${Math.max(...xs).toFixed(1)} |`;
  console.log(`cross-controller push, ${SAMPLES} samples per path, ${os.cpus().length} CPUs, node ${process.version}`);
  console.log('| write through | n | p50 ms | p99 ms | max ms |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  console.log(row('B (holds the stream: baseline)', local));
  console.log(row('A (other controller, via NOTIFY)', cross));
  console.log(`goal: p99 through A under 100 ms — ${q(cross, 99) < 100 ? 'met' : 'NOT met'}`);
} finally {
  for (const s of stops) await s().catch(() => undefined);
  for (const c of controllers) await c.stop().catch(() => undefined);
  await pg.stop();
  await rm(root, { recursive: true, force: true });
}
