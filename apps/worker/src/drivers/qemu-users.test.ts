import { mkdtemp, rm, stat, writeFile, chmod, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { allocateVmUid, firstUntraversable, inVmUserRange, publishGuestFiles, validateVmUserRange, vmHostCommand } from './qemu-users.ts';

describe('VM user range', () => {
  it('validates the range', () => {
    expect(validateVmUserRange({ base: 200_000, count: 1000 })).toEqual({ base: 200_000, count: 1000 });
    expect(() => validateVmUserRange({ base: 0, count: 10 })).toThrow(/>= 1000/);
    expect(() => validateVmUserRange({ base: 999, count: 10 })).toThrow(/>= 1000/);
    expect(() => validateVmUserRange({ base: 1.5e5 + 0.5, count: 10 })).toThrow(/integer/);
    expect(() => validateVmUserRange({ base: 65_000, count: 1000 })).toThrow(/65534/);
    expect(() => validateVmUserRange({ base: 0xffff_fff0, count: 100 })).toThrow(/4294967294/);
    expect(() => validateVmUserRange({ base: 200_000, count: 0 })).toThrow(/count/);
  });

  it('allocates the lowest free uid and refuses when full', () => {
    const r = { base: 200_000, count: 3 };
    expect(allocateVmUid(r, new Set())).toBe(200_000);
    expect(allocateVmUid(r, new Set([200_000, 200_002]))).toBe(200_001);
    expect(() => allocateVmUid(r, new Set([200_000, 200_001, 200_002]))).toThrow(/no free VM uid.*--vm-uid-count/);
  });

  it('checks persisted uids (instance.json) strictly', () => {
    const r = { base: 200_000, count: 3 };
    expect(inVmUserRange(r, 200_002)).toBe(true);
    for (const bad of [199_999, 200_003, 0, -1, '200000', 200_000.5, null, undefined]) expect(inVmUserRange(r, bad)).toBe(false);
  });
});

describe('vmHostCommand', () => {
  it('starts the host under setpriv with no capabilities and no_new_privs, inside the netns when given', () => {
    const [cmd, args] = vmHostCommand({ uid: 200_001, node: '/usr/bin/node', launch: '/l.mjs', configFile: '/d/config.json' });
    expect(cmd).toBe('setpriv');
    expect(args).toEqual(['--reuid=200001', '--regid=200001', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--', '/usr/bin/node', '/l.mjs', '/d/config.json']);
    const [cmd2, args2] = vmHostCommand({ uid: 200_001, netns: 'ns1', node: '/usr/bin/node', launch: '/l.mjs', configFile: '/c' });
    expect(cmd2).toBe('ip');
    expect(args2.slice(0, 4)).toEqual(['netns', 'exec', 'ns1', 'setpriv']);
    expect(() => vmHostCommand({ uid: 0, node: 'n', launch: 'l', configFile: 'c' })).toThrow(/uid 0/);
  });
});

describe('files', () => {
  let tmp = '';
  afterEach(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('finds the first directory others cannot traverse', async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'vmu-'));
    await mkdir(path.join(tmp, 'a', 'b'), { recursive: true });
    await chmod(tmp, 0o700);
    expect(await firstUntraversable(path.join(tmp, 'a', 'b'))).toBe(tmp);
    await chmod(tmp, 0o711);
    await chmod(path.join(tmp, 'a'), 0o750);
    expect(await firstUntraversable(path.join(tmp, 'a', 'b'))).toBe(path.join(tmp, 'a'));
    await chmod(path.join(tmp, 'a'), 0o711);
    expect(await firstUntraversable(path.join(tmp, 'a', 'b', 'not-yet'))).toBeUndefined();
  });

  it('publishes the guest kernel and initrd world-readable, once per version', async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'vmu-'));
    const src = path.join(tmp, 'cache', 'v123');
    await mkdir(src, { recursive: true });
    await writeFile(path.join(src, 'vmlinuz'), 'kernel', { mode: 0o600 });
    await writeFile(path.join(src, 'initrd.img'), 'initrd', { mode: 0o600 });
    const out = await publishGuestFiles(path.join(tmp, 'guest'), { kernel: path.join(src, 'vmlinuz'), initrd: path.join(src, 'initrd.img') });
    expect(out).toEqual({ kernel: path.join(tmp, 'guest', 'v123', 'vmlinuz'), initrd: path.join(tmp, 'guest', 'v123', 'initrd.img') });
    expect((await stat(out.kernel)).mode & 0o777).toBe(0o644);
    expect((await stat(path.join(tmp, 'guest', 'v123'))).mode & 0o777).toBe(0o755);
    const first = (await stat(out.initrd)).ino;
    await publishGuestFiles(path.join(tmp, 'guest'), { kernel: path.join(src, 'vmlinuz'), initrd: path.join(src, 'initrd.img') });
    expect((await stat(out.initrd)).ino).toBe(first); // not copied again
  });
});
