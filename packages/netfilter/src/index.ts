/**
 * @fleet/netfilter — per-VM packet filter with DHCP snooping. Pure TypeScript, no I/O, time injected.
 * See README.md for the rules in order and the reason codes.
 */
export { createFilter } from './filter.ts';
export type { FilterCounters, FilterStats, PacketFilter } from './filter.ts';
export { Verdict, REASON_NAMES, VERDICT_COUNT, reasonName, verdictOf, isPass } from './verdict.ts';
export type { ReasonName } from './verdict.ts';
export { NetfilterConfigError } from './errors.ts';
export { resolveConfig, parseExposure, grantsHostAccess } from './config.ts';
export type { FilterConfig, LeaseSeed, PortExposure, ResolvedConfig, ResolvedExposure, ResolvedLeaseSeed } from './config.ts';
export { Snoop, SNOOP_NAMES } from './lease.ts';
export type { Lease, LeaseCause, LeaseEvent, LeaseListener, LeaseState, SnoopName } from './lease.ts';
export { AddressClass, ADDRESS_CLASS_NAMES, addressClassName, classifyIpv4, isGlobalIpv4 } from './address-classes.ts';
export type { AddressClassName } from './address-classes.ts';
export { PrefixTable, RuleAction, parseCidr, formatCidr, cidrContains } from './cidr.ts';
export type { Cidr, PrefixRule } from './cidr.ts';
export { parseIpv4, formatIpv4, parseMac, formatMac } from './address.ts';
