// `fleet vm list`.
import type { Command } from 'commander';
import { parseChoice, validateName, VM_STATES } from '../../validate.ts';
import type { Runtime } from '../../runtime.ts';
import { vmRows } from './views.ts';

export function registerVmList(vm: Command, rt: Runtime): void {
  vm.command('list')
    .alias('ls')
    .option('--state <state>', `only VMs in this state (${VM_STATES.join(', ')})`)
    .option('--worker <name>', 'only VMs on this worker')
    .option('--wide', 'more columns, including why a VM is pending (the same as -o wide)')
    .description('list VMs')
    .action(async (o: { state?: string; worker?: string }, cmd: Command) => {
      if (o.state !== undefined) parseChoice(o.state, '--state', VM_STATES);
      if (o.worker !== undefined) validateName(o.worker, 'worker');
      const { vms } = await rt.client(cmd).listVms({ state: o.state, worker: o.worker });
      rt.render(cmd, {
        json: { vms },
        items: vms,
        name: (v) => v.name,
        empty: 'No VMs found.',
        human: (wide) => {
          const { headers, rows } = vmRows(rt, vms, wide);
          rt.table(headers, rows);
        },
      });
    });
}
