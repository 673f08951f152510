import { describe, expect, it } from 'vitest';
import { AGENT_PROTOCOL_VERSION, parseHandover } from './agent-protocol.ts';

const vmJob = {
  kind: 'vm',
  vmId: 'v1',
  attempt: 1,
  name: 'mac-1',
  guest: 'macos',
  bundleDir: '/Users/fleet/vms/v1/bundle',
  cpus: 4,
  memoryBytes: 8 * 2 ** 30,
  mac: '02:00:00:00:00:01',
  serialLogPath: '/Users/fleet/vms/v1/logs/serial.log',
};
const handover = (job: Record<string, unknown>): string => JSON.stringify({ v: AGENT_PROTOCOL_VERSION, job });

describe('parseHandover (the job root hands the VM agent)', () => {
  it('accepts a VM job with its optional machine fields', () => {
    const full = { ...vmJob, guest: 'linux', linuxKernel: { kernelPath: '/k', initrdPath: '/i', cmdline: 'console=hvc0' }, display: { width: 1920, height: 1080 }, stopTimeoutMs: 10_000, recovery: false, noNetwork: true };
    expect(parseHandover(handover(full)).job).toEqual(full);
  });

  it('names the field when an optional machine field is malformed', () => {
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ linuxKernel: { kernelPath: '/k' } }, /linuxKernel/],
      [{ linuxKernel: { kernelPath: '/k', cmdline: '', initrdPath: 7 } }, /initrdPath/],
      [{ display: { width: 0, height: 1080 } }, /display/],
      [{ display: { width: 1920, height: 1e9 } }, /display/],
      [{ display: 'big' }, /display/],
      [{ stopTimeoutMs: -1 }, /stopTimeoutMs/],
      [{ stopTimeoutMs: 1.5 }, /stopTimeoutMs/],
      [{ recovery: 'yes' }, /recovery/],
      [{ noNetwork: 1 }, /noNetwork/],
    ];
    for (const [extra, re] of bad) expect(() => parseHandover(handover({ ...vmJob, ...extra })), JSON.stringify(extra)).toThrow(re);
  });

  it('refuses other versions, kinds and missing required fields', () => {
    expect(() => parseHandover(JSON.stringify({ v: 2, job: vmJob }))).toThrow(/version 1/);
    expect(() => parseHandover(handover({ ...vmJob, kind: 'shell' }))).toThrow(/unknown job kind/);
    expect(() => parseHandover(handover({ ...vmJob, mac: undefined }))).toThrow(/"mac"/);
    expect(() => parseHandover(handover({ ...vmJob, cpus: -2 }))).toThrow(/"cpus"/);
    expect(() => parseHandover(handover({ ...vmJob, guest: 'windows' }))).toThrow(/guest/);
  });
});
