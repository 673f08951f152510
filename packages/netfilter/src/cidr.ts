/**
 * IPv4 prefixes and the allow/block prefix table.
 *
 * The table is compiled once, at configuration time, from the rule prefixes into a flat, sorted list
 * of disjoint address intervals, each carrying the action of the longest matching rule (block wins
 * a tie on an identical prefix). A lookup is one binary search over a Uint32Array: no allocation,
 * O(log n), independent of how the rules nest.
 */
import { formatIpv4, parseIpv4 } from './address.ts';

export interface Cidr {
  /** Network address, unsigned 32-bit. */
  readonly base: number;
  /** Prefix length 0..32. */
  readonly prefix: number;
}

/** Netmask for a prefix length, as an unsigned 32-bit number. */
export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export type CidrParse = { ok: true; cidr: Cidr } | { ok: false; error: string };

/**
 * Parses "a.b.c.d/n" or a bare address (= /32). Host bits must be zero: "10.0.0.1/8" is an error,
 * because it is almost always a typo for either 10.0.0.0/8 or 10.0.0.1/32.
 */
export function parseCidr(text: string): CidrParse {
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const ip = parseIpv4(addr);
  if (ip === null) return { ok: false, error: `"${addr}" is not a dotted-quad IPv4 address` };
  let prefix = 32;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^(?:\d|[12]\d|3[0-2])$/.test(p)) return { ok: false, error: `prefix length "${p}" is not 0..32` };
    prefix = Number(p);
  }
  const base = (ip & prefixMask(prefix)) >>> 0;
  if (base !== ip) {
    return {
      ok: false,
      error: `host bits are set (did you mean ${formatIpv4(base)}/${prefix} or ${addr}/32?)`,
    };
  }
  return { ok: true, cidr: { base, prefix } };
}

export function formatCidr(c: Cidr): string {
  return `${formatIpv4(c.base)}/${c.prefix}`;
}

export function cidrContains(c: Cidr, ip: number): boolean {
  return ((ip & prefixMask(c.prefix)) >>> 0) === c.base;
}

/** Last address of the prefix (the broadcast address for a subnet). */
export function cidrLast(c: Cidr): number {
  return (c.base | ~prefixMask(c.prefix)) >>> 0;
}

export const RuleAction = { NONE: 0, ALLOW: 1, BLOCK: 2 } as const;
export type RuleAction = (typeof RuleAction)[keyof typeof RuleAction];

export interface PrefixRule {
  readonly cidr: Cidr;
  readonly action: typeof RuleAction.ALLOW | typeof RuleAction.BLOCK;
}

interface TrieNode {
  action: RuleAction;
  zero: TrieNode | undefined;
  one: TrieNode | undefined;
}

/** Longest-prefix-match table compiled to sorted disjoint intervals. */
export class PrefixTable {
  /** Interval start addresses, ascending; starts[0] === 0. */
  readonly starts: Uint32Array;
  /** Action of each interval. */
  readonly actions: Uint8Array;
  readonly size: number;
  readonly empty: boolean;

  constructor(rules: readonly PrefixRule[]) {
    const root: TrieNode = { action: RuleAction.NONE, zero: undefined, one: undefined };
    for (const { cidr, action } of rules) {
      let node = root;
      for (let depth = 0; depth < cidr.prefix; depth++) {
        const bit = (cidr.base >>> (31 - depth)) & 1;
        if (bit === 0) node = node.zero ??= { action: RuleAction.NONE, zero: undefined, one: undefined };
        else node = node.one ??= { action: RuleAction.NONE, zero: undefined, one: undefined };
      }
      // Same prefix in both lists: block wins (BLOCK > ALLOW numerically).
      if (action > node.action) node.action = action;
    }
    const starts: number[] = [];
    const actions: RuleAction[] = [];
    const push = (start: number, action: RuleAction): void => {
      if (actions.length > 0 && actions[actions.length - 1] === action) return; // merge with previous
      starts.push(start);
      actions.push(action);
    };
    const walk = (node: TrieNode, depth: number, base: number, inherited: RuleAction): void => {
      const effective = node.action !== RuleAction.NONE ? node.action : inherited;
      if (node.zero === undefined && node.one === undefined) {
        push(base, effective);
        return;
      }
      const half = 2 ** (31 - depth);
      if (node.zero) walk(node.zero, depth + 1, base, effective);
      else push(base, effective);
      if (node.one) walk(node.one, depth + 1, base + half, effective);
      else push(base + half, effective);
    };
    walk(root, 0, 0, RuleAction.NONE);
    this.starts = Uint32Array.from(starts);
    this.actions = Uint8Array.from(actions);
    this.size = rules.length;
    this.empty = actions.length === 1 && actions[0] === RuleAction.NONE;
  }

  /** Action of the longest rule prefix containing `ip` (a 32-bit number, unsigned or int32), or NONE. */
  lookup(ip: number): RuleAction {
    if (this.empty) return RuleAction.NONE;
    ip = ip >>> 0;
    const s = this.starts;
    let lo = 0;
    let hi = s.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (s[mid]! <= ip) lo = mid;
      else hi = mid - 1;
    }
    return this.actions[lo]! as RuleAction;
  }
}
