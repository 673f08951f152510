// A full disk under a real controller process (issue 12): its data dir lives on a small
// tmpfs that the test fills. Creates must answer 503 storage_unavailable with Retry-After
// (not 500), /v1/health must say degraded, the process must stay up and keep serving
// reads; once space is freed, health is ok again and creates work, without a restart.
// Needs root (mount); skipped loudly otherwise.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControllerProcess, waitUntil, type ControllerProcess } from './support/fleet-processes.ts';

const isRoot = process.getuid?.() === 0;
if (!isRoot) console.warn('\n*** storage-faults.test.ts: SKIPPED: needs root to mount a small tmpfs for the controller data dir ***\n');

interface Answer {
  status: number;
  retryAfter: string | null;
  body: any;
}

let base: string;
let mnt: string;
let mounted = false;
let controller: ControllerProcess | undefined;

async function call(method: string, p: string, body?: unknown, token: string | null = controller!.adminToken): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (token) headers['authorization'] = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(controller!.apiUrl + p, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await res.text();
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: text ? JSON.parse(text) : null };
}
const createVm = (name: string) => call('POST', '/v1/vms', { name, image: 'synthetic:ok', cpus: 1, memoryMib: 256 });
const health = () => call('GET', '/v1/health', undefined, null);

/** Fill the file system to the last byte (big blocks first, then pages, then bytes). */
function fill(): void {
  for (const [i, bs] of ['1M', '4k', '512', '1'].entries()) {
    spawnSync('dd', ['if=/dev/zero', `of=${path.join(mnt, `filler-${i}`)}`, `bs=${bs}`], { stdio: 'ignore' });
  }
}
function free(): void {
  for (let i = 0; i < 4; i++) rmSync(path.join(mnt, `filler-${i}`), { force: true });
}

describe.skipIf(!isRoot)('a full disk under the controller', () => {
  beforeAll(async () => {
    base = await mkdtemp(path.join(os.tmpdir(), 'fleet-e2e-diskfull-'));
    mnt = path.join(base, 'data');
    mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0700', 'tmpfs', mnt]);
    mounted = true;
    controller = await startControllerProcess({ dataDir: path.join(mnt, 'controller') });
  });

  afterAll(async () => {
    await controller?.kill();
    if (mounted) {
      try {
        execFileSync('umount', [mnt]);
      } catch {
        execFileSync('umount', ['-l', mnt]);
      }
    }
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('answers 503 storage_unavailable while the disk is full, stays up, and recovers by itself', async () => {
    expect((await createVm('before-full')).status).toBe(201);
    expect(await health()).toMatchObject({ status: 200, body: { status: 'ok', checks: { storage: { ok: true } } } });

    fill();
    // SQLite may still place a few commits in space it already holds (WAL frames, free
    // pages); the first create that needs new space must fail cleanly.
    let refused: Answer | undefined;
    const created: string[] = [];
    for (let i = 0; i < 300 && !refused; i++) {
      const r = await createVm(`while-full-${i}`);
      if (r.status === 201) created.push(r.body.name);
      else refused = r;
    }
    expect(refused, 'no create failed although the disk is full').toBeDefined();
    expect(refused!.status).toBe(503);
    expect(refused!.retryAfter).toMatch(/^\d+$/);
    expect(refused!.body.error.code).toBe('storage_unavailable');
    expect(refused!.body.error.message).toMatch(/disk is full|I\/O error/);

    // More creates keep failing the same way (never a 500), and health says degraded.
    for (let i = 0; i < 3; i++) {
      const r = await createVm(`still-full-${i}`);
      expect(r.status).toBe(503);
      expect(r.body.error.code).toBe('storage_unavailable');
    }
    const degraded = await health();
    expect(degraded.status).toBe(503);
    expect(degraded.retryAfter).toMatch(/^\d+$/);
    expect(degraded.body).toMatchObject({ status: 'degraded', checks: { storage: { ok: false, error: expect.any(String), since: expect.any(String) } } });
    expect(degraded.body.checks.storage.code).toMatch(/^SQLITE_(FULL|IOERR)/);

    // The process is up and serves what needs no new space.
    expect(controller!.child.exitCode).toBeNull();
    const listed = await call('GET', '/v1/vms');
    expect(listed.status).toBe(200);
    expect(listed.body.vms.map((v: { name: string }) => v.name).sort()).toEqual(['before-full', ...created].sort());
    // Still degraded a few probes later: the probe really writes.
    await new Promise((r) => setTimeout(r, 2500));
    expect((await health()).status).toBe(503);

    free();
    await waitUntil(async () => (await health()).status === 200, 15_000, 'health ok again after freeing space');
    expect((await health()).body).toEqual({ status: 'ok', checks: { storage: { ok: true } }, controller: expect.objectContaining({ role: 'leader' }) });
    const after = await createVm('after-full');
    expect(after.status).toBe(201);
    expect(controller!.child.exitCode).toBeNull();
    expect((await call('GET', '/v1/vms/after-full')).status).toBe(200);
    // The log says what happened, structured.
    expect(controller!.output()).toMatch(/storage unavailable/);
  });
});
