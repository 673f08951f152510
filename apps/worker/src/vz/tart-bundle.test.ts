import { mkdtemp, readFile, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { copyFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cloneBundle } from './clone.ts';
import { TartBundleError, macIdentity, parseTartConfig, randomLocalMac, readTartConfig, resourcesFor, writeTartConfig, type TartConfig } from './tart-bundle.ts';

// A config.json as Tart writes it for a macOS VM (hardwareModel/ecid are base64 binary plists).
const TART_MACOS = {
  version: 1,
  os: 'darwin',
  arch: 'arm64',
  cpuCountMin: 4,
  cpuCount: 4,
  memorySizeMin: 4294967296,
  memorySize: 8589934592,
  macAddress: '7E:A1:0B:22:C3:4D',
  display: { width: 1024, height: 768 },
  displayRefit: true,
  diskFormat: 'raw',
  hardwareModel: 'YnBsaXN0MDDTAQIDBAUGXxAZRGF0YVJlcHJlc2VudGF0aW9uVmVyc2lvbl8QD1BsYXRmb3JtVmVyc2lvbg==',
  ecid: 'YnBsaXN0MDDRAQJURUNJRBN7Gz/c4A+ZAAgLEAAAAAAAAAEBAAAAAAAAAAMAAAAAAAAAAAAAAAAAAAAZ',
};

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'fleet-tart-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('Tart config.json', () => {
  it('reads a Tart macOS bundle config and writes it back without losing keys', async () => {
    const src = path.join(dir, 'src');
    await mkdir(src);
    await writeFile(path.join(src, 'config.json'), JSON.stringify({ ...TART_MACOS, futureKey: { a: 1 } }));
    const cfg = await readTartConfig(src);
    expect(cfg).toMatchObject({ os: 'darwin', cpuCount: 4, memorySize: 8589934592, macAddress: '7e:a1:0b:22:c3:4d', display: { width: 1024, height: 768 } });
    expect(macIdentity(cfg).hardwareModel.subarray(0, 6).toString()).toBe('bplist');
    await writeTartConfig(src, { ...cfg, cpuCount: 6 });
    const back = JSON.parse(await readFile(path.join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(Object.keys(back).slice(0, 4)).toEqual(['version', 'os', 'arch', 'cpuCountMin']);
    expect(back).toMatchObject({ cpuCount: 6, futureKey: { a: 1 }, hardwareModel: TART_MACOS.hardwareModel, ecid: TART_MACOS.ecid, displayRefit: true });
  });

  it('rejects broken configs with the file and key named', async () => {
    expect(() => parseTartConfig({ ...TART_MACOS, os: 'windows' })).toThrow(/"os" must be "darwin" or "linux"/);
    expect(() => parseTartConfig({ ...TART_MACOS, cpuCount: 0 })).toThrow(/"cpuCount" must be a positive integer/);
    expect(() => parseTartConfig({ ...TART_MACOS, macAddress: 'nope' })).toThrow(/"macAddress"/);
    expect(() => parseTartConfig({ ...TART_MACOS, ecid: undefined })).toThrow(/needs base64 "ecid"/);
    expect(() => parseTartConfig({ ...TART_MACOS, diskFormat: 'asif' })).toThrow(/only "raw"/);
    expect(() => parseTartConfig([])).toThrow(TartBundleError);
    const { hardwareModel: _h, ecid: _e, ...linux } = TART_MACOS;
    expect(parseTartConfig({ ...linux, os: 'linux' }).os).toBe('linux');
    await expect(readTartConfig(path.join(dir, 'missing'))).rejects.toThrow(/is .* a Tart VM bundle\?/);
    await writeFile(path.join(dir, 'config.json'), '{not json');
    await expect(readTartConfig(dir)).rejects.toThrow(/not valid JSON/);
  });

  it('never gives a VM less than the bundle minimums', () => {
    const cfg = parseTartConfig(TART_MACOS);
    expect(resourcesFor(cfg, { cpus: 2, memoryMib: 1024 })).toEqual({ cpus: 4, memoryBytes: 4294967296 });
    expect(resourcesFor(cfg, { cpus: 8, memoryMib: 16384 })).toEqual({ cpus: 8, memoryBytes: 16384 * 1024 * 1024 });
    expect(resourcesFor(cfg, { cpus: 0, memoryMib: 0 })).toEqual({ cpus: 4, memoryBytes: 8589934592 });
  });

  it('makes locally administered unicast MACs', () => {
    for (let i = 0; i < 50; i++) {
      const m = randomLocalMac();
      expect(m).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      const first = parseInt(m.slice(0, 2), 16);
      expect(first & 0x02).toBe(2);
      expect(first & 0x01).toBe(0);
    }
    expect(randomLocalMac(() => Buffer.from([0xff, 1, 2, 3, 4, 5]))).toBe('fe:01:02:03:04:05');
  });
});

describe('cloneBundle', () => {
  async function srcBundle(): Promise<string> {
    const src = path.join(dir, 'image');
    await mkdir(src);
    await writeFile(path.join(src, 'config.json'), JSON.stringify(TART_MACOS));
    await writeFile(path.join(src, 'disk.img'), 'DISK');
    await writeFile(path.join(src, 'nvram.bin'), 'NVRAM');
    await writeFile(path.join(src, 'state.vzvmsave'), 'SAVED');
    await writeFile(path.join(src, 'control.sock'), '');
    return src;
  }

  it('clones every file, gives a fresh MAC and (optionally) a fresh machine identifier, drops the saved state', async () => {
    const src = await srcBundle();
    const cloned: string[] = [];
    const r = await cloneBundle(src, path.join(dir, 'vm1'), {
      cloneFile: async (a, b) => {
        cloned.push(path.basename(a));
        await copyFile(a, b);
      },
      randomMac: () => '02:00:00:00:00:09',
      newMachineIdentifier: () => Buffer.from('new-ecid'),
    });
    expect(cloned).toEqual(['config.json', 'disk.img', 'nvram.bin']);
    expect((await readdir(path.join(dir, 'vm1'))).sort()).toEqual(['config.json', 'disk.img', 'nvram.bin']);
    expect(r.config.macAddress).toBe('02:00:00:00:00:09');
    expect(Buffer.from(r.config.ecid!, 'base64').toString()).toBe('new-ecid');
    expect(r.config.hardwareModel).toBe(TART_MACOS.hardwareModel);
    const again = await readTartConfig(path.join(dir, 'vm1'));
    expect(again.macAddress).toBe('02:00:00:00:00:09');
    // The source is untouched.
    expect((await readTartConfig(src)).macAddress).toBe('7e:a1:0b:22:c3:4d');
  });

  it('keeps the machine identifier unless asked, and refuses to fall back to a full copy when the volume cannot clone', async () => {
    const src = await srcBundle();
    const r = await cloneBundle(src, path.join(dir, 'vm2'), { cloneFile: (a, b) => copyFile(a, b) });
    expect(r.config.ecid).toBe(TART_MACOS.ecid);
    expect(r.config.macAddress).not.toBe('7e:a1:0b:22:c3:4d');
    const enotsup = Object.assign(new Error('ENOTSUP'), { code: 'ENOTSUP' });
    await expect(cloneBundle(src, path.join(dir, 'vm3'), { cloneFile: () => Promise.reject(enotsup) })).rejects.toThrow(/same APFS volume/);
    await expect(readdir(path.join(dir, 'vm3'))).rejects.toThrow(); // nothing left behind
  });

  it('uses copy-on-write for real by default: fails loudly where the filesystem cannot clone', async () => {
    const src = await srcBundle();
    // Linux tmpfs/ext4 cannot reflink; btrfs/xfs could. Either it clones or it says why.
    const r = await cloneBundle(src, path.join(dir, 'vm4')).then(
      () => 'cloned',
      (e: Error) => e.message,
    );
    expect(r === 'cloned' || /same APFS volume/.test(r)).toBe(true);
  });
});
