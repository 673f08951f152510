// `fleet events`: the fleet-wide event log and audit trail.
import type { Command } from 'commander';
import type { EventObject } from '@fleet/api';
import { formatTimestamp } from '../output/durations.ts';
import { dash } from '../output/table.ts';
import type { Runtime } from '../runtime.ts';
import { parseInteger, validateName } from '../validate.ts';

/** One event as a log line: `2025-01-02T15:04:05Z  vm.state        pending → scheduled ...`. */
export function formatEventLine(rt: Runtime, e: EventObject): string {
  return `${formatTimestamp(e.at)}  ${rt.colors.level(e.level, e.kind.padEnd(14))}  ${e.message}`;
}

export function printEventLine(rt: Runtime, e: EventObject, indent = ''): void {
  rt.out(indent + formatEventLine(rt, e));
}

export function registerEventCommands(program: Command, rt: Runtime): void {
  program
    .command('events')
    .option('--vm <name>', "only this VM's events")
    .option('--worker <name>', "only this worker's events")
    .option('--kind <kind>', 'only this kind, e.g. vm.state, worker.offline, token.created')
    .option('--actor <actor>', 'only events caused by this actor, e.g. token:admin')
    .option('--limit <n>', 'at most N events (1-1000)', '50')
    .description('show fleet-wide events and the audit trail, newest first')
    .action(async (o: { vm?: string; worker?: string; kind?: string; actor?: string; limit: string }, cmd: Command) => {
      if (o.vm !== undefined) validateName(o.vm, 'VM');
      if (o.worker !== undefined) validateName(o.worker, 'worker');
      const limit = parseInteger(o.limit, '--limit', 1, 1000);
      const page = await rt.client(cmd).events({ vm: o.vm, worker: o.worker, kind: o.kind, actor: o.actor, limit });
      if (rt.isJson(cmd)) return rt.json(page);
      if (page.events.length === 0) return rt.note('No events found.');
      rt.table(
        ['TIME', 'KIND', 'VM', 'ACTOR', 'MESSAGE'],
        page.events.map((e) => [formatTimestamp(e.at), rt.colors.level(e.level, e.kind), dash(e.vm), e.actor, e.message]),
      );
      if (page.nextCursor !== null) rt.note(`(more events: raise --limit, or use --json and the API's ?cursor=${page.nextCursor})`);
    });
}
