import { describe, expect, it, vi } from 'vitest';
import { VZ_ERROR_DOMAIN, VZErrorCode, VzError } from '@fleet/native-vz/vz';
import { MACOS_LIMIT_MESSAGE, mapVzError } from './errors.ts';
import { MacosSlots } from './slots.ts';

const vzErr = (code: number, msg: string): VzError => new VzError('start', VZ_ERROR_DOMAIN, code, msg);

describe('mapVzError', () => {
  it('turns VZErrorVirtualMachineLimitExceeded into the limit message, keeping the framework text', () => {
    const f = mapVzError(vzErr(VZErrorCode.VirtualMachineLimitExceeded, 'The maximum supported number of active virtual machines has been reached.'), 'start');
    expect(f.kind).toBe('limit-exceeded');
    expect(f.message).toContain(MACOS_LIMIT_MESSAGE);
    expect(f.message).toContain('The maximum supported number of active virtual machines has been reached.');
  });

  it('recognises a missing entitlement and says how to fix it', () => {
    const f = mapVzError(vzErr(VZErrorCode.InvalidVirtualMachineConfiguration, 'The process doesn’t have the “com.apple.security.virtualization” entitlement.'), 'configure VM');
    expect(f.kind).toBe('entitlement-missing');
    expect(f.message).toMatch(/fleet-worker install|restart the worker/);
  });

  it('maps the other codes to kinds with the framework message kept', () => {
    const cases: Array<[number, string]> = [
      [VZErrorCode.InvalidVirtualMachineConfiguration, 'invalid-configuration'],
      [VZErrorCode.InvalidVirtualMachineStateTransition, 'invalid-state'],
      [VZErrorCode.InvalidDiskImage, 'disk'],
      [VZErrorCode.OutOfDiskSpace, 'out-of-disk-space'],
      [VZErrorCode.NotSupported, 'not-supported'],
      [VZErrorCode.OperationCancelled, 'cancelled'],
      [VZErrorCode.Restore, 'save-restore'],
      [VZErrorCode.InstallationFailed, 'install'],
      [VZErrorCode.InstallationRequiresUpdate, 'install'],
      [VZErrorCode.Internal, 'internal'],
      [999, 'other'],
    ];
    for (const [code, kind] of cases) {
      const f = mapVzError(vzErr(code, `framework says ${code}`), 'op');
      expect({ code, kind: f.kind }).toEqual({ code, kind });
      if (kind !== 'cancelled') expect(f.message).toContain(`framework says ${code}`);
    }
    expect(mapVzError(vzErr(VZErrorCode.InstallationRequiresUpdate, 'x'), 'install').message).toMatch(/update macOS on the host/);
    // VZErrorDomain code 1 outside a GUI session (macOS 15.2+ guests): the message names the fix.
    expect(mapVzError(vzErr(VZErrorCode.Internal, 'The virtual machine failed to start.'), 'start').message).toMatch(/VZErrorDomain code 1.*GUI login session.*automatic login.*--vm-user/);
    expect(mapVzError(new Error('plain'), 'op')).toMatchObject({ kind: 'other', message: 'op: plain' });
    expect(mapVzError(new VzError('start vmnet interface', 'vmnet', 1005, 'needs root'), 'op').kind).toBe('other');
  });
});

describe('MacosSlots', () => {
  it('hands out at most `capacity` slots, idempotently per instance, and frees them', () => {
    const s = new MacosSlots(2);
    const seen: number[] = [];
    s.onChange((n) => seen.push(n));
    expect(s.acquire('a#1')).toBe(true);
    expect(s.acquire('a#1')).toBe(true);
    expect(s.acquire('b#1')).toBe(true);
    expect(s.acquire('c#1')).toBe(false);
    expect(s.unavailableReason()).toBe('all 2 macOS slots of this host are in use (a#1, b#1)');
    s.release('a#1');
    expect(s.acquire('c#1')).toBe(true);
    expect(seen).toEqual([1, 0, 1, 0]);
  });

  it('closes the host after the framework refused a start, until one of ours stops', () => {
    const s = new MacosSlots(2);
    s.adopt('ours#1');
    expect(s.acquire('new#1')).toBe(true);
    s.limitExceeded('new#1', 'limit reached (another tool runs a macOS VM)');
    expect(s.available()).toBe(0);
    expect(s.acquire('other#1')).toBe(false);
    expect(s.unavailableReason()).toBe('limit reached (another tool runs a macOS VM)');
    s.release('never-held#1'); // not ours: changes nothing
    expect(s.available()).toBe(0);
    s.release('ours#1');
    expect(s.available()).toBe(2);
    expect(() => new MacosSlots(-1)).toThrow(RangeError);
  });
});

describe('createVzDriver', () => {
  it('refuses to construct anywhere but macOS, saying what to use instead', async () => {
    const { createVzDriver } = await import('../drivers/vz/index.ts');
    expect(() => createVzDriver({ dataDir: '/tmp/x', platform: 'linux' })).toThrow(
      'the vz driver runs only on macOS (Apple Virtualization.framework); this host is linux — use --driver qemu here',
    );
  });
});

describe.runIf(process.platform !== 'darwin')('openDriver("vz") off macOS', () => {
  it('is listed but fails with a clear message', async () => {
    const { AVAILABLE_DRIVERS, openDriver } = await import('../drivers/registry.ts');
    const { createLogger } = await import('../logger.ts');
    expect(AVAILABLE_DRIVERS).toContain('vz');
    await expect(openDriver('vz', { logger: createLogger('silent'), dataDir: '/tmp/fleet-vz-x' })).rejects.toThrow(/the vz driver runs only on macOS .*this host is linux/);
  });
});

describe('MacosSlots: a limit block is lifted later even when none of ours stops', () => {
  it('re-opens after retryAfterMs and tells listeners', () => {
    vi.useFakeTimers();
    try {
      const slots = new MacosSlots(2, 1000);
      const seen: number[] = [];
      slots.onChange((n) => seen.push(n));
      expect(slots.acquire('a')).toBe(true);
      slots.limitExceeded('a', 'VZErrorVirtualMachineLimitExceeded');
      expect(slots.available()).toBe(0);
      vi.advanceTimersByTime(999);
      expect(slots.available()).toBe(0);
      vi.advanceTimersByTime(1);
      expect(slots.available()).toBe(2);
      expect(seen).toEqual([1, 0, 2]);
    } finally {
      vi.useRealTimers();
    }
  });
});
