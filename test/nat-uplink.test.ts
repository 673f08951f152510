// The worker's Linux NAT network (apps/worker/src/uplink) end to end, with real bridges,
// nftables, dnsmasq and DHCP — all inside network namespaces this test creates:
//
//   ext-ns  (the "outside world", 203.0.113.1/24, runs a TCP responder that reports the peer address)
//     │ veth fe<id> ── fu<id> (203.0.113.2/24, default route via .1: the uplink)
//   host-ns (stands in for the Mac: the NatNetwork — bridge fn<id>, 192.168.64.1/24, nft table, dnsmasq)
//     │ bridge ports (attached with addTap, isolated):
//     ├── veth fa<id> ── fb<id> in vm-ns   (stands in for VM 1; udhcpc from busybox-static)
//     ├── veth fc<id> ── fd<id> in vm2-ns  (stands in for VM 2)
//     └── a real TAP ft<id> (no VM behind it: attach / isolate / detach only)
//
// The VM namespaces are wired with veths, not TAPs: moving frames between a TAP and another
// namespace needs a userspace pump (the VM host process, next issue). On the bridge a veth end
// is a port exactly like a TAP; a real TAP is attached separately to cover addTap on a TAP.
//
// Network rule: every packet stays between these namespaces and loopback. 192.168.64.0/24 and
// 203.0.113.0/24 (documentation range) are configured only inside them, never in the root namespace.
// The dns:true case points host-ns's resolver at ext-ns (/etc/netns/<host-ns>/resolv.conf,
// removed in afterAll) so that even a stray DNS query could not leave the namespaces.
// Needs root and `ip netns`; otherwise the whole file is skipped with a loud warning.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NatNetwork, type UplinkLog } from '../apps/worker/src/uplink/nat-network.ts';
import { findDnsmasqProcesses, isAlive } from '../apps/worker/src/uplink/dnsmasq.ts';
import { findBinary } from '../apps/worker/src/uplink/exec.ts';

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const NAT_MODULE = pathToFileURL(path.join(REPO_ROOT, 'apps/worker/src/uplink/nat-network.ts')).href;

const ID = process.pid % 1000;
const NS = { host: `fleet-nat-h${ID}`, ext: `fleet-nat-e${ID}`, vm: `fleet-nat-v${ID}`, vm2: `fleet-nat-w${ID}` };
const IF = {
  bridge: `fn${ID}`,
  uplink: `fu${ID}`,
  ext: `fe${ID}`,
  vmHost: `fa${ID}`,
  vmGuest: `fb${ID}`,
  vm2Host: `fc${ID}`,
  vm2Guest: `fd${ID}`,
  tap: `ft${ID}`,
  crash: `fk${ID}`,
  clash: `fx${ID}`,
  dns: `fs${ID}`,
};
const SUBNET = '192.168.64.0/24';
const EXT_IP = '203.0.113.1';
const UPLINK_IP = '203.0.113.2';
const LEASE_SECONDS = 300;
const DHCP_RANGE: [string, string] = ['192.168.64.100', '192.168.64.150'];

function hasRootAndNetns(): { ok: boolean; why: string } {
  if (process.platform !== 'linux') return { ok: false, why: 'not Linux' };
  if (process.getuid?.() !== 0) return { ok: false, why: 'not running as root' };
  const probe = `fleet-nat-probe${ID}`;
  try {
    execFileSync(findBinary('ip'), ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync(findBinary('ip'), ['netns', 'del', probe], { stdio: 'pipe' });
    return { ok: true, why: '' };
  } catch (err) {
    return { ok: false, why: `\`ip netns\` unavailable: ${String(err).split('\n')[0]}` };
  }
}

const env = hasRootAndNetns();
if (!env.ok) {
  console.warn(
    `\n!!!!!!!! SKIPPING test/nat-uplink.test.ts: ${env.why}. The NAT uplink (bridge, nftables, dnsmasq, DHCP) ` +
      'is NOT tested on this machine; run the e2e suite as root on Linux. !!!!!!!!\n',
  );
}

// ---- helpers ----------------------------------------------------------------

function ip(args: string[]): string {
  return execFileSync(findBinary('ip'), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function inNs(ns: string, argv: string[], timeoutMs = 20_000): string {
  return execFileSync(findBinary('ip'), ['netns', 'exec', ns, ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
}
function tryIp(args: string[]): string | null {
  try {
    return ip(args);
  } catch {
    return null;
  }
}

function ensurePackages(): void {
  const need: string[] = [];
  const has = (bin: string) => {
    try {
      findBinary(bin);
      return true;
    } catch {
      return false;
    }
  };
  if (!has('nft')) need.push('nftables');
  if (!has('dnsmasq')) need.push('dnsmasq-base');
  if (!has('busybox')) need.push('busybox-static');
  if (!need.length) return;
  console.warn(`[nat-uplink] installing Debian packages: ${need.join(' ')}`);
  const aptEnv = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    execFileSync('apt-get', ['install', '-y', '-qq', ...need], { stdio: 'pipe', env: aptEnv, timeout: 240_000 });
  } catch {
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'pipe', env: aptEnv, timeout: 240_000 });
    execFileSync('apt-get', ['install', '-y', '-qq', ...need], { stdio: 'pipe', env: aptEnv, timeout: 240_000 });
  }
}

interface LogEntry {
  level: string;
  msg: string | undefined;
  obj: object;
}
function collectingLog(): UplinkLog & { entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const at = (level: string) => (obj: object, msg?: string) => {
    entries.push({ level, msg, obj });
    if (level === 'error' || process.env.NAT_TEST_VERBOSE) console.log(`[nat ${level}] ${msg ?? ''} ${JSON.stringify(obj)}`);
  };
  return { entries, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

async function waitUntil(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const children = new Set<ChildProcess>();

/** Starts `node -e code` inside a namespace; resolves once it prints its first line. */
function nodeInNs(ns: string, code: string): Promise<{ child: ChildProcess; firstLine: string }> {
  const child = spawn(findBinary('ip'), ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve({ child, firstLine: out.slice(0, nl) });
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('exit', (code) => reject(new Error(`node in ${ns} exited ${code} before printing: ${err}`)));
  });
}

/** A TCP server that answers each connection with the peer address it sees, then closes. */
const RESPONDER = (host: string, port: number) => `
  const net = require('node:net');
  net.createServer((s) => { s.end(s.remoteAddress + '\\n'); })
    .listen(${port}, ${JSON.stringify(host)}, () => console.log('listening'));`;

/** Connects from a namespace; resolves with the reply or 'ERROR <code>'. */
async function tcpProbe(ns: string, host: string, port: number, timeoutMs: number): Promise<string> {
  const { firstLine, child } = await nodeInNs(
    ns,
    `const s = require('node:net').connect(${port}, ${JSON.stringify(host)});
     let buf = '';
     const t = setTimeout(() => { console.log('ERROR timeout'); process.exit(0); }, ${timeoutMs});
     s.on('data', (d) => (buf += d));
     s.on('end', () => { clearTimeout(t); console.log(buf.trim()); process.exit(0); });
     s.on('error', (e) => { clearTimeout(t); console.log('ERROR ' + e.code); process.exit(0); });`,
  );
  child.kill();
  return firstLine;
}

interface Lease {
  ip: string;
  mask: string;
  router: string;
  lease: string;
  serverid: string;
  dns: string;
  ms: number;
}

let workDir: string;
let etcNetnsCreated = false;

/** Real DHCP with busybox udhcpc in a namespace; configures the address and default route. */
async function dhcp(ns: string, ifname: string, extra: string[] = []): Promise<Lease> {
  const out = path.join(workDir, `lease-${ns}.env`);
  await rm(out, { force: true });
  const script = path.join(workDir, 'udhcpc.sh');
  const ipBin = findBinary('ip');
  await writeFile(
    script,
    `#!/bin/sh
case "$1" in
  deconfig) ${ipBin} -4 addr flush dev "$interface" ;;
  bound|renew)
    ${ipBin} -4 addr flush dev "$interface"
    ${ipBin} addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ${ipBin} route replace default via "$router" dev "$interface"
    printf 'ip=%s\\nmask=%s\\nrouter=%s\\nlease=%s\\nserverid=%s\\ndns=%s\\n' "$ip" "$mask" "$router" "$lease" "$serverid" "$dns" > "$LEASE_OUT"
    ;;
esac
`,
  );
  await chmod(script, 0o755);
  const t0 = performance.now();
  execFileSync(
    findBinary('ip'),
    ['netns', 'exec', ns, findBinary('busybox'), 'udhcpc', '-i', ifname, '-f', '-q', '-n', '-t', '10', '-T', '1', '-A', '1', '-s', script, ...extra],
    { stdio: 'pipe', timeout: 30_000, env: { ...process.env, LEASE_OUT: out } },
  );
  const ms = performance.now() - t0;
  const kv = Object.fromEntries(
    (await readFile(out, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  ) as Record<string, string>;
  return { ip: kv.ip!, mask: kv.mask!, router: kv.router!, lease: kv.lease!, serverid: kv.serverid!, dns: kv.dns ?? '', ms };
}

function macOf(ns: string, ifname: string): string {
  return JSON.parse(ip(['-n', ns, '-j', 'link', 'show', 'dev', ifname]))[0].address as string;
}

/** Reserves the address of a "VM" namespace's interface, as the QEMU driver does for a VM's MAC. */
async function reserveFor(network: NatNetwork, key: string, ns: string, ifname: string, over: { name?: string; hostAccess?: boolean } = {}): Promise<string> {
  const r = await network.reserve({ key, vmId: key, mac: macOf(ns, ifname), name: over.name ?? key, hostAccess: over.hostAccess ?? false });
  return r.ip;
}

/** udhcpc's DHCP options in hex: a client identifier `01:<mac>`. */
const clidOption = (mac: string): string => `0x3d:01${mac.replace(/:/g, '')}`;

function ipToInt(a: string): number {
  return a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

function bridgeExists(ns: string, name: string): boolean {
  return tryIp(['-n', ns, 'link', 'show', 'dev', name]) !== null;
}
function nftTables(ns: string): string {
  return inNs(ns, [findBinary('nft'), 'list', 'tables']);
}
function linkJson(ns: string, name: string): { master?: string; linkinfo?: { info_slave_data?: { isolated?: boolean } } } {
  return JSON.parse(ip(['-n', ns, '-j', '-d', 'link', 'show', 'dev', name]))[0];
}

// ---- the test ----------------------------------------------------------------

describe.skipIf(!env.ok)('NAT uplink on Linux (network namespaces)', () => {
  const log = collectingLog();
  let net: NatNetwork | undefined;
  let vmLease: Lease;
  let vm2Lease: Lease;
  const networks: NatNetwork[] = [];

  beforeAll(async () => {
    ensurePackages();
    workDir = await mkdtemp(path.join(os.tmpdir(), 'fleet-nat-'));
    // Leftovers of an earlier run with the same id (a crash of this test) go first.
    for (const ns of Object.values(NS)) if (existsSync(`/var/run/netns/${ns}`)) ip(['netns', 'del', ns]);
    for (const ns of Object.values(NS)) ip(['netns', 'add', ns]);
    for (const ns of Object.values(NS)) ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    // host-ns ⇄ ext-ns: the uplink. Both ends are created directly inside their namespaces.
    ip(['link', 'add', IF.uplink, 'netns', NS.host, 'type', 'veth', 'peer', 'name', IF.ext, 'netns', NS.ext]);
    ip(['-n', NS.host, 'addr', 'add', `${UPLINK_IP}/24`, 'dev', IF.uplink]);
    ip(['-n', NS.ext, 'addr', 'add', `${EXT_IP}/24`, 'dev', IF.ext]);
    ip(['-n', NS.host, 'link', 'set', IF.uplink, 'up']);
    ip(['-n', NS.ext, 'link', 'set', IF.ext, 'up']);
    ip(['-n', NS.host, 'route', 'add', 'default', 'via', EXT_IP]);
    // ext-ns deliberately has NO route to 192.168.64.0/24: replies reach VMs only through masquerade.
    ip(['link', 'add', IF.vmHost, 'netns', NS.host, 'type', 'veth', 'peer', 'name', IF.vmGuest, 'netns', NS.vm]);
    ip(['link', 'add', IF.vm2Host, 'netns', NS.host, 'type', 'veth', 'peer', 'name', IF.vm2Guest, 'netns', NS.vm2]);
    ip(['-n', NS.vm, 'link', 'set', IF.vmGuest, 'up']);
    ip(['-n', NS.vm2, 'link', 'set', IF.vm2Guest, 'up']);
    ip(['-n', NS.host, 'tuntap', 'add', 'dev', IF.tap, 'mode', 'tap']);
  }, 300_000);

  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL');
    for (const n of networks) await n.destroy().catch((e: unknown) => console.warn(`[nat-uplink] destroy: ${String(e)}`));
    for (const name of [IF.bridge, IF.crash, IF.clash, IF.dns]) {
      await NatNetwork.cleanupStale(name, { netns: NS.host }).catch((e: unknown) => console.warn(`[nat-uplink] cleanupStale: ${String(e)}`));
    }
    // Deleting a namespace deletes the veths and TAP inside it (and their peers).
    for (const ns of Object.values(NS)) if (existsSync(`/var/run/netns/${ns}`)) tryIp(['netns', 'del', ns]);
    await rm(`/etc/netns/${NS.host}`, { recursive: true, force: true });
    if (etcNetnsCreated) await rmdir('/etc/netns').catch(() => {}); // only if still empty
    if (workDir) await rm(workDir, { recursive: true, force: true });
  }, 60_000);

  it('rejects invalid options with clear errors before touching the system', async () => {
    const base = { name: IF.clash, subnet: SUBNET, netns: NS.host, dataDir: path.join(workDir, 'bad'), log };
    await expect(NatNetwork.create({ ...base, subnet: '192.168.64.1/24' })).rejects.toThrow(/host bits set; did you mean 192\.168\.64\.0\/24/);
    await expect(NatNetwork.create({ ...base, name: 'a-name-far-too-long' })).rejects.toThrow(/name/);
    await expect(NatNetwork.create({ ...base, uplinkInterface: 'x'.repeat(16) })).rejects.toThrow(/at most 15/);
    await expect(NatNetwork.create({ ...base, netns: `fleet-nat-none${ID}` })).rejects.toThrow(/does not exist/);
    expect(bridgeExists(NS.host, IF.clash)).toBe(false);
  });

  it('creates the bridge, nft table and dnsmasq inside host-ns', async () => {
    const t0 = performance.now();
    net = await NatNetwork.create({
      name: IF.bridge,
      subnet: SUBNET,
      netns: NS.host,
      dhcpRange: DHCP_RANGE,
      leaseSeconds: LEASE_SECONDS,
      dns: false, // DHCP only: nothing may forward DNS queries anywhere from this test
      dataDir: path.join(workDir, 'nat'),
      log,
    });
    networks.push(net);
    console.log(`[nat-uplink] NatNetwork.create: ${(performance.now() - t0).toFixed(0)} ms`);
    expect(net.gatewayIp).toBe('192.168.64.1');
    expect(net.dhcpServerIp).toBe('192.168.64.1');
    expect(net.subnet).toBe(SUBNET);
    expect(net.uplinkInterface).toBe(IF.uplink); // found through the default route
    expect(net.gatewayMac).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    const br = JSON.parse(ip(['-n', NS.host, '-j', '-d', 'addr', 'show', 'dev', IF.bridge]))[0];
    expect(br.linkinfo.info_kind).toBe('bridge');
    expect(br.address).toBe(net.gatewayMac);
    expect(br.addr_info.some((a: { local: string; prefixlen: number }) => a.local === '192.168.64.1' && a.prefixlen === 24)).toBe(true);
    expect(inNs(NS.host, ['cat', '/proc/sys/net/ipv4/ip_forward']).trim()).toBe('1');
    expect(nftTables(NS.host)).toContain(`table inet fleet_${IF.bridge}`);
    const ruleset = inNs(NS.host, [findBinary('nft'), 'list', 'table', 'inet', `fleet_${IF.bridge}`]);
    expect(ruleset).toMatch(/oifname "fu\d+" masquerade/);
    expect(net.dnsmasqPid).toBeGreaterThan(0);
    expect(await findDnsmasqProcesses(IF.bridge, NS.host)).toEqual([net.dnsmasqPid]);
    // Nothing of it leaked into the root namespace.
    expect(tryIp(['link', 'show', 'dev', IF.bridge])).toBeNull();
  });

  it('attaches a real TAP as an isolated bridge port and detaches it', async () => {
    await net!.addTap(IF.tap);
    let link = linkJson(NS.host, IF.tap);
    expect(link.master).toBe(IF.bridge);
    expect(link.linkinfo?.info_slave_data?.isolated).toBe(true);
    await net!.removeTap(IF.tap);
    await net!.removeTap(IF.tap); // idempotent
    link = linkJson(NS.host, IF.tap);
    expect(link.master).toBeUndefined();
    await expect(net!.addTap(`nosuch${ID}`)).rejects.toThrow(/does not exist/);
    await expect(net!.addTap('tap-name-too-long0')).rejects.toThrow(/at most 15/);
  });

  it('gives the VM namespace an address by real DHCP, in range, with the configured lease', async () => {
    await net!.addTap(IF.vmHost);
    expect(linkJson(NS.host, IF.vmHost).linkinfo?.info_slave_data?.isolated).toBe(true);
    const reserved = await reserveFor(net!, 'vm1', NS.vm, IF.vmGuest);
    vmLease = await dhcp(NS.vm, IF.vmGuest);
    expect(vmLease.ip).toBe(reserved);
    console.log(`[nat-uplink] DHCP lease for vm-ns: ${vmLease.ip} in ${vmLease.ms.toFixed(0)} ms (udhcpc start → bound)`);
    expect(ipToInt(vmLease.ip)).toBeGreaterThanOrEqual(ipToInt(DHCP_RANGE[0]));
    expect(ipToInt(vmLease.ip)).toBeLessThanOrEqual(ipToInt(DHCP_RANGE[1]));
    expect(vmLease.mask).toBe('24');
    expect(vmLease.router).toBe('192.168.64.1');
    expect(vmLease.serverid).toBe(net!.dhcpServerIp);
    expect(Number(vmLease.lease)).toBe(LEASE_SECONDS);
    // dnsmasq's lease file agrees: "<expiry> <mac> <ip> …", expiry ≈ now + lease time.
    const mac = JSON.parse(ip(['-n', NS.vm, '-j', 'link', 'show', 'dev', IF.vmGuest]))[0].address as string;
    const leases = await readFile(net!.leaseFile, 'utf8');
    const line = leases.split('\n').find((l) => l.includes(mac));
    expect(line, leases).toBeDefined();
    const [expiry, , leasedIp] = line!.split(' ');
    expect(leasedIp).toBe(vmLease.ip);
    expect(Math.abs(Number(expiry) - Date.now() / 1000 - LEASE_SECONDS)).toBeLessThan(10);
  });

  it('reaches ext-ns through masquerade: ext-ns sees host-ns uplink address as the source', async () => {
    await nodeInNs(NS.ext, RESPONDER(EXT_IP, 7000));
    const seen = await tcpProbe(NS.vm, EXT_IP, 7000, 5000);
    expect(seen).toBe(UPLINK_IP); // not the VM's 192.168.64.x: masqueraded
  });

  it('isolates VMs from each other on the bridge (the gateway still reaches both)', async () => {
    await net!.addTap(IF.vm2Host);
    await reserveFor(net!, 'vm2', NS.vm2, IF.vm2Guest);
    vm2Lease = await dhcp(NS.vm2, IF.vm2Guest);
    expect(vm2Lease.ip).not.toBe(vmLease.ip);
    await nodeInNs(NS.vm2, RESPONDER(vm2Lease.ip, 7001));
    // Positive control: host-ns (the worker's side of the bridge) reaches VM 2's service.
    expect(await tcpProbe(NS.host, vm2Lease.ip, 7001, 5000)).toBe('192.168.64.1');
    // VM 1 → VM 2 across the bridge: isolated ports, so not even ARP gets through.
    expect(await tcpProbe(NS.vm, vm2Lease.ip, 7001, 4000)).toMatch(/^ERROR /);
    // Which layer stops it? Two do: the isolated bridge ports, and — when br_netfilter passes
    // bridged IPv4 through the ip hooks (bridge-nf-call-iptables=1, the default once the module is
    // loaded, per namespace) — the nft forward chain's `iifname <bridge> drop`. Check each alone,
    // then both off as a control that the path itself works.
    const brNf = '/proc/sys/net/bridge/bridge-nf-call-iptables';
    const hasBrNf = inNs(NS.host, ['sh', '-c', `cat ${brNf} 2>/dev/null || echo none`]).trim();
    const setBrNf = (v: string) => {
      if (hasBrNf !== 'none') inNs(NS.host, ['sh', '-c', `echo ${v} > ${brNf}`]);
    };
    const setIsolation = (on: boolean) => {
      for (const port of [IF.vmHost, IF.vm2Host]) ip(['-n', NS.host, 'link', 'set', 'dev', port, 'type', 'bridge_slave', 'isolated', on ? 'on' : 'off']);
    };
    try {
      setBrNf('0');
      expect(await tcpProbe(NS.vm, vm2Lease.ip, 7001, 3000)).toMatch(/^ERROR /); // isolation alone
      setIsolation(false);
      // Control: both off. VM 1's neighbour entry for VM 2 may still be FAILED/INCOMPLETE from the
      // probe above (→ an instant EHOSTUNREACH), so flush it, and allow a retry on a loaded machine.
      let control = '';
      for (let attempt = 0; attempt < 3 && control !== vmLease.ip; attempt++) {
        ip(['-n', NS.vm, 'neigh', 'flush', 'dev', IF.vmGuest]);
        control = await tcpProbe(NS.vm, vm2Lease.ip, 7001, 5000);
      }
      expect(control).toBe(vmLease.ip);
      if (hasBrNf !== 'none') {
        setBrNf('1');
        expect(await tcpProbe(NS.vm, vm2Lease.ip, 7001, 3000)).toMatch(/^ERROR /); // nft alone
      }
    } finally {
      setIsolation(true);
      if (hasBrNf !== 'none') setBrNf(hasBrNf);
    }
  });

  it('DHCP identity is the MAC: an unreserved MAC gets nothing; a borrowed client id or fresh ones take nothing', async () => {
    const vm1Mac = macOf(NS.vm, IF.vmGuest);
    const vm2Mac = macOf(NS.vm2, IF.vm2Guest);
    // A MAC without a reservation (a VM that is not Fleet's, or a spoofer past the filter): no address at all.
    ip(['-n', NS.vm2, 'link', 'set', 'dev', IF.vm2Guest, 'address', '02:66:00:00:00:01']);
    try {
      await expect(dhcp(NS.vm2, IF.vm2Guest)).rejects.toThrow();
    } finally {
      ip(['-n', NS.vm2, 'link', 'set', 'dev', IF.vm2Guest, 'address', vm2Mac]);
    }
    // VM 2 presents VM 1's client identifier (and asks for VM 1's address): it still gets its own.
    const borrowed = await dhcp(NS.vm2, IF.vm2Guest, ['-x', clidOption(vm1Mac), '-r', vmLease.ip]);
    expect(borrowed.ip).toBe(vm2Lease.ip);
    // Fresh client identifiers, one per request, as a pool-exhaustion run would send.
    for (let i = 0; i < 5; i++) {
      const l = await dhcp(NS.vm2, IF.vm2Guest, ['-x', `0x3d:ff0000${i.toString(16).padStart(2, '0')}0001`]);
      expect(l.ip).toBe(vm2Lease.ip);
    }
    // dnsmasq holds exactly one lease per reserved MAC; VM 1's is untouched.
    const live = (await readFile(net!.leaseFile, 'utf8')).trim().split('\n').filter(Boolean).map((l) => l.split(' '));
    expect(live.map((l) => [l[1], l[2]]).sort()).toEqual([[vm1Mac, vmLease.ip], [vm2Mac, vm2Lease.ip]].sort());
    expect(net!.addresses).toEqual({ size: 51, used: 2, free: 49 });
  });

  it('guards the host: from a VM only DHCP and DNS reach it, whichever host address; host access opens the gateway alone', async () => {
    await nodeInNs(NS.host, RESPONDER('0.0.0.0', 7100));
    // Control: the service answers from outside (ext-ns → the uplink address).
    expect(await tcpProbe(NS.ext, UPLINK_IP, 7100, 5000)).toBe(EXT_IP);
    for (const target of ['192.168.64.1', UPLINK_IP]) {
      expect(`${target}: ${await tcpProbe(NS.vm, target, 7100, 2500)}`).toMatch(new RegExp(`^${target}: ERROR `));
    }
    const dropped = (): number => Number(/counter packets (\d+)[^\n]*fleet: VM to host/.exec(inNs(NS.host, [findBinary('nft'), 'list', 'chain', 'inet', `fleet_${IF.bridge}`, 'input']))?.[1] ?? 0);
    expect(dropped()).toBeGreaterThan(0);
    // The worker (host) still reaches the VM: replies to its own connections pass.
    await nodeInNs(NS.vm, RESPONDER(vmLease.ip, 7101));
    expect(await tcpProbe(NS.host, vmLease.ip, 7101, 5000)).toBe('192.168.64.1');
    // Host access (the policy's "@host"): the gateway address answers, the uplink address still not.
    await reserveFor(net!, 'vm1', NS.vm, IF.vmGuest, { hostAccess: true });
    expect(await tcpProbe(NS.vm, '192.168.64.1', 7100, 5000)).toBe(vmLease.ip);
    expect(await tcpProbe(NS.vm, UPLINK_IP, 7100, 2500)).toMatch(/^ERROR /);
    expect(await tcpProbe(NS.vm2, '192.168.64.1', 7100, 2500)).toMatch(/^ERROR /); // only VM 1 was granted
    await reserveFor(net!, 'vm1', NS.vm, IF.vmGuest, { hostAccess: false });
    expect(await tcpProbe(NS.vm, '192.168.64.1', 7100, 2500)).toMatch(/^ERROR /);
  });

  it('releasing a reservation ends the lease at once and frees the address for the next VM', async () => {
    const vm1Mac = macOf(NS.vm, IF.vmGuest);
    await net!.release('vm1');
    await waitUntil('the released lease to leave the lease file', async () => !(await readFile(net!.leaseFile, 'utf8')).includes(vm1Mac), 10_000);
    // The next VM (another MAC) on the same address: served at once, not after the old lease expires.
    ip(['-n', NS.vm, 'link', 'set', 'dev', IF.vmGuest, 'address', '02:66:00:00:00:02']);
    try {
      const r = await net!.reserve({ key: 'vm1-next', vmId: 'vm1', mac: '02:66:00:00:00:02', name: 'vm1-next', hostAccess: false });
      expect(r.ip).toBe(vmLease.ip); // the same VM id prefers the same address
      expect((await dhcp(NS.vm, IF.vmGuest)).ip).toBe(vmLease.ip);
      await net!.release('vm1-next');
    } finally {
      ip(['-n', NS.vm, 'link', 'set', 'dev', IF.vmGuest, 'address', vm1Mac]);
    }
    expect((await reserveFor(net!, 'vm1', NS.vm, IF.vmGuest))).toBe(vmLease.ip);
    expect((await dhcp(NS.vm, IF.vmGuest)).ip).toBe(vmLease.ip);
  });

  it('restarts dnsmasq when it dies, and DHCP keeps working', async () => {
    const before = net!.dnsmasqPid!;
    process.kill(before, 'SIGKILL');
    await waitUntil('dnsmasq restart', () => net!.dnsmasqPid !== undefined && net!.dnsmasqPid !== before && net!.dnsmasqRestarts === 1);
    await waitUntil('dnsmasq ready', () => log.entries.some((e) => e.msg === 'dnsmasq' && String((e.obj as { dnsmasq: string }).dnsmasq).includes(`[${net!.dnsmasqPid}]: started`)));
    expect(log.entries.some((e) => e.level === 'warn' && e.msg === 'dnsmasq died; restarting')).toBe(true);
    const again = await dhcp(NS.vm2, IF.vm2Guest);
    expect(again.ip).toBe(vm2Lease.ip); // the lease file survived the restart
  });

  it('detects a subnet clash with existing routes and names the clashing route', async () => {
    const dataDir = path.join(workDir, 'clash');
    await expect(NatNetwork.create({ name: IF.clash, subnet: '192.168.64.0/24', netns: NS.host, dataDir, log })).rejects.toThrow(
      new RegExp(`clashes with the existing route "192\\.168\\.64\\.0/24 dev ${IF.bridge}.*--nat-subnet`),
    );
    await expect(NatNetwork.create({ name: IF.clash, subnet: '203.0.113.128/25', netns: NS.host, dataDir, log })).rejects.toThrow(
      new RegExp(`203\\.0\\.113\\.0/24 dev ${IF.uplink}.*--nat-subnet 192\\.168\\.65\\.0/24`),
    );
    expect(bridgeExists(NS.host, IF.clash)).toBe(false);
    expect(nftTables(NS.host)).not.toContain(`fleet_${IF.clash}`);
  });

  it('destroy() leaves no bridge, no nft table, no dnsmasq; idempotent', async () => {
    const pid = net!.dnsmasqPid!;
    await Promise.all([net!.destroy(), net!.destroy()]);
    await net!.destroy();
    expect(bridgeExists(NS.host, IF.bridge)).toBe(false);
    expect(nftTables(NS.host)).not.toContain(`fleet_${IF.bridge}`);
    expect(isAlive(pid)).toBe(false);
    expect(await findDnsmasqProcesses(IF.bridge, NS.host)).toEqual([]);
    // The VM's port device is the VM's: it survives, detached.
    expect(linkJson(NS.host, IF.vmHost).master).toBeUndefined();
    await expect(net!.addTap(IF.vmHost)).rejects.toThrow(/destroyed/);
  });

  it('with dns on, serves DNS on the gateway address only and hands it out (ping check on)', async () => {
    // Safety net for the network rule: dnsmasq in host-ns forwards to the resolvers of host-ns,
    // and `ip netns exec` takes them from /etc/netns/<ns>/resolv.conf — point it at ext-ns.
    // (Nothing in this test sends a DNS query; this only makes sure none could leave.)
    etcNetnsCreated ||= !existsSync('/etc/netns');
    await mkdir(`/etc/netns/${NS.host}`, { recursive: true });
    await writeFile(`/etc/netns/${NS.host}/resolv.conf`, `nameserver ${EXT_IP}\n`);
    const dnsNet = await NatNetwork.create({
      name: IF.dns,
      subnet: SUBNET,
      netns: NS.host,
      dns: true,
      noPing: false,
      dataDir: path.join(workDir, 'dns'),
      log,
    });
    networks.push(dnsNet);
    expect(dnsNet.dnsServerIp).toBe('192.168.64.1');
    const listening = inNs(NS.host, [findBinary('ss'), '-Hlnu', 'sport', '=', ':53']);
    expect(listening).toContain('192.168.64.1:53');
    expect(listening).not.toMatch(/(0\.0\.0\.0|\*|203\.0\.113\.2|127\.0\.0\.1):53/);
    await dnsNet.addTap(IF.vmHost);
    await reserveFor(dnsNet, 'alpha', NS.vm, IF.vmGuest, { name: 'alpha' });
    // The guest asks to be called "beta" (option 12): the name it gets is the one Fleet gave it.
    const lease = await dhcp(NS.vm, IF.vmGuest, ['-x', 'hostname:beta']);
    const lookup = (name: string): string => {
      try {
        return inNs(NS.vm, [findBinary('busybox'), 'nslookup', name, '192.168.64.1'], 10_000);
      } catch (e) {
        return String((e as { stdout?: string }).stdout ?? e);
      }
    };
    expect(lookup('alpha')).toContain(lease.ip);
    expect(lookup('beta')).not.toContain(lease.ip);
    console.log(`[nat-uplink] DHCP lease with dnsmasq's ping check: ${lease.ip} in ${lease.ms.toFixed(0)} ms`);
    expect(lease.dns.trim()).toBe('192.168.64.1');
    expect(Number(lease.lease)).toBe(600); // the default
    await dnsNet.destroy();
    expect(inNs(NS.host, [findBinary('ss'), '-Hlnu', 'sport', '=', ':53']).trim()).toBe('');
  });

  it('cleanupStale() removes what a crashed worker left behind', async () => {
    const dataDir = path.join(workDir, 'crash');
    const script = path.join(workDir, 'crash.mts');
    await writeFile(
      script,
      `import { NatNetwork } from ${JSON.stringify(NAT_MODULE)};
       const log = { debug() {}, info() {}, warn() {}, error(o, m) { console.error(m, JSON.stringify(o)); } };
       const n = await NatNetwork.create({ name: ${JSON.stringify(IF.crash)}, subnet: '192.168.64.0/24', netns: ${JSON.stringify(NS.host)},
         dataDir: ${JSON.stringify(dataDir)}, dns: false, log });
       console.log(JSON.stringify({ dnsmasq: n.dnsmasqPid }));
       setInterval(() => {}, 1000);`,
    );
    const worker = spawn(process.execPath, ['--import', 'tsx', script], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(worker);
    let stderr = '';
    worker.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      worker.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (out.includes('\n')) resolve(out.split('\n')[0]!);
      });
      worker.on('exit', (code) => reject(new Error(`crash worker exited ${code}: ${stderr}`)));
    });
    const { dnsmasq } = JSON.parse(line) as { dnsmasq: number };
    // Simulated crash: SIGKILL, so nothing is cleaned up.
    worker.kill('SIGKILL');
    await new Promise((r) => worker.once('exit', r));
    expect(bridgeExists(NS.host, IF.crash)).toBe(true);
    expect(nftTables(NS.host)).toContain(`fleet_${IF.crash}`);
    expect(isAlive(dnsmasq)).toBe(true);
    expect(await findDnsmasqProcesses(IF.crash, NS.host)).toEqual([dnsmasq]);
    // A restarted worker cannot create over the leftovers, and is told what to do.
    await expect(NatNetwork.create({ name: IF.crash, subnet: SUBNET, netns: NS.host, dataDir, log })).rejects.toThrow(/already exists.*cleanupStale/);

    const report = await NatNetwork.cleanupStale(IF.crash, { netns: NS.host, dataDir, log });
    expect(report).toEqual({ killedDnsmasq: [dnsmasq], tableRemoved: true, bridgeRemoved: true });
    expect(bridgeExists(NS.host, IF.crash)).toBe(false);
    expect(nftTables(NS.host)).not.toContain(`fleet_${IF.crash}`);
    await waitUntil('stale dnsmasq gone', () => !isAlive(dnsmasq), 5000);
    expect(await NatNetwork.cleanupStale(IF.crash, { netns: NS.host })).toEqual({ killedDnsmasq: [], tableRemoved: false, bridgeRemoved: false });

    // And the network comes back cleanly on the same name.
    const again = await NatNetwork.create({ name: IF.crash, subnet: SUBNET, netns: NS.host, dataDir, dns: false, log });
    networks.push(again);
    await again.destroy();
    expect(bridgeExists(NS.host, IF.crash)).toBe(false);
  });
});
