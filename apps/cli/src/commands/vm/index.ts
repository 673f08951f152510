// `fleet vm create|list|get|update|delete|logs|watch` (and `fleet ip`): one module per subcommand.
import type { Command } from 'commander';
import type { Runtime } from '../../runtime.ts';
import { registerVmCreate } from './create.ts';
import { registerVmDelete } from './delete.ts';
import { registerVmGet } from './get.ts';
import { registerVmIp } from './ip.ts';
import { registerVmList } from './list.ts';
import { registerVmLogs } from './logs.ts';
import { registerVmUpdate } from './update.ts';
import { registerVmWatch } from './watch.ts';

export { buildVmCreate } from './create.ts';
export { pullOf, vmRows } from './views.ts';
export { waitForVm, type WaitGoal } from './wait.ts';
export { watchLine } from './watch.ts';

export function registerVmCommands(program: Command, rt: Runtime): void {
  const vm = program.command('vm').description('create, list, inspect, change, delete and watch VMs');
  registerVmCreate(vm, rt);
  registerVmList(vm, rt);
  registerVmGet(vm, rt);
  registerVmIp(program, rt);
  registerVmUpdate(vm, rt);
  registerVmDelete(vm, rt);
  registerVmLogs(vm, rt);
  registerVmWatch(vm, rt);
}
