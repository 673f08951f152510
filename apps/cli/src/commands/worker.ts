// `fleet worker list|get|drain|resume|delete`.
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import type { VmObject, WorkerObject } from '@fleet/api';
import { CliError, ExitCode, UsageError } from '../errors.ts';
import { ageOf, formatTimestamp, relativeTime } from '../output/durations.ts';
import { formatMib } from '../output/sizes.ts';
import { dash, formatLabels } from '../output/table.ts';
import type { Runtime } from '../runtime.ts';
import { validateName } from '../validate.ts';
import { vmRows } from './vm/views.ts';

function status(rt: Runtime, w: WorkerObject): string {
  return rt.colors.state(w.status) + (w.paused ? ',drained' : '');
}

export function workerRows(rt: Runtime, workers: WorkerObject[], wide: boolean): { headers: string[]; rows: string[][] } {
  const now = rt.now();
  const headers = ['NAME', 'STATUS', 'VMS', 'MACOS', 'CPUS', 'MEMORY', 'LAST SEEN', 'AGE'];
  if (wide) headers.push('HOSTNAME', 'OS/ARCH', 'VERSION', 'DRIVERS', 'LABELS');
  const rows = workers.map((w) => {
    const row = [
      w.name,
      status(rt, w),
      `${w.used.vms}/${w.capacity.vmSlots}`,
      `${w.used.macosVms}/${w.capacity.macosSlots}`,
      `${w.used.cpus}/${w.capacity.cpus}`,
      `${formatMib(w.used.memoryMib)}/${formatMib(w.capacity.memoryMib)}`,
      w.lastSeenAt ? relativeTime(w.lastSeenAt, now) : 'never',
      ageOf(w.createdAt, now),
    ];
    if (wide) row.push(dash(w.hostname), `${w.os}/${w.arch}`, dash(w.version), w.drivers.join(',') || '-', formatLabels(w.labels));
    return row;
  });
  return { headers, rows };
}

/** VM addresses of the worker's NAT network: one per VM it holds, in any power state. */
function addressUse(w: WorkerObject): string {
  // A controller that predates the field sends neither number.
  const total = w.capacity.natAddresses ?? 0;
  const used = w.used.natAddresses ?? w.used.vms;
  if (total <= 0) return 'not limited (the worker reports no NAT address pool)';
  const full = used >= total ? ': none free, no new VMs here until a VM on it is deleted' : '';
  return `${used} of ${total} in use (one per NAT VM the worker holds, stopped ones included)${full}`;
}

/** Issue 18: one line per network the worker offers; none reported = NAT only (older workers). */
function networkLines(w: WorkerObject): [string, string][] {
  // A controller that predates the field sends none.
  const networks = w.networks ?? [];
  if (networks.length === 0) return [['Networks', 'not reported: NAT only (an older worker, or the synthetic driver)']];
  return networks.map((n) => {
    const pool = n.addresses > 0 ? `${n.used} of ${n.addresses} addresses in use` : `${n.used} addresses in use (not limited)`;
    return [`Network ${n.mode}`, `${n.subnet}, gateway ${n.gateway}${n.interface ? ` on ${n.interface}` : ''}; ${pool}`];
  });
}

function workerDetails(rt: Runtime, w: WorkerObject): [string, string][] {
  const now = rt.now();
  const when = (iso: string | null) => (iso ? `${formatTimestamp(iso)} (${relativeTime(iso, now)})` : 'never');
  return [
    ['Name', w.name],
    ['Status', `${rt.colors.state(w.status)}${w.connected ? ' (connected)' : ' (not connected)'}`],
    ['Drained', w.paused ? 'yes: keeps its VMs, gets no new ones ("fleet worker resume" undoes it)' : 'no'],
    ['Hostname', dash(w.hostname)],
    ['OS/arch', `${w.os}/${w.arch}`],
    ['Version', dash(w.version)],
    ['Drivers', w.drivers.join(', ') || '-'],
    ['Labels', formatLabels(w.labels)],
    ['VMs', `${w.used.vms} of ${w.capacity.vmSlots} slots`],
    ['macOS VMs', `${w.used.macosVms} of ${w.capacity.macosSlots} slots`],
    ['VM addresses', addressUse(w)],
    ...networkLines(w),
    ['CPUs', `${w.used.cpus} of ${w.capacity.cpus} in use`],
    ['Memory', `${formatMib(w.used.memoryMib)} of ${formatMib(w.capacity.memoryMib)} in use`],
    ['Last seen', when(w.lastSeenAt)],
    ['Enrolled', when(w.createdAt)],
    ['Certificate', w.certificateExpiresAt ? `expires ${when(w.certificateExpiresAt)}; renewed automatically before` : 'none valid: re-enroll this worker'],
    ['ID', w.id],
  ];
}

async function confirm(rt: Runtime, question: string): Promise<boolean> {
  const stdin = rt.io.stdin;
  if (!stdin) return false;
  rt.io.stderr.write(question);
  const rl = createInterface({ input: stdin, terminal: false });
  try {
    const answer = await new Promise<string>((resolve) => {
      rl.once('line', resolve);
      rl.once('close', () => resolve(''));
      rt.signal?.addEventListener('abort', () => resolve(''), { once: true });
    });
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}

export function registerWorkerCommands(program: Command, rt: Runtime): void {
  const worker = program.command('worker').description('list, inspect, drain, resume and delete workers (the Mac hosts)');

  worker
    .command('list')
    .alias('ls')
    .option('--wide', 'more columns: hostname, OS, version, drivers, labels (the same as -o wide)')
    .description('list workers with their capacity and use')
    .action(async (_o: unknown, cmd: Command) => {
      const { workers } = await rt.client(cmd).listWorkers();
      rt.render(cmd, {
        json: { workers },
        items: workers,
        name: (w) => w.name,
        empty: 'No workers enrolled; create a bootstrap token with "fleet bootstrap-token create".',
        human: (wide) => {
          const { headers, rows } = workerRows(rt, workers, wide);
          rt.table(headers, rows);
        },
      });
    });

  worker
    .command('get')
    .argument('<name>', 'worker name')
    .description('show a worker and the VMs placed on it (-o wide: the VMs as a table with IP, size and image)')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      validateName(name, 'worker');
      const client = rt.client(cmd);
      const w = await client.getWorker(name);
      const format = rt.output(cmd);
      if (format === 'json') return rt.json(w);
      if (format === 'name') return rt.out(w.name);
      rt.keyValues(workerDetails(rt, w));
      let vms: VmObject[] = [];
      try {
        vms = (await client.listVms({ worker: name })).vms;
      } catch {
        // the worker itself was shown
      }
      if (vms.length > 0) {
        rt.out(`\nVMs (${vms.length}):`);
        if (rt.isWide(cmd)) {
          const { headers, rows } = vmRows(rt, vms, false);
          rt.table(headers, rows);
        } else for (const v of vms) rt.out(`  ${v.name.padEnd(24)} ${rt.colors.state(v.state)}`);
      }
    });

  worker
    .command('drain')
    .argument('<name>', 'worker name')
    .description('stop placing new VMs on a worker; the VMs it runs keep running')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      validateName(name, 'worker');
      const w = await rt.client(cmd).drainWorker(name);
      if (rt.isJson(cmd)) return rt.json(w);
      rt.out(`worker "${w.name}" drained: it keeps its ${w.used.vms} VM(s) and gets no new ones`);
    });

  worker
    .command('resume')
    .argument('<name>', 'worker name')
    .description('let the scheduler place VMs on a drained worker again')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      validateName(name, 'worker');
      const w = await rt.client(cmd).resumeWorker(name);
      if (rt.isJson(cmd)) return rt.json(w);
      rt.out(`worker "${w.name}" resumed: new VMs can be placed on it`);
    });

  worker
    .command('delete')
    .alias('rm')
    .argument('<name>', 'worker name')
    .option('-y, --yes', 'do not ask for confirmation (required when stdin is not a terminal)')
    .option('--force', 'delete even while the worker is not yet offline or holds VMs in state unknown (only when the host is gone for good: its VMs would otherwise run twice)')
    .description("remove a worker: revokes its credential; its VMs fail and are rescheduled per their restart policy")
    .action(async (name: string, o: { yes?: boolean; force?: boolean }, cmd: Command) => {
      validateName(name, 'worker');
      const client = rt.client(cmd);
      if (!o.yes) {
        if (!rt.io.stdin?.isTTY) {
          throw new UsageError(`refusing to delete worker "${name}" without --yes (it revokes the worker's credential and fails its VMs)`);
        }
        const ok = await confirm(rt, `Delete worker "${name}"? Its credential is revoked and its VMs fail (and are rescheduled per their restart policy). [y/N] `);
        if (!ok) throw new CliError(`worker "${name}" not deleted`, ExitCode.ERROR);
      }
      await client.deleteWorker(name, { force: o.force === true });
      if (rt.isJson(cmd)) return rt.json({ deleted: name });
      rt.out(`worker "${name}" deleted; its credential is revoked (re-enroll the host with a bootstrap token to bring it back)`);
    });
}
