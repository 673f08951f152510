export { NatNetwork, VM_UPLINK_IF, vmNetnsFor, createVethUplink, deleteVethUplink, unusedVethUplinks, orphanVmNamespaces, resolveNatOptions, validateIfName, gatewayMacFor, nftRuleset, dnsmasqConfig, checkSubnetClash } from './nat-network.ts';
export type { NatNetworkOptions, NatNetworkConfig, CleanupReport, UplinkLog } from './nat-network.ts';
export { DnsmasqSupervisor, findDnsmasqProcesses } from './dnsmasq.ts';
export { CommandError, findBinary } from './exec.ts';
export * from './ipv4.ts';
