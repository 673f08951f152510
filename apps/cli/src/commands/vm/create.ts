// `fleet vm create`: a VM from flags (and a spec file), optionally waiting until it runs.
import type { Command } from 'commander';
import type { VmCreate } from '@fleet/api';
import { NETWORK_MODES } from '@fleet/api/syntax';
import { UsageError, WaitFailedError } from '../../errors.ts';
import { formatAge, formatDuration } from '../../output/durations.ts';
import { progressDisplayFor } from '../../output/progress.ts';
import { parseDiskGib, parseMemoryMib } from '../../output/sizes.ts';
import type { Runtime } from '../../runtime.ts';
import { collect, parseChoice, parseInteger, parseLabels, validateName, validateUsername } from '../../validate.ts';
import { readPassword, type PasswordOptions } from '../vm-password.ts';
import { DEFAULT_WAIT_MS, DRIVERS, describe, waitMs } from './shared.ts';
import { checkModeAndRules, parseMac, readSpecFile } from './spec-file.ts';
import { waitForVm, type WaitGoal } from './wait.ts';

export interface CreateOptions extends PasswordOptions {
  file?: string;
  image?: string;
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
  networkMode?: string;
  mac?: string;
}

/**
 * The create body: the fields of a -f file (`base`, already checked), then the flags over them.
 * Labels and selector entries are merged key by key; a network flag replaces that part of the file's.
 */
export function buildVmCreate(name: string | undefined, o: CreateOptions, base: Partial<VmCreate> = {}): VmCreate {
  const finalName = name ?? base.name;
  if (finalName === undefined) throw new UsageError('missing the VM name: give it as the argument or as "name" in the -f file');
  validateName(finalName, 'VM');
  if (o.image !== undefined) {
    if (!o.image.trim()) throw new UsageError('invalid --image "": must not be empty');
    if (o.image.length > 512) throw new UsageError('invalid --image: at most 512 characters');
  }
  const image = o.image ?? base.image;
  if (image === undefined) throw new UsageError(`required option '--image <image>' not specified${o.file !== undefined ? ' (nor "image" in the -f file)' : ''}`);
  const spec: VmCreate = { ...base, name: finalName, image };
  if (o.os !== undefined) spec.os = parseChoice(o.os, '--os', ['linux', 'macos'] as const);
  if (o.driver !== undefined) spec.driver = parseChoice(o.driver, '--driver', DRIVERS);
  if (o.cpus !== undefined) spec.cpus = parseInteger(o.cpus, '--cpus', 1, 256);
  if (o.memory !== undefined) spec.memoryMib = parseMemoryMib(o.memory);
  if (o.disk !== undefined) spec.diskGib = parseDiskGib(o.disk);
  if (o.label) spec.labels = { ...base.labels, ...parseLabels(o.label, '--label') };
  if (o.selector) spec.selector = { ...base.selector, ...parseLabels(o.selector, '--selector') };
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
    const from = base.network ?? {};
    spec.network = {
      ...(from.mode ? { mode: from.mode } : {}),
      allow: o.allow ? rules(o.allow, '--allow') : (from.allow ?? []),
      block: o.block ? rules(o.block, '--block') : (from.block ?? []),
      ...(o.blockLocal || from.blockLocal ? { blockLocal: true } : {}),
    };
  }
  if (o.networkMode !== undefined) spec.network = { ...(spec.network ?? {}), mode: parseChoice(o.networkMode, '--network-mode', NETWORK_MODES) };
  if (o.mac !== undefined) spec.mac = parseMac(o.mac, '--mac');
  // Mode "none" has no NIC: the controller would refuse rules or a MAC with it; say so before asking.
  checkModeAndRules(spec.network, spec.mac, 'flags');
  return spec;
}

export function registerVmCreate(vm: Command, rt: Runtime): void {
  vm.command('create')
    .argument('[name]', 'VM name: lower-case letters, digits and dashes (may come from the -f file instead)')
    .option('-f, --file <file>', 'a VM spec (the API\'s VmCreate body: name, image, cpus, memoryMib, labels, …) as YAML or JSON; - reads stdin; flags override its fields')
    .option('--image <image>', "image to boot (required here or in the -f file): a worker's local image name, or a registry reference (registry/repository:tag or …@sha256:…; the tag is resolved to a digest now)")
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
    .option('--network-mode <mode>', `network: ${NETWORK_MODES.join(', ')} (default nat: the worker's NAT network; host-only: the worker and the VMs on its host-only network, never beyond; none: no NIC)`)
    .option('--mac <mac>', 'network: the NIC\'s MAC, e.g. 02:00:5e:10:00:01 (unicast; default: the worker derives one). Two VMs with one MAC never run on one worker')
    .option('--wait [duration]', `wait until it runs and has an IP address (or is stopped, with --stopped), then print the IP; default ${formatAge(DEFAULT_WAIT_MS)}`)
    .description('create a VM')
    .addHelpText(
      'after',
      `
With --wait, progress goes to stderr and the IP to stdout, so
  ip=$(fleet vm create web-1 --image ubuntu:24.04 --wait 10m)
works in scripts. Exit code 7 when the VM fails, is deleted, or the wait times out.

A spec file holds the API's VmCreate fields (see docs/api.md); flags override them:
  # web.yaml
  name: web-1
  image: ubuntu:24.04
  cpus: 2
  memoryMib: 4096
  labels: { team: web }
  network: { mode: host-only, allow: ["@host"] }
  mac: "02:00:5e:10:00:01"
  fleet vm create -f web.yaml --cpus 4 --wait
  cat web.json | fleet vm create -f - web-2`,
    )
    .action(async (name: string | undefined, o: CreateOptions, cmd: Command) => {
      if (o.file === '-' && o.passwordStdin) throw new UsageError('-f - and --password-stdin cannot both read stdin; use --password-file');
      const base = o.file !== undefined ? (await readSpecFile(rt, o.file)).spec : {};
      const spec = buildVmCreate(name, o, base);
      const password = await readPassword(rt, o);
      if (password !== undefined) spec.password = password;
      const wait = waitMs(o.wait);
      const json = rt.isJson(cmd);
      // -o name: the name alone on stdout (after the wait, instead of the IP), as kubectl create -o name.
      const nameOnly = rt.output(cmd) === 'name';
      const client = rt.client(cmd);
      const created = await client.createVm(spec);
      if (wait === null) {
        if (json) rt.json(created);
        else if (nameOnly) rt.out(created.name);
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
        else if (nameOnly) rt.out(done.name);
        else if (goal === 'running' && done.ip) rt.out(done.ip);
      } catch (err) {
        if (json && err instanceof WaitFailedError && err.vm) rt.json(err.vm);
        throw err;
      }
    });
}
