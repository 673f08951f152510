// `fleet vm logs`: a VM's events, optionally followed.
import type { Command } from 'commander';
import type { EventObject } from '@fleet/api';
import { UnreachableError } from '../../errors.ts';
import { sleep } from '../../io.ts';
import type { Runtime } from '../../runtime.ts';
import { parseInteger, validateName } from '../../validate.ts';
import { printEventLine } from '../events.ts';
import { isInterrupt } from './shared.ts';

const LOG_POLL_MS = 1_000;

export function registerVmLogs(vm: Command, rt: Runtime): void {
  vm.command('logs')
    .argument('<name>', 'VM name')
    .option('-f, --follow', 'keep printing new events until interrupted (or the VM is deleted)')
    .option('--limit <n>', 'only the last N events')
    .description("print a VM's events, oldest first")
    .action(async (name: string, o: { follow?: boolean; limit?: string }, cmd: Command) => {
      validateName(name, 'VM');
      const limit = o.limit !== undefined ? parseInteger(o.limit, '--limit', 1, 1000) : undefined;
      const json = rt.isJson(cmd);
      const client = rt.client(cmd);
      let events: EventObject[] = [];
      if (limit !== undefined) {
        events = (await client.vmEvents(name, { order: 'desc', limit })).events.reverse();
      } else {
        let cursor: number | undefined;
        for (;;) {
          const page = await client.vmEvents(name, { order: 'asc', limit: 1000, cursor });
          events.push(...page.events);
          if (page.nextCursor === null || page.events.length === 0) break;
          cursor = page.nextCursor;
        }
      }
      if (!o.follow) {
        if (json) rt.json({ events });
        else if (events.length === 0) rt.note(`No events for vm "${name}".`);
        else for (const e of events) printEventLine(rt, e);
        return;
      }
      const print = (e: EventObject) => (json ? rt.jsonLine(e) : printEventLine(rt, e));
      for (const e of events) print(e);
      let lastId = events.at(-1)?.id;
      if (events.at(-1)?.kind === 'vm.deleted') {
        if (!json) rt.note(`vm "${name}" was deleted; nothing more to follow`);
        return;
      }
      let lost = false;
      try {
        for (;;) {
          await sleep(LOG_POLL_MS, rt.signal);
          let page;
          try {
            page = await client.vmEvents(name, { order: 'asc', limit: 1000, cursor: lastId });
          } catch (err) {
            if (err instanceof UnreachableError) {
              if (!lost) rt.warn(`${err.message} (retrying)`);
              lost = true;
              continue;
            }
            throw err;
          }
          lost = false;
          for (const e of page.events) {
            print(e);
            lastId = e.id;
            if (e.kind === 'vm.deleted') {
              if (!json) rt.note(`vm "${name}" was deleted; nothing more to follow`);
              return;
            }
          }
        }
      } catch (err) {
        if (isInterrupt(rt, err)) return; // Ctrl-C ends a follow normally
        throw err;
      }
    });
}
