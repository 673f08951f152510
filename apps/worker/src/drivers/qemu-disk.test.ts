// Instance disks against the real qemu-img (Debian qemu-utils); skipped loudly without it.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DriverError } from './driver.ts';
import { createInstanceDisk, imageInfo, resolveImage, resolveSpecImage } from './qemu-disk.ts';

function hasQemuImg(): boolean {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}
const present = hasQemuImg();
if (!present) console.warn('\n!!!!!!!! SKIPPING qemu-disk.test.ts: qemu-img is not installed (Debian qemu-utils; scripts/install-system-deps.sh) !!!!!!!!\n');

const dir = mkdtempSync(path.join(os.tmpdir(), 'fleet-qemu-disk-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const info = (file: string) => JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', file], { encoding: 'utf8' })) as Record<string, unknown>;

describe('resolveImage', () => {
  it('"fleet-guest" and an empty image are the built-in guest', async () => {
    expect(await resolveImage('', undefined)).toEqual({ kind: 'builtin' });
    expect(await resolveImage('fleet-guest', undefined)).toEqual({ kind: 'builtin' });
  });

  it('never lets a spec name a path outside the images dir', async () => {
    for (const bad of ['../etc/shadow', '/etc/shadow', 'a/b', '.hidden', 'x'.repeat(200)]) {
      await expect(resolveImage(bad, dir)).rejects.toThrow(/no paths/);
    }
  });

  it('says where to put an image it cannot find', async () => {
    await expect(resolveImage('ubuntu-24.04', dir)).rejects.toThrow(`image "ubuntu-24.04" not found on this worker: put a qcow2 or raw disk named ubuntu-24.04, ubuntu-24.04.qcow2, ubuntu-24.04.img or ubuntu-24.04.raw in ${dir}`);
    await expect(resolveImage('ubuntu', undefined)).rejects.toBeInstanceOf(DriverError);
  });
});

describe.skipIf(!present)('instance disks (qemu-img)', () => {
  it('finds qcow2 and raw images by name, with their format and size', async () => {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(dir, 'base.qcow2'), '1G']);
    writeFileSync(path.join(dir, 'plain.img'), Buffer.alloc(1024 * 1024));
    expect(await resolveImage('base', dir)).toEqual({ kind: 'disk', path: path.join(dir, 'base.qcow2'), format: 'qcow2', virtualBytes: 1024 ** 3 });
    expect(await resolveImage('plain', dir)).toEqual({ kind: 'disk', path: path.join(dir, 'plain.img'), format: 'raw', virtualBytes: 1024 * 1024 });
  });

  it('refuses an image with a backing file (it could point anywhere on the host)', async () => {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', path.join(dir, 'base.qcow2'), '-F', 'qcow2', path.join(dir, 'chained.qcow2')]);
    await expect(imageInfo(path.join(dir, 'chained.qcow2'))).rejects.toThrow(/has a backing file .* flatten it/);
  });

  it('clones an operator image as a copy-on-write overlay, grown to the requested size, once', async () => {
    const source = await resolveImage('base', dir);
    const disk = path.join(dir, 'vm1.qcow2');
    await createInstanceDisk(disk, source, 3);
    const i = info(disk);
    expect(i['backing-filename']).toBe(path.join(dir, 'base.qcow2'));
    expect(i['virtual-size']).toBe(3 * 1024 ** 3);
    // Idempotent: a second create() of the same instance keeps the disk (and what the VM wrote).
    execFileSync('qemu-img', ['resize', '-q', disk, '4G']);
    await createInstanceDisk(disk, source, 3);
    expect(info(disk)['virtual-size']).toBe(4 * 1024 ** 3);
  });

  it('gives the built-in guest a blank sparse disk of diskGib', async () => {
    const disk = path.join(dir, 'vm2.qcow2');
    await createInstanceDisk(disk, { kind: 'builtin' }, 20);
    const i = info(disk);
    expect(i['virtual-size']).toBe(20 * 1024 ** 3);
    expect(i['backing-filename']).toBeUndefined();
    expect(Number(i['actual-size'])).toBeLessThan(1024 * 1024);
  });
});

describe.skipIf(!present)('resolveSpecImage: pulled registry images (issue 15)', () => {
  const pulled = (over: Record<string, unknown>) => ({
    image: '127.0.0.1:5000/fleet/guest:1',
    os: 'linux',
    cpus: 1,
    memoryMib: 256,
    diskGib: 1,
    labels: {},
    username: 'fleet',
    pulled: { digest: `sha256:${'c'.repeat(64)}`, reference: `127.0.0.1:5000/fleet/guest@sha256:${'c'.repeat(64)}`, format: 'fleet-qemu' as const, dir, ...over },
  });

  it('a disk image is an overlay base booting from disk; a kernel image boots its kernel', async () => {
    const base = path.join(dir, 'pulled.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
    expect(await resolveSpecImage(pulled({ disk: { path: base, format: 'qcow2', virtualSize: 64 << 20 } }), undefined)).toEqual({
      source: { kind: 'disk', path: base, format: 'qcow2', virtualBytes: 64 << 20 },
      boot: 'disk',
    });
    expect(await resolveSpecImage(pulled({ kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0' }), undefined)).toEqual({ source: { kind: 'builtin' }, boot: 'kernel' });
  });

  it('refuses a pulled disk with a backing file (it could read any host file), a mislabelled format, a Tart image and a kernel without initrd', async () => {
    const base = path.join(dir, 'b.qcow2');
    const sneaky = path.join(dir, 'sneaky.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '16M']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', sneaky]);
    await expect(resolveSpecImage(pulled({ disk: { path: sneaky, format: 'qcow2', virtualSize: 16 << 20 } }), undefined)).rejects.toThrow(/has a backing file/);
    await expect(resolveSpecImage(pulled({ disk: { path: base, format: 'raw', virtualSize: 16 << 20 } }), undefined)).rejects.toThrow(/its disk is qcow2, its config says raw/);
    await expect(resolveSpecImage(pulled({ format: 'tart', bundleDir: dir }), undefined)).rejects.toThrow(/runs Fleet qemu images/);
    await expect(resolveSpecImage(pulled({ kernel: '/k' }), undefined)).rejects.toThrow(/without an initrd/);
    await expect(resolveSpecImage(pulled({}), undefined)).rejects.toThrow(/nothing to boot/);
  });
});
