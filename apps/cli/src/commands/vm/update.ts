// `fleet vm update`: a partial change of a VM's spec (labels merged, kubectl style).
import type { Command } from 'commander';
import type { VmObject, VmUpdate } from '@fleet/api';
import { NETWORK_MODES } from '@fleet/api/syntax';
import { ApiError, UsageError } from '../../errors.ts';
import { parseMemoryMib } from '../../output/sizes.ts';
import type { Runtime } from '../../runtime.ts';
import { applyLabelEdits, collect, parseChoice, parseInteger, parseLabelEdits, validateName } from '../../validate.ts';
import { readPassword, type PasswordOptions } from '../vm-password.ts';
import { describe } from './shared.ts';
import { parseMac } from './spec-file.ts';

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
  networkMode?: string;
  mac?: string;
  clearMac?: boolean;
}

export function registerVmUpdate(vm: Command, rt: Runtime): void {
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
    .option('--network-mode <mode>', `network: ${NETWORK_MODES.join(', ')} (only while the VM is stopped or pending; the worker applies it at the next start)`)
    .option('--mac <mac>', "network: a new custom MAC, e.g. 02:00:5e:10:00:01 (only while stopped or pending)")
    .option('--clear-mac', 'network: drop the custom MAC; the worker derives one (only while stopped or pending)')
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
      if (o.mac !== undefined && o.clearMac) throw new UsageError('--mac and --clear-mac cannot be used together');
      if (o.networkMode !== undefined) patch.network = { mode: parseChoice(o.networkMode, '--network-mode', NETWORK_MODES) };
      if (o.mac !== undefined) patch.mac = parseMac(o.mac, '--mac');
      if (o.clearMac) patch.mac = null;
      if (o.clearPassword && (o.passwordStdin || o.passwordFile !== undefined)) throw new UsageError('--clear-password cannot be combined with --password-stdin or --password-file');
      const password = await readPassword(rt, o);
      if (password !== undefined) patch.password = password;
      if (o.clearPassword) patch.password = null;
      const labelEdits = o.label ? parseLabelEdits(o.label, '--label') : null;
      const selectorEdits = o.selector ? parseLabelEdits(o.selector, '--selector') : null;
      if (Object.keys(patch).length === 0 && !labelEdits && !selectorEdits) {
        throw new UsageError('nothing to update: pass at least one of --image, --cpus, --memory, --label, --selector, --priority, --restart, --start, --stop, --network-mode, --mac, --clear-mac, --password-stdin, --password-file, --clear-password');
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
}
