// `fleet vm delete`: one or more VMs, optionally waiting until they are gone.
import type { Command } from 'commander';
import type { VmObject } from '@fleet/api';
import { ApiError, ExitCode, ReportedError, describeError } from '../../errors.ts';
import { formatAge, formatDuration } from '../../output/durations.ts';
import type { Runtime } from '../../runtime.ts';
import { validateName } from '../../validate.ts';
import { DEFAULT_WAIT_MS, isInterrupt, waitMs } from './shared.ts';
import { waitForDeletion } from './wait.ts';

export function registerVmDelete(vm: Command, rt: Runtime): void {
  vm.command('delete')
    .alias('rm')
    .argument('<names...>', 'one or more VM names')
    .option('--wait [duration]', `wait until each VM is gone; default ${formatAge(DEFAULT_WAIT_MS)}`)
    .option('--ignore-missing', 'a VM that does not exist is not an error')
    .description('delete VMs (their workers stop and remove them)')
    .action(async (names: string[], o: { wait?: string | boolean; ignoreMissing?: boolean }, cmd: Command) => {
      for (const n of names) validateName(n, 'VM');
      const wait = waitMs(o.wait);
      const json = rt.isJson(cmd);
      const client = rt.client(cmd);
      const results: { name: string; result: 'deleted' | 'deleting' | 'not-found' | 'error'; vm: VmObject | null; error?: string }[] = [];
      const failures: ExitCode[] = [];
      const fail = (n: string, err: unknown) => {
        if (isInterrupt(rt, err)) throw err;
        const { exitCode, message } = describeError(err);
        rt.warn(message);
        results.push({ name: n, result: 'error', vm: null, error: message });
        failures.push(exitCode);
      };
      for (const n of names) {
        try {
          const r = await client.deleteVm(n);
          if (r.status === 202 && wait !== null) {
            if (!json) rt.note(`vm "${n}" is being deleted; waiting up to ${formatDuration(wait)}`);
            await waitForDeletion(rt, client, n, wait);
            results.push({ name: n, result: 'deleted', vm: null });
            if (!json) rt.out(`vm "${n}" deleted`);
          } else if (r.status === 202) {
            results.push({ name: n, result: 'deleting', vm: r.vm });
            if (!json) rt.out(`vm "${n}" is being deleted (its worker removes it)`);
          } else {
            results.push({ name: n, result: 'deleted', vm: null });
            if (!json) rt.out(`vm "${n}" deleted`);
          }
        } catch (err) {
          if (err instanceof ApiError && err.status === 404 && o.ignoreMissing) {
            results.push({ name: n, result: 'not-found', vm: null });
            if (!json) rt.note(`vm "${n}" not found (ignored)`);
            continue;
          }
          fail(n, err);
        }
      }
      if (json) rt.json({ results });
      if (failures.length > 0) throw new ReportedError(failures[0]!);
    });
}
