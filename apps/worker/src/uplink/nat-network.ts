// The worker's NAT network on Linux — the stand-in for vmnet shared mode:
// a bridge holding the gateway address, one isolated bridge port per VM TAP,
// masquerade + forward rules in an nftables table of its own, and a supervised dnsmasq
// serving DHCP (and optionally DNS) on the bridge only.
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DnsmasqSupervisor, findDnsmasqProcesses, killAndWait, type UplinkLog } from './dnsmasq.ts';
import { ipJson, run, tryRun } from './exec.ts';
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
  /** dnsmasq config, lease file and pid file live here (created 0700). */
  dataDir: string;
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
  netns: string | undefined;
  uplinkInterface: string | undefined;
  dataDir: string;
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
  if (!opts.log || typeof opts.log.info !== 'function') throw new Error('log (a pino-style logger) is required');
  if (opts.dns !== undefined && typeof opts.dns !== 'boolean') throw new Error('dns must be a boolean');
  if (opts.noPing !== undefined && typeof opts.noPing !== 'boolean') throw new Error('noPing must be a boolean');
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
    netns: opts.netns,
    uplinkInterface,
    dataDir: path.resolve(opts.dataDir),
  };
}

/** A locally administered unicast MAC derived from the network name (stable across restarts). */
export function gatewayMacFor(name: string): string {
  const h = createHash('sha256').update(`fleet-nat-gateway:${name}`).digest();
  const bytes = [(h[0]! & 0xfc) | 0x02, h[1]!, h[2]!, h[3]!, h[4]!, h[5]!];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** The nftables ruleset: one table of our own, replaced atomically. */
export function nftRuleset(cfg: { table: string; bridge: string; subnet: Cidr; uplink: string }): string {
  const net = formatCidr(cfg.subnet);
  return [
    // Declaring then deleting makes the load idempotent: it atomically replaces any leftover table.
    `table ip ${cfg.table}`,
    `delete table ip ${cfg.table}`,
    `table ip ${cfg.table} {`,
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    ip saddr ${net} ip daddr != ${net} oifname "${cfg.uplink}" masquerade`,
    '  }',
    '  chain forward {',
    '    type filter hook forward priority filter; policy accept;',
    `    iifname "${cfg.bridge}" oifname "${cfg.uplink}" ip saddr ${net} accept`,
    `    iifname "${cfg.uplink}" oifname "${cfg.bridge}" ct state established,related accept`,
    // Anything else routed into or out of the NAT bridge (VM↔VM through the gateway,
    // other interfaces → VMs, VMs → other interfaces) is dropped.
    `    iifname "${cfg.bridge}" drop`,
    `    oifname "${cfg.bridge}" drop`,
    '  }',
    '}',
    '',
  ].join('\n');
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
    `dhcp-range=${formatIpv4(cfg.dhcpRange[0])},${formatIpv4(cfg.dhcpRange[1])},${formatIpv4(maskFor(cfg.subnet))},${cfg.leaseSeconds}s`,
    `dhcp-option=option:router,${formatIpv4(cfg.gateway)}`,
    `dhcp-leasefile=${path.join(cfg.dataDir, 'dnsmasq.leases')}`,
    `pid-file=${path.join(cfg.dataDir, 'dnsmasq.pid')}`,
    'dhcp-authoritative',
  ];
  if (cfg.dns) lines.push(`dhcp-option=option:dns-server,${formatIpv4(cfg.gateway)}`, 'domain-needed', 'bogus-priv');
  if (cfg.noPing) lines.push('no-ping');
  return lines.join('\n') + '\n';
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
export async function checkSubnetClash(subnet: Cidr, netns?: string): Promise<void> {
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
      `NAT subnet ${formatCidr(subnet)} clashes with the existing ${clash.text}${netns ? ` (netns ${netns})` : ''}; ` +
        `choose another subnet with --nat-subnet${suggestion ? ` (e.g. --nat-subnet ${suggestion})` : ''}`,
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

export class NatNetwork {
  private readonly taps = new Set<string>();
  private destroying: Promise<void> | undefined;

  private constructor(
    private readonly cfg: NatNetworkConfig,
    readonly uplinkInterface: string,
    readonly gatewayMac: string,
    private readonly dnsmasq: DnsmasqSupervisor,
    private readonly log: UplinkLog,
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
    const uplink = validateIfName(cfg.uplinkInterface ?? (await defaultRouteDevice(ns)), 'uplink interface');
    if (uplink === cfg.bridge) throw new Error(`the uplink interface would be the NAT bridge ${uplink} itself`);
    if (!(await linkInfo(uplink, ns))) throw new Error(`uplink interface ${uplink} does not exist${ns ? ` in netns ${ns}` : ''}`);
    await checkSubnetClash(cfg.subnet, ns);

    const gatewayMac = gatewayMacFor(cfg.name);
    const supervisor = NatNetwork.supervisor(cfg, opts);
    const net = new NatNetwork(cfg, uplink, gatewayMac, supervisor, log);
    try {
      await mkdir(cfg.dataDir, { recursive: true, mode: 0o700 });
      await writeFile(path.join(cfg.dataDir, 'dnsmasq.conf'), dnsmasqConfig(cfg), { mode: 0o600 });

      const b = cfg.bridge;
      await run('ip', ['link', 'add', 'name', b, 'address', gatewayMac, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0'], { netns: ns });
      // No IPv6 on the NAT bridge: the filter drops IPv6 anyway, and no router advertisements leak.
      await tryRun('sysctl', ['-q', '-w', `net.ipv6.conf.${b}.disable_ipv6=1`], { netns: ns });
      await run('ip', ['addr', 'add', `${formatIpv4(cfg.gateway)}/${cfg.subnet.prefix}`, 'dev', b], { netns: ns });
      await run('ip', ['link', 'set', 'dev', b, 'up'], { netns: ns });
      await run('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1'], { netns: ns });
      await run('nft', ['-f', '-'], { netns: ns, input: nftRuleset({ table: cfg.table, bridge: b, subnet: cfg.subnet, uplink }) });
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
    const uplink = validateIfName(cfg.uplinkInterface ?? (await defaultRouteDevice(ns)), 'uplink interface');
    await mkdir(cfg.dataDir, { recursive: true, mode: 0o700 });
    const confFile = path.join(cfg.dataDir, 'dnsmasq.conf');
    const conf = dnsmasqConfig(cfg);
    const oldConf = await readFile(confFile, 'utf8').catch(() => '');
    await writeFile(confFile, conf, { mode: 0o600 });
    await run('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1'], { netns: ns });
    await run('nft', ['-f', '-'], { netns: ns, input: nftRuleset({ table: cfg.table, bridge: cfg.bridge, subnet: cfg.subnet, uplink }) });
    const supervisor = NatNetwork.supervisor(cfg, opts);
    const pids = await findDnsmasqProcesses(cfg.bridge, ns);
    if (pids.length === 1 && oldConf === conf) {
      supervisor.adopt(pids[0]!);
    } else {
      if (pids.length) await killAndWait(pids);
      await supervisor.start();
    }
    const net = new NatNetwork(cfg, uplink, gatewayMacFor(cfg.name), supervisor, log);
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
    // Isolated ports cannot exchange frames with each other, only with the bridge (the gateway).
    await run('ip', ['link', 'set', 'dev', tapName, 'type', 'bridge_slave', 'isolated', 'on', 'learning', 'on'], { netns: ns });
    await tryRun('sysctl', ['-q', '-w', `net.ipv6.conf.${tapName}.disable_ipv6=1`], { netns: ns });
    await run('ip', ['link', 'set', 'dev', tapName, 'up'], { netns: ns });
    this.taps.add(tapName);
    this.log.debug({ tap: tapName, bridge: this.cfg.bridge }, 'TAP attached');
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
    const tableRemoved = (await tryRun('nft', ['delete', 'table', 'ip', `fleet_${name}`], { netns: ns })) !== null;
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
