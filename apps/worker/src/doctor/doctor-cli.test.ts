// `fleet-worker doctor` through the real command line parser (runCli/buildProgram).
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EXIT, runCli } from '../cli.ts';
import { CredentialStore } from '../config/credentials.ts';
import type { DoctorReport } from './check.ts';
import { enrolledDataDir, startTlsController } from './test-fixtures.test-helper.ts';

async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  let code = -1;
  await runCli(['node', 'fleet-worker', ...args], { out: (l) => out.push(l), err: (l) => err.push(l) }, (c) => (code = c));
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('fleet-worker doctor', () => {
  it('exits 0 with --json {ok, checks} for an enrolled worker whose controller answers', async () => {
    const { dataDir, ca } = await enrolledDataDir();
    const server = await startTlsController(ca);
    // Point worker.json at the test controller.
    const store = new CredentialStore(dataDir);
    const creds = await store.load();
    await store.save({ ...creds, identity: { ...creds.identity, controller: server.address, controllers: [server.address] } });
    try {
      const r = await cli('doctor', '--data-dir', dataDir, '--driver', 'synthetic', '--json');
      const report = JSON.parse(r.out) as DoctorReport;
      expect(report.checks.map((c) => c.name)).toEqual(['node', 'data dir', 'enrollment', 'certificate', 'controller', 'controller lease', 'native addon', 'driver']);
      for (const c of report.checks) expect(['ok', 'warn', 'fail', 'skip']).toContain(c.status);
      expect(report.checks.find((c) => c.name === 'controller')!.status).toBe('ok');
      expect(report.ok).toBe(true);
      expect(r.code).toBe(EXIT.ok);
    } finally {
      await server.close();
      await rm(path.dirname(dataDir), { recursive: true, force: true });
    }
  });

  it('exits 1 with a human table naming the fix when the data dir is not enrolled', async () => {
    const r = await cli('doctor', '--data-dir', '/nonexistent/fleet-doctor', '--driver', 'synthetic');
    expect(r.code).toBe(EXIT.error);
    expect(r.out).toMatch(/^✗ data dir\s+\/nonexistent\/fleet-doctor does not exist/m);
    expect(r.out).toContain('fix: fleet-worker enroll --controller HOST:PORT --token <bootstrap token> --data-dir /nonexistent/fleet-doctor');
    expect(r.out).toMatch(/^- controller\s+no readable enrollment/m);
  });

  it('refuses an unknown driver as a usage error', async () => {
    expect((await cli('doctor', '--driver', 'hyperv')).code).toBe(EXIT.usage);
  });
});
