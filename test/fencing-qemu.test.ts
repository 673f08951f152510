// Client-side fencing without the worker (issue 12), with real QEMU VMs: the QemuDriver starts a
// "reschedule" VM and a "wait" VM whose VM host processes see a lease file that is valid for a
// few seconds and is never renewed (the worker is gone — no worker process runs here at all).
// The reschedule VM's host process must kill QEMU and exit by the lease's end + 1 s, recording
// "stopped" with a "fenced: …" message (an adopting worker sees it stopped, not failed); the wait
// VM keeps running. Everything runs in a network namespace this test creates (like
// test/qemu-vm.test.ts). Needs root, `ip netns`, qemu-system-x86_64; otherwise skipped loudly.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realVmsMissing, warnSkipped } from './support/lab.ts';
import { NatNetwork } from '../apps/worker/src/uplink/nat-network.ts';
import { CONTROL_SOCKET, STATUS_LOG } from '../apps/worker/src/host-process/qemu-host-config.ts';
import { controlRequest } from '../apps/worker/src/host-process/control-client.ts';
import { QemuDriver } from '../apps/worker/src/drivers/qemu.ts';
import type { InstanceStatus } from '../apps/worker/src/drivers/driver.ts';
import { writeLeaseFile } from '../apps/worker/src/fencing/lease-file.ts';

const ID = process.pid % 1000;
const NS = `fleet-fen-${ID}`;
const BRIDGE = `ffn${ID}`;
const SUBNET = '192.168.64.0/24';
const RANGE: [string, string] = ['192.168.64.100', '192.168.64.150'];
/** How long the lease file stays valid after the test wrote it (both VMs must start within it). */
const LEASE_MS = 8000;

const why = realVmsMissing();
if (why) warnSkipped('test/fencing-qemu.test.ts', why, 'Fencing of QEMU VMs by their VM host processes is');

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Alive = exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe.skipIf(why !== '')('fencing: VM host processes stop reschedule VMs when the lease file runs out', () => {
  let tmp = '';
  let nat: NatNetwork | undefined;

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'fleet-fen-'));
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    nat = await NatNetwork.create({ name: BRIDGE, subnet: SUBNET, uplinkInterface: 'lo', dhcpRange: RANGE, netns: NS, dataDir: path.join(tmp, 'nat'), log: quiet });
  });

  afterAll(async () => {
    // Whatever a failed test left behind (VM host processes, QEMU) names our temp dir.
    if (tmp) {
      for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        try {
          if (Number(pid) !== process.pid && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(tmp)) process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    await nat?.destroy().catch(() => {});
    try {
      execFileSync('ip', ['netns', 'del', NS], { stdio: 'pipe' });
    } catch {
      /* already gone */
    }
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('kills QEMU and the host process of the reschedule VM by the lease end + 1 s (stopped, fenced); the wait VM keeps running', async () => {
    const leaseFile = path.join(tmp, 'lease.json');
    const dataDir = path.join(tmp, 'drv');
    const spec = { image: 'fleet-guest', os: 'linux', cpus: 1, memoryMib: 256, diskGib: 1, labels: {}, username: 'fleet' };
    const r = { vmId: 'vm-resched', attempt: 1 };
    const w = { vmId: 'vm-wait', attempt: 1 };
    const d = new QemuDriver({ dataDir, nat: nat!, netns: NS, fence: { leaseFile }, stopTimeoutMs: 5000 });
    const seen: InstanceStatus[] = [];
    d.subscribe((s) => seen.push(s));
    await d.create({ ...r, name: 'resched', generation: '1', spec: { ...spec, disconnectPolicy: 'reschedule' } });
    await d.create({ ...w, name: 'wait', generation: '1', spec: { ...spec, disconnectPolicy: 'wait' } });

    // The last lease the (absent) worker wrote: valid for LEASE_MS, never renewed.
    const validUntil = Date.now() + LEASE_MS;
    writeLeaseFile(leaseFile, { validUntilUnixMs: validUntil, fenceAfterMs: 20_000, renewedAtUnixMs: Date.now() });
    const t0 = Date.now();
    await Promise.all([d.start(r), d.start(w)]);
    console.log(`[fencing] both VMs running ${Date.now() - t0} ms after the lease was written (valid for ${LEASE_MS} ms)`);
    expect(Date.now()).toBeLessThan(validUntil);

    const runDir = (ref: { vmId: string; attempt: number }): string => path.join(dataDir, 'instances', `${ref.vmId}.${ref.attempt}`);
    const config = (ref: { vmId: string; attempt: number }) => JSON.parse(readFileSync(path.join(runDir(ref), 'config.json'), 'utf8')) as { fence?: unknown };
    expect(config(r).fence).toEqual({ leaseFile, graceMs: 2000 });
    expect(config(w).fence).toBeUndefined();
    const rLive = (await controlRequest(path.join(runDir(r), CONTROL_SOCKET), 'status')).status!;
    const wLive = (await controlRequest(path.join(runDir(w), CONTROL_SOCKET), 'status')).status!;
    const pids = { rHost: rLive.pid, rQemu: rLive.qemuPid!, wHost: wLive.pid, wQemu: wLive.qemuPid! };
    for (const pid of Object.values(pids)) expect(alive(pid)).toBe(true);

    // Until the lease ends nothing happens to either VM.
    await sleep(Math.max(0, validUntil - Date.now() - 300));
    expect(alive(pids.rQemu) && alive(pids.rHost)).toBe(true);

    // Then the reschedule VM's QEMU and host process go, within a second.
    let goneAt = 0;
    while (alive(pids.rQemu) || alive(pids.rHost)) {
      if (Date.now() > validUntil + 3000) break;
      await sleep(20);
    }
    goneAt = Date.now();
    console.log(`[fencing] reschedule VM: QEMU and VM host process gone ${goneAt - validUntil} ms after the lease ended`);
    expect(alive(pids.rQemu)).toBe(false);
    expect(alive(pids.rHost)).toBe(false);
    expect(goneAt - validUntil).toBeLessThanOrEqual(1000);

    const last = JSON.parse(readFileSync(path.join(runDir(r), STATUS_LOG), 'utf8').trim().split('\n').at(-1)!) as { state: string; message?: string };
    expect(last.state).toBe('stopped');
    expect(last.message).toMatch(/^fenced: no lease from the controller for 20s/);
    await expect.poll(() => seen.filter((s) => s.vmId === r.vmId).at(-1), { timeout: 2000 }).toMatchObject({ state: 'stopped', message: expect.stringMatching(/^fenced: /) });
    // A worker that starts now (adoption) sees it stopped and fenced, not failed.
    const adopting = new QemuDriver({ dataDir, nat: nat!, netns: NS, fence: { leaseFile } });
    const listed = await adopting.list();
    expect(listed.find((s) => s.vmId === r.vmId)).toMatchObject({ state: 'stopped', message: expect.stringMatching(/^fenced: /), disconnectPolicy: 'reschedule' });
    expect(listed.find((s) => s.vmId === w.vmId)).toMatchObject({ state: 'running', disconnectPolicy: 'wait' });
    await adopting.close();

    // The wait VM ignores the expired lease.
    await sleep(700);
    expect(alive(pids.wQemu) && alive(pids.wHost)).toBe(true);
    expect((await controlRequest(path.join(runDir(w), CONTROL_SOCKET), 'status')).status).toMatchObject({ state: 'running' });
    expect((await d.list()).find((s) => s.vmId === w.vmId)?.state).toBe('running');

    // With the lease still expired, a start of the reschedule VM is refused by its host process
    // before QEMU runs (the worker itself would not even try).
    await expect(d.start(r)).rejects.toThrow(/fenced: /);
    expect((await d.list()).find((s) => s.vmId === r.vmId)).toMatchObject({ state: 'stopped', message: expect.stringMatching(/^fenced: /) });

    await d.remove(w);
    await d.remove(r);
    expect(alive(pids.wQemu)).toBe(false);
    expect(await d.list()).toEqual([]);
    await d.close();
  });
});
