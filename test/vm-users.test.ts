// Issue 14: unprivileged VM processes on Linux. Two VMs on one QemuDriver with VM users on, inside
// a network namespace this test creates (NatNetwork with `lo` as uplink: nothing leaves it):
//
//   - each instance has its own uid (persisted in instance.json; kept by a re-attaching driver);
//   - a process running as VM A's uid cannot read VM B's disk, list B's run dir, connect to B's
//     control socket, read B's config, read the worker's key.pem, or read A's own VM host
//     process's memory/environ (non-dumpable) — while it can read A's own disk (the probe works);
//   - /proc/<QEMU pid>/status: Uid = the VM's uid, Seccomp 2, NoNewPrivs 1, CapEff/CapPrm/CapBnd 0;
//     the VM host process: the same uid, no capabilities, NoNewPrivs 1;
//   - the VMs still boot, get their addresses, answer SSH; the unprivileged host still reads the
//     worker's lease file (fencing) and fences its VM when the lease runs out; stop and remove work.
// Needs root, `ip netns`, qemu-system-x86_64, ssh, setpriv; otherwise skipped with a loud warning.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realVmsMissing, warnSkipped } from './support/lab.ts';
import { NatNetwork, vmNetnsFor } from '../apps/worker/src/uplink/nat-network.ts';
import { CONTROL_SOCKET, type VmHostStatus } from '../apps/worker/src/host-process/qemu-host-config.ts';
import { controlRequest } from '../apps/worker/src/host-process/control-client.ts';
import { QemuDriver, tapNameFor, type QemuDriverOptions } from '../apps/worker/src/drivers/qemu.ts';
import type { InstanceStatus } from '../apps/worker/src/drivers/driver.ts';
import { writeLeaseFile } from '../apps/worker/src/fencing/lease-file.ts';

const ID = process.pid % 1000;
const NS = `fleet-vmu-${ID}`;
const BRIDGE = `fu${ID}`;
const SUBNET = '192.168.64.0/24';
const UID_BASE = 300_000 + ID * 10;

const hasSetpriv = spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;
const why = realVmsMissing(['ssh', 'ssh-keygen']) || (hasSetpriv ? '' : 'setpriv (util-linux) is missing');
if (why) warnSkipped('test/vm-users.test.ts', why, 'Unprivileged VM users (issue 14) are');

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const spec = { image: 'fleet-guest', os: 'linux', cpus: 1, memoryMib: 256, diskGib: 1, labels: {}, username: 'fleet' };

/** /proc/<pid>/status as a map. */
function procStatus(pid: number): Record<string, string> {
  return Object.fromEntries(
    readFileSync(`/proc/${pid}/status`, 'utf8')
      .trim()
      .split('\n')
      .map((l) => {
        const i = l.indexOf(':');
        return [l.slice(0, i), l.slice(i + 1).trim()];
      }),
  );
}

/** Runs `cmd` as uid/gid `uid` with no supplementary groups; returns its exit status and stderr. */
function asUser(uid: number, cmd: string[]): { status: number | null; stderr: string } {
  const r = spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--', ...cmd], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stderr: r.stderr };
}

/** A Unix socket connect as `uid`: exit 0 connected, 3 refused (the error code on stderr). */
function connectAs(uid: number, sock: string): { status: number | null; stderr: string } {
  const js = `require('net').connect(${JSON.stringify(sock)}).on('connect',()=>process.exit(0)).on('error',(e)=>{process.stderr.write(e.code);process.exit(3)})`;
  return asUser(uid, [process.execPath, '-e', js]);
}

describe.skipIf(why !== '')('VM users: per-VM uids, no capabilities, QEMU sandbox (issue 14)', () => {
  let tmp = '';
  let nat: NatNetwork | undefined;
  let drivers: QemuDriver[] = [];

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'fleet-vmu-'));
    // VM users reach their run dirs by name only: every ancestor must be o+x (the worker makes
    // its data dir 0711 when VM users are on; mkdtemp made this one 0700).
    await chmod(tmp, 0o711);
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    nat = await NatNetwork.create({ name: BRIDGE, subnet: SUBNET, uplinkInterface: 'lo', dhcpRange: ['192.168.64.100', '192.168.64.150'], netns: NS, dataDir: path.join(tmp, 'nat'), log: quiet });
  });

  afterAll(async () => {
    for (const d of drivers) await d.close().catch(() => {});
    if (tmp) {
      for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        try {
          if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(tmp) && Number(pid) !== process.pid) process.kill(Number(pid), 'SIGKILL');
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

  it('two VMs: each its own uid; neither reaches the other or the worker; QEMU sandboxed, no capabilities', async () => {
    // A stand-in worker data dir: its key (0600) must stay out of every VM's reach.
    const workerDir = path.join(tmp, 'w');
    await mkdir(workerDir, { mode: 0o711 });
    await chmod(workerDir, 0o711);
    const keyPem = path.join(workerDir, 'key.pem');
    await writeFile(keyPem, '-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n', { mode: 0o600 });
    const leaseFile = path.join(workerDir, 'lease.json');
    writeLeaseFile(leaseFile, { validUntilUnixMs: Date.now() + 3_600_000, fenceAfterMs: 3_600_000, renewedAtUnixMs: Date.now() }); // validity ≤ renewal + fenceAfter (parseLeaseFile)

    const key = path.join(tmp, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'fleet-vmu', '-f', key]);
    const pub = readFileSync(`${key}.pub`, 'utf8').trim();
    const opts: QemuDriverOptions = {
      dataDir: path.join(workerDir, 'qemu'),
      nat: nat!,
      netns: NS,
      authorizedKeys: [pub],
      stopTimeoutMs: 15_000,
      vmUsers: { base: UID_BASE, count: 10 },
      fence: { leaseFile, graceMs: 5000 },
      // The veth uplink: its socket must reach the host process and never QEMU (the TAP path, with
      // VM users, is what every fleet-worker e2e suite runs).
      vmLink: 'veth',
    };
    let d = new QemuDriver(opts);
    drivers.push(d);
    const seen: InstanceStatus[] = [];
    d.subscribe((s) => seen.push(s));
    const A = { vmId: 'vm-a', attempt: 1 };
    // B is a "wait" VM: never fenced (A is fenced at the end of the test).
    const B = { vmId: 'vm-b', attempt: 1 };
    await d.create({ ...A, name: 'vmu-a', generation: '1', spec });
    await d.create({ ...B, name: 'vmu-b', generation: '1', spec: { ...spec, disconnectPolicy: 'wait' } });
    const dirA = path.join(opts.dataDir, 'instances', 'vm-a.1');
    const dirB = path.join(opts.dataDir, 'instances', 'vm-b.1');
    const uidOf = (dir: string): number => (JSON.parse(readFileSync(path.join(dir, 'instance.json'), 'utf8')) as { uid: number }).uid;
    const uidA = uidOf(dirA);
    const uidB = uidOf(dirB);
    expect([uidA, uidB].sort()).toEqual([UID_BASE, UID_BASE + 1]);

    const t0 = Date.now();
    await Promise.all([d.start(A), d.start(B)]);
    const ipOf = async (ref: { vmId: string }): Promise<string> => {
      for (let i = 0; i < 1200; i++) {
        const s = seen.find((x) => x.vmId === ref.vmId && x.ip);
        if (s) return s.ip!;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`no IP for ${ref.vmId}; seen ${JSON.stringify(seen)}`);
    };
    const [ipA, ipB] = await Promise.all([ipOf(A), ipOf(B)]);
    console.log(`[vm-users] two unprivileged VMs: IPs ${ipA}, ${ipB} ${Date.now() - t0} ms after start`);

    // The guest still answers (SSH through the filter, the veth uplink and bridge).
    let ssh = '';
    for (let i = 0; i < 20; i++) {
      try {
        ssh = execFileSync('ip', ['netns', 'exec', NS, 'ssh', '-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
          '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR', `fleet@${ipA}`, 'echo hello-$(id -un)'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
        break;
      } catch (e) {
        if (i === 19) {
          const serial = readFileSync(path.join(dirA, 'run', 'serial.log'), 'utf8').slice(-3000);
          const links = execFileSync('ip', ['-n', NS, '-d', 'link', 'show'], { encoding: 'utf8' });
          throw new Error(`${(e as Error).message}\nserial A:\n${serial}\nlinks:\n${links}`);
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    expect(ssh.trim()).toBe('hello-fleet');

    const statusA = (await controlRequest(path.join(dirA, 'run', CONTROL_SOCKET), 'status')).status as VmHostStatus;
    const statusB = (await controlRequest(path.join(dirB, 'run', CONTROL_SOCKET), 'status')).status as VmHostStatus;

    // QEMU: the VM's uid, seccomp filter mode, no_new_privs, no capabilities at all.
    for (const [st, uid] of [[statusA, uidA], [statusB, uidB]] as const) {
      const q = procStatus(st.qemuPid!);
      expect(q.Uid!.split(/\s+/)).toEqual([String(uid), String(uid), String(uid), String(uid)]);
      expect(q.Gid!.split(/\s+/)).toEqual([String(uid), String(uid), String(uid), String(uid)]);
      expect(q.Groups).toBe('');
      expect(q.Seccomp).toBe('2');
      expect(q.NoNewPrivs).toBe('1');
      for (const c of ['CapEff', 'CapPrm', 'CapBnd', 'CapInh', 'CapAmb']) expect(Number.parseInt(q[c]!, 16), `QEMU ${c}`).toBe(0);
      const h = procStatus(st.pid);
      expect(h.Uid!.split(/\s+/)).toEqual([String(uid), String(uid), String(uid), String(uid)]);
      expect(h.NoNewPrivs).toBe('1');
      for (const c of ['CapEff', 'CapPrm', 'CapBnd']) expect(Number.parseInt(h[c]!, 16), `VM host ${c}`).toBe(0);
      console.log(`[vm-users] uid ${uid}: QEMU pid ${st.qemuPid} Seccomp ${q.Seccomp} NoNewPrivs ${q.NoNewPrivs} CapEff ${q.CapEff} CapBnd ${q.CapBnd}; host pid ${st.pid} CapEff ${h.CapEff}`);
    }

    // The probe works: A's user reads A's own disk…
    expect(asUser(uidA, ['head', '-c', '16', path.join(dirA, 'disk.qcow2')]).status).toBe(0);
    // …and nothing of B's, nor the worker's key.
    const denied = (r: { status: number | null; stderr: string }): void => {
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/Permission denied|EACCES/);
    };
    denied(asUser(uidA, ['head', '-c', '16', path.join(dirB, 'disk.qcow2')]));
    denied(asUser(uidA, ['ls', path.join(dirB, 'run')]));
    denied(asUser(uidA, ['cat', path.join(dirB, 'run', 'serial.log')]));
    denied(asUser(uidA, ['cat', path.join(dirB, 'config.json')]));
    denied(connectAs(uidA, path.join(dirB, 'run', CONTROL_SOCKET)));
    denied(connectAs(uidA, path.join(dirB, 'run', 'qmp.sock')));
    denied(asUser(uidA, ['cat', keyPem]));
    denied(asUser(uidA, ['ls', workerDir]));
    // A's own VM host process is non-dumpable: same uid, still no ptrace-level access to it.
    denied(asUser(uidA, ['cat', `/proc/${statusA.pid}/environ`]));
    // Root (the worker) still reaches A's control socket (status above); A's user reaches its own
    // QMP socket (the host process does, as that user).
    expect(connectAs(uidA, path.join(dirA, 'run', 'qmp.sock')).status).toBe(0);
    // The worker's lease file is public (no secret in it): A's host reads it.
    expect(asUser(uidA, ['cat', leaseFile]).status).toBe(0);
    // Issue 20: A's uplink is an AF_PACKET socket in A's own namespace. A's host process holds it;
    // its QEMU (same uid) never got it (close-on-exec before the spawn), so frames pass the filter.
    const packetInodes = (ns: string): string[] =>
      execFileSync('ip', ['netns', 'exec', ns, 'cat', '/proc/net/packet'], { encoding: 'utf8' }).trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/).at(-1)!);
    const socketsOf = (pid: number): string[] =>
      readdirSync(`/proc/${pid}/fd`).map((f) => { try { return readlinkSync(`/proc/${pid}/fd/${f}`); } catch { return ''; } }).filter((l) => l.startsWith('socket:['));
    const uplinkA = packetInodes(vmNetnsFor(tapNameFor(A)));
    expect(uplinkA).toHaveLength(1);
    expect(socketsOf(statusA.pid)).toContain(`socket:[${uplinkA[0]}]`);
    expect(socketsOf(statusA.qemuPid!)).not.toContain(`socket:[${uplinkA[0]}]`);
    // B's namespace holds B's socket only; A's holds nothing of B's.
    expect(packetInodes(vmNetnsFor(tapNameFor(B)))).not.toContain(uplinkA[0]);

    // A worker restart: a new driver adopts both with the same uids and controls them.
    await d.close();
    d = new QemuDriver(opts);
    drivers.push(d);
    const listed = await d.list();
    expect(listed.map((s) => [s.vmId, s.state]).sort()).toEqual([['vm-a', 'running'], ['vm-b', 'running']]);
    expect(uidOf(dirA)).toBe(uidA);
    expect(uidOf(dirB)).toBe(uidB);

    // The lease runs out: A's unprivileged host fences A (B, a "wait" VM, keeps running).
    const seen2: InstanceStatus[] = [];
    d.subscribe((s) => seen2.push(s));
    writeLeaseFile(leaseFile, { validUntilUnixMs: Date.now() - 1, fenceAfterMs: 10_000, renewedAtUnixMs: Date.now() - 10_000 });
    for (let i = 0; !seen2.some((s) => s.vmId === 'vm-a' && s.state === 'stopped'); i++) {
      if (i > 200) throw new Error(`A was not fenced; seen ${JSON.stringify(seen2)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(seen2.find((s) => s.vmId === 'vm-a' && s.state === 'stopped')?.message).toMatch(/^fenced/);
    expect(existsSync(`/proc/${statusA.qemuPid}`)).toBe(false);
    expect((await d.list()).find((s) => s.vmId === 'vm-b')?.state).toBe('running');

    const stopped = await d.stop(B);
    expect(stopped.state).toBe('stopped');
    await d.remove(A);
    await d.remove(B);
    expect(await d.list()).toEqual([]);
    expect(existsSync(dirA) || existsSync(dirB)).toBe(false);
    // The uplinks (veth pairs and the VMs' namespaces) went with them.
    expect(execFileSync('ip', ['-n', NS, '-o', 'link', 'show'], { encoding: 'utf8' })).not.toMatch(/: fv[0-9a-f]{10}/);
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toMatch(new RegExp(`${vmNetnsFor(tapNameFor(A))}|${vmNetnsFor(tapNameFor(B))}`));
    // Uids are free again: a new instance gets the lowest.
    await d.create({ vmId: 'vm-c', attempt: 1, name: 'vmu-c', generation: '1', spec });
    expect(uidOf(path.join(opts.dataDir, 'instances', 'vm-c.1'))).toBe(UID_BASE);
    await d.remove({ vmId: 'vm-c', attempt: 1 });
  });
});
