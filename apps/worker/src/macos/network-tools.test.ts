import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { INTERNET_SHARING_PLIST, ensureLeaseTime, leaseTimeWriteArgs, parseLeaseTime } from './bootpd.ts';
import { findGateway, parseIfconfig, waitForGateway } from './ifconfig.ts';
import type { RunCommand } from './run-command.ts';

const ifconfigA = readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'ifconfig-a.txt'), 'utf8');

describe('bootpd lease time', () => {
  it('merges DHCPLeaseTimeSecs into the bootpd dictionary, only when it differs', async () => {
    expect(leaseTimeWriteArgs(600)).toEqual(['write', INTERNET_SHARING_PLIST, 'bootpd', '-dict-add', 'DHCPLeaseTimeSecs', '-int', '600']);
    expect(() => leaseTimeWriteArgs(5)).toThrow(RangeError);
    expect(parseLeaseTime('{\n    DHCPLeaseTimeSecs = 600;\n}\n')).toBe(600);
    expect(parseLeaseTime('')).toBeUndefined();
    const calls: string[][] = [];
    const already: RunCommand = async (c, a) => (calls.push([c, ...a]), { code: 0, stdout: '{\n    DHCPLeaseTimeSecs = 600;\n}\n', stderr: '' });
    expect(await ensureLeaseTime(600, already)).toBe(false);
    expect(calls).toHaveLength(1);
    const unset: RunCommand = async (c, a) => (calls.push([c, ...a]), a[0] === 'read' ? { code: 1, stdout: '', stderr: 'does not exist' } : { code: 0, stdout: '', stderr: '' });
    expect(await ensureLeaseTime(600, unset)).toBe(true);
    expect(calls.at(-1)).toEqual(['/usr/bin/defaults', ...leaseTimeWriteArgs(600)]);
    const denied: RunCommand = async (_c, a) => (a[0] === 'read' ? { code: 1, stdout: '', stderr: '' } : { code: 1, stdout: '', stderr: 'Could not write domain' });
    await expect(ensureLeaseTime(600, denied)).rejects.toThrow(/needs root.*Could not write domain/);
  });
});

describe('ifconfig', () => {
  it("finds the vmnet bridge holding the gateway address and its MAC (octets zero-padded)", async () => {
    const ifs = parseIfconfig(ifconfigA);
    expect(ifs.map((i) => i.name)).toEqual(['lo0', 'en0', 'bridge100', 'vmenet0']);
    expect(findGateway(ifs, '192.168.64.1')).toEqual({ name: 'bridge100', mac: '3e:a6:f6:09:e4:64', inet: ['192.168.64.1'] });
    expect(findGateway(ifs, '192.168.65.1')).toBeUndefined();
    let n = 0;
    const run: RunCommand = async () => ({ code: 0, stdout: ++n < 3 ? '' : ifconfigA, stderr: '' });
    expect((await waitForGateway('192.168.64.1', { run, timeoutMs: 5000 })).mac).toBe('3e:a6:f6:09:e4:64');
    const never: RunCommand = async () => ({ code: 0, stdout: '', stderr: '' });
    await expect(waitForGateway('192.168.64.1', { run: never, timeoutMs: 100 })).rejects.toThrow(/no interface with the vmnet gateway address 192\.168\.64\.1/);
  });
});
