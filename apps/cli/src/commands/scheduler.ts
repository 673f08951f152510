// `fleet scheduler get|set`: the fleet-wide placement profile.
import type { Command } from 'commander';
import type { Runtime } from '../runtime.ts';
import { parseChoice } from '../validate.ts';

const PROFILES = ['pack', 'spread'] as const;

export function registerSchedulerCommands(program: Command, rt: Runtime): void {
  const scheduler = program.command('scheduler').description('show or set the scheduler profile (pack or spread)');

  scheduler
    .command('get')
    .description('print the scheduler profile')
    .action(async (_o: unknown, cmd: Command) => {
      const s = await rt.client(cmd).getScheduler();
      if (rt.isJson(cmd)) return rt.json(s);
      rt.out(s.profile);
    });

  scheduler
    .command('set')
    .argument('<profile>', 'pack (fill busy workers first) or spread (even out the load)')
    .description('set the scheduler profile (admin)')
    .action(async (profile: string, _o: unknown, cmd: Command) => {
      const s = await rt.client(cmd).setScheduler({ profile: parseChoice(profile, 'profile', PROFILES) });
      if (rt.isJson(cmd)) return rt.json(s);
      rt.out(`scheduler profile set to ${s.profile}`);
    });
}
