// The two ways a non-socket FramePort (a TAP) moves its frames, for tests that run in both: io_uring
// (the default where the addon was built with liburing) and the read()/write() loops
// (FLEET_TAP_IO_URING=0, which the port reads when it is made).
import { FramePort, TAP_IO_URING_BUILT, type FramePortOptions } from '../index.ts';

export type TapIoMode = 'io_uring' | 'loops';

/** The modes this build can run: both with liburing, else the loops only. */
export const TAP_IO_MODES: TapIoMode[] = TAP_IO_URING_BUILT ? ['io_uring', 'loops'] : ['loops'];

/** A port on `fd` made in `mode`; the environment is left as it was. */
export function portInMode(fd: number, mode: TapIoMode, opts: FramePortOptions = {}): FramePort {
  const saved = process.env.FLEET_TAP_IO_URING;
  if (mode === 'loops') process.env.FLEET_TAP_IO_URING = '0';
  else delete process.env.FLEET_TAP_IO_URING;
  try {
    return new FramePort(fd, opts);
  } finally {
    if (saved === undefined) delete process.env.FLEET_TAP_IO_URING;
    else process.env.FLEET_TAP_IO_URING = saved;
  }
}
