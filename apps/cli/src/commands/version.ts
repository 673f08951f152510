// `fleet version`: the CLI's version and, when one is configured, the controller's.
import type { Command } from 'commander';
import type { ControllerInfo } from '@fleet/api';
import type { Runtime } from '../runtime.ts';
import { CLI_VERSION } from '../version.ts';

export function registerVersionCommand(program: Command, rt: Runtime): void {
  program
    .command('version')
    .option('--client', 'only the CLI version; do not contact the controller')
    .description("print the CLI's version and the controller's")
    .action(async (o: { client?: boolean }, cmd: Command) => {
      const json = rt.isJson(cmd);
      const target = o.client ? null : rt.target(cmd);
      if (!json) rt.out(`client:     fleet ${CLI_VERSION}`);
      let controller: ControllerInfo | null = null;
      if (target?.url) controller = await rt.clientFor(target.url, target.token, cmd).info();
      if (json) return rt.json({ client: { version: CLI_VERSION }, controller: controller ? { url: target?.url, ...controller } : null });
      if (controller && target?.url) {
        rt.out(`controller: ${controller.version} at ${target.url} (protocol v${controller.protocolVersion}, scheduler ${controller.schedulerProfile})`);
      } else if (!o.client) {
        rt.out('controller: (none configured; run "fleet login URL --token T")');
      }
    });
}
