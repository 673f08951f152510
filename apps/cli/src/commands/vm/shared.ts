// What the `fleet vm` subcommands share: the drivers, the --wait duration, and one-line states.
import type { VmObject } from '@fleet/api';
import { InterruptedError, UsageError } from '../../errors.ts';
import { parseDuration } from '../../output/durations.ts';
import type { Runtime } from '../../runtime.ts';

/** The drivers the API accepts (VmCreate.driver; '' means any). */
export const DRIVERS = ['synthetic', 'qemu', 'vz'] as const;
export const DEFAULT_WAIT_MS = 5 * 60_000;

export function waitMs(value: string | boolean | undefined): number | null {
  if (value === undefined || value === false) return null;
  if (value === true) return DEFAULT_WAIT_MS;
  const ms = parseDuration(value, '--wait');
  if (ms <= 0) throw new UsageError(`invalid --wait "${value}": must be more than 0`);
  return ms;
}

export function isInterrupt(rt: Runtime, err: unknown): boolean {
  return err instanceof InterruptedError || rt.signal?.aborted === true;
}

export function describe(vm: VmObject): string {
  return vm.reason ? `${vm.state}: ${vm.reason}` : vm.state;
}
