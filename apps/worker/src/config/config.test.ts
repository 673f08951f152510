import { mkdir, mkdtemp, readFile, rm, stat, writeFile, chmod } from 'node:fs/promises';
import { tmpdir, homedir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatHostPort, mergeAnnouncedControllers, parseControllerList, parseHostPort, sanitizeControllerAddresses } from './address.ts';
import { defaultWorkerName, detectCapacity } from './capacity.ts';
import { CredentialError, CredentialStore, NotEnrolledError, type StoredCredentials } from './credentials.ts';
import { parseLabels } from './labels.ts';
import { resolveMachineId, resolvePlatformId } from './machine-id.ts';
import { defaultDataDir, LINUX_ROOT_DATA_DIR, resolveDataDir } from './paths.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fleet-config-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const creds = (name = 'mac-1'): StoredCredentials => ({
  identity: { workerId: 'wrk-1', name, controller: 'ctl:7443', controllers: ['ctl:7443'], machineId: 'm-1', enrolledAt: '2025-01-01T00:00:00.000Z' },
  keyPem: '-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n',
  certPem: '-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n',
  caPem: '-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n',
});

describe('controller lists (several controllers)', () => {
  it('an old worker.json without "controllers" loads as a list of one; saving writes both fields', async () => {
    const store = new CredentialStore(dir);
    await store.save(creds());
    const old = { workerId: 'wrk-1', name: 'mac-1', controller: 'ctl:7443', machineId: 'm-1', enrolledAt: '2025-01-01T00:00:00.000Z' };
    await writeFile(store.paths.workerJson, JSON.stringify(old));
    const identity = (await store.load()).identity;
    expect(identity).toEqual({ ...old, controllers: ['ctl:7443'] });
    await store.saveIdentity({ ...identity, controllers: ['ctl:7443', 'ctl-2:7443'] });
    expect(JSON.parse(await readFile(store.paths.workerJson, 'utf8'))).toEqual({ ...old, controllers: ['ctl:7443', 'ctl-2:7443'] });
  });

  it('a stored list keeps "controller" first and drops entries that are not HOST:PORT', async () => {
    const store = new CredentialStore(dir);
    await store.save(creds());
    await writeFile(
      store.paths.workerJson,
      JSON.stringify({ workerId: 'wrk-1', name: 'mac-1', controller: 'ctl:7443', controllers: ['b:1', 42, 'nope', 'ctl:7443', 'c:0', null], machineId: 'm-1' }),
    );
    expect((await store.readIdentity())!.controllers).toEqual(['ctl:7443', 'b:1']);
    await writeFile(store.paths.workerJson, JSON.stringify({ workerId: 'wrk-1', name: 'mac-1', controller: 'ctl:7443', controllers: 'b:1', machineId: 'm-1' }));
    expect((await store.readIdentity())!.controllers).toEqual(['ctl:7443']);
    await writeFile(store.paths.workerJson, '[]');
    await expect(store.readIdentity()).rejects.toBeInstanceOf(CredentialError);
  });

  it('parses operator input: repeated and comma-separated, normalised, de-duplicated, a bad entry refused', () => {
    expect(parseControllerList(['a.example:7443, b.example:7443', 'a.example:7443', '[::1]:1'])).toEqual(['a.example:7443', 'b.example:7443', '[::1]:1']);
    expect(parseControllerList('a:1,,b:2,')).toEqual(['a:1', 'b:2']);
    for (const bad of ['a:1,b', ' , ', 'a b:1', 'a:1;b:2', '300.1.1.1:1', '[nothost]:1', '-a:1']) expect(() => parseControllerList(bad)).toThrow(/HOST:PORT/);
  });

  it('checks announced addresses one by one and never throws', () => {
    const r = sanitizeControllerAddresses(['a:1', 'A:1', 'a:1', 'b:65535', 'c:0', 'c:65536', 'c', 'http://c:1', 'c:1/x', 'c :1', 'c\u0000:1', '', 'x'.repeat(300), 7, null, '[::1]:7443', '[::g]:1']);
    expect(r.valid).toEqual(['a:1', 'A:1', 'b:65535', '[::1]:7443']);
    expect(r.rejected).toHaveLength(12);
  });

  it('merges an announcement: the dialed address first, then the announced ones; none announced keeps the list', () => {
    expect(mergeAnnouncedControllers('lb:7443', ['c1:7443', 'c2:7443'], ['lb:7443'])).toEqual(['lb:7443', 'c1:7443', 'c2:7443']);
    expect(mergeAnnouncedControllers('c2:7443', ['c2:7443', 'c1:7443'], ['c1:7443', 'c2:7443'])).toEqual(['c2:7443', 'c1:7443']);
    expect(mergeAnnouncedControllers('c1:7443', [], ['c1:7443', 'c2:7443'])).toEqual(['c1:7443', 'c2:7443']);
  });
});

describe('CredentialStore', () => {
  it('stores the credential with key.pem 0600, a 0700 data dir and worker.json; loads it back', async () => {
    const store = new CredentialStore(join(dir, 'data'));
    await store.save(creds());
    const mode = async (p: string) => (await stat(p)).mode & 0o777;
    expect(await mode(join(dir, 'data'))).toBe(0o700);
    expect(await mode(store.paths.key)).toBe(0o600);
    expect(await mode(store.paths.cert)).toBe(0o644);
    expect(await mode(store.paths.ca)).toBe(0o644);
    expect(JSON.parse(await readFile(store.paths.workerJson, 'utf8'))).toEqual(creds().identity);
    await expect(store.load()).resolves.toEqual(creds());
    expect(await store.audit()).toEqual([]);
  });

  it('audits the data dir: traverse-only (0711, for VM users) is fine, listable or writable by others is not', async () => {
    const store = new CredentialStore(join(dir, 'data'));
    await store.save(creds());
    await chmod(join(dir, 'data'), 0o711);
    expect(await store.audit()).toEqual([]);
    await chmod(join(dir, 'data'), 0o755);
    expect(await store.audit()).toEqual([expect.stringMatching(/data is accessible by other users \(mode 755\); run chmod 711 on it/)]);
  });

  it('keeps key.pem at 0600 when it replaces an existing enrollment, leaving no temp files', async () => {
    const store = new CredentialStore(dir);
    await store.save(creds('one'));
    await chmod(store.paths.key, 0o644);
    expect(await store.audit()).toEqual([expect.stringMatching(/accessible by other users \(mode 644\)/)]);
    await store.save(creds('two'));
    expect((await stat(store.paths.key)).mode & 0o777).toBe(0o600);
    expect((await store.load()).identity.name).toBe('two');
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(dir)).sort()).toEqual(['ca.pem', 'cert.pem', 'key.pem', 'worker.json']);
  });

  it('says how to enroll when nothing is there, and when the enrollment is incomplete or corrupt', async () => {
    const store = new CredentialStore(dir);
    expect(await store.readIdentity()).toBeUndefined();
    await expect(store.load()).rejects.toBeInstanceOf(NotEnrolledError);
    await expect(store.load()).rejects.toThrow(/fleet-worker enroll --controller HOST:PORT --token/);
    await writeFile(store.paths.workerJson, JSON.stringify(creds().identity));
    await expect(store.load()).rejects.toThrow(/key.pem is missing/);
    await writeFile(store.paths.workerJson, '{nope');
    await expect(store.readIdentity()).rejects.toBeInstanceOf(CredentialError);
    await writeFile(store.paths.workerJson, JSON.stringify({ name: 'x' }));
    await expect(store.readIdentity()).rejects.toThrow(/lacks "workerId"/);
  });
});

describe('CredentialStore renewal', () => {
  const pem = (kind: string, body: string) => `-----BEGIN ${kind}-----\n${body}\n-----END ${kind}-----\n`;

  it('replaces key and certificate together, 0600 key, no files left over', async () => {
    const store = new CredentialStore(dir);
    await store.save(creds());
    await store.saveRenewed(pem('PRIVATE KEY', 'key2'), pem('CERTIFICATE', 'cert2'));
    const loaded = await store.load();
    expect(loaded.keyPem).toContain('key2');
    expect(loaded.certPem).toContain('cert2');
    expect((await stat(store.paths.key)).mode & 0o777).toBe(0o600);
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(dir)).sort()).toEqual(['ca.pem', 'cert.pem', 'key.pem', 'worker.json']);
  });

  it('completes a renewal interrupted between the two renames, so key and certificate still match', async () => {
    const store = new CredentialStore(dir);
    await store.save(creds());
    // As after a crash: the new key is in place, the new certificate not yet.
    await writeFile(store.paths.key, pem('PRIVATE KEY', 'key2'), { mode: 0o600 });
    await writeFile(join(dir, 'cert.next.pem'), pem('CERTIFICATE', 'cert2'));
    const loaded = await store.load();
    expect(loaded.keyPem).toContain('key2');
    expect(loaded.certPem).toContain('cert2');
  });

  it('drops a renewal whose certificate never arrived, keeping the old pair', async () => {
    const store = new CredentialStore(dir);
    await store.save(creds());
    await writeFile(join(dir, 'key.next.pem'), pem('PRIVATE KEY', 'key2'), { mode: 0o600 });
    const loaded = await store.load();
    expect(loaded.keyPem).toBe(creds().keyPem);
    expect(loaded.certPem).toBe(creds().certPem);
    const { readdir } = await import('node:fs/promises');
    expect((await readdir(dir)).sort()).toEqual(['ca.pem', 'cert.pem', 'key.pem', 'worker.json']);
  });
});

describe('machine id', () => {
  it('derives a stable id from the platform id and the data dir', async () => {
    await writeFile(join(dir, 'mid'), 'ABCDEF0123456789abcdef0123456789\n');
    const opts = { files: [join(dir, 'missing'), join(dir, 'mid')], useIoreg: false };
    expect(await resolvePlatformId(dir, opts)).toBe('abcdef0123456789abcdef0123456789');
    const a = await resolveMachineId(join(dir, 'a'), opts);
    expect(a).toMatch(/^[0-9a-f]{32}$/);
    expect(a).not.toContain('abcdef0123456789abcdef0123456789');
    expect(await resolveMachineId(join(dir, 'a'), opts)).toBe(a);
    // two workers (data dirs) on one host are two machines to the controller
    expect(await resolveMachineId(join(dir, 'b'), opts)).not.toBe(a);
  });

  it('falls back to a platform id generated once and kept in the data dir', async () => {
    const opts = { files: [], useIoreg: false };
    const first = await resolvePlatformId(join(dir, 'd'), opts);
    expect(first).toMatch(/^[0-9a-f-]{36}$/);
    expect(await resolvePlatformId(join(dir, 'd'), opts)).toBe(first);
    expect((await readFile(join(dir, 'd', 'machine-id'), 'utf8')).trim()).toBe(first);
    expect(await resolveMachineId(join(dir, 'd'), opts)).toBe(await resolveMachineId(join(dir, 'd'), opts));
  });
});

describe('small parsers', () => {
  it('parses labels', () => {
    expect(parseLabels('pool=ci, arch=arm64,empty=')).toEqual({ pool: 'ci', arch: 'arm64', empty: '' });
    expect(parseLabels(undefined)).toEqual({});
    expect(() => parseLabels('novalue')).toThrow(/key=value/);
    expect(() => parseLabels('=x')).toThrow(/key=value/);
    expect(() => parseLabels('bad key=x')).toThrow(/label key/);
  });

  it('parses host:port', () => {
    expect(parseHostPort('ctl.example.com:7443')).toEqual({ host: 'ctl.example.com', port: 7443 });
    expect(parseHostPort('[::1]:7443')).toEqual({ host: '::1', port: 7443 });
    expect(parseHostPort('https://ctl:1/')).toEqual({ host: 'ctl', port: 1 });
    expect(formatHostPort('::1', 7443)).toBe('[::1]:7443');
    for (const bad of ['ctl', 'ctl:0', 'ctl:70000', ':1', '']) expect(() => parseHostPort(bad)).toThrow(/HOST:PORT/);
  });

  it('derives a controller-acceptable worker name from a host name', () => {
    expect(defaultWorkerName('Mac-mini.local')).toBe('mac-mini');
    expect(defaultWorkerName("Anna's MacBook Pro")).toBe('anna-s-macbook-pro');
    expect(defaultWorkerName('---')).toBe('worker');
    expect(defaultWorkerName('x'.repeat(80))).toHaveLength(63);
  });

  it('detects capacity with overrides and driver-dependent macOS slots', () => {
    const both = { guestOs: ['linux', 'macos'], maxMacosGuests: 2 };
    const linuxOnly = { guestOs: ['linux'], maxMacosGuests: 0 };
    const detected = detectCapacity({}, both);
    expect(detected.cpus).toBeGreaterThan(0);
    expect(detected.memoryMib).toBeGreaterThan(0);
    expect(detected.vmSlots).toBe(detected.cpus);
    expect(detected.macosSlots).toBe(Math.min(2, detected.vmSlots));
    expect(detectCapacity({ cpus: 8, memoryMib: 16384, vmSlots: 1 }, both)).toEqual({ cpus: 8, memoryMib: 16384, vmSlots: 1, macosSlots: 1, natAddresses: 0 });
    expect(detectCapacity({}, linuxOnly).macosSlots).toBe(0);
    expect(() => detectCapacity({ cpus: -1 }, both)).toThrow(/non-negative integer/);
  });

  it("reports the driver's VM address pool; an override can only lower it", () => {
    const nat = { guestOs: ['linux'], maxMacosGuests: 0, natAddresses: 253 };
    expect(detectCapacity({}, nat).natAddresses).toBe(253);
    expect(detectCapacity({ natAddresses: 10 }, nat).natAddresses).toBe(10);
    expect(detectCapacity({ natAddresses: 1000 }, nat).natAddresses).toBe(253);
    expect(detectCapacity({}, { guestOs: ['linux'], maxMacosGuests: 0 }).natAddresses).toBe(0);
    expect(() => detectCapacity({ natAddresses: 1.5 }, { guestOs: ['linux'], maxMacosGuests: 0 })).toThrow(/natAddresses/);
  });

  it('resolves the data dir', () => {
    expect(resolveDataDir('~/x')).toBe(join(homedir(), 'x'));
    expect(resolveDataDir('/abs')).toBe('/abs');
    expect(resolveDataDir(undefined)).toMatch(/\.fleet-worker$|./);
  });

  it.skipIf(process.platform !== 'linux' || process.getuid?.() !== 0)('root on Linux defaults to /var/lib/fleet-worker, unless ~/.fleet-worker already exists', async () => {
    const home = await mkdtemp(join(tmpdir(), 'fleet-home-'));
    const saved = process.env['HOME'];
    process.env['HOME'] = home;
    try {
      expect(defaultDataDir()).toBe(LINUX_ROOT_DATA_DIR);
      await mkdir(join(home, '.fleet-worker'));
      expect(defaultDataDir()).toBe(join(home, '.fleet-worker'));
    } finally {
      process.env['HOME'] = saved;
      await rm(home, { recursive: true, force: true });
    }
  });
});
