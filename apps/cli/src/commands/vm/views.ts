// How a VM is shown: table rows (`vm list`) and the details of `vm get`.
import type { VmObject } from '@fleet/api';
import type { TransferProgress } from '../../client/image-types.ts';
import { ageOf, formatTimestamp, relativeTime } from '../../output/durations.ts';
import { formatProgressShort } from '../../output/progress.ts';
import { formatGib, formatMib } from '../../output/sizes.ts';
import { dash, formatLabels } from '../../output/table.ts';
import type { Runtime } from '../../runtime.ts';

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

export function vmDetails(rt: Runtime, vm: VmObject): [string, string][] {
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
    ['MAC', vm.mac ? `${vm.mac}${vm.macSource === 'custom' ? ' (custom)' : vm.macSource === 'worker' ? ' (from the worker)' : ''}` : vm.network.mode === 'none' ? '- (no NIC)' : '-'],
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
  // Controllers before issue 18 send no mode: NAT.
  const mode = n.mode ?? 'nat';
  if (mode === 'none') return 'none (no NIC)';
  const parts = [mode === 'host-only' ? "host-only: the worker's host-only network, never beyond" : 'nat: public addresses'];
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
