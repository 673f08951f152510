// VM network modes and custom MAC addresses (issue 18): plain rules without TypeBox, so the CLI
// and the dashboard check them before a request is sent, with the controller's own words.

/** The worker network a VM's NIC joins: NAT (default), host-only, or none (no NIC at all). */
export const NETWORK_MODES = ['nat', 'host-only', 'none'] as const;
export type NetworkMode = (typeof NETWORK_MODES)[number];
/** Modes a worker network can have ("none" needs no network). */
export const WORKER_NETWORK_MODES = ['nat', 'host-only'] as const;
export type WorkerNetworkMode = (typeof WORKER_NETWORK_MODES)[number];

export function isNetworkMode(s: unknown): s is NetworkMode {
  return typeof s === 'string' && (NETWORK_MODES as readonly string[]).includes(s);
}

/**
 * A custom MAC as the API takes it: six two-digit hex octets separated by ":", either case,
 * unicast (the least significant bit of the first octet is 0: its second digit is even), and not
 * all zero. The same rule is in the OpenAPI document; `macProblem` says what is wrong in words.
 */
export const MAC_PATTERN = '^(?!00:00:00:00:00:00$)[0-9A-Fa-f][02468aceACE](:[0-9A-Fa-f]{2}){5}$';
const MAC_SHAPE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** Why `mac` is not a usable custom MAC, or null when it is. */
export function macProblem(mac: unknown): string | null {
  if (typeof mac !== 'string') return 'a MAC address is a string such as "02:00:5e:10:00:01"';
  const shown = JSON.stringify(mac.length > 40 ? `${mac.slice(0, 40)}…` : mac);
  if (!MAC_SHAPE.test(mac)) {
    if (/^[0-9a-f]{2}([-.][0-9a-f]{2}){5}$/i.test(mac) || /^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$/i.test(mac)) {
      return `MAC ${shown}: separate the six octets with ":" (as in "02:00:5e:10:00:01")`;
    }
    return `MAC ${shown} is not six two-digit hex octets separated by ":" (as in "02:00:5e:10:00:01")`;
  }
  const m = mac.toLowerCase();
  if (m === 'ff:ff:ff:ff:ff:ff') return `MAC ${shown} is the broadcast address; a NIC needs a unicast MAC`;
  if (m === '00:00:00:00:00:00') return `MAC ${shown} is all zero; choose a real unicast MAC (e.g. a locally administered one, 02:…)`;
  if (parseInt(m.slice(0, 2), 16) & 1) {
    return `MAC ${shown} is a multicast address (the least significant bit of its first octet is set); a NIC needs a unicast MAC (first octet even, e.g. 02)`;
  }
  return null;
}

/** The stored form of a valid custom MAC (lower case). */
export function normalizeMac(mac: string): string {
  return mac.toLowerCase();
}

/** Why a network policy cannot go with a mode, or null (mode "none" has no NIC to apply rules to). */
export function networkModeProblem(mode: NetworkMode, policy: { allow?: readonly string[] | undefined; block?: readonly string[] | undefined; blockLocal?: boolean | undefined }, mac?: string | null): string | null {
  if (mode !== 'none') return null;
  const given = [
    policy.allow && policy.allow.length > 0 ? 'allow' : '',
    policy.block && policy.block.length > 0 ? 'block' : '',
    policy.blockLocal ? 'blockLocal' : '',
  ].filter(Boolean);
  if (given.length > 0) return `network mode "none" has no NIC to apply ${given.join(', ')} to: leave the rules out, or choose mode nat or host-only`;
  if (mac) return 'network mode "none" has no NIC to give a MAC to: leave mac out, or choose mode nat or host-only';
  return null;
}
