// `fleet vm get`: a VM, its SSH host key and its latest events.
import type { Command } from 'commander';
import type { EventObject } from '@fleet/api';
import { relativeTime } from '../../output/durations.ts';
import type { Runtime } from '../../runtime.ts';
import { validateName } from '../../validate.ts';
import { printEventLine } from '../events.ts';
import { isInterrupt } from './shared.ts';
import { vmDetails } from './views.ts';

export function registerVmGet(vm: Command, rt: Runtime): void {
  vm.command('get')
    .argument('<name>', 'VM name')
    .description('show a VM, why it is in its state, and its latest events (-o wide: the last 20)')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      validateName(name, 'VM');
      const client = rt.client(cmd);
      const v = await client.getVm(name);
      const format = rt.output(cmd);
      if (format === 'json') return rt.json(v);
      if (format === 'name') return rt.out(v.name);
      // The SSH host key recorded on first use (issue 5); a bonus, like the events below.
      const hostKey: [string, string][] = [];
      try {
        const hk = (await client.request<{ fingerprint: string | null; seenAt: string | null }>('GET', `/v1/vms/${encodeURIComponent(name)}/host-key`)).data;
        if (hk) hostKey.push(['SSH host key', hk.fingerprint ? `${hk.fingerprint} (trusted on first use${hk.seenAt ? ` ${relativeTime(hk.seenAt, rt.now())}` : ''})` : '- (not seen yet this boot)']);
      } catch (err) {
        if (isInterrupt(rt, err)) throw err;
      }
      rt.keyValues([...vmDetails(rt, v), ...hostKey]);
      let events: EventObject[] = [];
      try {
        events = (await client.vmEvents(name, { order: 'desc', limit: rt.isWide(cmd) ? 20 : 5 })).events.reverse();
      } catch (err) {
        if (isInterrupt(rt, err)) throw err;
        // the VM itself was shown; its events are a bonus
      }
      if (events.length > 0) {
        rt.out('\nRecent events:');
        for (const e of events) printEventLine(rt, e, '  ');
      }
    });
}
