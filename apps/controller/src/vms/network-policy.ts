// A VM's egress policy as stored and sent to workers. The API schema checks the shape; this
// checks what a pattern cannot (octets ≤ 255, prefix ≤ 32, host bits) with the same parser the
// worker's packet filter uses, so a policy the controller accepts is one the filter accepts.
import { parseCidr } from '@fleet/netfilter';
import { networkModeProblem, type NetworkMode } from '@fleet/api';
import type { VmNetwork } from '../api/schemas.ts';
import { badRequest } from '../errors.ts';
import type { NetworkPolicy } from './vm-view.ts';

export function normalizeNetwork(network: VmNetwork | undefined): NetworkPolicy {
  const check = (field: 'allow' | 'block'): string[] => {
    const out: string[] = [];
    for (const [i, entry] of (network?.[field] ?? []).entries()) {
      if (entry !== '@host') {
        const parsed = parseCidr(entry);
        if (!parsed.ok) throw badRequest(`network.${field}[${i}] ${JSON.stringify(entry)}: ${parsed.error}`, { field: `network.${field}[${i}]` });
      }
      if (!out.includes(entry)) out.push(entry);
    }
    return out;
  };
  return { allow: check('allow'), block: check('block'), blockLocal: network?.blockLocal === true };
}

/**
 * Mode "none" has no NIC: rules or a MAC given with it are refused (400), never silently dropped.
 * `field` names where the mode came from in the message's details.
 */
export function checkNetworkMode(mode: NetworkMode, policy: NetworkPolicy, mac: string | null | undefined): void {
  const problem = networkModeProblem(mode, policy, mac);
  if (problem) throw badRequest(problem, { field: mac && policy.allow.length + policy.block.length === 0 && !policy.blockLocal ? 'mac' : 'network' });
}
