// `fleet ip`: a VM's IP address, optionally waiting for one.
import type { Command } from 'commander';
import { WaitFailedError } from '../../errors.ts';
import { progressDisplayFor } from '../../output/progress.ts';
import type { Runtime } from '../../runtime.ts';
import { validateName } from '../../validate.ts';
import { describe, waitMs } from './shared.ts';
import { waitForVm } from './wait.ts';

export function registerVmIp(program: Command, rt: Runtime): void {
  program
    .command('ip')
    .argument('<name>', 'VM name')
    .description("print a VM's IP address (learned from its DHCP lease by the worker's packet filter)")
    .option('--wait [duration]', 'wait until the VM runs and has an IP (default 5m)')
    .action(async (name: string, o: { wait?: string | boolean }, cmd: Command) => {
      validateName(name, 'VM');
      const client = rt.client(cmd);
      const wait = waitMs(o.wait);
      let v = await client.getVm(name);
      if (!v.ip && wait !== null) {
        const display = progressDisplayFor(rt.io, rt.isJson(cmd));
        v = await waitForVm(rt, client, name, 'running', wait, rt.isJson(cmd) ? () => {} : (l) => (display ? display.note(l) : rt.note(l)), { display });
      }
      if (rt.isJson(cmd)) return rt.json({ name: v.name, ip: v.ip ?? null, state: v.state });
      if (!v.ip) throw new WaitFailedError(`vm "${name}" has no IP yet (it is ${describe(v)}); use --wait to wait for one`, v);
      rt.out(v.ip);
    });
}
