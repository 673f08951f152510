import { mkdir, mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkRunningVms, checkVmUsers, parseProcStatus } from './vm-users.ts';

const STATUS = (uid: number, seccomp: number, nnp: number, capEff: string): string =>
  `Name:\tqemu-system-x86\nUid:\t${uid}\t${uid}\t${uid}\t${uid}\nGid:\t${uid}\t${uid}\t${uid}\t${uid}\nCapEff:\t${capEff}\nCapBnd:\t0000000000000000\nNoNewPrivs:\t${nnp}\nSeccomp:\t${seccomp}\n`;

describe('doctor: VM users', () => {
  let tmp = '';
  afterEach(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('parses /proc/<pid>/status', () => {
    expect(parseProcStatus(STATUS(200000, 2, 1, '0000000000000000'))).toEqual({ uid: 200000, seccomp: 2, noNewPrivs: true, capEff: 0n, capBnd: 0n });
    expect(parseProcStatus('Name:\tx\n')).toBeUndefined();
  });

  it('setpriv missing fails with the package; an untraversable data dir is a warning with the fix', async () => {
    expect(await checkVmUsers('/', () => { throw new Error('nope'); })).toMatchObject({ status: 'fail', fix: expect.stringContaining('util-linux') });
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dvu-'));
    await chmod(tmp, 0o700);
    expect(await checkVmUsers(path.join(tmp, 'data'), () => '/usr/bin/setpriv')).toMatchObject({ status: 'warn', fix: expect.stringContaining(`chmod o+x ${tmp}`) });
    await chmod(tmp, 0o711);
    expect(await checkVmUsers(path.join(tmp, 'data'), () => '/usr/bin/setpriv')).toMatchObject({ status: 'ok', detail: expect.stringContaining('uids 200000..200999') });
  });

  it('reports running VMs from /proc; root or unconfined QEMU is a warning', async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dvu-'));
    const q = path.join(tmp, 'qemu');
    const proc = path.join(tmp, 'proc');
    expect((await checkRunningVms(q, proc)).status).toBe('skip');
    const vm = async (name: string, pid: number, status: string, sub: boolean): Promise<void> => {
      const dir = path.join(q, 'instances', name);
      await mkdir(path.join(dir, 'run'), { recursive: true });
      await writeFile(path.join(sub ? path.join(dir, 'run') : dir, 'status.jsonl'), JSON.stringify({ state: 'running', qemuPid: pid }) + '\n');
      await mkdir(path.join(proc, String(pid)), { recursive: true });
      await writeFile(path.join(proc, String(pid), 'cmdline'), `qemu-system-x86_64\0-chardev\0path=${dir}/run/qmp.sock`);
      await writeFile(path.join(proc, String(pid), 'status'), status);
    };
    await vm('vm-a.1', 101, STATUS(200000, 2, 1, '0000000000000000'), true);
    expect(await checkRunningVms(q, proc)).toMatchObject({ status: 'ok', detail: 'vm-a.1: QEMU pid 101 uid 200000 Seccomp 2 NoNewPrivs 1 CapEff 0 CapBnd 0' });
    await vm('vm-b.1', 102, STATUS(0, 0, 0, '000001ffffffffff'), false);
    expect(await checkRunningVms(q, proc)).toMatchObject({ status: 'warn', detail: expect.stringContaining('1 of 2 VMs') });
  });
});
