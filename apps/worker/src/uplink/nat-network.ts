// The worker's NAT network on Linux — the stand-in for vmnet shared mode:
// a bridge holding the gateway address, one isolated bridge port per VM (the bridge-side end of
// the VM's veth uplink — issue 20 — or a TAP),
// masquerade + forward rules in an nftables table of its own, and a supervised dnsmasq
// serving DHCP (and optionally DNS) on the bridge only.
import { createHash } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { linkOffloads, linkStats } from '@fleet/native-vz';
import { AddressPool, type LiveLease, type Reservation, type ReserveRequest } from './address-pool.ts';
import { DnsmasqSupervisor, findDnsmasqProcesses, killAndWait, type UplinkLog } from './dnsmasq.ts';
import { findBinary, ipJson, run, tryRun } from './exec.ts';
import {
  broadcastOf,
  contains,
  formatCidr,
  formatIpv4,
  hostRange,
  overlaps,
  parseCidr,
  parseIpv4,
  type Cidr,
} from './ipv4.ts';

export type { UplinkLog } from './dnsmasq.ts';

export interface NatNetworkOptions {
  /** Bridge name, also names the nftables table `fleet_<name>` (letters, digits, `_`; ≤ 15 chars). */
  name: string;
  /**
   * 'nat' (default): masqueraded out of the uplink. 'host-only' (issue 18): no uplink at all — no
   * forwarding in or out, no masquerade, and dnsmasq answers only Fleet's own VM names (no
   * upstream resolvers): the VMs reach the worker and nothing beyond.
   */
  mode?: 'nat' | 'host-only';
  /** The NAT subnet, e.g. '192.168.64.0/24' (host bits zero; prefix 16..29). */
  subnet: string;
  /** Gateway / DHCP server address on the bridge; default: the first host address (.1). */
  gateway?: string;
  /** Run every command inside this network namespace (`ip netns exec`; tests). */
  netns?: string;
  /** Masquerade out of this interface; default: the device of the route to 0.0.0.0/0. */
  uplinkInterface?: string;
  /** First and last address DHCP hands out; default: every host address except the gateway. */
  dhcpRange?: [string, string];
  /** DHCP lease time in seconds (default 600, minimum 120 — dnsmasq's own floor). */
  leaseSeconds?: number;
  /**
   * Serve DNS on the gateway address (port 53, forwarding to the resolvers of the namespace)
   * and hand it out by DHCP. Default true; false runs dnsmasq with `port=0` (DHCP only).
   */
  dns?: boolean;
  /** Skip dnsmasq's ICMP probe of an address before offering it (faster first lease). Default true. */
  noPing?: boolean;
  /** dnsmasq config, lease file, pid file and the reservation table live here (created 0700). */
  dataDir: string;
  /**
   * Where the files dnsmasq re-reads after it has dropped root (its per-VM DHCP and DNS host
   * entries) are published, world-readable: a directory dnsmasq's unprivileged user can reach.
   * Default /run/fleet/nat-<hash of dataDir> (rewritten from the reservation table on every start).
   */
  runtimeDir?: string;
  /**
   * Run dnsmasq detached with its output in <dataDir>/dnsmasq.log, so that DHCP keeps serving
   * running VMs while the worker is stopped or restarting (what the worker uses). Default false:
   * dnsmasq is a child whose output goes to the logger.
   */
  outlivesWorker?: boolean;
  log: UplinkLog;
}

const NAME_RE = /^[A-Za-z][A-Za-z0-9_]{0,14}$/;
const IFNAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
const NETNS_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const DEFAULT_LEASE_SECONDS = 600;
export const MIN_LEASE_SECONDS = 120;

/**
 * The veth uplink (issue 20): a VM's bridge port is one end of a veth pair; the other end,
 * VM_UPLINK_IF, is the only interface of the VM's own network namespace, where the worker opens the
 * AF_PACKET socket it hands to the VM host process. Namespace names are global (/run/netns).
 */
export const VM_UPLINK_IF = 'vm0';
/** Per-VM namespaces are `fleetvm-<port>`: a prefix no other namespace of Fleet's (or its tests') uses, since stale ones are swept by name. */
export const VM_NETNS_PREFIX = 'fleetvm-';
export function vmNetnsFor(port: string): string {
  return `${VM_NETNS_PREFIX}${validateIfName(port, 'uplink port')}`;
}

/**
 * NatNetwork.createUplink without the network object (the bridge's namespace is `bridgeNetns`,
 * undefined = this process's): see there.
 */
export async function createVethUplink(port: string, bridgeNetns: string | undefined): Promise<{ netns: string; ifname: string }> {
  const vmNs = vmNetnsFor(port);
  await deleteVethUplink(port, bridgeNetns);
  await addVmNamespace(vmNs);
  try {
    await run('ip', ['link', 'add', port, 'type', 'veth', 'peer', 'name', VM_UPLINK_IF, 'netns', vmNs], { netns: bridgeNetns });
    linkOffloads(port, { ...(bridgeNetns ? { netns: bridgeNetns } : {}), disable: true });
    linkOffloads(VM_UPLINK_IF, { netns: vmNs, disable: true });
    await run('ip', ['link', 'set', 'dev', VM_UPLINK_IF, 'up'], { netns: vmNs });
  } catch (e) {
    await deleteVethUplink(port, bridgeNetns);
    throw new Error(`creating the veth uplink ${port} (netns ${vmNs}): ${(e as Error).message}`);
  }
  return { netns: vmNs, ifname: VM_UPLINK_IF };
}

/**
 * A per-VM namespace where the kernel does nothing with a VM's frames: no IPv6 (no link-local
 * address, router or multicast chatter of its own), no IPv4 forwarding (a new namespace inherits
 * the host's setting; the frames are the pump's to judge, never the kernel's to route).
 */
async function addVmNamespace(vmNs: string): Promise<void> {
  await run('ip', ['netns', 'add', vmNs]);
  try {
    for (const k of ['all', 'default']) await run('sysctl', ['-q', '-w', `net.ipv6.conf.${k}.disable_ipv6=1`], { netns: vmNs });
    for (const k of ['all', 'default']) await run('sysctl', ['-q', '-w', `net.ipv4.conf.${k}.forwarding=0`], { netns: vmNs });
  } catch (e) {
    await tryRun('ip', ['netns', 'del', vmNs]);
    throw e;
  }
}

/**
 * The offload path's namespace (issue 20, `--vm-framing vnet`): `vmNetnsFor(port)`, empty, made
 * afresh (one left behind is deleted first). The driver creates QEMU's TAP there under the name
 * returned (VM_UPLINK_IF, so the stale-namespace sweep sees it as it sees a veth end) and its
 * packet socket; the TAP goes with its last fd, deleteVethUplink removes the namespace with the port.
 */
export async function createVmNamespace(port: string): Promise<{ netns: string; ifname: string }> {
  const vmNs = vmNetnsFor(port);
  await tryRun('ip', ['netns', 'del', vmNs]);
  await addVmNamespace(vmNs);
  return { netns: vmNs, ifname: VM_UPLINK_IF };
}

/**
 * Veth uplinks in `bridgeNetns` that nobody uses any more: a veth whose per-VM namespace
 * (vmNetnsFor) exists and holds no AF_PACKET socket (/proc/net/packet read inside it is empty), so
 * no VM host process can be behind it — left over by an instance removed while no worker ran.
 * Another worker's running VMs (a shared namespace, as in tests) always hold their socket.
 */
export async function unusedVethUplinks(bridgeNetns: string | undefined): Promise<string[]> {
  const links = await ipJson<IpLink>(['-d', 'link', 'show', 'type', 'veth'], bridgeNetns).catch(() => [] as IpLink[]);
  const out: string[] = [];
  for (const l of links) {
    if (!IFNAME_RE.test(l.ifname)) continue;
    const vmNs = vmNetnsFor(l.ifname);
    const packet = await tryRun('cat', ['/proc/net/packet'], { netns: vmNs });
    if (packet !== null && packet.trim().split('\n').length <= 1) out.push(l.ifname);
  }
  return out;
}

/**
 * Per-VM namespaces (vmNetnsFor) whose VM end is gone: the pair dies with the bridge-side end, e.g.
 * when the bridge's own namespace was deleted (tests) or the port was deleted by hand. Nothing can
 * use such a namespace any more, whoever made it.
 */
export async function orphanVmNamespaces(): Promise<string[]> {
  const names = (await readdir('/run/netns').catch(() => [] as string[])).filter((n) => n.startsWith(VM_NETNS_PREFIX) && IFNAME_RE.test(n.slice(VM_NETNS_PREFIX.length)));
  const out: string[] = [];
  let mountedSomewhere: Set<string> | undefined;
  for (const ns of names) {
    const links = await ipJson<IpLink>(['link', 'show'], ns).catch(() => undefined);
    if (links) {
      if (!links.some((l) => l.ifname === VM_UPLINK_IF)) out.push(ns);
      continue;
    }
    // Not enterable from here: a bare file whose mount was made in another mount namespace (a worker
    // started under `ip netns exec` has a private one) — maybe live there. Only a name mounted in no
    // process's mount namespace is a dead placeholder.
    mountedSomewhere ??= await netnsMountsOfAllProcesses();
    if (!mountedSomewhere.has(ns)) out.push(ns);
  }
  return out;
}

async function netnsMountsOfAllProcesses(): Promise<Set<string>> {
  const seen = new Set<string>();
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const text = await readFile(`/proc/${pid}/mountinfo`, 'utf8').catch(() => '');
    for (const m of text.matchAll(/\/netns\/(fleetvm-[A-Za-z0-9_.-]+)/g)) seen.add(m[1]!);
  }
  return seen;
}

/** Deletes a veth uplink (both ends go with either) and the VM's namespace. Idempotent. */
export async function deleteVethUplink(port: string, bridgeNetns: string | undefined): Promise<void> {
  const vmNs = vmNetnsFor(port);
  if (await linkInfo(port, bridgeNetns)) await tryRun('ip', ['link', 'del', 'dev', port], { netns: bridgeNetns });
  await tryRun('ip', ['netns', 'del', vmNs]);
}

/** Checks a network interface name: 1..15 chars (IFNAMSIZ-1), letters/digits/`_.-`. */
export function validateIfName(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new Error(`${what} must be a non-empty interface name`);
  if (value.length > 15) throw new Error(`${what} ${JSON.stringify(value)} is ${value.length} characters; Linux interface names are at most 15`);
  if (!IFNAME_RE.test(value)) {
    throw new Error(`${what} ${JSON.stringify(value)} may only contain letters, digits, '_', '.', '-' and must start with a letter or digit`);
  }
  return value;
}

/** The checked, fully defaulted configuration (no system access needed to compute it). */
export interface NatNetworkConfig {
  name: string;
  bridge: string;
  table: string;
  subnet: Cidr;
  gateway: number;
  dhcpRange: [number, number];
  leaseSeconds: number;
  dns: boolean;
  noPing: boolean;
  mode: 'nat' | 'host-only';
  netns: string | undefined;
  uplinkInterface: string | undefined;
  dataDir: string;
  runtimeDir: string;
}

/** Validates every option with a clear message; pure (touches no system state). */
export function resolveNatOptions(opts: NatNetworkOptions): NatNetworkConfig {
  if (!opts || typeof opts !== 'object') throw new Error('NatNetwork options are required');
  const { name } = opts;
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new Error(
      `NAT network name ${JSON.stringify(name)} is invalid: it names the bridge and the nftables table fleet_<name>, ` +
        'so use 1..15 characters, letters, digits and _ , starting with a letter (e.g. "fleet0")',
    );
  }
  const subnet = parseCidr(opts.subnet, 'NAT subnet');
  if (subnet.prefix < 16 || subnet.prefix > 29) {
    throw new Error(`NAT subnet ${opts.subnet} must have a prefix length between /16 and /29 (got /${subnet.prefix})`);
  }
  const [firstHost, lastHost] = hostRange(subnet);
  let gateway = firstHost;
  if (opts.gateway !== undefined) {
    gateway = parseIpv4(opts.gateway, 'NAT gateway');
    if (!contains(subnet, gateway)) throw new Error(`NAT gateway ${opts.gateway} is outside the subnet ${formatCidr(subnet)}`);
    if (gateway === subnet.network || gateway === broadcastOf(subnet)) {
      throw new Error(`NAT gateway ${opts.gateway} is the network or broadcast address of ${formatCidr(subnet)}`);
    }
  }
  let dhcpRange: [number, number];
  if (opts.dhcpRange !== undefined) {
    if (!Array.isArray(opts.dhcpRange) || opts.dhcpRange.length !== 2) {
      throw new Error('dhcpRange must be [first, last], two IPv4 addresses');
    }
    const lo = parseIpv4(opts.dhcpRange[0], 'dhcpRange start');
    const hi = parseIpv4(opts.dhcpRange[1], 'dhcpRange end');
    for (const [ip, text] of [[lo, opts.dhcpRange[0]], [hi, opts.dhcpRange[1]]] as const) {
      if (ip < firstHost || ip > lastHost) {
        throw new Error(`dhcpRange address ${text} is not a host address of ${formatCidr(subnet)} (${formatIpv4(firstHost)}..${formatIpv4(lastHost)})`);
      }
    }
    if (lo > hi) throw new Error(`dhcpRange start ${opts.dhcpRange[0]} is after its end ${opts.dhcpRange[1]}`);
    if (gateway >= lo && gateway <= hi) {
      throw new Error(`dhcpRange ${opts.dhcpRange[0]}..${opts.dhcpRange[1]} contains the gateway ${formatIpv4(gateway)}`);
    }
    dhcpRange = [lo, hi];
  } else {
    // The larger contiguous block of host addresses on either side of the gateway.
    const below: [number, number] = [firstHost, gateway - 1];
    const above: [number, number] = [gateway + 1, lastHost];
    dhcpRange = above[1] - above[0] >= below[1] - below[0] ? above : below;
  }
  const leaseSeconds = opts.leaseSeconds ?? DEFAULT_LEASE_SECONDS;
  if (!Number.isInteger(leaseSeconds) || leaseSeconds < MIN_LEASE_SECONDS || leaseSeconds > 31_536_000) {
    throw new Error(`leaseSeconds must be an integer between ${MIN_LEASE_SECONDS} (dnsmasq's minimum) and 31536000, got ${String(opts.leaseSeconds)}`);
  }
  if (opts.netns !== undefined && (typeof opts.netns !== 'string' || !NETNS_RE.test(opts.netns))) {
    throw new Error(`netns ${JSON.stringify(opts.netns)} is not a valid network namespace name`);
  }
  const uplinkInterface = opts.uplinkInterface === undefined ? undefined : validateIfName(opts.uplinkInterface, 'uplinkInterface');
  if (uplinkInterface === name) throw new Error(`uplinkInterface ${uplinkInterface} is the NAT bridge itself`);
  if (typeof opts.dataDir !== 'string' || opts.dataDir.trim() === '') throw new Error('dataDir must be a directory path');
  if (/[\s,#"'\\\x00-\x1f\x7f]/.test(opts.dataDir)) {
    throw new Error(`dataDir ${JSON.stringify(opts.dataDir)} must not contain whitespace, quotes, commas, '#', '\\' or control characters (it is written into dnsmasq.conf)`);
  }
  const dataDir = path.resolve(opts.dataDir);
  const runtimeDir = path.resolve(opts.runtimeDir ?? path.join('/run/fleet', `nat-${createHash('sha256').update(dataDir).digest('hex').slice(0, 12)}`));
  if (/[\s,#"'\\\x00-\x1f\x7f]/.test(runtimeDir)) throw new Error(`runtimeDir ${JSON.stringify(opts.runtimeDir)} must not contain whitespace, quotes, commas, '#', '\\' or control characters`);
  if (!opts.log || typeof opts.log.info !== 'function') throw new Error('log (a pino-style logger) is required');
  if (opts.dns !== undefined && typeof opts.dns !== 'boolean') throw new Error('dns must be a boolean');
  if (opts.noPing !== undefined && typeof opts.noPing !== 'boolean') throw new Error('noPing must be a boolean');
  if (opts.mode !== undefined && opts.mode !== 'nat' && opts.mode !== 'host-only') throw new Error(`mode must be "nat" or "host-only", not ${JSON.stringify(opts.mode)}`);
  if (opts.mode === 'host-only' && opts.uplinkInterface !== undefined) throw new Error('a host-only network has no uplink interface');
  return {
    name,
    bridge: name,
    table: `fleet_${name}`,
    subnet,
    gateway,
    dhcpRange,
    leaseSeconds,
    dns: opts.dns ?? true,
    noPing: opts.noPing ?? true,
    mode: opts.mode ?? 'nat',
    netns: opts.netns,
    uplinkInterface,
    dataDir,
    runtimeDir,
  };
}

/** A locally administered unicast MAC derived from the network name (stable across restarts). */
export function gatewayMacFor(name: string): string {
  const h = createHash('sha256').update(`fleet-nat-gateway:${name}`).digest();
  const bytes = [(h[0]! & 0xfc) | 0x02, h[1]!, h[2]!, h[3]!, h[4]!, h[5]!];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export interface NftRulesetConfig {
  table: string;
  bridge: string;
  subnet: Cidr;
  /** The masquerade uplink; absent for a host-only network (nothing is forwarded). */
  uplink: string | undefined;
  /** The gateway address (the host as VMs see it). */
  gateway: number;
  /** dnsmasq serves DNS on the gateway. */
  dns: boolean;
  /** VM addresses whose policy grants host access (the set `host_access`). */
  hostAccess: readonly string[];
}

/**
 * The nftables ruleset: one `inet` table of our own, replaced atomically (with the `ip` table of
 * earlier versions removed). Besides NAT and forwarding it guards the host itself: a packet from
 * a VM that is for any address of the host (gateway, uplink, other interfaces, IPv6) is dropped
 * unless it is DHCP, DNS on the gateway, a reply to a connection the host opened (the worker's
 * SSH to the VM), or from a VM granted host access, to the gateway.
 */
export function nftRuleset(cfg: NftRulesetConfig): string {
  const net = formatCidr(cfg.subnet);
  const gw = formatIpv4(cfg.gateway);
  const br = `iifname "${cfg.bridge}"`;
  const elements = cfg.hostAccess.length ? ` elements = { ${cfg.hostAccess.join(', ')} };` : '';
  return [
    // Declaring then deleting makes the load idempotent: it atomically replaces any leftover table.
    `table ip ${cfg.table}`,
    `delete table ip ${cfg.table}`,
    `table inet ${cfg.table}`,
    `delete table inet ${cfg.table}`,
    `table inet ${cfg.table} {`,
    `  set host_access { type ipv4_addr;${elements} }`,
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    `    ${br} ct state established,related accept`,
    `    ${br} meta nfproto ipv4 udp sport 68 udp dport 67 accept`,
    ...(cfg.dns ? [`    ${br} ip daddr ${gw} udp dport 53 accept`, `    ${br} ip daddr ${gw} tcp dport 53 accept`] : []),
    `    ${br} ip daddr ${gw} ip saddr @host_access accept`,
    `    ${br} counter drop comment "fleet: VM to host"`,
    '  }',
    ...(cfg.uplink !== undefined
      ? [
          '  chain postrouting {',
          '    type nat hook postrouting priority srcnat; policy accept;',
          `    meta nfproto ipv4 ip saddr ${net} ip daddr != ${net} oifname "${cfg.uplink}" masquerade`,
          '  }',
        ]
      : []),
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    ...(cfg.uplink !== undefined
      ? [`    ${br} oifname "${cfg.uplink}" meta nfproto ipv4 ip saddr ${net} accept`, `    iifname "${cfg.uplink}" oifname "${cfg.bridge}" ct state established,related accept`]
      : // Host-only: VM↔VM frames bridged between its (non-isolated) ports, which br_netfilter
        // (bridge-nf-call-iptables) shows here; each VM's packet filter is what decides.
        [`    ${br} oifname "${cfg.bridge}" meta nfproto ipv4 ip saddr ${net} ip daddr ${net} accept`]),
    // Anything else routed into or out of the NAT bridge (VM↔VM through the gateway,
    // other interfaces → VMs, VMs → other interfaces, IPv6) is dropped.
    `    ${br} drop`,
    `    oifname "${cfg.bridge}" drop`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** Replaces the members of `host_access` in one transaction. */
export function nftHostAccessUpdate(table: string, ips: readonly string[]): string {
  return [`flush set inet ${table} host_access`, ...(ips.length ? [`add element inet ${table} host_access { ${ips.join(', ')} }`] : []), ''].join('\n');
}

/** The dnsmasq config file (`--conf-file`); the marker `--interface=` stays on the command line. */
export function dnsmasqConfig(cfg: NatNetworkConfig): string {
  const lines = [
    '# Written by the Fleet worker (NatNetwork); regenerated on every start.',
    `interface=${cfg.bridge}`,
    'except-interface=lo',
    'bind-interfaces',
    `listen-address=${formatIpv4(cfg.gateway)}`,
    cfg.dns ? 'port=53' : 'port=0',
    'no-hosts',
    'log-facility=-',
    // Static only: an address goes to the MAC it is reserved for (dhcp-hosts, written by the worker)
    // and to nobody else, so there is no dynamic pool to drain.
    `dhcp-range=${formatIpv4(cfg.subnet.network)},static,${formatIpv4(maskFor(cfg.subnet))},${cfg.leaseSeconds}s`,
    `dhcp-hostsfile=${path.join(cfg.runtimeDir, DHCP_HOSTS_FILE)}`,
    // A VM's identity is its MAC (which its packet filter pins): a client identifier could name
    // another VM's lease, and a host name option could take another VM's DNS name.
    'dhcp-ignore-clid',
    'dhcp-ignore-names',
    `dhcp-option=option:router,${formatIpv4(cfg.gateway)}`,
    `dhcp-leasefile=${path.join(cfg.dataDir, 'dnsmasq.leases')}`,
    `pid-file=${path.join(cfg.dataDir, 'dnsmasq.pid')}`,
    'dhcp-authoritative',
  ];
  if (cfg.dns) {
    lines.push(
      `dhcp-option=option:dns-server,${formatIpv4(cfg.gateway)}`,
      'domain-needed',
      'bogus-priv',
      // Host-only: Fleet's VM names only, no upstream resolvers (DNS is no way out either).
      ...(cfg.mode === 'host-only' ? ['no-resolv'] : []),
      // VM names, from the reservations (the operator's VM names), never from the guests.
      `addn-hosts=${path.join(cfg.runtimeDir, DNS_HOSTS_FILE)}`,
    );
  }
  if (cfg.noPing) lines.push('no-ping');
  return lines.join('\n') + '\n';
}

export const DHCP_HOSTS_FILE = 'dhcp-hosts';
export const DNS_HOSTS_FILE = 'dns-hosts';
export const RESERVATIONS_FILE = 'reservations.json';

/** Live leases in a dnsmasq lease file (`<expiry> <mac> <ip> <name> <client-id>` per line); expired ones are left out. */
export function parseLeaseFile(text: string, nowSeconds: number): LiveLease[] {
  const out: LiveLease[] = [];
  for (const line of text.split('\n')) {
    const [expiry, mac, ip] = line.trim().split(/\s+/);
    if (!expiry || !mac || !ip || !/^\d+$/.test(expiry)) continue;
    const e = Number(expiry);
    if (e !== 0 && e <= nowSeconds) continue; // 0 = infinite
    out.push({ ip, mac: mac.toLowerCase() });
  }
  return out;
}

function maskFor(c: Cidr): number {
  return c.prefix === 0 ? 0 : (0xffffffff << (32 - c.prefix)) >>> 0;
}

interface IpRoute {
  dst: string;
  dev?: string;
  gateway?: string;
  prefsrc?: string;
  protocol?: string;
  type?: string;
}
interface IpAddr {
  ifname: string;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}
interface IpLink {
  ifname: string;
  master?: string;
  linkinfo?: { info_kind?: string; info_slave_kind?: string; info_slave_data?: { isolated?: boolean } };
}

function routeText(r: IpRoute): string {
  return [r.type && r.type !== 'unicast' ? r.type : '', r.dst, r.gateway ? `via ${r.gateway}` : '', r.dev ? `dev ${r.dev}` : '', r.protocol ? `proto ${r.protocol}` : '']
    .filter(Boolean)
    .join(' ');
}

/** First /24 in 192.168.64.0–192.168.127.0 and 10.0.x.0 that clashes with nothing. */
function suggestSubnet(taken: Cidr[]): string | undefined {
  const candidates: Cidr[] = [];
  for (let i = 64; i < 128; i++) candidates.push(parseCidr(`192.168.${i}.0/24`));
  for (let i = 64; i < 128; i++) candidates.push(parseCidr(`10.${i}.0.0/24`));
  const free = candidates.find((c) => !taken.some((t) => overlaps(t, c)));
  return free ? formatCidr(free) : undefined;
}

/**
 * Throws if the subnet overlaps an existing route (main table, default route excluded) or an
 * address on any interface of the namespace.
 */
export async function checkSubnetClash(subnet: Cidr, netns?: string, flag = '--nat-subnet'): Promise<void> {
  const routes = await ipJson<IpRoute>(['-4', 'route', 'show', 'table', 'main'], netns);
  const addrs = await ipJson<IpAddr>(['-4', 'addr', 'show'], netns);
  const taken: { cidr: Cidr; text: string }[] = [];
  for (const r of routes) {
    if (r.dst === 'default' || r.dst === '0.0.0.0/0') continue;
    const dst = r.dst.includes('/') ? r.dst : `${r.dst}/32`;
    try {
      taken.push({ cidr: parseCidr(dst, 'route', false), text: `route "${routeText(r)}"` });
    } catch {
      /* not an IPv4 prefix */
    }
  }
  for (const a of addrs) {
    for (const info of a.addr_info ?? []) {
      if (info.family !== 'inet') continue;
      taken.push({ cidr: parseCidr(`${info.local}/${info.prefixlen}`, 'address', false), text: `address ${info.local}/${info.prefixlen} on ${a.ifname}` });
    }
  }
  const clash = taken.find((t) => overlaps(t.cidr, subnet));
  if (clash) {
    const suggestion = suggestSubnet(taken.map((t) => t.cidr));
    throw new Error(
      `${flag === '--nat-subnet' ? 'NAT' : 'host-only'} subnet ${formatCidr(subnet)} clashes with the existing ${clash.text}${netns ? ` (netns ${netns})` : ''}; ` +
        `choose another subnet with ${flag}${suggestion ? ` (e.g. ${flag} ${suggestion})` : ''}`,
    );
  }
}

async function linkInfo(ifname: string, netns?: string): Promise<IpLink | undefined> {
  const out = await tryRun('ip', ['-j', '-d', 'link', 'show', 'dev', ifname], { netns });
  if (out === null || !out.trim()) return undefined;
  return (JSON.parse(out) as IpLink[])[0];
}

async function defaultRouteDevice(netns?: string): Promise<string> {
  const routes = await ipJson<IpRoute>(['-4', 'route', 'show', 'default'], netns);
  const dev = routes.find((r) => r.dev)?.dev;
  if (!dev) {
    throw new Error(`no IPv4 default route${netns ? ` in netns ${netns}` : ''} to masquerade out of; pass uplinkInterface explicitly`);
  }
  return dev;
}

export interface CleanupReport {
  killedDnsmasq: number[];
  tableRemoved: boolean;
  bridgeRemoved: boolean;
}

/** The masquerade uplink (given, or the default route's device), or undefined for a host-only network. */
async function resolveUplink(cfg: NatNetworkConfig): Promise<string | undefined> {
  if (cfg.mode === 'host-only') return undefined;
  const ns = cfg.netns;
  const uplink = validateIfName(cfg.uplinkInterface ?? (await defaultRouteDevice(ns)), 'uplink interface');
  if (uplink === cfg.bridge) throw new Error(`the uplink interface would be the NAT bridge ${uplink} itself`);
  if (!(await linkInfo(uplink, ns))) throw new Error(`uplink interface ${uplink} does not exist${ns ? ` in netns ${ns}` : ''}`);
  return uplink;
}

function rulesetConfig(cfg: NatNetworkConfig, uplink: string | undefined, pool: AddressPool): NftRulesetConfig {
  return { table: cfg.table, bridge: cfg.bridge, subnet: cfg.subnet, uplink, gateway: cfg.gateway, dns: cfg.dns, hostAccess: pool.hostAccessIps() };
}

function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** The reservation table of a network, as persisted in <dataDir>/reservations.json. */
async function loadPool(cfg: NatNetworkConfig, log: UplinkLog): Promise<AddressPool> {
  const pool = new AddressPool(cfg.dhcpRange[0], cfg.dhcpRange[1], formatCidr(cfg.subnet));
  let entries: unknown[] = [];
  try {
    const doc = JSON.parse(await readFile(path.join(cfg.dataDir, RESERVATIONS_FILE), 'utf8')) as { reservations?: unknown };
    if (Array.isArray(doc.reservations)) entries = doc.reservations;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err: String(e) }, 'VM address reservations unreadable; starting with none');
  }
  const skipped = pool.load(entries);
  if (skipped.length) log.warn({ skipped }, 'VM address reservations that no longer fit this network were dropped');
  return pool;
}

/** Writes a file atomically (temp file + rename), so dnsmasq never reads half of it. */
async function writeAtomic(file: string, text: string, mode: number): Promise<void> {
  const tmp = `${file}.tmp`;
  await writeFile(tmp, text, { mode });
  await chmod(tmp, mode); // writeFile's mode is filtered by the umask
  await rename(tmp, file);
}

/**
 * The reservation table (private, in dataDir) and what dnsmasq reads of it (in runtimeDir,
 * readable by dnsmasq's unprivileged user: MACs, addresses and VM names, nothing secret).
 */
async function writePoolFiles(cfg: NatNetworkConfig, pool: AddressPool): Promise<void> {
  await writeAtomic(path.join(cfg.dataDir, RESERVATIONS_FILE), JSON.stringify({ version: 1, reservations: pool.list() }, null, 2) + '\n', 0o600);
  await mkdir(cfg.runtimeDir, { recursive: true, mode: 0o755 });
  await chmod(cfg.runtimeDir, 0o755);
  await writeAtomic(path.join(cfg.runtimeDir, DHCP_HOSTS_FILE), pool.dhcpHostsFile(), 0o644);
  await writeAtomic(path.join(cfg.runtimeDir, DNS_HOSTS_FILE), pool.dnsHostsFile(), 0o644);
}

export interface AddressUsage {
  /** Addresses VMs can get (the pool). */
  size: number;
  /** Reserved by instances this worker holds. */
  used: number;
  free: number;
}

export class NatNetwork {
  private readonly taps = new Set<string>();
  private destroying: Promise<void> | undefined;
  /** Reservation changes run one at a time (drivers operate on different VMs in parallel). */
  private poolQueue: Promise<unknown> = Promise.resolve();
  private releaseTool: string | null | undefined;

  private constructor(
    private readonly cfg: NatNetworkConfig,
    /** Undefined for a host-only network. */
    readonly uplinkInterface: string | undefined,
    readonly gatewayMac: string,
    private readonly dnsmasq: DnsmasqSupervisor,
    private readonly log: UplinkLog,
    private readonly pool: AddressPool,
  ) {}

  static async create(opts: NatNetworkOptions): Promise<NatNetwork> {
    const cfg = resolveNatOptions(opts);
    const log = opts.log;
    const ns = cfg.netns;
    const T0 = Date.now();

    // Read-only checks first: nothing is touched if any of them fails.
    if (ns !== undefined && (await tryRun('ip', ['link', 'show', 'lo'], { netns: ns })) === null) {
      throw new Error(`network namespace ${ns} does not exist (ip netns add ${ns})`);
    }
    const existing = await linkInfo(cfg.bridge, ns);
    if (existing) {
      throw new Error(
        `interface ${cfg.bridge} already exists${ns ? ` in netns ${ns}` : ''} ` +
          `(${existing.linkinfo?.info_kind ?? 'device'}); a leftover after a crash is removed by NatNetwork.cleanupStale('${cfg.name}')`,
      );
    }
    const uplink = await resolveUplink(cfg);
    await checkSubnetClash(cfg.subnet, ns, cfg.mode === 'host-only' ? '--host-only-subnet' : '--nat-subnet');

    const gatewayMac = gatewayMacFor(cfg.name);
    const supervisor = NatNetwork.supervisor(cfg, opts);
    await mkdir(cfg.dataDir, { recursive: true, mode: 0o700 });
    const pool = await loadPool(cfg, log);
    const net = new NatNetwork(cfg, uplink, gatewayMac, supervisor, log, pool);
    try {
      await writePoolFiles(cfg, pool);
      await writeFile(path.join(cfg.dataDir, 'dnsmasq.conf'), dnsmasqConfig(cfg), { mode: 0o600 });

      const b = cfg.bridge;
      await run('ip', ['link', 'add', 'name', b, 'address', gatewayMac, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0'], { netns: ns });
      // No IPv6 on the NAT bridge: the filter drops IPv6 anyway, and no router advertisements leak.
      await tryRun('sysctl', ['-q', '-w', `net.ipv6.conf.${b}.disable_ipv6=1`], { netns: ns });
      await run('ip', ['addr', 'add', `${formatIpv4(cfg.gateway)}/${cfg.subnet.prefix}`, 'dev', b], { netns: ns });
      await run('ip', ['link', 'set', 'dev', b, 'up'], { netns: ns });
      if (uplink !== undefined) await run('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1'], { netns: ns });
      await run('nft', ['-f', '-'], { netns: ns, input: nftRuleset(rulesetConfig(cfg, uplink, pool)) });
      await supervisor.start();
    } catch (err) {
      log.error({ err: String(err), name: cfg.name }, 'NAT network setup failed; rolling back');
      await net.destroy().catch((e: unknown) => log.error({ err: String(e) }, 'rollback failed'));
      throw err;
    }
    log.info(
      {
        name: cfg.name,
        netns: ns,
        subnet: formatCidr(cfg.subnet),
        gateway: formatIpv4(cfg.gateway),
        gatewayMac,
        uplink,
        dhcpRange: cfg.dhcpRange.map(formatIpv4),
        leaseSeconds: cfg.leaseSeconds,
        dnsmasqPid: supervisor.pid,
        ms: Date.now() - T0,
      },
      'NAT network up',
    );
    return net;
  }

  /**
   * The worker's entry point: adopts the network an earlier worker process left up (same name
   * and gateway address; VM ports stay attached, the nftables table is reloaded, a live dnsmasq
   * is adopted unless its config changed) or creates it. A bridge of that name with another
   * address is replaced only when no VM port is attached to it.
   */
  static async open(opts: NatNetworkOptions): Promise<NatNetwork> {
    const cfg = resolveNatOptions(opts);
    const ns = cfg.netns;
    const log = opts.log;
    const existing = await linkInfo(cfg.bridge, ns);
    if (!existing) return NatNetwork.create(opts);
    if (existing.linkinfo?.info_kind !== 'bridge') {
      throw new Error(`interface ${cfg.bridge} exists${ns ? ` in netns ${ns}` : ''} but is not a bridge (${existing.linkinfo?.info_kind ?? 'device'}); choose another --nat-name`);
    }
    const ports = (await ipJson<IpLink>(['link', 'show', 'master', cfg.bridge], ns)).map((l) => l.ifname);
    const addrs = await ipJson<IpAddr>(['-4', 'addr', 'show', 'dev', cfg.bridge], ns);
    const gatewayIp = formatIpv4(cfg.gateway);
    const sameAddress = (addrs[0]?.addr_info ?? []).some((a) => a.family === 'inet' && a.local === gatewayIp && a.prefixlen === cfg.subnet.prefix);
    if (!sameAddress) {
      if (ports.length) {
        throw new Error(
          `NAT bridge ${cfg.bridge} is up with another address while VMs are attached (${ports.join(', ')}); ` +
            `stop those VMs or keep the previous --nat-subnet`,
        );
      }
      log.warn({ name: cfg.name }, 'NAT bridge exists with another address and no VM ports: recreating it');
      await NatNetwork.cleanupStale(cfg.name, { netns: ns, dataDir: cfg.dataDir, log });
      return NatNetwork.create(opts);
    }
    const uplink = await resolveUplink(cfg);
    await mkdir(cfg.dataDir, { recursive: true, mode: 0o700 });
    const pool = await loadPool(cfg, log);
    await writePoolFiles(cfg, pool);
    const confFile = path.join(cfg.dataDir, 'dnsmasq.conf');
    const conf = dnsmasqConfig(cfg);
    const oldConf = await readFile(confFile, 'utf8').catch(() => '');
    await writeFile(confFile, conf, { mode: 0o600 });
    if (uplink !== undefined) await run('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1'], { netns: ns });
    await run('nft', ['-f', '-'], { netns: ns, input: nftRuleset(rulesetConfig(cfg, uplink, pool)) });
    const supervisor = NatNetwork.supervisor(cfg, opts);
    const pids = await findDnsmasqProcesses(cfg.bridge, ns);
    if (pids.length === 1 && oldConf === conf) {
      supervisor.adopt(pids[0]!);
      // The reservation files may have changed while no worker ran: dnsmasq re-reads them on SIGHUP.
      signal(pids[0]!, 'SIGHUP');
    } else {
      if (pids.length) await killAndWait(pids);
      await supervisor.start();
    }
    const net = new NatNetwork(cfg, uplink, gatewayMacFor(cfg.name), supervisor, log, pool);
    for (const p of ports) net.taps.add(p);
    log.info({ name: cfg.name, netns: ns, subnet: formatCidr(cfg.subnet), ports, dnsmasqPid: supervisor.pid, adoptedDnsmasq: pids.length === 1 && oldConf === conf }, 'NAT network adopted');
    return net;
  }

  private static supervisor(cfg: NatNetworkConfig, opts: NatNetworkOptions): DnsmasqSupervisor {
    return new DnsmasqSupervisor({
      netns: cfg.netns,
      args: ['--keep-in-foreground', `--conf-file=${path.join(cfg.dataDir, 'dnsmasq.conf')}`, `--interface=${cfg.bridge}`],
      log: opts.log,
      ...(opts.outlivesWorker ? { outputFile: path.join(cfg.dataDir, 'dnsmasq.log') } : {}),
    });
  }

  /** Leaves the network (bridge, rules, dnsmasq) up for the VMs and stops managing it. */
  close(): void {
    this.dnsmasq.detach();
  }

  get name(): string {
    return this.cfg.name;
  }
  get bridge(): string {
    return this.cfg.bridge;
  }
  get subnet(): string {
    return formatCidr(this.cfg.subnet);
  }
  get prefixLength(): number {
    return this.cfg.subnet.prefix;
  }
  get gatewayIp(): string {
    return formatIpv4(this.cfg.gateway);
  }
  /** dnsmasq answers DHCP on the gateway address. */
  get dhcpServerIp(): string {
    return formatIpv4(this.cfg.gateway);
  }
  /** DNS server handed out by DHCP (the gateway), or undefined when dns is off. */
  get dnsServerIp(): string | undefined {
    return this.cfg.dns ? formatIpv4(this.cfg.gateway) : undefined;
  }
  get dhcpRange(): [string, string] {
    return [formatIpv4(this.cfg.dhcpRange[0]), formatIpv4(this.cfg.dhcpRange[1])];
  }
  get leaseSeconds(): number {
    return this.cfg.leaseSeconds;
  }
  get nftTable(): string {
    return this.cfg.table;
  }
  get dataDir(): string {
    return this.cfg.dataDir;
  }
  get leaseFile(): string {
    return path.join(this.cfg.dataDir, 'dnsmasq.leases');
  }
  get dnsmasqPid(): number | undefined {
    return this.dnsmasq.pid;
  }
  get dnsmasqRestarts(): number {
    return this.dnsmasq.restarts;
  }
  get tapNames(): string[] {
    return [...this.taps];
  }

  /** How many VM addresses the network has, and how many are reserved. */
  get addresses(): AddressUsage {
    return { size: this.pool.size, used: this.pool.used, free: this.pool.free };
  }

  reservations(): Reservation[] {
    return this.pool.list();
  }

  /**
   * Reserves the instance's address (idempotent; an existing reservation keeps its address and
   * takes the new MAC, name and host access) and applies it: dnsmasq's host files (re-read on
   * SIGHUP), the host firewall's `host_access` set, and the release of a stale lease another MAC
   * still holds on that address. Throws AddressPoolFull when no address is free.
   */
  reserve(req: ReserveRequest): Promise<Reservation> {
    return this.serial(async () => {
      this.assertAlive();
      const held = this.pool.get(req.key);
      const before = held ? { ...held } : undefined;
      // An existing reservation keeps its address: no lease to look at. Unchanged (the driver
      // re-confirms it at every start and for every instance at start-up): nothing to apply.
      const leases = before ? [] : await this.liveLeases();
      const r = this.pool.reserve(req, before || this.dhcpReleaseTool() !== null ? [] : leases);
      if (before && before.mac === r.mac && before.dnsName === r.dnsName && before.hostAccess === r.hostAccess) return r;
      await this.apply();
      for (const l of leases) if (l.ip === r.ip && l.mac !== r.mac) await this.releaseLease(l);
      this.log.debug({ key: r.key, ip: r.ip, mac: r.mac, dnsName: r.dnsName, hostAccess: r.hostAccess }, 'VM address reserved');
      return r;
    });
  }

  /** Frees an instance's address: no DHCP answer, no DNS name, no host access for it from now on. */
  release(key: string): Promise<void> {
    return this.serial(async () => {
      const r = this.pool.release(key);
      if (!r) return;
      await this.apply();
      // Its lease ends now rather than when it would expire, so the address is clean for the next VM.
      await this.releaseLease({ ip: r.ip, mac: r.mac });
      this.log.debug({ key, ip: r.ip }, 'VM address released');
    });
  }

  /** Releases every reservation whose instance is not in `keep` (after a restart: instances removed meanwhile). */
  async releaseAllBut(keep: ReadonlySet<string>): Promise<string[]> {
    const gone = this.pool.list().filter((r) => !keep.has(r.key));
    for (const r of gone) await this.release(r.key);
    return gone.map((r) => r.key);
  }

  /**
   * The host's own IPv4 addresses in the network's namespace other than the gateway: a VM may
   * never reach them (its packet filter drops them as host_blocked; the host firewall too).
   */
  async hostAddresses(): Promise<string[]> {
    const addrs = await ipJson<IpAddr>(['-4', 'addr', 'show'], this.cfg.netns);
    const gw = formatIpv4(this.cfg.gateway);
    const out = new Set<string>();
    for (const a of addrs) for (const i of a.addr_info ?? []) if (i.family === 'inet' && i.local !== gw) out.add(i.local);
    return [...out];
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.poolQueue.then(fn, fn);
    this.poolQueue = next.catch(() => undefined);
    return next;
  }

  /** Writes the reservation files, tells dnsmasq, and brings the host_access set in line. */
  private async apply(): Promise<void> {
    await writePoolFiles(this.cfg, this.pool);
    const pid = this.dnsmasq.pid;
    if (pid !== undefined) signal(pid, 'SIGHUP');
    await run('nft', ['-f', '-'], { netns: this.cfg.netns, input: nftHostAccessUpdate(this.cfg.table, this.pool.hostAccessIps()) });
  }

  private async liveLeases(): Promise<LiveLease[]> {
    const text = await readFile(this.leaseFile, 'utf8').catch(() => '');
    return parseLeaseFile(text, Math.floor(Date.now() / 1000));
  }

  private dhcpReleaseTool(): string | null {
    if (this.releaseTool === undefined) {
      try {
        this.releaseTool = findBinary('dhcp_release');
      } catch {
        this.releaseTool = null;
        this.log.warn({}, '`dhcp_release` not found (Debian: dnsmasq-utils): a removed VM\'s lease stays until it expires, and its address is reused last');
      }
    }
    return this.releaseTool;
  }

  /** Ends a lease in dnsmasq at once (a DHCPRELEASE on its behalf, from the host). Best effort. */
  private async releaseLease(l: LiveLease): Promise<void> {
    if (this.dhcpReleaseTool() === null) return;
    const out = await tryRun('dhcp_release', [this.cfg.bridge, l.ip, l.mac], { netns: this.cfg.netns });
    if (out === null) this.log.warn({ ip: l.ip, mac: l.mac }, 'dhcp_release failed; the lease ends when it expires');
  }

  /** Attaches an existing TAP (any Ethernet link works) to the bridge as an isolated port and sets it up. */
  async addTap(tapName: string): Promise<void> {
    this.assertAlive();
    validateIfName(tapName, 'TAP name');
    const ns = this.cfg.netns;
    const link = await linkInfo(tapName, ns);
    if (!link) throw new Error(`TAP ${tapName} does not exist${ns ? ` in netns ${ns}` : ''}; create it first`);
    if (link.linkinfo?.info_kind === 'bridge') throw new Error(`${tapName} is a bridge, not a TAP`);
    if (link.master && link.master !== this.cfg.bridge) {
      throw new Error(`${tapName} is already a port of ${link.master}`);
    }
    await run('ip', ['link', 'set', 'dev', tapName, 'master', this.cfg.bridge], { netns: ns });
    // NAT: isolated ports cannot exchange frames with each other, only with the bridge (the
    // gateway). Host-only (issue 18): VMs on it may reach each other where both their policies
    // allow it (each VM's packet filter decides, as Anka's host network lets VMs see each other).
    const isolated = this.cfg.mode === 'host-only' ? 'off' : 'on';
    await run('ip', ['link', 'set', 'dev', tapName, 'type', 'bridge_slave', 'isolated', isolated, 'learning', 'on'], { netns: ns });
    await tryRun('sysctl', ['-q', '-w', `net.ipv6.conf.${tapName}.disable_ipv6=1`], { netns: ns });
    await run('ip', ['link', 'set', 'dev', tapName, 'up'], { netns: ns });
    this.taps.add(tapName);
    this.log.debug({ tap: tapName, bridge: this.cfg.bridge }, 'TAP attached');
  }

  /**
   * Creates a persistent TAP owned by a VM's unprivileged user, so its VM host process can open it
   * without any capability (tun_not_capable: the owner may attach). A leftover of the same name
   * (an earlier run of that instance) is deleted first. The device lives until deleteTap().
   */
  async createTap(tapName: string, owner: { uid: number; gid: number }): Promise<void> {
    this.assertAlive();
    validateIfName(tapName, 'TAP name');
    for (const id of [owner.uid, owner.gid]) {
      if (!Number.isInteger(id) || id <= 0 || id > 0xfffffffe) throw new Error(`invalid TAP owner id ${id}`);
    }
    const ns = this.cfg.netns;
    if (await linkInfo(tapName, ns)) await run('ip', ['link', 'del', 'dev', tapName], { netns: ns });
    await run('ip', ['tuntap', 'add', 'dev', tapName, 'mode', 'tap', 'user', String(owner.uid), 'group', String(owner.gid)], { netns: ns });
  }

  /**
   * Creates a VM's veth uplink (issue 20): namespace vmNetnsFor(port) holding only VM_UPLINK_IF
   * (IPv6 off, no address, up), and its peer `port` in the bridge's namespace, not yet attached
   * (addTap attaches it where a TAP went: every rule naming the port still applies). TSO, GSO, GRO,
   * SG and checksum offloads are turned off on both ends: QEMU's `-netdev dgram` carries plain
   * frames, so nothing may arrive as a 64 KiB GSO frame or with its checksum left to the hardware.
   * Leftovers of the same name (an earlier run of the instance) are deleted first.
   */
  async createUplink(port: string): Promise<{ netns: string; ifname: string }> {
    this.assertAlive();
    return createVethUplink(port, this.cfg.netns);
  }

  /** What the kernel dropped sending on the VM end of `port`'s namespace (on the offload path QEMU's TAP: frames QEMU did not take in time); undefined when there is none. */
  vmEndTxDropped(port: string): number | undefined {
    try {
      return linkStats(VM_UPLINK_IF, { netns: vmNetnsFor(port) }).txDropped;
    } catch {
      return undefined;
    }
  }

  /** An empty per-VM namespace for the offload path's TAP (createVmNamespace). */
  async createVmNamespace(port: string): Promise<{ netns: string; ifname: string }> {
    this.assertAlive();
    return createVmNamespace(port);
  }

  /**
   * Veth uplinks of this network's namespace that no VM host process holds (unusedVethUplinks).
   * Per-VM namespaces left without their VM end (orphanVmNamespaces) are deleted on the way.
   */
  async unusedUplinks(): Promise<string[]> {
    for (const ns of await orphanVmNamespaces()) await tryRun('ip', ['netns', 'del', ns]);
    return unusedVethUplinks(this.cfg.netns);
  }

  /** Deletes a veth uplink (both ends) and the VM's namespace. Idempotent. */
  async deleteUplink(port: string): Promise<void> {
    this.taps.delete(port);
    await deleteVethUplink(port, this.cfg.netns);
  }

  /** Deletes a TAP made by createTap (detaching it). Idempotent. */
  async deleteTap(tapName: string): Promise<void> {
    validateIfName(tapName, 'TAP name');
    this.taps.delete(tapName);
    if (await linkInfo(tapName, this.cfg.netns)) await tryRun('ip', ['link', 'del', 'dev', tapName], { netns: this.cfg.netns });
  }

  /** Detaches a TAP from the bridge (the device itself belongs to the VM host process). Idempotent. */
  async removeTap(tapName: string): Promise<void> {
    validateIfName(tapName, 'TAP name');
    this.taps.delete(tapName);
    const link = await linkInfo(tapName, this.cfg.netns);
    if (link?.master === this.cfg.bridge) {
      await tryRun('ip', ['link', 'set', 'dev', tapName, 'nomaster'], { netns: this.cfg.netns });
    }
  }

  /** Stops dnsmasq, removes the nft table and the bridge. Idempotent; safe to call concurrently. */
  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      await this.dnsmasq.stop();
      const report = await NatNetwork.cleanupStale(this.cfg.name, { netns: this.cfg.netns, dataDir: this.cfg.dataDir, log: this.log });
      this.taps.clear();
      await rm(this.cfg.runtimeDir, { recursive: true, force: true });
      this.log.info({ name: this.cfg.name, ...report }, 'NAT network destroyed');
    })();
    return this.destroying;
  }

  /**
   * Removes what a NatNetwork named `name` may have left behind after a crash: its dnsmasq
   * (found by command line and network namespace, any parent), the nftables table
   * `fleet_<name>` and the bridge `<name>` (only if it is a bridge). Idempotent.
   */
  static async cleanupStale(
    name: string,
    opts: { netns?: string | undefined; dataDir?: string | undefined; log?: UplinkLog | undefined } = {},
  ): Promise<CleanupReport> {
    if (typeof name !== 'string' || !NAME_RE.test(name)) throw new Error(`NAT network name ${JSON.stringify(name)} is invalid`);
    const ns = opts.netns;
    if (ns !== undefined && !NETNS_RE.test(ns)) throw new Error(`netns ${JSON.stringify(ns)} is not a valid network namespace name`);
    const pids = await findDnsmasqProcesses(name, ns);
    if (pids.length) await killAndWait(pids);
    const inetRemoved = (await tryRun('nft', ['delete', 'table', 'inet', `fleet_${name}`], { netns: ns })) !== null;
    // Earlier versions used an `ip` table.
    const ipRemoved = (await tryRun('nft', ['delete', 'table', 'ip', `fleet_${name}`], { netns: ns })) !== null;
    const tableRemoved = inetRemoved || ipRemoved;
    let bridgeRemoved = false;
    const link = await linkInfo(name, ns);
    if (link?.linkinfo?.info_kind === 'bridge') {
      await run('ip', ['link', 'delete', 'dev', name], { netns: ns });
      bridgeRemoved = true;
    } else if (link) {
      opts.log?.warn({ name, kind: link.linkinfo?.info_kind }, 'an interface with the NAT network name exists but is not a bridge; left alone');
    }
    if (opts.dataDir) await rm(path.join(path.resolve(opts.dataDir), 'dnsmasq.pid'), { force: true });
    const report = { killedDnsmasq: pids, tableRemoved, bridgeRemoved };
    if (pids.length || tableRemoved || bridgeRemoved) opts.log?.info({ name, netns: ns, ...report }, 'stale NAT network cleaned up');
    return report;
  }

  private assertAlive(): void {
    if (this.destroying) throw new Error(`NAT network ${this.cfg.name} has been destroyed`);
  }
}
