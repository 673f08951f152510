// Enrollment over real gRPC/TLS between separate processes: the worker pins the
// controller CA from the bootstrap token, gets an mTLS certificate, and a
// deleted worker is refused with a clear message.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  enrollWorker,
  removeDir,
  runWorker,
  startControllerProcess,
  tempDir,
  waitUntil,
  type ControllerProcess,
} from './support/fleet-processes.ts';

let controller: ControllerProcess;
const dirs: string[] = [];
const dir = async (p: string) => {
  const d = await tempDir(p);
  dirs.push(d);
  return d;
};

beforeAll(async () => {
  controller = await startControllerProcess({ dataDir: await dir('ctl-enroll') });
});
afterAll(async () => {
  await controller?.kill();
  await Promise.all(dirs.map(removeDir));
});

describe('worker enrollment', () => {
  it('enrolls with a good token, connects with mTLS and reports its capacity', async () => {
    const dataDir = await dir('w-good');
    const res = await enrollWorker({ controller, name: 'good-1', dataDir });
    expect(res.code, res.output).toBe(0);
    const w = runWorker({ name: 'good-1', dataDir, cpus: 6, memoryMib: 12288, vmSlots: 3, labels: 'pool=ci' });
    try {
      await waitUntil(async () => (await controller.api.worker('good-1'))?.status === 'online', 30_000, 'good-1 online');
      const info = await controller.api.worker('good-1');
      expect(info).toMatchObject({ connected: true, paused: false, labels: { pool: 'ci' }, capacity: { cpus: 6, memoryMib: 12288, vmSlots: 3 }, drivers: ['synthetic'] });
      const events = await controller.api.ok('GET', '/v1/events?kind=worker.enrolled');
      expect(events.events.some((e: { message: string }) => e.message.includes('good-1'))).toBe(true);
    } finally {
      await w.kill();
    }
  });

  it('refuses a token with a wrong secret', async () => {
    const { token } = await controller.api.createBootstrapToken();
    const parts = token.split('.');
    parts[2] = 'x'.repeat(parts[2]!.length);
    const res = await enrollWorker({ controller, name: 'bad-secret', dataDir: await dir('w-bad'), token: parts.join('.') });
    expect(res.code).not.toBe(0);
    expect(res.output).toMatch(/unknown bootstrap token/i);
    expect(await controller.api.worker('bad-secret')).toBeNull();
  });

  it('refuses a revoked token', async () => {
    const created = await controller.api.ok('POST', '/v1/bootstrap-tokens', { name: 'to-revoke' });
    await controller.api.ok('DELETE', '/v1/bootstrap-tokens/to-revoke');
    const res = await enrollWorker({ controller, name: 'revoked-1', dataDir: await dir('w-rev'), token: created.token });
    expect(res.code).not.toBe(0);
    expect(res.output).toMatch(/revoked/i);
  });

  it('refuses a token whose uses are spent', async () => {
    const created = await controller.api.ok('POST', '/v1/bootstrap-tokens', { name: 'one-use', uses: 1 });
    expect((await enrollWorker({ controller, name: 'once-a', dataDir: await dir('w-once-a'), token: created.token })).code).toBe(0);
    const second = await enrollWorker({ controller, name: 'once-b', dataDir: await dir('w-once-b'), token: created.token });
    expect(second.code).not.toBe(0);
    expect(second.output).toMatch(/no enrollments left/i);
  });

  it('refuses to talk to a controller whose CA does not match the pinned fingerprint', async () => {
    const { token } = await controller.api.createBootstrapToken();
    const parts = token.split('.');
    parts[3] = '0'.repeat(64);
    const res = await enrollWorker({ controller, name: 'mitm-1', dataDir: await dir('w-mitm'), token: parts.join('.') });
    expect(res.code).not.toBe(0);
    expect(res.output).toMatch(/fingerprint/i);
    expect(await controller.api.worker('mitm-1')).toBeNull();
  });

  it('refuses a second machine taking an enrolled name', async () => {
    const first = await enrollWorker({ controller, name: 'taken-1', dataDir: await dir('w-taken-a') });
    expect(first.code).toBe(0);
    // A different data dir has a different machine id.
    const second = await enrollWorker({ controller, name: 'taken-1', dataDir: await dir('w-taken-b') });
    expect(second.code).not.toBe(0);
    expect(second.output).toMatch(/already enrolled from another machine/i);
  });

  it('a deleted worker is disconnected and refused when it reconnects', async () => {
    const dataDir = await dir('w-del');
    expect((await enrollWorker({ controller, name: 'doomed-1', dataDir })).code).toBe(0);
    const w = runWorker({ name: 'doomed-1', dataDir });
    try {
      await waitUntil(async () => (await controller.api.worker('doomed-1'))?.status === 'online', 30_000, 'doomed-1 online');
      // While it is connected its VMs may run there: a plain delete is refused, force deletes.
      expect((await controller.api.request('DELETE', '/v1/workers/doomed-1')).status).toBe(409);
      await controller.api.ok('DELETE', '/v1/workers/doomed-1?force=true');
      const code = await Promise.race([w.exited, new Promise<'running'>((r) => setTimeout(() => r('running'), 30_000))]);
      expect(code).not.toBe('running');
      expect(code).not.toBe(0);
      expect(w.output()).toMatch(/re-enroll/i);
      expect(await controller.api.worker('doomed-1')).toBeNull();
    } finally {
      await w.kill();
    }
  });
});
