// The dnsmasq supervisor against a stand-in executable (no root, no dnsmasq needed).
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DnsmasqSupervisor, isAlive } from './dnsmasq.ts';

let dir: string;
let fake: string;

// Behaves like `dnsmasq --keep-in-foreground`: says "started" and stays. The environment
// variable FAIL_FILE names a file holding how many of the next starts should fail.
const FAKE = `#!/bin/sh
if [ -n "$FAIL_FILE" ] && [ -s "$FAIL_FILE" ]; then
  n=$(cat "$FAIL_FILE")
  if [ "$n" -gt 0 ]; then
    echo $((n - 1)) > "$FAIL_FILE"
    echo "dnsmasq: failed to create listening socket: Address in use" >&2
    exit 2
  fi
fi
echo "dnsmasq[$$]: started, version fake" >&2
echo "dnsmasq-dhcp[$$]: DHCP, IP range 192.168.64.2 -- 192.168.64.254" >&2
exec sleep 1000
`;

function memoryLog() {
  const entries: { level: string; msg?: string; obj: object }[] = [];
  const at = (level: string) => (obj: object, msg?: string) => entries.push({ level, msg, obj });
  return { entries, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

async function until(fn: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-dnsmasq-'));
  fake = path.join(dir, 'dnsmasq');
  await writeFile(fake, FAKE);
  await chmod(fake, 0o755);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('DnsmasqSupervisor', () => {
  it('starts, restarts with backoff after a crash (also through failed restarts), and stops for good', async () => {
    const failFile = path.join(dir, 'fail-restart');
    process.env.FAIL_FILE = failFile;
    const log = memoryLog();
    const sup = new DnsmasqSupervisor({ binary: fake, args: [], log, minBackoffMs: 20, maxBackoffMs: 200 });
    try {
      await sup.start();
      const first = sup.pid!;
      expect(isAlive(first)).toBe(true);
      expect(log.entries.some((e) => e.level === 'info' && String((e.obj as { dnsmasq?: string }).dnsmasq).includes('started'))).toBe(true);
      await writeFile(failFile, '2'); // the next two starts fail
      process.kill(first, 'SIGKILL');
      await until(() => sup.pid !== undefined && sup.pid !== first && sup.restarts === 3 && isAlive(sup.pid));
      const warns = log.entries.filter((e) => e.msg === 'dnsmasq died; restarting').map((e) => (e.obj as { restartInMs: number }).restartInMs);
      expect(warns).toEqual([20, 40, 80]); // exponential backoff
      const pid = sup.pid!;
      await sup.stop();
      expect(isAlive(pid)).toBe(false);
      await new Promise((r) => setTimeout(r, 150));
      expect(sup.pid).toBeUndefined();
      expect(sup.restarts).toBe(3);
      await sup.stop(); // idempotent
    } finally {
      delete process.env.FAIL_FILE;
      await sup.stop();
    }
  });

  it('rejects start() with dnsmasq output when the first start fails, and does not retry', async () => {
    const failFile = path.join(dir, 'fail-first');
    await writeFile(failFile, '1');
    process.env.FAIL_FILE = failFile;
    const log = memoryLog();
    const sup = new DnsmasqSupervisor({ binary: fake, args: [], log, minBackoffMs: 20 });
    try {
      await expect(sup.start()).rejects.toThrow(/exited during start \(exit 2\).*Address in use/);
      await new Promise((r) => setTimeout(r, 100));
      expect(sup.restarts).toBe(0);
      expect(sup.pid).toBeUndefined();
    } finally {
      delete process.env.FAIL_FILE;
      await sup.stop();
    }
  });

  it('outputFile: runs detached so it outlives the worker; a new supervisor adopts it and restarts it if it dies', async () => {
    const log = memoryLog();
    const outputFile = path.join(dir, 'dnsmasq.log');
    const first = new DnsmasqSupervisor({ binary: fake, args: [], log, outputFile, minBackoffMs: 20 });
    let adopted: DnsmasqSupervisor | undefined;
    try {
      await first.start();
      const pid = first.pid!;
      expect(readFileSync(outputFile, 'utf8')).toMatch(/started, version fake/);
      first.detach(); // the worker goes away
      await new Promise((r) => setTimeout(r, 100));
      expect(isAlive(pid)).toBe(true);

      adopted = new DnsmasqSupervisor({ binary: fake, args: [], log, outputFile, minBackoffMs: 20, adoptedPollMs: 20 });
      adopted.adopt(pid);
      expect(adopted.pid).toBe(pid);
      process.kill(pid, 'SIGKILL');
      await until(() => adopted!.pid !== undefined && adopted!.pid !== pid && isAlive(adopted!.pid));
      expect(adopted.restarts).toBe(1);
      expect(log.entries.some((e) => e.msg === 'adopted dnsmasq died; restarting')).toBe(true);
      const second = adopted.pid!;
      await adopted.stop();
      expect(isAlive(second)).toBe(false);
    } finally {
      await first.stop();
      await adopted?.stop();
    }
  });
});
