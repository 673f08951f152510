/**
 * Filter configuration: the options a caller passes, and their validated, resolved form.
 * `resolveConfig` is the only code path in the package that throws (NetfilterConfigError).
 */
import { formatIpv4, formatMac, isGroupMac, parseIpv4, parseMac } from './address.ts';
import { type Cidr, type PrefixRule, PrefixTable, RuleAction, cidrContains, cidrLast, formatCidr, parseCidr } from './cidr.ts';
import { NetfilterConfigError } from './errors.ts';

/** A port exposed to the outside (`--expose`-style): connections to hostPort on the host go to vmPort on the VM. */
export interface PortExposure {
  hostPort: number;
  vmPort: number;
  /** Default 'tcp'. */
  protocol?: 'tcp' | 'udp';
  /** Host address the uplink listens on; default "0.0.0.0" (all). The filter itself does not use it. */
  hostAddress?: string;
}

/** A lease the VM already holds when the filter starts (e.g. read from the host's DHCP lease file). */
export interface LeaseSeed {
  ip: string;
  /** When the lease ends, in ms on the same clock as the `now` given to the filter. */
  expiresAt: number;
  /** When it was obtained (ms); default: unknown (reported as expiresAt minus the lease length if known, else NaN). */
  obtainedAt?: number;
  /** DNS servers from DHCP option 6. */
  dns?: readonly string[];
  serverId?: string;
}

export interface FilterConfig {
  /** The VM's MAC, "02:00:00:00:00:01". Must be unicast. */
  vmMac: string;
  /** The NAT gateway (the host), e.g. "192.168.64.1". */
  gatewayIp: string;
  /** The gateway's MAC. When given, DHCP replies must come from it and the VM's unicast IPv4 must go to it. Recommended. */
  gatewayMac?: string;
  /** The VM network, e.g. "192.168.64.0/24". */
  subnet: string;
  /** Trusted DHCP servers; default [gatewayIp]. */
  dhcpServers?: readonly string[];
  /** Destination prefixes the VM may reach ("10.0.0.0/8", "1.2.3.4", "@host" = the gateway). */
  allow?: readonly string[];
  /** Destination prefixes the VM may not reach. Longest prefix wins; block wins a tie. */
  block?: readonly string[];
  /**
   * May the VM reach the host's services at the gateway address (any port)? Default false: the
   * VM reaches the host only for DHCP and DNS. An `allow` rule covering the gateway (`"@host"`)
   * grants the same. Other addresses of the host (`hostAddresses`) are never reached through this.
   */
  hostAccess?: boolean;
  /**
   * Addresses the host owns besides the gateway (its uplink address, other interfaces, public
   * addresses): a destination among them is `host_blocked` unless an allow rule names it, even
   * when the address class would count it as global. Default none.
   */
  hostAddresses?: readonly string[];
  /**
   * The address reserved for this VM: the only address it may ever hold. When set, the filter
   * learns no other address from an ACK (`bad_address`) and drops client messages that request,
   * renew, release or decline any other address (`dhcp_address`). Default: any usable subnet address.
   */
  address?: string;
  /** VM ARP frames: token bucket. Default { perSecond: 20, burst: 50 }. */
  arpRate?: { perSecond: number; burst: number };
  /**
   * Anka's `block local`: the VM may not reach the host except for DHCP and DNS (and replies from
   * exposed ports); ARP requests only for the gateway or itself; host->VM traffic from local
   * sources is restricted (implies ingress 'restricted'). Default false.
   */
  blockLocal?: boolean;
  /**
   * Host-only network (issue 18): nothing outside the VM subnet exists for this VM. VM -> host
   * frames to any address outside the subnet and host -> VM frames from one are dropped as
   * `beyond_host_only`, before allow/block rules (a rule cannot open the world to a host-only VM).
   * The gateway (the worker's host-only address) follows the usual host-access rules. Default false.
   */
  hostOnly?: boolean;
  /**
   * Host->VM IPv4 policy. 'open' (default, Softnet parity): anything for the VM's MAC passes once it
   * is well formed and DHCP replies come from trusted servers. 'restricted': local (non-global)
   * sources must be allowed by a rule, be the gateway with host access, be a lease DNS server
   * answering from port 53, or target an exposed port.
   */
  ingress?: 'open' | 'restricted';
  /**
   * Prefixes to treat as global (public) although their address class is not, e.g. a lab
   * network standing in for the Internet in tests. Checked after allow/block rules, the
   * gateway and the VM subnet, exactly where the built-in classification is. Default none.
   */
  globalPrefixes?: readonly string[];
  /** Port exposure rules; objects or strings "[hostAddress:]hostPort:vmPort[/tcp|/udp]". */
  expose?: readonly (PortExposure | string)[];
  /**
   * Largest frame accepted, without FCS. Default 1514. At most 65549: a 65,535-byte IPv4 datagram
   * in an Ethernet frame, the largest GSO super-frame a virtio-net header can carry (issue 20).
   */
  maxFrame?: number;
  /** VM DHCP client messages: token bucket. Default { perSecond: 10, burst: 50 }. */
  dhcpRate?: { perSecond: number; burst: number };
  /** How long after the VM's DHCP message a server reply with that xid is accepted. Default 60000 ms. */
  dhcpTransactionMs?: number;
  /** A lease is treated as expired this long before its end. Default 100 ms. */
  leaseSkewMs?: number;
  /** Cap on the lease time a server grants (0xffffffff = infinite is capped too). Default 86400 s. */
  maxLeaseSeconds?: number;
  /** Verify the IPv4 header checksum (drop as bad_checksum). Default false. */
  verifyIpChecksum?: boolean;
  /** A lease the VM already holds. */
  lease?: LeaseSeed;
}

export interface ResolvedExposure {
  readonly hostPort: number;
  readonly vmPort: number;
  readonly protocol: 'tcp' | 'udp';
  readonly hostAddress: string;
}

export interface ResolvedLeaseSeed {
  readonly ip: number;
  readonly expiresAt: number;
  readonly obtainedAt: number;
  readonly dns: readonly number[];
  readonly serverId: number | null;
}

/** The validated configuration, with addresses as numbers for the filter and as text for callers. */
export interface ResolvedConfig {
  readonly vmMac: string;
  readonly vmMacBytes: Uint8Array;
  readonly gatewayIp: string;
  readonly gatewayIpNumber: number;
  readonly gatewayMac: string | null;
  readonly gatewayMacBytes: Uint8Array | null;
  readonly subnet: string;
  readonly subnetCidr: Cidr;
  /** Broadcast address of the subnet. */
  readonly subnetBroadcast: number;
  readonly dhcpServers: readonly string[];
  readonly dhcpServerNumbers: readonly number[];
  readonly allow: readonly string[];
  readonly block: readonly string[];
  readonly rules: readonly PrefixRule[];
  readonly globalPrefixes: readonly string[];
  /** globalPrefixes as ALLOW rules, for a PrefixTable. */
  readonly globalRules: readonly PrefixRule[];
  readonly hostAccess: boolean;
  readonly hostAddresses: readonly string[];
  readonly hostAddressNumbers: readonly number[];
  /** The reserved address, or null when any usable subnet address may be leased. */
  readonly address: string | null;
  readonly addressNumber: number | null;
  readonly blockLocal: boolean;
  readonly hostOnly: boolean;
  readonly ingress: 'open' | 'restricted';
  readonly expose: readonly ResolvedExposure[];
  readonly maxFrame: number;
  readonly dhcpRate: { readonly perSecond: number; readonly burst: number };
  readonly arpRate: { readonly perSecond: number; readonly burst: number };
  readonly dhcpTransactionMs: number;
  readonly leaseSkewMs: number;
  readonly maxLeaseSeconds: number;
  readonly verifyIpChecksum: boolean;
  readonly lease: ResolvedLeaseSeed | null;
}

const KNOWN_KEYS = new Set<string>([
  'vmMac',
  'gatewayIp',
  'gatewayMac',
  'subnet',
  'dhcpServers',
  'allow',
  'block',
  'globalPrefixes',
  'hostAccess',
  'hostAddresses',
  'address',
  'arpRate',
  'blockLocal',
  'hostOnly',
  'ingress',
  'expose',
  'maxFrame',
  'dhcpRate',
  'dhcpTransactionMs',
  'leaseSkewMs',
  'maxLeaseSeconds',
  'verifyIpChecksum',
  'lease',
]);

function fail(field: string, value: unknown, problem: string): never {
  throw new NetfilterConfigError(field, value, problem);
}

function macOf(field: string, value: unknown): Uint8Array {
  if (typeof value !== 'string') fail(field, value, 'expected a MAC address string like "02:00:00:00:00:01"');
  const mac = parseMac(value);
  if (mac === null) fail(field, value, 'not a MAC address (six hex pairs separated by ":" or "-")');
  if (isGroupMac(mac)) fail(field, value, 'must be a unicast MAC (the I/G bit of the first octet is set)');
  if (mac.every((b) => b === 0)) fail(field, value, 'the all-zero MAC is not a valid station address');
  return mac;
}

function ipOf(field: string, value: unknown): number {
  if (typeof value !== 'string') fail(field, value, 'expected a dotted-quad IPv4 address string');
  const ip = parseIpv4(value);
  if (ip === null) fail(field, value, 'not a dotted-quad IPv4 address (four decimal octets 0..255, no leading zeros)');
  return ip;
}

function isUnicastIp(ip: number): boolean {
  return ip !== 0 && ip >>> 28 < 14; // not 0.0.0.0, not 224/4, not 240/4 (incl. 255.255.255.255)
}

function boolOf(field: string, value: unknown, dflt: boolean): boolean {
  if (value === undefined) return dflt;
  if (typeof value !== 'boolean') fail(field, value, 'expected true or false');
  return value;
}

function numberOf(field: string, value: unknown, dflt: number, min: number, max: number, integer: boolean): number {
  if (value === undefined) return dflt;
  if (typeof value !== 'number' || !Number.isFinite(value)) fail(field, value, 'expected a finite number');
  if (integer && !Number.isInteger(value)) fail(field, value, 'expected an integer');
  if (value < min || value > max) fail(field, value, `expected a value in ${min}..${max}`);
  return value;
}

function listOf(field: string, value: unknown): readonly unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) fail(field, value, 'expected an array');
  return value;
}

function portOf(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) {
    fail(field, value, 'expected a port number 1..65535');
  }
  return value;
}

const EXPOSE_TEXT = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/;

/** Parses "[hostAddress:]hostPort:vmPort[/tcp|/udp]" (Softnet's `--expose 2222:22` form). */
export function parseExposure(text: string): PortExposure | null {
  const m = EXPOSE_TEXT.exec(text);
  if (m === null) return null;
  const out: PortExposure = { hostPort: Number(m[2]), vmPort: Number(m[3]), protocol: (m[4] as 'tcp' | 'udp' | undefined) ?? 'tcp' };
  if (m[1] !== undefined) out.hostAddress = m[1];
  return out;
}

function exposureOf(field: string, value: unknown): ResolvedExposure {
  let e: unknown = value;
  if (typeof value === 'string') {
    e = parseExposure(value);
    if (e === null) fail(field, value, 'expected "[hostAddress:]hostPort:vmPort[/tcp|/udp]", e.g. "2222:22"');
  }
  if (typeof e !== 'object' || e === null) fail(field, value, 'expected { hostPort, vmPort, protocol?, hostAddress? } or "hostPort:vmPort"');
  const o = e as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (k !== 'hostPort' && k !== 'vmPort' && k !== 'protocol' && k !== 'hostAddress') fail(`${field}.${k}`, o[k], 'unknown option');
  }
  const hostPort = portOf(`${field}.hostPort`, o.hostPort);
  const vmPort = portOf(`${field}.vmPort`, o.vmPort);
  const protocol = o.protocol ?? 'tcp';
  if (protocol !== 'tcp' && protocol !== 'udp') fail(`${field}.protocol`, protocol, 'expected "tcp" or "udp"');
  const hostAddress = o.hostAddress ?? '0.0.0.0';
  ipOf(`${field}.hostAddress`, hostAddress);
  return { hostPort, vmPort, protocol, hostAddress: hostAddress as string };
}

/** Validates `cfg` and resolves defaults. Throws NetfilterConfigError naming the bad option. */
export function resolveConfig(cfg: FilterConfig): ResolvedConfig {
  if (typeof cfg !== 'object' || cfg === null) fail('config', cfg, 'expected an object');
  for (const key of Object.keys(cfg)) {
    if (!KNOWN_KEYS.has(key)) fail(key, (cfg as unknown as Record<string, unknown>)[key], 'unknown option');
  }

  const vmMacBytes = macOf('vmMac', cfg.vmMac);
  const gatewayMacBytes = cfg.gatewayMac === undefined ? null : macOf('gatewayMac', cfg.gatewayMac);
  if (gatewayMacBytes !== null && gatewayMacBytes.every((b, i) => b === vmMacBytes[i])) {
    fail('gatewayMac', cfg.gatewayMac, 'must differ from vmMac');
  }

  if (typeof cfg.subnet !== 'string') fail('subnet', cfg.subnet, 'expected a CIDR string like "192.168.64.0/24"');
  if (!cfg.subnet.includes('/')) fail('subnet', cfg.subnet, 'expected a CIDR with a prefix length, like "192.168.64.0/24"');
  const sp = parseCidr(cfg.subnet);
  if (!sp.ok) fail('subnet', cfg.subnet, sp.error);
  const subnetCidr = sp.cidr;
  if (subnetCidr.prefix < 1 || subnetCidr.prefix > 30) fail('subnet', cfg.subnet, 'prefix length must be 1..30');
  const subnetBroadcast = cidrLast(subnetCidr);

  const gatewayIpNumber = ipOf('gatewayIp', cfg.gatewayIp);
  if (!cidrContains(subnetCidr, gatewayIpNumber)) fail('gatewayIp', cfg.gatewayIp, `not inside subnet ${formatCidr(subnetCidr)}`);
  if (gatewayIpNumber === subnetCidr.base || gatewayIpNumber === subnetBroadcast) {
    fail('gatewayIp', cfg.gatewayIp, 'is the network or broadcast address of the subnet');
  }

  const serverList = cfg.dhcpServers === undefined ? [cfg.gatewayIp] : listOf('dhcpServers', cfg.dhcpServers);
  if (serverList.length === 0) fail('dhcpServers', cfg.dhcpServers, 'at least one trusted DHCP server is required');
  const dhcpServerNumbers: number[] = [];
  serverList.forEach((s, i) => {
    const ip = ipOf(`dhcpServers[${i}]`, s);
    if (!isUnicastIp(ip)) fail(`dhcpServers[${i}]`, s, 'must be a unicast address');
    if (!dhcpServerNumbers.includes(ip)) dhcpServerNumbers.push(ip);
  });

  const rules: PrefixRule[] = [];
  const ruleList = (name: 'allow' | 'block', action: PrefixRule['action']): string[] => {
    const texts: string[] = [];
    listOf(name, cfg[name]).forEach((entry, i) => {
      const field = `${name}[${i}]`;
      if (typeof entry !== 'string') fail(field, entry, 'expected a CIDR string, a bare IPv4 address, or "@host"');
      if (entry === '@host') {
        rules.push({ cidr: { base: gatewayIpNumber, prefix: 32 }, action });
      } else {
        const p = parseCidr(entry);
        if (!p.ok) fail(field, entry, p.error);
        rules.push({ cidr: p.cidr, action });
      }
      texts.push(entry);
    });
    return texts;
  };
  const allow = ruleList('allow', RuleAction.ALLOW);
  const block = ruleList('block', RuleAction.BLOCK);
  const globalRules: PrefixRule[] = [];
  const globalPrefixes = listOf('globalPrefixes', cfg.globalPrefixes).map((entry, i) => {
    const field = `globalPrefixes[${i}]`;
    if (typeof entry !== 'string') fail(field, entry, 'expected a CIDR string or a bare IPv4 address');
    const p = parseCidr(entry);
    if (!p.ok) fail(field, entry, p.error);
    globalRules.push({ cidr: p.cidr, action: RuleAction.ALLOW });
    return entry;
  });

  const blockLocal = boolOf('blockLocal', cfg.blockLocal, false);
  const hostOnly = boolOf('hostOnly', cfg.hostOnly, false);
  if (blockLocal && cfg.hostAccess === true) {
    fail('hostAccess', cfg.hostAccess, 'conflicts with blockLocal: true (block-local mode denies host access except DHCP/DNS)');
  }
  const hostAccess = boolOf('hostAccess', cfg.hostAccess, false);
  const hostAddressNumbers: number[] = [];
  const hostAddresses = listOf('hostAddresses', cfg.hostAddresses).map((entry, i) => {
    const n = ipOf(`hostAddresses[${i}]`, entry);
    if (!hostAddressNumbers.includes(n)) hostAddressNumbers.push(n);
    return formatIpv4(n);
  });
  if (cfg.ingress !== undefined && cfg.ingress !== 'open' && cfg.ingress !== 'restricted') {
    fail('ingress', cfg.ingress, 'expected "open" or "restricted"');
  }
  if (blockLocal && cfg.ingress === 'open') fail('ingress', cfg.ingress, 'conflicts with blockLocal: true (which restricts ingress)');
  const ingress = blockLocal ? 'restricted' : (cfg.ingress ?? 'open');

  const expose: ResolvedExposure[] = [];
  listOf('expose', cfg.expose).forEach((e, i) => {
    const r = exposureOf(`expose[${i}]`, e);
    const clash = expose.find((x) => x.protocol === r.protocol && x.hostPort === r.hostPort && x.hostAddress === r.hostAddress);
    if (clash) fail(`expose[${i}]`, e, `host port ${r.hostPort}/${r.protocol} is already exposed`);
    expose.push(r);
  });

  const maxFrame = numberOf('maxFrame', cfg.maxFrame, 1514, 64, 65549, true);
  const rateOf = (field: 'dhcpRate' | 'arpRate', value: unknown, perSecond: number, burst: number): { perSecond: number; burst: number } => {
    if (value === undefined) return { perSecond, burst };
    if (typeof value !== 'object' || value === null) fail(field, value, 'expected { perSecond, burst }');
    const o = value as Record<string, unknown>;
    return {
      perSecond: numberOf(`${field}.perSecond`, o.perSecond, perSecond, 0.001, 1e9, false),
      burst: numberOf(`${field}.burst`, o.burst, burst, 1, 1e9, true),
    };
  };
  const dhcpRate = rateOf('dhcpRate', cfg.dhcpRate, 10, 50);
  const arpRate = rateOf('arpRate', cfg.arpRate, 20, 50);
  const dhcpTransactionMs = numberOf('dhcpTransactionMs', cfg.dhcpTransactionMs, 60_000, 1, 3_600_000, false);
  const leaseSkewMs = numberOf('leaseSkewMs', cfg.leaseSkewMs, 100, 0, 3_600_000, false);
  const maxLeaseSeconds = numberOf('maxLeaseSeconds', cfg.maxLeaseSeconds, 86_400, 1, 0xffffffff, true);
  const verifyIpChecksum = boolOf('verifyIpChecksum', cfg.verifyIpChecksum, false);

  const partial = {
    vmMac: formatMac(vmMacBytes),
    vmMacBytes,
    gatewayIp: formatIpv4(gatewayIpNumber),
    gatewayIpNumber,
    gatewayMac: gatewayMacBytes === null ? null : formatMac(gatewayMacBytes),
    gatewayMacBytes,
    subnet: formatCidr(subnetCidr),
    subnetCidr,
    subnetBroadcast,
    dhcpServers: dhcpServerNumbers.map(formatIpv4),
    dhcpServerNumbers,
    allow,
    block,
    rules,
    globalPrefixes,
    globalRules,
    hostAccess,
    hostAddresses,
    hostAddressNumbers,
    address: null,
    addressNumber: null,
    blockLocal,
    hostOnly,
    ingress,
    expose,
    maxFrame,
    dhcpRate,
    arpRate,
    dhcpTransactionMs,
    leaseSkewMs,
    maxLeaseSeconds,
    verifyIpChecksum,
    lease: null,
  } satisfies ResolvedConfig;
  let withAddress: ResolvedConfig = partial;
  if (cfg.address !== undefined) {
    const n = ipOf('address', cfg.address);
    const problem = leaseAddressProblem(partial, n);
    if (problem !== null) fail('address', cfg.address, problem);
    withAddress = { ...partial, address: formatIpv4(n), addressNumber: n };
  }
  const lease = cfg.lease === undefined ? null : resolveLeaseSeed(withAddress, cfg.lease, 'lease');
  return Object.freeze({ ...withAddress, lease });
}

/**
 * Does this configuration let the VM reach the host's services at the gateway address beyond DHCP
 * and DNS? True with `hostAccess` or when the allow/block rules allow the gateway (`"@host"`, or
 * a prefix covering it) — the same decision the filter makes per packet. The worker mirrors it in
 * the host firewall, so both layers agree.
 */
export function grantsHostAccess(cfg: ResolvedConfig): boolean {
  const rule = new PrefixTable(cfg.rules).lookup(cfg.gatewayIpNumber | 0);
  if (rule === RuleAction.ALLOW) return true;
  if (rule === RuleAction.BLOCK) return false;
  return cfg.hostAccess && !cfg.blockLocal;
}

/**
 * Why an address cannot be a VM's lease in this configuration, or null if it can.
 * Shared by the DHCP snooper (yiaddr) and lease seeding.
 */
export function leaseAddressProblem(cfg: ResolvedConfig, ip: number): string | null {
  if (!cidrContains(cfg.subnetCidr, ip)) return `not inside subnet ${cfg.subnet}`;
  if (ip === cfg.subnetCidr.base) return 'is the network address';
  if (ip === cfg.subnetBroadcast) return 'is the broadcast address';
  if (ip === cfg.gatewayIpNumber) return 'is the gateway address';
  if (cfg.dhcpServerNumbers.includes(ip)) return 'is a DHCP server address';
  if (cfg.addressNumber !== null && ip !== cfg.addressNumber) return `is not the VM's reserved address ${cfg.address ?? ''}`;
  return null;
}

/** Validates a lease seed (config `lease` or `filter.seedLease`). */
export function resolveLeaseSeed(cfg: ResolvedConfig, seed: LeaseSeed, field: string): ResolvedLeaseSeed {
  if (typeof seed !== 'object' || seed === null) fail(field, seed, 'expected { ip, expiresAt, dns?, serverId?, obtainedAt? }');
  for (const k of Object.keys(seed)) {
    if (k !== 'ip' && k !== 'expiresAt' && k !== 'obtainedAt' && k !== 'dns' && k !== 'serverId') {
      fail(`${field}.${k}`, (seed as unknown as Record<string, unknown>)[k], 'unknown option');
    }
  }
  const ip = ipOf(`${field}.ip`, seed.ip);
  const problem = leaseAddressProblem(cfg, ip);
  if (problem !== null) fail(`${field}.ip`, seed.ip, problem);
  if (typeof seed.expiresAt !== 'number' || !Number.isFinite(seed.expiresAt)) {
    fail(`${field}.expiresAt`, seed.expiresAt, 'expected a finite time in ms');
  }
  let obtainedAt = Number.NaN;
  if (seed.obtainedAt !== undefined) {
    if (typeof seed.obtainedAt !== 'number' || !Number.isFinite(seed.obtainedAt) || seed.obtainedAt > seed.expiresAt) {
      fail(`${field}.obtainedAt`, seed.obtainedAt, 'expected a finite time in ms, not after expiresAt');
    }
    obtainedAt = seed.obtainedAt;
  }
  const dns = listOf(`${field}.dns`, seed.dns).map((d, i) => {
    const n = ipOf(`${field}.dns[${i}]`, d);
    if (!isUnicastIp(n)) fail(`${field}.dns[${i}]`, d, 'must be a unicast address');
    return n;
  });
  const serverId = seed.serverId === undefined ? null : ipOf(`${field}.serverId`, seed.serverId);
  return { ip, expiresAt: seed.expiresAt, obtainedAt, dns, serverId };
}
