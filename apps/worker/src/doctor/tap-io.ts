// The qemu driver's TAP uplinks: whether their frames move through io_uring (a batch per system
// call) or one read()/write() per frame, about half the frame rate (BENCHMARKS.md, frame pump,
// issue 20 tenth pass). Nothing breaks without it: a warning, with the way to get it.
import { readFile } from 'node:fs/promises';
import { ok, warn, type Finding } from './check.ts';

export interface TapIoProbe {
  /** @fleet/native-vz's tapIoUringStatus(): built with liburing, and whether this process got a ring. */
  status: () => Promise<{ ok: boolean; built: boolean; error: string | null }>;
  /** kernel.io_uring_disabled (0, 1 or 2), or undefined on a kernel without the setting. */
  disabledSetting: () => Promise<number | undefined>;
}

const defaultProbe: TapIoProbe = {
  status: async () => (await import('@fleet/native-vz')).tapIoUringStatus(),
  disabledSetting: async () => {
    const text = await readFile('/proc/sys/kernel/io_uring_disabled', 'utf8').catch(() => undefined);
    const n = text === undefined ? NaN : Number(text.trim());
    return Number.isInteger(n) ? n : undefined;
  },
};

export async function checkTapIo(probe: TapIoProbe = defaultProbe): Promise<Finding> {
  const s = await probe.status();
  if (!s.built) {
    return warn(
      'the native addon was built without liburing: each TAP frame costs a read() or write() (about half the frame rate)',
      'apt-get install liburing-dev && pnpm --filter @fleet/native-vz rebuild',
    );
  }
  if (!s.ok) {
    return warn(`io_uring refused here (${s.error}): each TAP frame costs a read() or write()`, 'sysctl -w kernel.io_uring_disabled=0, and allow io_uring_setup in any seccomp profile the worker runs under');
  }
  // This check runs as root; the VM host processes run as unprivileged VM users (issue 14).
  if ((await probe.disabledSetting()) === 1) {
    return warn(
      'kernel.io_uring_disabled=1: only privileged processes get io_uring, so the VM host processes (VM users) move TAP frames one read()/write() at a time',
      'sysctl -w kernel.io_uring_disabled=0',
    );
  }
  return ok('io_uring: TAP frames move in batches, one system call per batch');
}
