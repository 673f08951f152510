// `fleet vm watch`: a line (or NDJSON document) per VM change.
import type { Command } from 'commander';
import type { VmWatchEvent } from '../../client/api-client.ts';
import { UnreachableError, UsageError } from '../../errors.ts';
import { dash } from '../../output/table.ts';
import type { Runtime } from '../../runtime.ts';
import { parseChoice, validateName, VM_STATES } from '../../validate.ts';
import { isInterrupt } from './shared.ts';

export function registerVmWatch(vm: Command, rt: Runtime): void {
  vm.command('watch')
    .argument('[name]', 'watch only this VM')
    .option('--state <state>', 'only VMs in this state')
    .option('--worker <name>', 'only VMs on this worker')
    .description('print a line for every VM change (all VMs first), until interrupted')
    .addHelpText('after', '\nWith --json, prints one {"type":"ADDED|MODIFIED|DELETED","vm":{...}} document per line (NDJSON).')
    .action(async (name: string | undefined, o: { state?: string; worker?: string }, cmd: Command) => {
      if (name !== undefined) validateName(name, 'VM');
      if (o.state !== undefined) parseChoice(o.state, '--state', VM_STATES);
      if (o.worker !== undefined) validateName(o.worker, 'worker');
      if (name !== undefined && (o.state !== undefined || o.worker !== undefined)) {
        throw new UsageError('--state and --worker filter the list watch; they cannot be combined with a VM name');
      }
      const json = rt.isJson(cmd);
      const client = rt.client(cmd);
      const stream = name !== undefined ? client.watchVm(name) : client.watchVms({ state: o.state, worker: o.worker });
      if (!json) rt.out(watchHeader());
      try {
        for await (const ev of stream) {
          if (json) rt.jsonLine(ev);
          else rt.out(watchLine(rt, ev));
          if (name !== undefined && ev.type === 'DELETED') return;
        }
      } catch (err) {
        if (isInterrupt(rt, err)) return; // Ctrl-C ends a watch normally
        throw err;
      }
      throw new UnreachableError(`the controller at ${client.url} closed the watch stream`);
    });
}

const WATCH_WIDTHS = [8, 8, 20, 9, 14, 15] as const;

function watchHeader(): string {
  return ['TIME', 'TYPE', 'NAME', 'STATE', 'WORKER', 'IP', 'REASON'].map((h, i) => (i < WATCH_WIDTHS.length ? h.padEnd(WATCH_WIDTHS[i]!) : h)).join('  ');
}

export function watchLine(rt: Runtime, ev: VmWatchEvent): string {
  const time = new Date(rt.now()).toTimeString().slice(0, 8);
  const cells = [time, ev.type, ev.vm.name, ev.vm.state, dash(ev.vm.worker), dash(ev.vm.ip)];
  const padded = cells.map((c, i) => {
    const p = c.padEnd(WATCH_WIDTHS[i]!);
    return i === 3 ? rt.colors.state(c) + p.slice(c.length) : p;
  });
  return [...padded, dash(ev.vm.reason)].join('  ');
}
