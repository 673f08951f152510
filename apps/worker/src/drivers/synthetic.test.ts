import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { CreateInstanceRequest, InstanceSpec, InstanceStatus } from './driver.ts';
import { parseSyntheticImage, SYNTHETIC_DELAYS_MS, SYNTHETIC_POOL_ADDRESSES, SyntheticDriver } from './synthetic.ts';

const spec = (image = 'ubuntu:24.04', os = 'linux'): InstanceSpec => ({ image, os, cpus: 1, memoryMib: 1024, diskGib: 10, labels: {}, username: 'admin' });
const req = (vmId: string, attempt = 1, image?: string, os?: string): CreateInstanceRequest => ({ vmId, attempt, name: `vm-${vmId}`, generation: '1', spec: spec(image, os) });

const drivers: SyntheticDriver[] = [];
function driver(options: ConstructorParameters<typeof SyntheticDriver>[0] = {}): SyntheticDriver {
  const d = new SyntheticDriver(options);
  drivers.push(d);
  return d;
}

afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(drivers.splice(0).map((d) => d.close()));
});

describe('synthetic driver', () => {
  it('is instant at speed 0: the whole lifecycle runs without timers', async () => {
    vi.useFakeTimers(); // any timer would hang these awaits
    const d = driver({ speed: 0 });
    expect(d.name).toBe('synthetic');
    const created = await d.create(req('a'));
    expect(created.state).toBe('stopped');
    expect(created.ip).toBeUndefined();
    const running = await d.start(req('a'));
    expect(running.state).toBe('running');
    expect(running.ip).toMatch(/^198\.1[89]\.\d+\.\d+$/);
    expect((await d.stop(req('a'))).state).toBe('stopped');
    await d.remove(req('a'));
    expect(await d.list()).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('takes a realistic, deterministic 1–3 s to boot and ~0.5 s to stop at speed 1', async () => {
    vi.useFakeTimers();
    const d = driver({ speed: 1 });
    const create = d.create(req('b'));
    await vi.advanceTimersByTimeAsync(SYNTHETIC_DELAYS_MS.create);
    await create;
    let done = false;
    const start = d.start(req('b')).then(() => (done = true));
    await vi.advanceTimersByTimeAsync(SYNTHETIC_DELAYS_MS.bootMin - 1);
    expect(done).toBe(false);
    expect((await d.list())[0]!.state).toBe('starting');
    await vi.advanceTimersByTimeAsync(SYNTHETIC_DELAYS_MS.bootMax - SYNTHETIC_DELAYS_MS.bootMin + 1);
    await start;
    expect(done).toBe(true);
    let stopped = false;
    const stop = d.stop(req('b')).then(() => (stopped = true));
    await vi.advanceTimersByTimeAsync(SYNTHETIC_DELAYS_MS.stop - 1);
    expect(stopped).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await stop;
    expect(stopped).toBe(true);
  });

  it('scales delays by speed (0.01 → boot within 10–30 ms)', async () => {
    const d = driver({ speed: 0.01 });
    await d.create(req('c'));
    const t0 = performance.now();
    await d.start(req('c'));
    const elapsed = performance.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(9);
    expect(elapsed).toBeLessThan(500);
  });

  it('emits status changes with ip and mac to subscribers', async () => {
    const d = driver({ speed: 0 });
    const seen: InstanceStatus[] = [];
    d.subscribe((s) => seen.push(s));
    await d.create(req('d'));
    await d.start(req('d'));
    expect(seen.map((s) => s.state)).toEqual(['stopped', 'starting', 'running']);
    const last = seen.at(-1)!;
    expect(last.mac).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    expect(last.ip).toMatch(/^198\.1[89]\./);
  });

  it('hands out distinct fake addresses per instance and reuses freed ones', async () => {
    const d = driver({ speed: 0, poolSeed: 'worker-1' });
    const ips = new Set<string>();
    for (let i = 0; i < 300; i++) {
      await d.create(req(`v${i}`));
      ips.add((await d.start(req(`v${i}`))).ip!);
    }
    expect(ips.size).toBe(300); // spills into the next /24 after 253
    const freed = (await d.list()).find((s) => s.vmId === 'v7')!.ip;
    await d.remove(req('v7'));
    await d.create(req('new'));
    expect((await d.start(req('new'))).ip).toBe(freed);
    const other = driver({ speed: 0, poolSeed: 'worker-2' });
    expect(other.addressFor(0)).not.toBe(d.addressFor(0));
  });

  it('reports its address pool and refuses to create beyond it (one address per instance, any power state)', async () => {
    expect(driver({ speed: 0 }).capabilities.natAddresses).toBe(SYNTHETIC_POOL_ADDRESSES);
    expect(SYNTHETIC_POOL_ADDRESSES).toBe(512 * 253);
    expect(() => driver({ natAddresses: SYNTHETIC_POOL_ADDRESSES + 1 })).toThrow(/natAddresses/);
    const d = driver({ speed: 0, natAddresses: 2 });
    expect(d.capabilities.natAddresses).toBe(2);
    await d.create(req('a'));
    await d.create(req('b')); // stopped instances hold their address too
    await expect(d.create(req('c'))).rejects.toThrow(/no free VM address: all 2 addresses/);
    await d.remove(req('a'));
    await expect(d.create(req('c'))).resolves.toMatchObject({ vmId: 'c' });
  });

  it('injects failures deterministically through the image name', async () => {
    const d = driver({ speed: 0 });
    await expect(d.create(req('x', 1, 'synthetic:fail-create'))).rejects.toThrow(/fail-create/);
    await d.create(req('y', 1, 'synthetic:ok'));
    await expect(d.start(req('y'))).resolves.toMatchObject({ state: 'running' }); // other words boot normally
    await d.create(req('z', 1, 'synthetic:fail-start'));
    await expect(d.start(req('z'))).rejects.toThrow(/synthetic failure injected.*fail-start/);
    expect((await d.list()).find((s) => s.vmId === 'z')!.state).toBe('failed');
  });

  it('crashes an instance after crash-after=<ms> of running', async () => {
    const d = driver({ speed: 0 });
    const failed = new Promise<InstanceStatus>((resolve) => d.subscribe((s) => s.state === 'failed' && resolve(s)));
    await d.create(req('k', 1, 'synthetic:crash-after=30'));
    const t0 = performance.now();
    await d.start(req('k'));
    const status = await failed;
    expect(performance.now() - t0).toBeGreaterThanOrEqual(25);
    expect(status.message).toMatch(/synthetic crash injected after 30 ms/);
    expect(status.ip).toBeUndefined();
  });

  it('does not crash an instance that was stopped before crash-after elapsed', async () => {
    const d = driver({ speed: 0 });
    const states: string[] = [];
    d.subscribe((s) => states.push(s.state));
    await d.create(req('k2', 1, 'synthetic:crash-after=20'));
    await d.start(req('k2'));
    await d.stop(req('k2'));
    await new Promise((r) => setTimeout(r, 40));
    expect(states).not.toContain('failed');
  });

  it('parses directives', () => {
    expect(parseSyntheticImage('synthetic:boot-ms=5,crash-after=100')).toEqual({ failCreate: false, failStart: false, bootMs: 5, crashAfterMs: 100, other: [] });
    expect(parseSyntheticImage('ghcr.io/cirruslabs/macos:latest')).toEqual({ failCreate: false, failStart: false, other: [] });
    expect(parseSyntheticImage('synthetic:macos,crash-after=soon').other).toEqual(['macos', 'crash-after=soon']);
  });

  it('enforces the macOS guest limit like Virtualization.framework', async () => {
    const d = driver({ speed: 0, maxMacosGuests: 2 });
    for (const id of ['m1', 'm2', 'm3']) await d.create(req(id, 1, 'macos-sequoia', 'macos'));
    await d.start(req('m1'));
    await d.start(req('m2'));
    await expect(d.start(req('m3'))).rejects.toThrow(/macOS guest limit/);
    await d.stop(req('m1'));
    await expect(d.start(req('m3'))).resolves.toMatchObject({ state: 'running' });
  });

  it('is idempotent: start running, stop stopped, remove missing', async () => {
    const d = driver({ speed: 0 });
    await d.create(req('i'));
    await d.create(req('i'));
    await d.start(req('i'));
    await expect(d.start(req('i'))).resolves.toMatchObject({ state: 'running' });
    await d.stop(req('i'));
    await expect(d.stop(req('i'))).resolves.toMatchObject({ state: 'stopped' });
    await d.remove(req('i'));
    await expect(d.remove(req('i'))).resolves.toBeUndefined();
    await expect(d.start(req('i'))).rejects.toThrow(/does not exist/);
  });

  it('kill() stops at once (no stop delay, a boot in progress is cut short) and keeps the reason', async () => {
    const d = driver({ speed: 1 });
    await d.create(req('k', 1, 'synthetic:boot-ms=0'));
    await d.start(req('k'));
    const t0 = Date.now();
    const killed = await d.kill(req('k'), 'fenced: no lease from the controller for 31s (disconnect policy reschedule)');
    expect(Date.now() - t0).toBeLessThan(SYNTHETIC_DELAYS_MS.stop / 2);
    expect(killed).toMatchObject({ state: 'stopped', ip: undefined, message: 'fenced: no lease from the controller for 31s (disconnect policy reschedule)', disconnectPolicy: 'reschedule' });
    expect((await d.start(req('k'))).message).toBeUndefined();
  });

  it('applies a new spec only while stopped', async () => {
    const d = driver({ speed: 0 });
    await d.create(req('u'));
    await d.start(req('u'));
    await expect(d.update({ vmId: 'u', attempt: 1, generation: '2', spec: spec('other') })).rejects.toThrow(/stop the instance/);
    await d.stop(req('u'));
    await expect(d.update({ vmId: 'u', attempt: 1, generation: '2', spec: spec('other') })).resolves.toMatchObject({ generation: '2' });
  });

  describe('persistence', () => {
    let dir: string | undefined;
    afterEach(async () => {
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('re-attaches to persisted instances in a new driver (like a restarted worker)', async () => {
      dir = await mkdtemp(join(tmpdir(), 'fleet-synthetic-'));
      const stateFile = join(dir, 'synthetic', 'instances.json');
      const first = new SyntheticDriver({ speed: 0, stateFile, poolSeed: 'w' });
      await first.create(req('p1'));
      const running = await first.start(req('p1'));
      await first.create({ ...req('p2', 3), generation: '7' });
      await first.close();
      expect(JSON.parse(await readFile(stateFile, 'utf8')).driver).toBe('synthetic');

      const second = driver({ speed: 0, stateFile, poolSeed: 'w' });
      const listed = await second.list();
      expect(listed).toHaveLength(2);
      expect(listed.find((s) => s.vmId === 'p1')).toMatchObject({ state: 'running', ip: running.ip, mac: running.mac, attempt: 1 });
      expect(listed.find((s) => s.vmId === 'p2')).toMatchObject({ state: 'stopped', attempt: 3, generation: '7' });
      // the freed/used pool survives too: a new instance does not get p1's address
      await second.create(req('p3'));
      expect((await second.start(req('p3'))).ip).not.toBe(running.ip);
    });

    it('skips malformed entries in the state file instead of failing to start', async () => {
      dir = await mkdtemp(join(tmpdir(), 'fleet-synthetic-'));
      const stateFile = join(dir, 'synthetic', 'instances.json');
      const first = new SyntheticDriver({ speed: 0, stateFile, poolSeed: 'w' });
      await first.create(req('good'));
      await first.close();
      const saved = JSON.parse(await readFile(stateFile, 'utf8'));
      saved.instances.push({ vmId: 'no-spec', attempt: 1, state: 'running' }, null, 'junk', { ...saved.instances[0], vmId: 'bad-state', state: 'exploded' });
      await writeFile(stateFile, JSON.stringify(saved));
      const listed = await driver({ speed: 0, stateFile, poolSeed: 'w' }).list();
      expect(listed.map((s) => s.vmId)).toEqual(['good']);
    });
  });
});

describe('synthetic driver: network modes and MACs (issue 18)', () => {
  const withNet = (vmId: string, mode: 'nat' | 'host-only' | 'none', mac?: string): CreateInstanceRequest => ({
    ...req(vmId),
    spec: { ...spec(), network: { allow: [], block: [], blockLocal: false, mode }, ...(mac ? { mac } : {}) },
  });

  it('reports a NAT and a host-only network with their own pools; none holds no address; one MAC per worker', async () => {
    const d = driver({ speed: 0, natAddresses: 2 });
    expect(d.capabilities.networks?.map((n) => [n.mode, n.subnet, n.addresses])).toEqual([
      ['nat', '198.18.0.0/15', 2],
      ['host-only', '198.51.100.0/24', 253],
    ]);
    for (const [id, mode] of [['n1', 'nat'], ['n2', 'nat'], ['h1', 'host-only'], ['x1', 'none'], ['x2', 'none']] as const) {
      await d.create(withNet(id, mode));
      await d.start({ vmId: id, attempt: 1 });
    }
    const ips = Object.fromEntries((await d.list()).map((s) => [s.vmId, s.ip]));
    expect(ips.h1).toBe('198.51.100.2');
    expect(ips.n1).toMatch(/^198\.1[89]\./);
    expect(ips.x1).toBeUndefined();
    // The NAT pool (2) is full; host-only and none VMs do not count against it.
    await expect(d.create(withNet('n3', 'nat'))).rejects.toThrow(/no free VM address/);
    await d.create(withNet('m1', 'host-only', '02:00:00:00:18:01'));
    await expect(d.create(withNet('m2', 'nat', '02:00:00:00:18:01'))).rejects.toThrow(/MAC 02:00:00:00:18:01 is already used by vm-m1/);
    // Moving a stopped VM to another mode moves its address.
    await d.stop({ vmId: 'n1', attempt: 1 });
    await d.update({ vmId: 'n1', attempt: 1, generation: '2', spec: withNet('n1', 'none').spec });
    await d.create(withNet('n3', 'nat'));
  });
});
