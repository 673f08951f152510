import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { GuestImage } from '@fleet/guest-image';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignatureError, signedNodePaths } from '../macos/codesign.ts';
import { runChecks } from './check.ts';
import { checkGuestImage, checkKvm, checkMacosVersion, checkQemu, checkReleaseTool, checkRoot, checkTool, checkVirtualizationEntitlement, driverChecks } from './driver.ts';
import { checkNativeAddon } from './native-addon.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'fleet-doctor-driver-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const notFound = (name: string): string => {
  throw new Error(`${name} not found`);
};
const image: GuestImage = { kernel: 'k', initrd: 'i', cmdlineBase: '', version: 'v1', dir: '/x', kernelVersion: '6.1', bakedAuthorizedKey: false };

describe('driver prerequisite checks', () => {
  it('root and missing tools fail with the command that fixes them', async () => {
    expect(checkRoot(0).status).toBe('ok');
    expect(checkRoot(1000)).toMatchObject({ status: 'fail', fix: expect.stringContaining('as root') });
    expect(checkTool('nft', () => '/usr/sbin/nft')).toEqual({ status: 'ok', detail: '/usr/sbin/nft' });
    expect(checkTool('dnsmasq', notFound)).toMatchObject({ status: 'fail', fix: expect.stringContaining('apt-get install dnsmasq-base') });
    // Without dhcp_release DHCP still works: a warning that names the package.
    expect(checkReleaseTool(notFound)).toMatchObject({ status: 'warn', fix: expect.stringContaining('apt-get install dnsmasq-utils') });
    expect(checkReleaseTool(() => '/usr/bin/dhcp_release')).toEqual({ status: 'ok', detail: '/usr/bin/dhcp_release' });
    expect(await checkQemu(notFound)).toMatchObject({ status: 'fail', fix: expect.stringContaining('apt-get install qemu-system-x86') });
  });

  it('KVM not usable is a warning (TCG), never a failure; a working probe is ok', async () => {
    const noKvm = await checkKvm(image, async () => true, path.join(dir, 'no-kvm'));
    expect(noKvm.status).toBe('warn');
    expect(noKvm.detail).toContain('guests run under TCG emulation, slower');
    const device = path.join(dir, 'kvm');
    await writeFile(device, '');
    expect((await checkKvm(image, async () => false, device)).status).toBe('warn');
    expect((await checkKvm(image, async () => true, device)).status).toBe('ok');
    expect((await checkKvm(undefined, async () => true, device)).status).toBe('warn');
  });

  it('guest image: none cached is a warning with the build command; a cached one is confirmed by ensureGuestImage', async () => {
    const cache = path.join(dir, 'cache');
    let built = false;
    const none = await checkGuestImage(cache, async () => ((built = true), image));
    expect(none.finding.status).toBe('warn');
    expect(none.finding.fix).toContain('guest-image/build.sh');
    expect(built).toBe(false); // doctor never starts a build
    await mkdir(path.join(cache, 'v1'), { recursive: true });
    await writeFile(path.join(cache, 'v1', 'manifest.json'), '{}');
    const cached = await checkGuestImage(cache, async () => image);
    expect(cached.finding.status).toBe('ok');
    expect(cached.image).toBe(image);
    const broken = await checkGuestImage(cache, async () => { throw new Error('build.sh failed (exit 1)'); });
    expect(broken.finding.status).toBe('fail');
  });

  it('vz: needs macOS 13+, and fails clearly when asked for on Linux', async () => {
    expect(checkMacosVersion('22.6.0')).toMatchObject({ status: 'ok', detail: 'macOS 13 (Darwin 22.6.0)' });
    expect(checkMacosVersion('21.6.0').status).toBe('fail');
    const report = await runChecks(driverChecks({ driver: 'vz', dataDir: dir, platform: 'linux' }));
    expect(report.ok).toBe(false);
    expect(report.checks).toEqual([{ name: 'driver', status: 'fail', detail: 'vz needs macOS (this is linux)', fix: 'use --driver qemu on Linux' }]);
    expect((await runChecks(driverChecks({ driver: 'synthetic', dataDir: dir }))).checks[0]!.status).toBe('skip');
  });

  it('vz entitlement: reuses the codesign check and passes its remedy on as the fix', async () => {
    const p = signedNodePaths(dir);
    expect((await checkVirtualizationEntitlement(dir, async () => {})).status).toBe('warn'); // not created yet
    await mkdir(p.dir, { recursive: true });
    await writeFile(p.node, '');
    expect((await checkVirtualizationEntitlement(dir, async () => {})).status).toBe('ok');
    const r = await checkVirtualizationEntitlement(dir, async () => {
      throw new SignatureError(`${p.node} is not signed with the entitlement. Fix: restart the worker`);
    });
    expect(r).toEqual({ status: 'fail', detail: `${p.node} is not signed with the entitlement.`, fix: 'restart the worker' });
  });

  it('the native addon loads here (its Linux build on Linux); a load error names the rebuild command', async () => {
    const loaded = await checkNativeAddon();
    expect(loaded.status).toBe('ok');
    expect(loaded.detail).toContain(`${process.platform} build`);
    const broken = await checkNativeAddon(async () => { throw new Error('@fleet/native-vz: build/Release/native_vz.node could not be loaded; build it'); });
    expect(broken).toMatchObject({ status: 'fail', fix: expect.stringContaining('pnpm --filter @fleet/native-vz rebuild') });
  });
});
