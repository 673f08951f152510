// `fleet controller list|status` (alias `fleet controllers`): the fleet's controllers (issue 13).
// Several controllers may share one PostgreSQL database; one is the leader (scheduler and worker
// liveness), every one serves the API and worker streams. A single SQLite controller lists itself,
// the leader.
import type { Command } from 'commander';
import type { ControllerObject } from '@fleet/api';
import type { HealthReport } from '../client/api-client.ts';
import { ApiError, CliError, ExitCode, ReportedError } from '../errors.ts';
import { formatTimestamp, relativeTime } from '../output/durations.ts';
import type { Runtime } from '../runtime.ts';

export function controllerRows(rt: Runtime, controllers: ControllerObject[]): { headers: string[]; rows: string[][] } {
  const now = rt.now();
  const headers = ['NAME', 'ROLE', 'ALIVE', 'WORKERS', 'VERSION', 'API', 'GRPC', 'LAST SEEN'];
  const rows = controllers.map((c) => [
    c.name,
    c.role === 'leader' ? rt.colors.bold(c.role) : c.role,
    c.alive ? rt.colors.green('yes') : rt.colors.red('no'),
    String(c.connectedWorkers),
    c.version,
    c.apiUrl,
    c.grpcAddress,
    // Written by that controller's clock: a small skew may read "in 1s".
    relativeTime(c.lastSeenAt, now),
  ]);
  return { headers, rows };
}

function storageLine(rt: Runtime, h: HealthReport): string {
  const s = h.checks.storage;
  if (s.ok) return rt.colors.green('ok');
  const since = s.since ? ` since ${formatTimestamp(s.since)} (${relativeTime(s.since, rt.now())})` : '';
  const why = [s.code, s.error].filter(Boolean).join(': ');
  return `${rt.colors.red('degraded')}: the database cannot take writes${since}${why ? `; ${why}` : ''}`;
}

function statusDetails(rt: Runtime, url: string, h: HealthReport): [string, string][] {
  const c = h.controller;
  const pairs: [string, string][] = [['URL', url]];
  if (!c) {
    pairs.push(['Controller', 'not reported (a controller older than several-controller support)']);
  } else {
    pairs.push(['Controller', `${c.name} (${c.role === 'leader' ? rt.colors.bold('leader') : 'follower'})`]);
    // The leader's name as this controller last saw it; null while the lease is free.
    const leader = c.role === 'leader' ? `${c.name} (this one)` : (c.leader ?? rt.colors.yellow('none right now: a controller takes over when the leader lease runs out'));
    pairs.push(['Leader', leader]);
    pairs.push(['Controller ID', c.id]);
  }
  pairs.push(['Storage', storageLine(rt, h)]);
  return pairs;
}

export function registerControllerCommands(program: Command, rt: Runtime): void {
  const controller = program
    .command('controller')
    .alias('controllers')
    .description('list the fleet\'s controllers (leader, liveness, worker streams) and show which one answers');

  controller
    .command('list', { isDefault: true })
    .alias('ls')
    .description('list the controllers sharing this fleet\'s database (the default: "fleet controllers")')
    .action(async (_o: unknown, cmd: Command) => {
      const client = rt.client(cmd);
      let items: ControllerObject[];
      try {
        ({ items } = await client.listControllers());
      } catch (err) {
        // The route came with issue 13; an older controller answers 404 for it.
        if (err instanceof ApiError && err.status === 404) {
          throw new CliError(`the controller at ${client.url} does not list controllers (GET /v1/controllers: ${err.message}); it predates several-controller support`, ExitCode.NOT_FOUND, { cause: err });
        }
        throw err;
      }
      rt.render(cmd, {
        json: { controllers: items },
        items,
        name: (c) => c.name,
        empty: 'The controller lists no controllers.',
        human: () => {
          const { headers, rows } = controllerRows(rt, items);
          rt.table(headers, rows);
        },
      });
    });

  controller
    .command('status')
    .description('which controller answers, its role, the leader and storage health (GET /v1/health, no token needed); exit 1 while degraded')
    .action(async (_o: unknown, cmd: Command) => {
      const client = rt.client(cmd);
      const report = await client.health();
      if (typeof report !== 'object' || report === null || (report.status !== 'ok' && report.status !== 'degraded') || !report.checks?.storage) {
        throw new CliError(`${client.url} answered GET /v1/health with something that is not a health report; is it a Fleet controller?`, ExitCode.ERROR);
      }
      if (rt.isJson(cmd)) rt.json({ url: client.url, ...report });
      else rt.keyValues(statusDetails(rt, client.url, report));
      // Scripts and probes can rely on the exit code; the report is already printed.
      if (report.status !== 'ok') throw new ReportedError(ExitCode.ERROR);
    });
}
