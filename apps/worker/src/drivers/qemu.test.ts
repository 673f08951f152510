// QemuDriver bookkeeping that needs neither root nor QEMU: run dirs, re-attach from disk,
// how a dead VM host process is reported, orphan-QEMU safety. Booting real VMs through the
// driver is covered by test/qemu-vm.test.ts (root).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DriverError } from './driver.ts';
import { fakeNat } from './fake-nat.test-helper.ts';
import { QemuDriver, killOrphanQemu, tapNameFor } from './qemu.ts';

const nat = fakeNat();
const spec = { image: 'fleet-guest', os: 'linux', cpus: 1, memoryMib: 256, diskGib: 1, labels: {}, username: 'fleet' };

let tmp = '';
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'fleet-qd-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe.skipIf(process.getuid?.() !== 0)('QemuDriver VM users (root: chown)', () => {
  it('allocates one uid per instance, persists it, keeps it on re-attach, frees it at remove; run dir modes', async () => {
    const { chmod, stat } = await import('node:fs/promises');
    await chmod(tmp, 0o711);
    const dataDir = path.join(tmp, 'users');
    const users = { base: 250_000, count: 3 };
    const natT = { ...fakeNat(), createTap: async () => {}, deleteTap: async () => {} };
    const d = new QemuDriver({ dataDir, nat: natT, vmUsers: users });
    const A = { vmId: 'ua', attempt: 1 };
    const B = { vmId: 'ub', attempt: 1 };
    await Promise.all([d.create({ ...A, name: 'a', generation: '1', spec }), d.create({ ...B, name: 'b', generation: '1', spec })]);
    const uidOf = async (n: string): Promise<unknown> => (JSON.parse(await readFile(path.join(dataDir, 'instances', n, 'instance.json'), 'utf8')) as { uid?: unknown }).uid;
    expect([await uidOf('ua.1'), await uidOf('ub.1')].sort()).toEqual([250_000, 250_001]);
    const dirA = path.join(dataDir, 'instances', 'ua.1');
    const uidA = (await uidOf('ua.1')) as number;
    expect((await stat(dirA)).mode & 0o7777).toBe(0o711);
    expect(await stat(path.join(dirA, 'run'))).toMatchObject({ uid: uidA, gid: uidA });
    expect((await stat(path.join(dirA, 'run'))).mode & 0o777).toBe(0o700);
    expect(await stat(path.join(dirA, 'disk.qcow2'))).toMatchObject({ uid: uidA });
    expect((await stat(path.join(dirA, 'disk.qcow2'))).mode & 0o777).toBe(0o600);
    expect((await stat(path.join(dirA, 'instance.json'))).mode & 0o777).toBe(0o600);

    // A tampered record (uid 0) is never adopted; the others keep their uids.
    const bad = path.join(dataDir, 'instances', 'uc.1');
    await (await import('node:fs/promises')).mkdir(bad);
    await writeFile(path.join(bad, 'instance.json'), JSON.stringify({ vmId: 'uc', attempt: 1, name: 'c', generation: '1', spec, mac: '52:54:00:00:00:01', tap: 'fvx', uid: 0 }));
    const d2 = new QemuDriver({ dataDir, nat: natT, vmUsers: users });
    expect((await d2.list()).map((s) => s.vmId).sort()).toEqual(['ua', 'ub']);
    await rm(bad, { recursive: true });
    await d2.create({ vmId: 'ud', attempt: 1, name: 'd', generation: '1', spec });
    expect(await uidOf('ud.1')).toBe(250_002);
    await expect(d2.create({ vmId: 'ue', attempt: 1, name: 'e', generation: '1', spec })).rejects.toThrow(/no free VM uid/);
    await d2.remove(A);
    await d2.create({ vmId: 'ue', attempt: 1, name: 'e', generation: '1', spec });
    expect(await uidOf('ue.1')).toBe(uidA);
    for (const v of ['ub', 'ud', 'ue']) await d2.remove({ vmId: v, attempt: 1 });
    await d.close();
    await d2.close();
  });

  it('refuses a bad range and a NAT network that cannot create TAPs', () => {
    expect(() => new QemuDriver({ dataDir: path.join(tmp, 'x'), nat, vmUsers: { base: 10, count: 1 } })).toThrow(/>= 1000/);
    expect(() => new QemuDriver({ dataDir: path.join(tmp, 'x'), nat, vmUsers: { base: 200_000, count: 1 } })).toThrow(/createTap/);
  });
});

describe('QemuDriver (no VM started)', () => {
  it('names TAPs within 15 bytes, stable per instance and distinct per attempt', () => {
    const a = tapNameFor({ vmId: 'a-very-long-vm-id-0123456789', attempt: 1 });
    expect(Buffer.byteLength(a)).toBeLessThanOrEqual(15);
    expect(tapNameFor({ vmId: 'a-very-long-vm-id-0123456789', attempt: 1 })).toBe(a);
    expect(tapNameFor({ vmId: 'a-very-long-vm-id-0123456789', attempt: 2 })).not.toBe(a);
  });

  it('refuses a data dir too long for Unix socket paths', () => {
    expect(() => new QemuDriver({ dataDir: '/tmp/' + 'x'.repeat(90), nat })).toThrow(DriverError);
  });

  it('create is idempotent and persisted; a new driver lists it; update; remove', async () => {
    const dataDir = path.join(tmp, 'a');
    const d = new QemuDriver({ dataDir, nat });
    const ref = { vmId: 'vm/1', attempt: 2 };
    const s = await d.create({ ...ref, name: 'one', generation: '1', spec });
    expect(s).toMatchObject({ ...ref, name: 'one', state: 'stopped', generation: '1' });
    expect(s.mac).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
    expect(await d.create({ ...ref, name: 'one', generation: '1', spec })).toEqual(s);
    await expect(d.create({ vmId: 'mac', attempt: 1, name: 'm', generation: '1', spec: { ...spec, os: 'macos' } })).rejects.toThrow(/Linux guests only/);

    const d2 = new QemuDriver({ dataDir, nat });
    expect(await d2.list()).toEqual([s]);
    expect(await d2.stop(ref)).toMatchObject({ state: 'stopped' });
    expect(await d2.update({ ...ref, generation: '2', spec: { ...spec, cpus: 2 } })).toMatchObject({ generation: '2' });
    expect((await new QemuDriver({ dataDir, nat }).list())[0]).toMatchObject({ generation: '2' });
    await expect(d2.start({ vmId: 'nope', attempt: 1 })).rejects.toThrow(DriverError);
    await d2.remove(ref);
    await d2.remove(ref);
    expect(await d2.list()).toEqual([]);
    expect(existsSync(path.join(dataDir, 'instances', 'vm%2F1.2'))).toBe(false);
    await d.close();
    await d2.close();
  });

  it('an image change whose new disk cannot be made keeps the old disk (and what the VM wrote to it)', async () => {
    const dataDir = path.join(tmp, 'disk-swap');
    const d = new QemuDriver({ dataDir, nat });
    const ref = { vmId: 'swap', attempt: 1 };
    await d.create({ ...ref, name: 'swap', generation: '1', spec });
    const disk = path.join(dataDir, 'instances', 'swap.1', 'disk.qcow2');
    const before = await readFile(disk);
    // A size qemu-img refuses for qcow2: the new disk cannot be created.
    await expect(d.update({ ...ref, generation: '2', spec: { ...spec, image: 'fleet-guest:latest', diskGib: 1e9 } })).rejects.toThrow(DriverError);
    expect(Buffer.compare(await readFile(disk), before)).toBe(0);
    await d.close();
  });

  it('reports an instance whose host process died while running as failed, a powered-off one as stopped', async () => {
    const dataDir = path.join(tmp, 'b');
    const d = new QemuDriver({ dataDir, nat });
    await d.create({ vmId: 'dead', attempt: 1, name: 'dead', generation: '1', spec });
    await d.create({ vmId: 'off', attempt: 1, name: 'off', generation: '1', spec });
    const line = (state: string, message?: string): string => JSON.stringify({ at: 1, event: 'state', state, ip: null, message, qemuPid: 999_999_999 }) + '\n';
    await writeFile(path.join(dataDir, 'instances', 'dead.1', 'status.jsonl'), line('starting') + line('running'));
    await writeFile(path.join(dataDir, 'instances', 'off.1', 'status.jsonl'), line('running') + line('stopped', 'guest powered off'));
    const list = await new QemuDriver({ dataDir, nat }).list();
    expect(list.find((s) => s.vmId === 'dead')).toMatchObject({ state: 'failed', message: expect.stringMatching(/died while the VM was running/) });
    expect(list.find((s) => s.vmId === 'off')).toMatchObject({ state: 'stopped' });
    expect(list.find((s) => s.vmId === 'off')!.message).toBeUndefined();
  });

  it('reports an instance its host process fenced as stopped with the fenced message (not failed), and records the disconnect policy', async () => {
    const dataDir = path.join(tmp, 'fenced');
    const d = new QemuDriver({ dataDir, nat, fence: { leaseFile: path.join(tmp, 'lease.json') } });
    await d.create({ vmId: 'f', attempt: 1, name: 'f', generation: '1', spec });
    await d.create({ vmId: 'w', attempt: 1, name: 'w', generation: '1', spec: { ...spec, disconnectPolicy: 'wait' as const } });
    const why = 'fenced: no lease from the controller for 31s (lease ran out 1s ago; disconnect policy reschedule)';
    const line = (state: string, message?: string): string => JSON.stringify({ at: 1, event: 'state', state, ip: null, message, qemuPid: 999_999_999 }) + '\n';
    await writeFile(path.join(dataDir, 'instances', 'f.1', 'status.jsonl'), line('running') + line('running') + line('stopped', why));
    const list = await new QemuDriver({ dataDir, nat }).list();
    expect(list.find((s) => s.vmId === 'f')).toMatchObject({ state: 'stopped', message: why, disconnectPolicy: 'reschedule' });
    expect(list.find((s) => s.vmId === 'w')).toMatchObject({ state: 'stopped', disconnectPolicy: 'wait' });
    // kill() of an instance without a live host process settles it as stopped.
    expect(await d.kill({ vmId: 'w', attempt: 1 }, why)).toMatchObject({ state: 'stopped' });
    await d.close();
  });

  it('never kills a process whose command line does not name the run dir', async () => {
    const dir = path.join(tmp, 'c');
    await rm(dir, { recursive: true, force: true });
    await (await import('node:fs/promises')).mkdir(dir, { recursive: true });
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    await writeFile(path.join(dir, 'status.jsonl'), JSON.stringify({ state: 'running', qemuPid: child.pid }) + '\n');
    expect(killOrphanQemu(dir)).toBe(false);
    expect(child.exitCode).toBeNull();
    child.kill('SIGKILL');
  });

  it('reserves one address per instance from create to remove, keeps it across a restart, and refuses clearly when the subnet is full', async () => {
    const dataDir = path.join(tmp, 'addr');
    const small = fakeNat(['192.168.64.2', '192.168.64.3']);
    const d = new QemuDriver({ dataDir, nat: small });
    expect(d.capabilities.natAddresses).toBe(2);
    await d.create({ vmId: 'a', attempt: 1, name: 'a', generation: '1', spec });
    await d.create({ vmId: 'b', attempt: 1, name: 'b', generation: '1', spec: { ...spec, network: { allow: ['@host'], block: [], blockLocal: false } } });
    const ips = small.pool.list().map((r) => r.ip).sort();
    expect(ips).toEqual(['192.168.64.2', '192.168.64.3']);
    // The policy decides host access, as the packet filter does for the gateway.
    expect(small.pool.get('b#1')?.hostAccess).toBe(true);
    expect(small.pool.list().find((r) => r.vmId === 'a')?.hostAccess).toBe(false);
    await expect(d.create({ vmId: 'c', attempt: 1, name: 'c', generation: '1', spec })).rejects.toThrow(/create c: no free VM address in NAT subnet 192\.168\.64\.0\/24: all 2 addresses are reserved/);
    expect(existsSync(path.join(dataDir, 'instances', 'c.1'))).toBe(false);
    const aIp = small.pool.list().find((r) => r.vmId === 'a')!.ip;
    // A restarted worker keeps the reservations of the instances it still has, and frees the others.
    await d.remove({ vmId: 'b', attempt: 1 });
    small.pool.reserve({ key: 'gone#1', vmId: 'gone', mac: '02:00:00:00:99:99', name: 'gone', hostAccess: false }, []);
    expect(small.pool.list().map((r) => r.vmId).sort()).toEqual(['a', 'gone']);
    const d2 = new QemuDriver({ dataDir, nat: small });
    await d2.list();
    expect(small.pool.list().map((r) => [r.vmId, r.ip])).toEqual([['a', aIp]]);
    const rec = JSON.parse(await readFile(path.join(dataDir, 'instances', 'a.1', 'instance.json'), 'utf8')) as { ip: string };
    expect(rec.ip).toBe(aIp);
    await d.close();
    await d2.close();
  });
});

describe('QemuDriver network modes and MACs (issue 18)', () => {
  const hostOnly = fakeNat(['192.168.128.2', '192.168.128.254'], { subnet: '192.168.128.0/24', gatewayIp: '192.168.128.1', name: 'fleet1' });
  const withMode = (mode: 'nat' | 'host-only' | 'none', mac?: string) => ({ ...spec, network: { allow: [], block: [], blockLocal: false, mode }, ...(mac ? { mac } : {}) });

  it('reports its networks; reserves on the network of the VM\'s mode; none holds no address; refuses what it cannot give', async () => {
    const natN = fakeNat();
    const d = new QemuDriver({ dataDir: path.join(tmp, 'modes'), nat: natN, hostOnly });
    expect(d.capabilities.networks).toEqual([
      { mode: 'nat', subnet: '192.168.64.0/24', gateway: '192.168.64.1', addresses: 253, interface: 'fake0' },
      { mode: 'host-only', subnet: '192.168.128.0/24', gateway: '192.168.128.1', addresses: 253, interface: 'fleet1' },
    ]);
    await d.create({ vmId: 'h', attempt: 1, name: 'h', generation: '1', spec: withMode('host-only') });
    await d.create({ vmId: 'n', attempt: 1, name: 'n', generation: '1', spec: withMode('nat') });
    await d.create({ vmId: 'x', attempt: 1, name: 'x', generation: '1', spec: withMode('none') });
    expect(hostOnly.pool.list().map((r) => r.key)).toEqual(['h#1']);
    expect(natN.pool.list().map((r) => r.key)).toEqual(['n#1']);
    expect(hostOnly.pool.list()[0]!.ip).toMatch(/^192\.168\.128\./);
    // A worker without a host-only network refuses the mode with the flag to set.
    const plain = new QemuDriver({ dataDir: path.join(tmp, 'plain'), nat: fakeNat() });
    await expect(plain.create({ vmId: 'h2', attempt: 1, name: 'h2', generation: '1', spec: withMode('host-only') })).rejects.toThrow(/no host-only network \(start it with --host-only-subnet\)/);
    await expect(plain.create({ vmId: 'b', attempt: 1, name: 'b', generation: '1', spec: { ...spec, network: { allow: [], block: [], blockLocal: false, mode: 'bridged' as 'nat' } } })).rejects.toThrow(/unknown network mode "bridged"/);
    // Switching mode while stopped moves the reservation at the next start; remove frees it.
    await d.update({ vmId: 'h', attempt: 1, generation: '2', spec: withMode('nat') });
    expect(hostOnly.pool.list()).toEqual([]);
    for (const v of ['h', 'n', 'x']) await d.remove({ vmId: v, attempt: 1 });
    expect(natN.pool.list()).toEqual([]);
    await d.close();
    await plain.close();
  });

  it('an operator\'s MAC is the instance\'s (and its reservation\'s); a second VM with it is refused on this worker; bad MACs too', async () => {
    const natN = fakeNat();
    const d = new QemuDriver({ dataDir: path.join(tmp, 'macs'), nat: natN });
    const s = await d.create({ vmId: 'm1', attempt: 1, name: 'm1', generation: '1', spec: withMode('nat', '02:aa:bb:cc:dd:ee') });
    expect(s.mac).toBe('02:aa:bb:cc:dd:ee');
    expect(natN.pool.list()[0]).toMatchObject({ key: 'm1#1', mac: '02:aa:bb:cc:dd:ee' });
    await expect(d.create({ vmId: 'm2', attempt: 1, name: 'm2', generation: '1', spec: withMode('nat', '02:aa:bb:cc:dd:ee') })).rejects.toThrow(/MAC 02:aa:bb:cc:dd:ee is already used by m1 on this worker/);
    // The same VM's next attempt may carry it (its earlier attempt goes away).
    await d.create({ vmId: 'm1', attempt: 2, name: 'm1', generation: '1', spec: withMode('nat', '02:aa:bb:cc:dd:ee') });
    for (const bad of ['03:aa:bb:cc:dd:ee', '00:00:00:00:00:00', '02:AA:BB:CC:DD:EE', '02-aa-bb-cc-dd-ee']) {
      await expect(d.create({ vmId: `b${bad}`, attempt: 1, name: 'b', generation: '1', spec: withMode('nat', bad) })).rejects.toThrow(/not a unicast MAC/);
    }
    for (const a of [1, 2]) await d.remove({ vmId: 'm1', attempt: a });
    await d.close();
  });
});
