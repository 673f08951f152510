import { describe, expect, it } from 'vitest';
import { TAP_IO_URING_BUILT } from '@fleet/native-vz';
import { driverChecks } from './driver.ts';
import { checkTapIo, type TapIoProbe } from './tap-io.ts';

const probe = (status: Awaited<ReturnType<TapIoProbe['status']>>, disabled?: number): TapIoProbe => ({
  status: async () => status,
  disabledSetting: async () => disabled,
});

describe('doctor: tap io (the qemu driver\'s TAP uplinks)', () => {
  it('ok when the addon has liburing and io_uring answers, with the kernel setting at 0', async () => {
    expect(await checkTapIo(probe({ ok: true, built: true, error: null }, 0))).toMatchObject({ status: 'ok', detail: expect.stringContaining('io_uring') });
  });

  it('warns, with the packages to install, when the addon was built without liburing', async () => {
    expect(await checkTapIo(probe({ ok: false, built: false, error: null }, 0))).toMatchObject({
      status: 'warn',
      detail: expect.stringContaining('without liburing'),
      fix: expect.stringContaining('liburing-dev'),
    });
  });

  it('warns with the errno when io_uring is refused', async () => {
    expect(await checkTapIo(probe({ ok: false, built: true, error: 'EPERM' }, 2))).toMatchObject({ status: 'warn', detail: expect.stringContaining('EPERM'), fix: expect.stringContaining('io_uring_disabled=0') });
  });

  it('warns when only privileged processes get io_uring: the VM host processes run as VM users', async () => {
    expect(await checkTapIo(probe({ ok: true, built: true, error: null }, 1))).toMatchObject({ status: 'warn', detail: expect.stringContaining('VM users') });
  });

  it('is one of the qemu driver\'s checks', () => {
    expect(driverChecks({ driver: 'qemu', dataDir: '/x', platform: 'linux' }).map((c) => c.name)).toContain('tap io');
  });

  it('on this machine: ok exactly when the addon was built with liburing (the kernel allows io_uring here)', async () => {
    expect((await checkTapIo()).status).toBe(TAP_IO_URING_BUILT ? 'ok' : 'warn');
  });
});
