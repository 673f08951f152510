// The `fleet-worker` CLI: exit codes in-process, and the real bin (tsx) as a child process
// against a fake controller over real TLS.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT, runCli } from './cli.ts';
import { createTestPki, startFakeController, type FakeController, type TestPki } from './link/fake-controller.test-helper.ts';

const BIN = fileURLToPath(new URL('../bin/fleet-worker.js', import.meta.url));

let pki: TestPki;
let fake: FakeController;
let dir: string;
/** Connect streams from these worker names are refused with UNAUTHENTICATED (revoked). */
const revoked = new Set<string>();

beforeAll(async () => {
  pki = await createTestPki();
  fake = await startFakeController({
    credentials: pki.serverCredentials,
    enroll: (request) => pki.enroll(request),
    onConnect: (stream) => {
      const name = pki.peerName(stream);
      if (!name || revoked.has(name)) stream.fail(grpc.status.UNAUTHENTICATED, 'the credential was revoked');
      else stream.send({ welcome: { protocolVersion: 1, workerId: `wrk-${name}`, workerName: name, controllerVersion: 'fake', heartbeatIntervalMs: 60_000 } });
    },
  });
  dir = await mkdtemp(join(tmpdir(), 'fleet-cli-'));
});

afterAll(async () => {
  await fake.close();
  await rm(dir, { recursive: true, force: true });
});

async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  let code = -1;
  await runCli(['node', 'fleet-worker', ...args], { out: (l) => out.push(l), err: (l) => err.push(l) }, (c) => (code = c));
  return { code, out: out.join('\n'), err: err.join('\n') };
}

function runBin(args: string[]): { exit: Promise<{ code: number | null; stderr: string }>; kill: (signal: NodeJS.Signals) => void } {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FLEET_LOG_LEVEL: 'info' } });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdout.resume();
  return {
    exit: new Promise((resolve) => child.on('exit', (code) => resolve({ code, stderr }))),
    kill: (signal) => child.kill(signal),
  };
}

describe('fleet-worker CLI', () => {
  it('enroll: --controller is repeatable and comma-separated; the first that answers is used, a malformed one is a usage error', async () => {
    const down = await startFakeController();
    await down.close();
    const dataDir = join(dir, 'several');
    const ok = await cli('enroll', '--controller', `${down.address},${fake.address}`, '--controller', down.address, '--token', pki.token, '--name', 'cli-9', '--data-dir', dataDir, '--machine-id', 'm-9');
    expect(ok.code).toBe(EXIT.ok);
    expect(ok.out).toContain(`with controller ${fake.address}.`);
    expect(ok.out).toContain(`Controllers known: ${fake.address}, ${down.address}.`);
    const bad = await cli('enroll', '--controller', `${fake.address},nope`, '--token', pki.token, '--data-dir', join(dir, 'bad'));
    expect(bad.code).toBe(EXIT.usage);
    expect(bad.err).toMatch(/HOST:PORT/);
    expect((await cli('run', '--controller', 'x:0', '--data-dir', dataDir)).code).toBe(EXIT.usage);
  });

  it('enroll: stores the credential and prints what to run next; refuses to overwrite without --force', async () => {
    const dataDir = join(dir, 'a');
    const ok = await cli('enroll', '--controller', fake.address, '--token', pki.token, '--name', 'cli-1', '--data-dir', dataDir, '--machine-id', 'm-1');
    expect(ok.code).toBe(EXIT.ok);
    expect(ok.out).toMatch(/Enrolled worker "cli-1" \(wrk-cli-1\)/);
    expect(ok.out).toContain(`fleet-worker run --data-dir ${dataDir}`);
    const again = await cli('enroll', '--controller', fake.address, '--token', pki.token, '--name', 'cli-1', '--data-dir', dataDir);
    expect(again.code).toBe(EXIT.usage);
    expect(again.err).toMatch(/--force/);
    const forced = await cli('enroll', '--controller', fake.address, '--token', pki.token, '--name', 'cli-1', '--data-dir', dataDir, '--machine-id', 'm-1', '--force');
    expect(forced.code).toBe(EXIT.ok);
  });

  it('enroll: distinct exit codes for a refused token, a taken name and a missing option', async () => {
    const wrongSecret = pki.token.replace(/\.([A-Za-z0-9_-]{22,})\./, (_m, s: string) => `.${s.slice(0, -1)}${s.endsWith('A') ? 'B' : 'A'}.`);
    expect((await cli('enroll', '--controller', fake.address, '--token', wrongSecret, '--data-dir', join(dir, 'b'))).code).toBe(EXIT.refused);
    expect((await cli('enroll', '--controller', fake.address, '--token', pki.token, '--name', 'taken', '--data-dir', join(dir, 'b'))).code).toBe(EXIT.refused);
    expect((await cli('enroll', '--controller', fake.address, '--data-dir', join(dir, 'b'))).code).toBe(EXIT.usage);
  });

  it('run: usage errors and a missing enrollment exit 2 with a hint', async () => {
    expect((await cli('run', '--cpus', 'many')).code).toBe(EXIT.usage);
    expect((await cli('run', '--labels', 'nokey')).code).toBe(EXIT.usage);
    const missing = await cli('run', '--data-dir', join(dir, 'nothing-here'));
    expect(missing.code).toBe(EXIT.usage);
    expect(missing.err).toMatch(/not enrolled.*fleet-worker enroll/);
  });

  it('bin: `run` connects with the enrollment, logs as JSON, and exits 0 on SIGTERM', async () => {
    const before = fake.streams.length;
    const proc = runBin(['run', '--data-dir', join(dir, 'a'), '--synthetic-speed', '0', '--labels', 'pool=cli', '--vm-slots', '3']);
    const stream = await fake.stream(before, 20_000);
    const hello = await stream.hello();
    expect(hello).toMatchObject({ labels: { pool: 'cli' }, drivers: ['synthetic'], machineId: 'm-1', capacity: { vmSlots: 3 } });
    await new Promise((r) => setTimeout(r, 200));
    proc.kill('SIGTERM');
    const { code, stderr } = await proc.exit;
    expect(code).toBe(EXIT.ok);
    const lines = stderr.trim().split('\n').map((l) => JSON.parse(l) as { msg: string; worker?: string });
    expect(lines.map((l) => l.msg)).toEqual(expect.arrayContaining(['connected to controller', 'worker stopped']));
    expect(lines.find((l) => l.msg.includes('SYNTHETIC'))?.worker).toBe('cli-1');
  }, 30_000);

  it('bin: `run` exits 3 with a re-enroll hint when the controller revoked the worker', async () => {
    revoked.add('cli-1');
    try {
      const proc = runBin(['run', '--data-dir', join(dir, 'a'), '--synthetic-speed', '0']);
      const { code, stderr } = await proc.exit;
      expect(code).toBe(EXIT.refused);
      expect(stderr).toMatch(/revoked or the worker was deleted: re-enroll with `fleet-worker enroll --force/);
    } finally {
      revoked.delete('cli-1');
    }
  }, 30_000);
});
