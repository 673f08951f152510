// IPSW installation over the fake addon: the bundle it leaves, the progress it reports.
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeVzHost } from '@fleet/native-vz/vz-fake';
import { installFromIpsw, type InstallEvent } from './install.ts';
import { readTartConfig } from './tart-bundle.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'fleet-ipsw-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const ipsw = '/images/UniversalMac_14.4_23E214_Restore.ipsw';
const supported = { buildVersion: '23E214', osVersion: '14.4.0', supported: { hardwareModel: Buffer.from('hw:mac14'), minCpus: 2, minMemoryBytes: 4 * 1024 ** 3 } };

describe('installFromIpsw', () => {
  it('creates a Tart bundle and reports progress in whole percents', async () => {
    const host = new FakeVzHost({ restoreImages: { [ipsw]: supported } });
    const events: InstallEvent[] = [];
    const bundleDir = path.join(dir, 'sonoma');
    const cfg = await installFromIpsw(host.addon(), { ipsw, bundleDir, cpus: 2, memoryMib: 2048, diskGib: 30 }, (e) => events.push(e));
    expect((await readdir(bundleDir)).sort()).toEqual(['config.json', 'disk.img', 'nvram.bin']);
    expect((await stat(path.join(bundleDir, 'disk.img'))).size).toBe(30 * 1024 ** 3);
    const onDisk = await readTartConfig(bundleDir);
    expect(onDisk).toEqual(cfg);
    expect(cfg).toMatchObject({ os: 'darwin', arch: 'arm64', cpuCountMin: 4, cpuCount: 4, memorySizeMin: 4 * 1024 ** 3, memorySize: 4 * 1024 ** 3, diskFormat: 'raw' });
    expect(Buffer.from(cfg.hardwareModel!, 'base64').toString()).toBe('hw:mac14');
    expect(Buffer.from(cfg.ecid!, 'base64').subarray(0, 5).toString()).toBe('ecid:');
    const percents = events.filter((e) => e.phase === 'install').map((e) => (e as { percent: number }).percent);
    expect(percents).toEqual([0, 25, 50, 75, 100]); // 0.4 % and 25.1 % collapse into whole percents
    expect(events[0]).toEqual({ phase: 'load', message: 'loading restore image UniversalMac_14.4_23E214_Restore.ipsw' });
    expect(events.at(-1)).toMatchObject({ phase: 'done', message: 'installed macOS 14.4.0 (23E214)' });
    expect(host.configs[0]).toMatchObject({ guest: 'macos', cpus: 4, disks: [{ path: path.join(bundleDir, 'disk.img') }] });
  });

  it('refuses an image this host cannot run, and removes what it started', async () => {
    const host = new FakeVzHost({ restoreImages: { [ipsw]: { buildVersion: '25A1', osVersion: '26.0.0' } } });
    const bundleDir = path.join(dir, 'tahoe');
    await expect(installFromIpsw(host.addon(), { ipsw, bundleDir, cpus: 4, memoryMib: 8192, diskGib: 64 }, () => {})).rejects.toThrow(/macOS 26\.0\.0 \(25A1\) cannot run on this host/);
    await expect(installFromIpsw(host.addon(), { ipsw: '/missing.ipsw', bundleDir, cpus: 4, memoryMib: 8192, diskGib: 64 }, () => {})).rejects.toThrow(/cannot load \/missing\.ipsw/);
    await expect(installFromIpsw(host.addon(), { ipsw, bundleDir, cpus: 4, memoryMib: 8192, diskGib: 5 }, () => {})).rejects.toThrow(/at least 20 GiB/);
    await expect(readdir(bundleDir)).rejects.toThrow();
  });

  it('cancels through an AbortSignal and leaves nothing behind', async () => {
    const host = new FakeVzHost({ restoreImages: { [ipsw]: supported } });
    const ac = new AbortController();
    const bundleDir = path.join(dir, 'cancelled');
    const p = installFromIpsw(host.addon(), { ipsw, bundleDir, cpus: 4, memoryMib: 8192, diskGib: 20 }, (e) => {
      if (e.phase === 'install' && e.percent >= 25) ac.abort();
    }, ac.signal);
    await expect(p).rejects.toThrow(/install macOS: cancelled/);
    await expect(readdir(bundleDir)).rejects.toThrow();
  });
});
