// Key rotation keeps every VM reachable (issue 14), with a REAL QEMU VM: `fleet-controller
// rotate-key` runs against the data dir of the running controller while sessions go on; then
// `fleet exec` (the worker gets the VM's key from the controller, opened under the new key) and
// OpenSSH through `fleet ssh --stdio` (the key fetched again from ssh-access) still work, also
// after the worker's pooled connections are gone and after the old key is deleted and the
// controller restarted. Uses the session e2e world (support/sessions-env.ts).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFleet, sessionsPrerequisites, startSessionsEnv, type SessionsEnv } from './support/sessions-env.ts';
import { REPO_ROOT, waitUntil } from './support/fleet-processes.ts';

const why = sessionsPrerequisites();
if (why) {
  console.warn(`\n!!!!!!!! SKIPPING test/secrets-rotation.test.ts: ${why}. Key rotation with a real VM is NOT tested on this machine; run the e2e suite as root on Linux with QEMU. !!!!!!!!\n`);
}

const VM = 'rot-vm';
const CONTROLLER = path.join(REPO_ROOT, 'apps/controller/bin/fleet-controller.js');

function rotateKey(dataDir: string, extra: string[] = []): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CONTROLLER, 'rotate-key', '--data-dir', dataDir, ...extra], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('close', (code) => resolve({ code, out }));
  });
}

describe.skipIf(why !== '')('secrets key rotation with a running controller (real QEMU VM)', () => {
  let env: SessionsEnv;

  beforeAll(async () => {
    env = await startSessionsEnv();
    await env.createVm(VM);
    // More rows for the rotation to move, batch by batch: VMs no worker can take (they stay
    // pending), each with its key pair made by an ssh-access read and a password.
    for (let i = 0; i < 30; i++) {
      const name = `rot-pending-${i}`;
      await env.controller.api.createVm({ name, image: 'fleet-guest', selector: { nowhere: 'true' }, password: `pw-${i}` });
      const r = await runFleet(env, ['ssh-config', '--dir', path.join(env.tmp, 'pending-ssh'), name]);
      expect(r.code, r.stderr).toBe(0);
    }
  }, 240_000);

  afterAll(async () => {
    await env?.destroy();
  }, 60_000);

  const exec = async (word: string) => {
    const r = await runFleet(env, ['exec', VM, '--', 'echo', word]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(`${word}\n`);
  };

  const viaOpenSsh = async (tag: string) => {
    const dir = path.join(env.tmp, `ssh-${tag}`);
    const cfg = await runFleet(env, ['ssh-config', '--dir', dir, VM]);
    expect(cfg.code, cfg.stderr).toBe(0);
    const configFile = path.join(dir, 'config');
    await writeFile(configFile, cfg.stdout.toString().replace(/ProxyCommand (.*) ssh --stdio/, `ProxyCommand $1 --token ${env.controller.adminToken} ssh --stdio`));
    const out = execFileSync('ssh', ['-F', configFile, '-o', 'BatchMode=yes', VM, 'echo', `ssh-${tag}`], { input: Buffer.alloc(0), timeout: 120_000 });
    expect(out.toString()).toBe(`ssh-${tag}\n`);
  };

  it('rotate-key while sessions run; exec and OpenSSH work after it, after a worker restart, and without the old key', async () => {
    const dataDir = env.controller.dataDir;
    await exec('before');
    await viaOpenSsh('before');
    expect(await readdir(dataDir)).toContain('secrets.key');

    // Online: sessions keep starting while the rotation re-wraps in batches of 4.
    const rotation = rotateKey(dataDir, ['--batch-size', '4']);
    const during = (async () => {
      for (let i = 0; i < 3; i++) await exec(`during-${i}`);
    })();
    const [r] = await Promise.all([rotation, during]);
    expect(r.code, r.out).toBe(0);
    const m = /re-wrapped the secrets of (\d+) of (\d+) VMs under key ([0-9a-f]{16}) \(was ([0-9a-f]{16})\)/.exec(r.out);
    expect(m, r.out).not.toBeNull();
    expect(Number(m![1])).toBe(31);
    expect(Number(m![2])).toBe(31);
    const [, , , newId, previousId] = m!;
    expect(r.out).toContain(`every secret is under ${newId}`);
    const oldFile = path.join(dataDir, `secrets.key.${previousId}.old`);
    expect(existsSync(oldFile)).toBe(true);

    // The running controller opens the re-wrapped envelopes (it reloads its keyring).
    await exec('after');
    await viaOpenSsh('after');
    // No pooled connection left on the worker: it needs the key from the controller again.
    env.killWorker();
    await env.restartWorker();
    // The restarted worker adopts the VM (its detached host process kept it running) first.
    await waitUntil(async () => (await runFleet(env, ['exec', VM, '--', 'true'])).code === 0, 60_000, 'exec through the restarted worker');
    await exec('after-worker-restart');

    // Retire the old key; a restarted controller needs only the new one.
    await unlink(oldFile);
    await env.restartController();
    await waitUntil(async () => (await runFleet(env, ['exec', VM, '--', 'true'])).code === 0, 60_000, 'exec through the restarted controller');
    await exec('old-key-retired');
    await viaOpenSsh('old-key-retired');
    const pw = await env.controller.api.vm('rot-pending-7');
    expect(pw).toMatchObject({ passwordSet: true });
  }, 300_000);
});
