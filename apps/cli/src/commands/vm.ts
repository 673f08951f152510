// `fleet vm create|list|get|update|delete|logs|watch`.
import type { Command } from 'commander';
import type { EventObject, VmCreate, VmObject, VmUpdate } from '@fleet/controller/api-schemas';
import type { ApiClient, VmWatchEvent } from '../client/api-client.ts';
import type { TransferProgress } from '../client/image-types.ts';
import { ApiError, ExitCode, InterruptedError, ReportedError, UnreachableError, UsageError, WaitFailedError, describeError } from '../errors.ts';
import { sleep } from '../io.ts';
import { ageOf, formatAge, formatDuration, formatTimestamp, parseDuration, relativeTime } from '../output/durations.ts';
import { formatProgressShort, progressDisplayFor, type ProgressDisplay } from '../output/progress.ts';
import { formatGib, formatMib, parseDiskGib, parseMemoryMib } from '../output/sizes.ts';
import { dash, formatLabels } from '../output/table.ts';
import type { Runtime } from '../runtime.ts';
import {
  VM_STATES,
  applyLabelEdits,
  collect,
  parseChoice,
  parseInteger,
  parseLabelEdits,
  parseLabels,
  validateName,
  validateUsername,
} from '../validate.ts';
import { printEventLine } from './events.ts';
import { readPassword, type PasswordOptions } from './vm-password.ts';

/** The drivers the API accepts (VmCreate.driver; '' means any). */
const DRIVERS = ['synthetic', 'qemu', 'vz'] as const;
const DEFAULT_WAIT_MS = 5 * 60_000;
/** After a VM is running without an IP, how long --wait keeps listening for one. */
const IP_GRACE_MS = 15_000;
const LOG_POLL_MS = 1_000;

function waitMs(value: string | boolean | undefined): number | null {
  if (value === undefined || value === false) return null;
  if (value === true) return DEFAULT_WAIT_MS;
  const ms = parseDuration(value, '--wait');
  if (ms <= 0) throw new UsageError(`invalid --wait "${value}": must be more than 0`);
  return ms;
}

function isInterrupt(rt: Runtime, err: unknown): boolean {
  return err instanceof InterruptedError || rt.signal?.aborted === true;
}

// ---------------------------------------------------------------- views

export function vmRows(rt: Runtime, vms: VmObject[], wide: boolean): { headers: string[]; rows: string[][] } {
  const now = rt.now();
  const c = rt.colors;
  const headers = ['NAME', 'STATE', 'WORKER', 'IP', 'CPUS', 'MEMORY', 'AGE'];
  if (wide) headers.push('OS', 'DRIVER', 'IMAGE', 'PRIORITY', 'RESTARTS', 'LABELS', 'REASON');
  const rows = vms.map((vm) => {
    const row = [vm.name, c.state(vm.state), dash(vm.worker), dash(vm.ip), String(vm.cpus), formatMib(vm.memoryMib), ageOf(vm.createdAt, now)];
    if (wide) {
      row.push(vm.os, vm.driver || 'any', vm.image, String(vm.priority), String(vm.restartCount), formatLabels(vm.labels), dash(vm.reason));
    }
    return row;
  });
  return { headers, rows };
}

/** The pull in progress on a VM (issue 15): null when none, or from a controller without the field. */
export function pullOf(vm: VmObject): TransferProgress | null {
  return vm.pull ?? null;
}

function vmDetails(rt: Runtime, vm: VmObject): [string, string][] {
  const now = rt.now();
  const when = (iso: string | null) => (iso ? `${formatTimestamp(iso)} (${relativeTime(iso, now)})` : '-');
  const digest = vm.imageDigest;
  const pull = pullOf(vm);
  const pairs: [string, string][] = [
    ['Name', vm.name],
    ['State', rt.colors.state(vm.state)],
    ['Reason', dash(vm.reason)],
    ['Worker', dash(vm.worker)],
    ['IP', dash(vm.ip)],
    ['MAC', dash(vm.mac)],
    ['Image', vm.image],
    ['Image digest', digest ? `${digest}${vm.image.includes('@') ? '' : ' (the tag as resolved at create; every attempt runs it)'}` : '- (a local image)'],
    ...(pull ? ([['Pull', `${formatProgressShort(pull)} on ${dash(vm.worker)}`]] as [string, string][]) : []),
    ['OS', vm.os],
    ['Driver', vm.driver || 'any'],
    ['CPUs', String(vm.cpus)],
    ['Memory', formatMib(vm.memoryMib)],
    ['Disk', formatGib(vm.diskGib)],
    ['Username', dash(vm.username)],
    ['Password', vm.passwordSet ? 'set (sessions try the fleet key first, then the password)' : 'none (the fleet key only)'],
    ['Labels', formatLabels(vm.labels)],
    ['Selector', formatLabels(vm.selector)],
    ['Network', formatNetwork(vm.network)],
    ...(vm.networkCounters ? ([['Filter', formatCounters(vm.networkCounters)]] as [string, string][]) : []),
    ['Priority', String(vm.priority)],
    ['Restart policy', `${vm.restartPolicy} (restarts: ${vm.restartCount})`],
    ['On disconnect', vm.disconnectPolicy === 'wait' ? 'wait (keeps running while its worker is unreachable)' : 'reschedule (stopped by its worker, re-placed after the offline timeout)'],
    ['Power', `${vm.powerState} (desired)`],
    ['Generation', `${vm.generation} (observed ${vm.observedGeneration})`],
    ['Created', `${when(vm.createdAt)} by ${vm.createdBy}`],
    ['Scheduled', when(vm.scheduledAt)],
    ['Running since', when(vm.runningAt)],
  ];
  if (vm.restartAt) pairs.push(['Restart at', when(vm.restartAt)]);
  pairs.push(['ID', vm.id]);
  return pairs;
}

function formatNetwork(n: VmObject['network']): string {
  const parts = ['public addresses'];
  if (n.allow.length) parts.push(`allow ${n.allow.join(', ')}`);
  if (n.block.length) parts.push(`block ${n.block.join(', ')}`);
  if (n.blockLocal) parts.push('block-local (restricted ingress)');
  return parts.join('; ');
}

/** "out 120 passed, 3 dropped (ip_spoof 3); in 98 passed" */
function formatCounters(c: NonNullable<VmObject['networkCounters']>): string {
  const side = (label: string, m: Record<string, number>): string => {
    const { pass = 0, ...drops } = m;
    const dropped = Object.entries(drops).sort((a, b) => b[1] - a[1]);
    const total = dropped.reduce((n, [, v]) => n + v, 0);
    return `${label} ${pass} passed, ${total} dropped${total ? ` (${dropped.map(([k, v]) => `${k} ${v}`).join(', ')})` : ''}`;
  };
  return `${side('from VM', c.fromVm)}; ${side('to VM', c.fromHost)}`;
}

function describe(vm: VmObject): string {
  return vm.reason ? `${vm.state}: ${vm.reason}` : vm.state;
}

// ---------------------------------------------------------------- waiting

export type WaitGoal = 'running' | 'stopped';

/**
 * Watches a VM until it reaches `goal` (for `running`: with an IP, or without
 * one after a short grace period). Fails with WaitFailedError when it fails
 * without a restart planned, is deleted, or the deadline passes. Reconnects
 * when the stream drops.
 */
export async function waitForVm(
  rt: Runtime,
  client: ApiClient,
  name: string,
  goal: WaitGoal,
  timeoutMs: number,
  progress: (line: string) => void,
  opts: { requireIp?: boolean; display?: ProgressDisplay | null } = {},
): Promise<VmObject> {
  const deadline = Date.now() + timeoutMs;
  let last: VmObject | null = null;
  let shown = '';
  let lostConnection: UnreachableError | null = null;
  // While the worker pulls the VM's image (issue 15) the reason changes with every percent: the
  // pull is drawn as a bar (lines every 10 % off a terminal) instead of one line per change.
  let pulling: { label: string; last: TransferProgress } | null = null;
  const show = (vm: VmObject) => {
    const pull = pullOf(vm);
    const display = opts.display;
    if (pull) {
      const label = `pulling ${vm.image}`;
      if (display) display.update([{ key: 'pull', label, progress: pull }]);
      else if (!pulling) progress(`  ${label}`);
      pulling = { label, last: pull };
      shown = '';
      return;
    }
    if (pulling) {
      // The pull ended: complete when the VM moved on to start, as last seen otherwise.
      const moved = vm.state === 'starting' || vm.state === 'running';
      const total = pulling.last.bytesTotal;
      display?.end(moved && total > 0 ? [{ key: 'pull', label: pulling.label, progress: { bytesDone: total, bytesTotal: total, percent: 100 }, status: 'done' }] : undefined);
      pulling = null;
    }
    const line = describe(vm);
    if (line !== shown) progress(`  ${line}`);
    shown = line;
  };
  const timedOut = () =>
    new WaitFailedError(
      `timed out after ${formatDuration(timeoutMs)} waiting for vm "${name}" to be ${goal}${last ? `; it is ${describe(last)}` : ''}`,
      last,
    );
  try {
    return await watchUntil();
  } finally {
    // A wait that ends mid-pull (failure, timeout, Ctrl-C) leaves the bar as last drawn.
    if (pulling) opts.display?.end();
  }

  async function watchUntil(): Promise<VmObject> {
    for (;;) {
      if (Date.now() >= deadline) {
        if (lostConnection) throw lostConnection;
        throw timedOut();
      }
      const stop = new AbortController();
      let stopTimer = setTimeout(() => stop.abort(), deadline - Date.now());
      let graceStarted = false;
      try {
        for await (const ev of client.watchVm(name, { stop: stop.signal })) {
          lostConnection = null;
          if (ev.type === 'DELETED') throw new WaitFailedError(`vm "${name}" was deleted while waiting for it to be ${goal}`, ev.vm);
          const vm = ev.vm;
          last = vm;
          show(vm);
          if (vm.state === goal) {
            if (goal !== 'running' || vm.ip) return vm;
            if (!graceStarted && !opts.requireIp) {
              graceStarted = true;
              clearTimeout(stopTimer);
              stopTimer = setTimeout(() => stop.abort(), Math.max(0, Math.min(IP_GRACE_MS, deadline - Date.now())));
            }
            continue;
          }
          if (vm.state === 'failed') {
            if (vm.restartAt) {
              progress(`  failed; restarting ${relativeTime(vm.restartAt, Date.now())} (restart policy on-failure)`);
              continue;
            }
            throw new WaitFailedError(`vm "${name}" failed: ${vm.reason || 'no reason given'}`, vm);
          }
          if (vm.state === 'deleting') throw new WaitFailedError(`vm "${name}" is being deleted`, vm);
          if (goal === 'running' && vm.state === 'stopped' && vm.powerState === 'stopped') {
            throw new WaitFailedError(`vm "${name}" is stopped and its desired power state is stopped`, vm);
          }
        }
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          throw new WaitFailedError(`vm "${name}" was deleted while waiting for it to be ${goal}`, last);
        }
        if (!(err instanceof UnreachableError)) throw err;
        if (!lostConnection) progress(`  lost the connection to the controller (${err.message}); retrying`);
        lostConnection = err;
      } finally {
        clearTimeout(stopTimer);
      }
      // The stream ended: a grace period ran out, the deadline passed, or the controller closed it.
      if (last && last.state === goal && graceStarted) return last;
      if (!stop.signal.aborted) await sleep(Math.min(1_000, Math.max(0, deadline - Date.now())), rt.signal).catch(() => {
        throw new InterruptedError();
      });
    }
  }
}

/** Polls until GET says 404, or the deadline passes. */
async function waitForDeletion(rt: Runtime, client: ApiClient, name: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: VmObject | null = null;
  for (;;) {
    try {
      last = await client.getVm(name);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return;
      throw err;
    }
    if (Date.now() >= deadline) {
      throw new WaitFailedError(`timed out after ${formatDuration(timeoutMs)} waiting for vm "${name}" to be deleted; it is ${describe(last)}`, last);
    }
    await sleep(Math.min(500, Math.max(0, deadline - Date.now())), rt.signal).catch(() => {
      throw new InterruptedError();
    });
  }
}

// ---------------------------------------------------------------- commands

interface CreateOptions extends PasswordOptions {
  image: string;
  os?: string;
  driver?: string;
  cpus?: string;
  memory?: string;
  disk?: string;
  label?: string[];
  selector?: string[];
  priority?: string;
  restart?: string;
  onDisconnect?: string;
  username?: string;
  stopped?: boolean;
  wait?: string | boolean;
  allow?: string[];
  block?: string[];
  blockLocal?: boolean;
}

interface UpdateOptions extends PasswordOptions {
  clearPassword?: boolean;
  image?: string;
  cpus?: string;
  memory?: string;
  label?: string[];
  selector?: string[];
  priority?: string;
  restart?: string;
  onDisconnect?: string;
  start?: boolean;
  stop?: boolean;
}

export function buildVmCreate(name: string, o: CreateOptions): VmCreate {
  validateName(name, 'VM');
  if (!o.image.trim()) throw new UsageError('invalid --image "": must not be empty');
  if (o.image.length > 512) throw new UsageError('invalid --image: at most 512 characters');
  const spec: VmCreate = { name, image: o.image };
  if (o.os !== undefined) spec.os = parseChoice(o.os, '--os', ['linux', 'macos'] as const);
  if (o.driver !== undefined) spec.driver = parseChoice(o.driver, '--driver', DRIVERS);
  if (o.cpus !== undefined) spec.cpus = parseInteger(o.cpus, '--cpus', 1, 256);
  if (o.memory !== undefined) spec.memoryMib = parseMemoryMib(o.memory);
  if (o.disk !== undefined) spec.diskGib = parseDiskGib(o.disk);
  if (o.label) spec.labels = parseLabels(o.label, '--label');
  if (o.selector) spec.selector = parseLabels(o.selector, '--selector');
  if (o.priority !== undefined) spec.priority = parseInteger(o.priority, '--priority', -1000, 1000);
  if (o.restart !== undefined) spec.restartPolicy = parseChoice(o.restart, '--restart', ['never', 'on-failure'] as const);
  if (o.onDisconnect !== undefined) spec.disconnectPolicy = parseChoice(o.onDisconnect, '--on-disconnect', ['reschedule', 'wait'] as const);
  if (o.username !== undefined) spec.username = validateUsername(o.username);
  if (o.stopped) spec.powerState = 'stopped';
  if (o.allow || o.block || o.blockLocal) {
    const rules = (list: string[] | undefined, flag: string): string[] =>
      (list ?? []).map((r) => {
        if (!/^(@host|\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?)$/.test(r)) throw new UsageError(`invalid ${flag} "${r}": expected an IPv4 CIDR (10.0.0.0/8), an address, or @host`);
        return r;
      });
    spec.network = { allow: rules(o.allow, '--allow'), block: rules(o.block, '--block'), ...(o.blockLocal ? { blockLocal: true } : {}) };
  }
  return spec;
}

export function registerVmCommands(program: Command, rt: Runtime): void {
  const vm = program.command('vm').description('create, list, inspect, change, delete and watch VMs');

  vm.command('create')
    .argument('<name>', 'VM name: lower-case letters, digits and dashes')
    .requiredOption('--image <image>', "image to boot: a worker's local image name, or a registry reference (registry/repository:tag or …@sha256:…; the tag is resolved to a digest now)")
    .option('--os <os>', 'linux or macos (default linux)')
    .option('--driver <driver>', `runtime driver: ${DRIVERS.join(', ')} (default: any the worker has)`)
    .option('--cpus <n>', 'virtual CPUs')
    .option('--memory <size>', 'memory: 4G, 4096M or 4096 (MiB)')
    .option('--disk <size>', 'disk: 20G or 20 (GiB)')
    .option('--label <key=value>', 'label on the VM (repeatable)', collect)
    .option('--selector <key=value>', 'only place on workers with this label (repeatable)', collect)
    .option('--priority <n>', 'scheduling priority, -1000..1000; higher first')
    .option('--restart <policy>', 'never or on-failure')
    .option('--on-disconnect <policy>', 'while its worker is unreachable: reschedule (default: the worker stops it, it is re-placed after the offline timeout; never two at once) or wait (keeps running, nothing re-placed)')
    .option('--username <user>', 'login user inside the VM')
    .option('--password-stdin', 'read an SSH password for that user from stdin (for images that cannot take the fleet key, e.g. macOS); never given as an argument, which ps and shell history would show')
    .option('--password-file <file>', 'read the SSH password from a file (one trailing newline is removed)')
    .option('--stopped', 'create it powered off')
    .option('--allow <cidr>', 'network: also let the VM reach this prefix (default: public addresses only; "@host" = its worker, i.e. host access, off by default); repeatable', collect)
    .option('--block <cidr>', 'network: never let the VM reach this prefix; repeatable', collect)
    .option('--block-local', 'network: Anka\'s "block local": ARP only for the gateway, local sources reach the VM only when allowed')
    .option('--wait [duration]', `wait until it runs (or is stopped, with --stopped) and print its IP; default ${formatAge(DEFAULT_WAIT_MS)}`)
    .description('create a VM')
    .addHelpText(
      'after',
      `
With --wait, progress goes to stderr and the IP (if any) to stdout, so
  ip=$(fleet vm create web-1 --image ubuntu:24.04 --wait 10m)
works in scripts. Exit code 7 when the VM fails, is deleted, or the wait times out.`,
    )
    .action(async (name: string, o: CreateOptions, cmd: Command) => {
      const spec = buildVmCreate(name, o);
      const password = await readPassword(rt, o);
      if (password !== undefined) spec.password = password;
      const wait = waitMs(o.wait);
      const json = rt.isJson(cmd);
      const client = rt.client(cmd);
      const created = await client.createVm(spec);
      if (wait === null) {
        if (json) rt.json(created);
        else rt.out(`vm "${created.name}" created (${describe(created)})`);
        return;
      }
      const goal: WaitGoal = spec.powerState === 'stopped' ? 'stopped' : 'running';
      if (!json) rt.note(`vm "${created.name}" created; waiting up to ${formatDuration(wait)} for it to be ${goal}`);
      // Lines through the display, so that a pull's bar on a terminal stays below them.
      const display = progressDisplayFor(rt.io, json);
      try {
        const done = await waitForVm(rt, client, created.name, goal, wait, json ? () => {} : (l) => (display ? display.note(l) : rt.note(l)), { display });
        if (json) rt.json(done);
        else if (goal === 'running' && done.ip) rt.out(done.ip);
        else if (goal === 'running') rt.note(`  vm "${done.name}" is running on ${dash(done.worker)} but reported no IP address`);
      } catch (err) {
        if (json && err instanceof WaitFailedError && err.vm) rt.json(err.vm);
        throw err;
      }
    });

  vm.command('list')
    .alias('ls')
    .option('--state <state>', `only VMs in this state (${VM_STATES.join(', ')})`)
    .option('--worker <name>', 'only VMs on this worker')
    .option('--wide', 'more columns, including why a VM is pending')
    .description('list VMs')
    .action(async (o: { state?: string; worker?: string; wide?: boolean }, cmd: Command) => {
      if (o.state !== undefined) parseChoice(o.state, '--state', VM_STATES);
      if (o.worker !== undefined) validateName(o.worker, 'worker');
      const { vms } = await rt.client(cmd).listVms({ state: o.state, worker: o.worker });
      if (rt.isJson(cmd)) return rt.json({ vms });
      if (vms.length === 0) return rt.note('No VMs found.');
      const { headers, rows } = vmRows(rt, vms, o.wide === true);
      rt.table(headers, rows);
    });

  vm.command('get')
    .argument('<name>', 'VM name')
    .description("show a VM, why it is in its state, and its latest events")
    .action(async (name: string, _o: unknown, cmd: Command) => {
      validateName(name, 'VM');
      const client = rt.client(cmd);
      const v = await client.getVm(name);
      if (rt.isJson(cmd)) return rt.json(v);
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
        events = (await client.vmEvents(name, { order: 'desc', limit: 5 })).events.reverse();
      } catch (err) {
        if (isInterrupt(rt, err)) throw err;
        // the VM itself was shown; its events are a bonus
      }
      if (events.length > 0) {
        rt.out('\nRecent events:');
        for (const e of events) printEventLine(rt, e, '  ');
      }
    });

  program
    .command('ip')
    .argument('<name>', 'VM name')
    .description("print a VM's IP address (learned from its DHCP lease by the worker's packet filter)")
    .option('--wait [duration]', 'wait until the VM runs and has an IP (default 5m)')
    .action(async (name: string, o: { wait?: string | boolean }, cmd: Command) => {
      validateName(name, 'VM');
      const client = rt.client(cmd);
      const wait = waitMs(o.wait);
      let v = await client.getVm(name);
      if (!v.ip && wait !== null) {
        const display = progressDisplayFor(rt.io, rt.isJson(cmd));
        v = await waitForVm(rt, client, name, 'running', wait, rt.isJson(cmd) ? () => {} : (l) => (display ? display.note(l) : rt.note(l)), { requireIp: true, display });
      }
      if (rt.isJson(cmd)) return rt.json({ name: v.name, ip: v.ip ?? null, state: v.state });
      if (!v.ip) throw new WaitFailedError(`vm "${name}" has no IP yet (it is ${describe(v)}); use --wait to wait for one`, v);
      rt.out(v.ip);
    });

  vm.command('update')
    .argument('<name>', 'VM name')
    .option('--image <image>', 'new image (applied by the worker)')
    .option('--cpus <n>', 'virtual CPUs (only while pending)')
    .option('--memory <size>', 'memory: 4G, 4096M or 4096 (only while pending)')
    .option('--label <key=value>', 'set a label; key- removes it (repeatable)', collect)
    .option('--selector <key=value>', 'set a selector entry; key- removes it (repeatable; only while pending)', collect)
    .option('--priority <n>', 'scheduling priority, -1000..1000')
    .option('--restart <policy>', 'never or on-failure')
    .option('--on-disconnect <policy>', 'while its worker is unreachable: reschedule (default: the worker stops it, it is re-placed after the offline timeout; never two at once) or wait (keeps running, nothing re-placed)')
    .option('--start', 'power on (desired power state running); a failed VM is started again with a new attempt')
    .option('--stop', 'power off (desired power state stopped)')
    .option('--password-stdin', 'set a new SSH password, read from stdin')
    .option('--password-file <file>', 'set a new SSH password, read from a file')
    .option('--clear-password', 'remove the SSH password (sessions use the fleet key only)')
    .description("change a VM's spec")
    .action(async (name: string, o: UpdateOptions, cmd: Command) => {
      validateName(name, 'VM');
      if (o.start && o.stop) throw new UsageError('--start and --stop cannot be used together');
      const patch: VmUpdate = {};
      if (o.image !== undefined) {
        if (!o.image.trim()) throw new UsageError('invalid --image "": must not be empty');
        patch.image = o.image;
      }
      if (o.cpus !== undefined) patch.cpus = parseInteger(o.cpus, '--cpus', 1, 256);
      if (o.memory !== undefined) patch.memoryMib = parseMemoryMib(o.memory);
      if (o.priority !== undefined) patch.priority = parseInteger(o.priority, '--priority', -1000, 1000);
      if (o.restart !== undefined) patch.restartPolicy = parseChoice(o.restart, '--restart', ['never', 'on-failure'] as const);
      if (o.onDisconnect !== undefined) patch.disconnectPolicy = parseChoice(o.onDisconnect, '--on-disconnect', ['reschedule', 'wait'] as const);
      if (o.start) patch.powerState = 'running';
      if (o.stop) patch.powerState = 'stopped';
      if (o.clearPassword && (o.passwordStdin || o.passwordFile !== undefined)) throw new UsageError('--clear-password cannot be combined with --password-stdin or --password-file');
      const password = await readPassword(rt, o);
      if (password !== undefined) patch.password = password;
      if (o.clearPassword) patch.password = null;
      const labelEdits = o.label ? parseLabelEdits(o.label, '--label') : null;
      const selectorEdits = o.selector ? parseLabelEdits(o.selector, '--selector') : null;
      if (Object.keys(patch).length === 0 && !labelEdits && !selectorEdits) {
        throw new UsageError('nothing to update: pass at least one of --image, --cpus, --memory, --label, --selector, --priority, --restart, --start, --stop, --password-stdin, --password-file, --clear-password');
      }
      const client = rt.client(cmd);
      let updated: VmObject;
      if (labelEdits || selectorEdits) {
        // The API replaces labels and selector wholesale: merge the edits into the current ones
        // and send the version read, so a concurrent change is never overwritten (412: read again).
        for (let attempt = 1; ; attempt++) {
          const current = await client.getVm(name);
          if (labelEdits) patch.labels = applyLabelEdits(current.labels, labelEdits);
          if (selectorEdits) patch.selector = applyLabelEdits(current.selector, selectorEdits);
          try {
            updated = await client.updateVm(name, patch, { ifVersion: current.updatedAt });
            break;
          } catch (err) {
            if (!(err instanceof ApiError && err.status === 412) || attempt >= 5) throw err;
          }
        }
      } else {
        updated = await client.updateVm(name, patch);
      }
      if (rt.isJson(cmd)) return rt.json(updated);
      rt.out(`vm "${updated.name}" updated (${describe(updated)}; generation ${updated.generation})`);
    });

  vm.command('delete')
    .alias('rm')
    .argument('<names...>', 'one or more VM names')
    .option('--wait [duration]', `wait until each VM is gone; default ${formatAge(DEFAULT_WAIT_MS)}`)
    .option('--ignore-missing', 'a VM that does not exist is not an error')
    .description('delete VMs (their workers stop and remove them)')
    .action(async (names: string[], o: { wait?: string | boolean; ignoreMissing?: boolean }, cmd: Command) => {
      for (const n of names) validateName(n, 'VM');
      const wait = waitMs(o.wait);
      const json = rt.isJson(cmd);
      const client = rt.client(cmd);
      const results: { name: string; result: 'deleted' | 'deleting' | 'not-found' | 'error'; vm: VmObject | null; error?: string }[] = [];
      const failures: ExitCode[] = [];
      const fail = (n: string, err: unknown) => {
        if (isInterrupt(rt, err)) throw err;
        const { exitCode, message } = describeError(err);
        rt.warn(message);
        results.push({ name: n, result: 'error', vm: null, error: message });
        failures.push(exitCode);
      };
      for (const n of names) {
        try {
          const r = await client.deleteVm(n);
          if (r.status === 202 && wait !== null) {
            if (!json) rt.note(`vm "${n}" is being deleted; waiting up to ${formatDuration(wait)}`);
            await waitForDeletion(rt, client, n, wait);
            results.push({ name: n, result: 'deleted', vm: null });
            if (!json) rt.out(`vm "${n}" deleted`);
          } else if (r.status === 202) {
            results.push({ name: n, result: 'deleting', vm: r.vm });
            if (!json) rt.out(`vm "${n}" is being deleted (its worker removes it)`);
          } else {
            results.push({ name: n, result: 'deleted', vm: null });
            if (!json) rt.out(`vm "${n}" deleted`);
          }
        } catch (err) {
          if (err instanceof ApiError && err.status === 404 && o.ignoreMissing) {
            results.push({ name: n, result: 'not-found', vm: null });
            if (!json) rt.note(`vm "${n}" not found (ignored)`);
            continue;
          }
          fail(n, err);
        }
      }
      if (json) rt.json({ results });
      if (failures.length > 0) throw new ReportedError(failures[0]!);
    });

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
