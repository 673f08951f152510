// `fleet-worker doctor` against a real controller process and a really enrolled data dir: it
// passes, and it does not displace the worker that is running with the same identity.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, enrollWorker, removeDir, runWorker, startControllerProcess, startProcess, tempDir, waitUntil, type ControllerProcess } from './support/fleet-processes.ts';

const WORKER_MAIN = path.join(REPO_ROOT, 'apps/worker/bin/fleet-worker.js');
let controller: ControllerProcess;
const dirs: string[] = [];

beforeAll(async () => {
  const d = await tempDir('ctl-doctor');
  dirs.push(d);
  controller = await startControllerProcess({ dataDir: d });
});
afterAll(async () => {
  await controller?.kill();
  await Promise.all(dirs.map(removeDir));
});

describe('fleet-worker doctor (end to end)', () => {
  it('passes for an enrolled worker and leaves the running worker connected', async () => {
    const dataDir = await tempDir('w-doctor');
    dirs.push(dataDir);
    const enrolled = await enrollWorker({ controller, name: 'doctor-1', dataDir });
    expect(enrolled.code, enrolled.output).toBe(0);
    const worker = runWorker({ name: 'doctor-1', dataDir });
    try {
      await waitUntil(async () => (await controller.api.worker('doctor-1'))?.status === 'online', 30_000, 'doctor-1 online');
      const doctor = startProcess([WORKER_MAIN, 'doctor', '--data-dir', dataDir, '--driver', 'synthetic', '--json']);
      const code = await doctor.exited;
      const report = JSON.parse(doctor.output()) as { ok: boolean; checks: { name: string; status: string; detail: string }[] };
      expect(code, doctor.output()).toBe(0);
      expect(report.ok).toBe(true);
      expect(report.checks.find((c) => c.name === 'controller')).toMatchObject({ status: 'ok' });
      // The running worker holds a lease from the controller (client-side fencing).
      expect(report.checks.find((c) => c.name === 'controller lease')).toMatchObject({ status: 'ok', detail: expect.stringMatching(/^valid for \d+ s more/) });
      expect(report.checks.find((c) => c.name === 'certificate')?.detail).toMatch(/expires in \d+ day/);
      // Doctor only shakes hands over TLS; the worker's Connect stream is untouched.
      await new Promise((r) => setTimeout(r, 500));
      expect(await controller.api.worker('doctor-1')).toMatchObject({ status: 'online', connected: true });
      expect(worker.child.exitCode).toBeNull();
    } finally {
      await worker.kill();
    }
  });
});
