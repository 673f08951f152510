// The whole fleet on real VMs, in a lab of network namespaces this test creates:
//
//   root ns ── veth ─┐
//   fc  (controller 10.98.0.10) ─┤
//   fw1 (worker w1  10.98.0.11) ─┤  bridge in the hub namespace: one L2 segment 10.98.0.0/24
//   fw2 (worker w2  10.98.0.12) ─┤  (the "LAN" the two Macs and the controller share)
//   fx  ("external" 10.98.0.20) ─┘
//
// Each worker runs `fleet-worker run --driver qemu` inside its namespace: its own NAT network
// (bridge fleet0 192.168.64.1/24 + dnsmasq + nftables masquerade out of eth0) and one VM host
// process per VM. The workers declare only the external host 10.98.0.20 as "public"
// (--global-prefixes), as if it were on the Internet. The test checks what operators rely on:
// VMs boot, get DHCP addresses that the API shows, reach the outside, and cannot reach each
// other, the other worker, or the controller; an attacking guest (ARP spoofing of the gateway,
// IP spoofing, a rogue DHCP server) changes nothing for its neighbour and shows up in the filter
// counters; kill -9 of a worker leaves its VMs running, the restarted worker adopts them, and
// the controller never counts their slots twice.
// Needs root, ip netns, qemu-system-x86_64, dnsmasq, nft, ssh; otherwise skipped loudly.
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayMacFor } from '../apps/worker/src/uplink/nat-network.ts';
import { REPO_ROOT, waitUntil } from './support/fleet-processes.ts';
import { realVmsMissing, warnSkipped } from './support/lab.ts';
import { TwoWorkerLab } from './support/two-worker-lab.ts';
import { dhcpOffer, type VmView } from './support/vm-lab.ts';
import { DHCP, arpFrame, dhcpFrame, ipv6Frame, opt, pad, type DhcpOpt } from '../packages/netfilter/src/testing/frames.ts';

const run = promisify(execFile);
const ADMIN = 'fleet_e2enetadmin01_' + 'N'.repeat(43);

const why = realVmsMissing(['ssh', 'ssh-keygen']);
if (why) warnSkipped('test/fleet-network.test.ts', why, 'Two-worker isolation, attacking guests, operator images and worker adoption with real VMs are');

// Both workers declare only the external host as "public" (--global-prefixes), as if it were on the Internet.
const L = new TwoWorkerLab('fn', '10.98.0', () => ['--global-prefixes', '10.98.0.20/32', '--cpus', '3', '--memory-mib', '2048', '--vm-slots', '3'], ADMIN);
const NS = L.ns;
const ADDR = L.addr;
const api = L.api;
let tmp = '';
let key = '';
const { vmSh, vmShInput, sshReady, runningVm } = L.vms;
/** The VM host process's status, with the filter counters it always has on a NAT VM. */
async function hostStatus(worker: 'w1' | 'w2', vm: VmView): Promise<{ pid: number; qemuPid: number; ip?: string; counters: { filter: { fromVm: Record<string, number>; fromHost: Record<string, number> } } }> {
  const st = await L.vms.hostStatus(worker, vm);
  return { ...st, counters: { filter: st.counters.filter! } };
}

describe.skipIf(why !== '')('a fleet of two workers in network namespaces, real VMs', () => {
  let a: VmView; // on w1
  let b: VmView; // on w1: a's neighbour, later the attacker
  let c: VmView; // on w2

  beforeAll(async () => {
    await L.setUp('net');
    tmp = L.tmp;
    key = L.key;
  }, 600_000);

  afterAll(async () => {
    await L.tearDown();
  }, 60_000);

  it('boots VMs on both workers; the API shows the DHCP addresses their filters learned', async () => {
    // disconnect policy wait: the kill -9 test below restarts their worker and expects to adopt them running.
    for (const [name, host] of [['net-a', 'w1'], ['net-b', 'w1'], ['net-c', 'w2']] as const) {
      await api.createVm({ name, image: 'fleet-guest', cpus: 1, memoryMib: 256, diskGib: 2, selector: { host }, disconnectPolicy: 'wait' });
    }
    [a, b, c] = await Promise.all([runningVm('net-a'), runningVm('net-b'), runningVm('net-c')]);
    expect([a.worker, b.worker, c.worker]).toEqual(['w1', 'w1', 'w2']);
    for (const vm of [a, b, c]) expect(vm.ip).toMatch(/^192\.168\.64\.\d+$/);
    expect(a.ip).not.toBe(b.ip);
    // The filter's lease is the IP the controller shows.
    expect((await hostStatus('w1', a)).ip).toBe(a.ip);
    await Promise.all([sshReady('w1', a.ip!), sshReady('w1', b.ip!), sshReady('w2', c.ip!)]);
    const hostname = await vmSh('w1', a.ip!, 'hostname');
    expect(hostname.out.trim()).toBe('net-a');
    // Its own disk (a qcow2 of diskGib made for this VM) was formatted and mounted at /data.
    const df = await vmSh('w1', a.ip!, 'echo kept > /data/file && sync && cat /data/file && df -k /data | tail -n1');
    expect(df.out).toContain('kept');
    const sizeKib = Number(df.out.trim().split('\n').at(-1)!.trim().split(/\s+/)[1]);
    expect(sizeKib).toBeGreaterThan(1.5 * 1024 * 1024); // diskGib 2
  }, 400_000);

  it('runs an operator image from the images dir as a copy-on-write clone, and refuses an unknown one clearly', async () => {
    const imagesDir = path.join(tmp, 'w2', 'images');
    await run('bash', [path.join(REPO_ROOT, 'guest-image/make-disk.sh'), '--out', path.join(imagesDir, 'opimg.qcow2'), '--authorized-key', `${key}.pub`]);
    // Its network policy, from the API to the worker's packet filter: the external host is
    // blocked, and worker w1's LAN address (private, so normally out of reach) is allowed.
    await api.createVm({
      name: 'net-d', image: 'opimg', cpus: 1, memoryMib: 256, diskGib: 1, selector: { host: 'w2' },
      network: { block: [`${ADDR.x}/32`], allow: [ADDR.w1] },
    });
    await api.createVm({ name: 'net-e', image: 'no-such-image', cpus: 1, memoryMib: 256, selector: { host: 'w2' } });
    const d = await runningVm('net-d');
    await sshReady('w2', d.ip!);
    expect((await vmSh('w2', d.ip!, 'hostname')).out.trim()).toBe('operator-image');
    const policy = await vmSh('w2', d.ip!, `ping -c 1 -W 2 ${ADDR.w1} >/dev/null && echo w1-ok; timeout 3 wget -q -O - http://${ADDR.x}:8080/ || echo external-blocked`);
    expect(policy.out).toContain('w1-ok');
    expect(policy.out).toContain('external-blocked');
    expect((await api.vm('net-d')).network).toEqual({ mode: 'nat', allow: [ADDR.w1], block: [`${ADDR.x}/32`], blockLocal: false });
    // The VM's disk is an overlay whose backing file is the operator's image, which stays untouched.
    const dir = path.join(tmp, 'w2', 'qemu', 'instances', `${d.id}.${d.attempt}`);
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', '-U', path.join(dir, 'disk.qcow2')])).stdout) as { 'backing-filename'?: string };
    expect(info['backing-filename']).toBe(path.join(imagesDir, 'opimg.qcow2'));
    await waitUntil(async () => (await api.vm('net-e'))?.state === 'failed', 60_000, 'net-e to fail');
    expect((await api.vm('net-e')).reason).toMatch(/image "no-such-image" not found on this worker/);
    await api.ok('DELETE', '/v1/vms/net-e');
  }, 300_000);

  it('a VM reaches the external host through its worker\'s NAT, and nothing else', async () => {
    const ext = await vmSh('w1', a.ip!, `timeout 5 wget -q -O - http://${ADDR.x}:8080/`);
    expect(ext.code).toBe(0);
    // Masqueraded: the external host sees the worker's address, not the VM's.
    expect(ext.out.trim()).toBe(`external-ok ${ADDR.w1}`);
    const fromC = await vmSh('w2', c.ip!, `timeout 5 wget -q -O - http://${ADDR.x}:8080/`);
    expect(fromC.out.trim()).toBe(`external-ok ${ADDR.w2}`);

    const before = (await hostStatus('w1', a)).counters.filter.fromVm.local_dst ?? 0;
    // Its neighbour on the same worker, the other worker, the controller, the other worker's VM.
    for (const target of [b.ip!, ADDR.w2, ADDR.c, c.ip!]) {
      const r = await vmSh('w1', a.ip!, `ping -c 1 -W 2 ${target} >/dev/null 2>&1 && echo reached || echo unreachable`);
      expect(`${target}: ${r.out.trim()}`).toBe(`${target}: unreachable`);
    }
    const tcp = await vmSh('w1', a.ip!, `timeout 3 wget -q -O - http://${ADDR.c}:18080/v1/health || echo refused`);
    expect(tcp.out.trim()).toMatch(/refused|timed out|unreachable/i);
    const after = (await hostStatus('w1', a)).counters.filter.fromVm.local_dst ?? 0;
    expect(after - before).toBeGreaterThanOrEqual(4);
  }, 180_000);

  it('an attacking guest (ARP spoofing of the gateway, IP spoofing, rogue DHCP) changes nothing for its neighbour', async () => {
    const attacker = b;
    const victim = a;
    const victimMac = ((await api.vm('net-a')) as { mac: string }).mac;
    const before = (await hostStatus('w1', attacker)).counters.filter.fromVm;
    // 1. Claim the gateway's address with unsolicited ARP (busybox arping binds to its source,
    //    so the attacker first puts the gateway's address on its own NIC).
    await vmSh('w1', attacker.ip!, 'ip addr add 192.168.64.1/32 dev eth0; arping -c 3 -U -s 192.168.64.1 -I eth0 192.168.64.1 >/dev/null 2>&1; ip addr del 192.168.64.1/32 dev eth0; true');
    // 2. Send from an address it was not leased (the victim's), towards the gateway and the outside.
    await vmSh('w1', attacker.ip!, `ip addr add ${victim.ip}/32 dev eth0; ping -c 3 -W 1 -I ${victim.ip} 192.168.64.1 >/dev/null 2>&1; timeout 2 wget -q -O - http://${ADDR.x}:8080/ >/dev/null 2>&1; ip addr del ${victim.ip}/32 dev eth0; true`);
    // 3. Send the victim a DHCPOFFER for another address with a rogue router, and run a DHCP
    //    server handing out a rogue gateway while the victim renews its lease.
    const offer = dhcpOffer(victimMac, '192.168.64.200', '192.168.64.66');
    //    Its port is isolated, so it would never learn the victim's MAC: it sends through the
    //    gateway's. (busybox nc has no UDP; tftp sends one datagram to any port.)
    await vmSh('w1', attacker.ip!, [
      `echo ${offer.toString('base64')} | base64 -d > /tmp/offer.bin`,
      `arp -s ${victim.ip} ${gatewayMacFor('fleet0')}`,
      `timeout 3 tftp -p -l /tmp/offer.bin -r offer ${victim.ip} 68`,
      `arp -d ${victim.ip}; true`,
    ].join('; '));
    await vmSh('w1', attacker.ip!, [
      'mkdir -p /var/lib/misc',
      'printf "start 192.168.64.200\\nend 192.168.64.210\\ninterface eth0\\noption router 192.168.64.66\\noption subnet 255.255.255.0\\nlease_file /tmp/udhcpd.leases\\n" > /tmp/udhcpd.conf',
      'touch /tmp/udhcpd.leases',
      'udhcpd /tmp/udhcpd.conf',
      'echo started',
    ].join('; '));
    await vmSh('w1', victim.ip!, 'kill -USR1 $(pidof udhcpc) 2>/dev/null; sleep 3; true');

    const after = (await hostStatus('w1', attacker)).counters.filter.fromVm;
    const delta = (k: string): number => (after[k] ?? 0) - (before[k] ?? 0);
    const dropped = Object.entries(after).filter(([k]) => k !== 'pass').map(([k, v]) => `${k}=${v - (before[k] ?? 0)}`);
    // ARP claims for an address that is not its lease, IPv4 from a foreign source, DHCP server messages.
    expect(delta('arp_ip_spoof'), dropped.join(' ')).toBeGreaterThan(0);
    expect(delta('ip_spoof'), dropped.join(' ')).toBeGreaterThan(0);
    expect(delta('rogue_dhcp'), dropped.join(' ')).toBeGreaterThan(0);

    // The victim keeps its address and its route out, and the controller still shows it.
    const v = await vmSh('w1', victim.ip!, `ip -4 addr show eth0 | grep -o 'inet [0-9.]*'; ip route | grep default; timeout 5 wget -q -O - http://${ADDR.x}:8080/`);
    expect(v.out).toContain(`inet ${victim.ip}`);
    expect(v.out).toContain('default via 192.168.64.1');
    expect(v.out).toContain(`external-ok ${ADDR.w1}`);
    expect((await api.vm('net-a')).ip).toBe(victim.ip);
    await vmSh('w1', attacker.ip!, 'killall udhcpd; true');
    // The worker reports the attacker's filter counters; operators see the drops in the API.
    await waitUntil(async () => {
      const c = (await api.vm('net-b')).networkCounters as { fromVm: Record<string, number> } | null;
      return !!c && (c.fromVm.rogue_dhcp ?? 0) >= after.rogue_dhcp! && (c.fromVm.ip_spoof ?? 0) >= after.ip_spoof!;
    }, 30_000, 'the API to show the attacker\'s drops');
  }, 180_000);

  it('one identity per VM, from inside a real guest: its neighbour\'s lease, address and name cannot be taken, released or drained; the host is out of reach', async () => {
    const attacker = b;
    const victim = a;
    const victimMac = ((await api.vm('net-a')) as { mac: string }).mac;
    const attackerMac = ((await api.vm('net-b')) as { mac: string }).mac;
    const gwMac = gatewayMacFor('fleet0');
    const GW = '192.168.64.1';
    const leaseFile = path.join(tmp, 'w1', 'qemu', 'nat', 'dnsmasq.leases');
    const macBytes = (m: string): number[] => m.split(':').map((h) => parseInt(h, 16));
    const clid = (m: string): DhcpOpt => opt.clientId([1, ...macBytes(m)]);
    // A service on every address of the worker (0.0.0.0), and the addresses to try it on.
    writeFileSync(path.join(tmp, 'host-service.mjs'), "import net from 'node:net'; net.createServer((s) => s.end('host-service\\n')).listen(7200, '0.0.0.0');");
    L.startIn(NS.w1, [path.join(tmp, 'host-service.mjs')]);
    await waitUntil(async () => (await run('ip', ['netns', 'exec', NS.w1, 'ss', '-Hltn', 'sport', '=', ':7200'])).stdout.includes('7200'), 10_000, 'the host service to listen');

    const before = (await hostStatus('w1', attacker)).counters.filter;
    const hex = (f: Uint8Array): string => Buffer.from(f).toString('hex');
    const fromZero = (o: { xid: number; options: DhcpOpt[]; giaddr?: string }): Uint8Array =>
      dhcpFrame({ srcMac: attackerMac, dstMac: 'ff:ff:ff:ff:ff:ff', src: '0.0.0.0', dst: '255.255.255.255' }, 68, 67, { op: 1, xid: o.xid, chaddr: attackerMac, options: o.options, ...(o.giaddr ? { giaddr: o.giaddr } : {}) });
    const fromOwnIp = (o: { xid: number; options: DhcpOpt[]; ciaddr: string }): Uint8Array =>
      dhcpFrame({ srcMac: attackerMac, dstMac: gwMac, src: attacker.ip!, dst: GW }, 68, 67, { op: 1, xid: o.xid, chaddr: attackerMac, ciaddr: o.ciaddr, options: o.options });
    const frames: string[] = [
      // Take the neighbour's lease: its client identifier, asking for its address.
      hex(fromZero({ xid: 0x7001, options: [opt.type(DHCP.REQUEST), clid(victimMac), opt.requestedIp(victim.ip!), opt.serverId(GW)] })),
      // Ask for its address under the own identity (INIT-REBOOT), or decline it so the server shuns it.
      hex(fromZero({ xid: 0x7002, options: [opt.type(DHCP.REQUEST), opt.requestedIp(victim.ip!)] })),
      hex(fromZero({ xid: 0x7003, options: [opt.type(DHCP.DECLINE), opt.requestedIp(victim.ip!), opt.serverId(GW)] })),
      // Release the neighbour's lease, with and without its identity.
      hex(fromOwnIp({ xid: 0x7004, ciaddr: victim.ip!, options: [opt.type(DHCP.RELEASE), opt.serverId(GW), clid(victimMac)] })),
      hex(fromOwnIp({ xid: 0x7005, ciaddr: victim.ip!, options: [opt.type(DHCP.RELEASE), opt.serverId(GW)] })),
      // Pose as a relay agent: replies sent to the neighbour's address, or relay information.
      hex(fromZero({ xid: 0x7006, giaddr: victim.ip!, options: [opt.type(DHCP.DISCOVER)] })),
      hex(fromZero({ xid: 0x7007, options: [opt.type(DHCP.DISCOVER), opt.raw(82, [1, 4, 0, 0, 0, 1])] })),
      // IPv6 towards the host (a router solicitation to all routers).
      hex(ipv6Frame('33:33:00:00:00:02', attackerMac, 58, new Uint8Array([133, 0, 0, 0, 0, 0, 0, 0]))),
    ];
    // Drain the pool: a fresh client identifier per DISCOVER, at and beyond the allowed DHCP rate.
    for (let i = 0; i < 60; i++) frames.push(hex(fromZero({ xid: 0x7100 + i, options: [opt.type(DHCP.DISCOVER), opt.clientId([1, 0x02, 0xee, 0, 0, i >> 8, i & 255])] })));
    const arpFlood = hex(pad(arpFrame('ff:ff:ff:ff:ff:ff', attackerMac, { op: 1, sha: attackerMac, spa: attacker.ip!, tpa: GW })));
    const sent = await vmShInput('w1', attacker.ip!, [
      'fleet-rawsend -c -i eth0',
      `fleet-rawsend -i eth0 -n 400 ${arpFlood}`,
      // A real DHCP client: the neighbour's identity gets nothing; the neighbour's name is blanked.
      `udhcpc -i eth0 -n -q -t 2 -T 1 -s /bin/true -x 0x3d:01${victimMac.replace(/:/g, '')} >/dev/null 2>&1 && echo clid-leased || echo clid-refused`,
      'udhcpc -i eth0 -n -q -t 3 -T 1 -s /bin/true -x hostname:net-a >/dev/null 2>&1 && echo named-leased || echo named-refused',
      // The worker's services, on each of its addresses.
      ...[GW, ADDR.w1].map((h) => `echo | timeout 5 nc -w 3 ${h} 7200 2>/dev/null | grep -q host-service && echo reached-${h} || echo blocked-${h}`),
    ].join('; '), frames.join('\n') + '\n', 120_000);
    expect(sent.out).toContain(`sent ${frames.length} frames`);
    expect(sent.out).toContain('sent 400 frames');
    expect(sent.out).toContain('clid-refused');
    expect(sent.out).toContain('named-leased'); // its own lease, under its own name
    for (const h of [GW, ADDR.w1]) expect(sent.out).toContain(`blocked-${h}`);

    const after = (await hostStatus('w1', attacker)).counters.filter as typeof before & { dhcpNamesStripped?: number };
    const delta = (k: string): number => (after.fromVm[k] ?? 0) - (before.fromVm[k] ?? 0);
    const seen = Object.keys(after.fromVm).filter((k) => delta(k) > 0).map((k) => `${k}=${delta(k)}`).join(' ');
    for (const reason of ['dhcp_client_id', 'dhcp_address', 'dhcp_relay', 'ipv6', 'arp_rate_limit', 'host_blocked']) {
      expect(delta(reason), `${reason} in: ${seen}`).toBeGreaterThan(0);
    }
    expect(delta('dhcp_client_id'), seen).toBeGreaterThanOrEqual(60); // the whole exhaustion run, plus the real client's tries
    expect(after.dhcpNamesStripped ?? 0).toBeGreaterThan((before as { dhcpNamesStripped?: number }).dhcpNamesStripped ?? 0);

    // dnsmasq holds one lease per VM of this worker, each on its own MAC; nothing was drained.
    const leases = readFileSync(leaseFile, 'utf8').trim().split('\n').map((l) => l.split(' '));
    expect(leases.map((l) => `${l[1]} ${l[2]}`).sort()).toEqual([`${victimMac} ${victim.ip}`, `${attackerMac} ${attacker.ip}`].sort());
    // The victim keeps its address, renews it, keeps its route out and its name.
    const v = await vmSh('w1', victim.ip!, `kill -USR1 $(pidof udhcpc) 2>/dev/null; sleep 3; ip -4 addr show eth0 | grep -o 'inet [0-9.]*'; timeout 5 wget -q -O - http://${ADDR.x}:8080/; nslookup net-a ${GW}; nslookup net-b ${GW}`);
    expect(v.out).toContain(`inet ${victim.ip}`);
    expect(v.out).toContain(`external-ok ${ADDR.w1}`);
    const names = v.out.slice(v.out.indexOf('external-ok'));
    expect(names).toMatch(new RegExp(`net-a[\\s\\S]*?Address:\\s*${victim.ip!.replace(/\./g, '\\.')}`));
    expect(names).toMatch(new RegExp(`net-b[\\s\\S]*?Address:\\s*${attacker.ip!.replace(/\./g, '\\.')}`));
    expect((await api.vm('net-a')).ip).toBe(victim.ip);
    // Operators see the drops by name.
    await waitUntil(async () => {
      const c = (await api.vm('net-b')).networkCounters as { fromVm: Record<string, number> } | null;
      return !!c && ['dhcp_client_id', 'dhcp_relay', 'dhcp_address', 'arp_rate_limit'].every((k) => (c.fromVm[k] ?? 0) > 0);
    }, 30_000, 'the API to show the attacker\'s identity drops');
  }, 300_000);

  it('kill -9 of a worker: its VMs keep running, the restarted worker adopts them, slots are counted once', async () => {
    const statusBefore = await hostStatus('w1', a);
    const usedBefore = (await api.worker('w1')).used;
    expect(usedBefore).toEqual({ cpus: 2, memoryMib: 512, vms: 2, macosVms: 0, natAddresses: 2 });
    await L.workers.w1!.kill('SIGKILL');
    // The VMs do not notice: the VM host processes and QEMU keep running, SSH still works.
    expect(() => process.kill(statusBefore.pid, 0)).not.toThrow();
    expect(() => process.kill(statusBefore.qemuPid, 0)).not.toThrow();
    expect((await vmSh('w1', a.ip!, 'echo still-here')).out.trim()).toBe('still-here');

    await waitUntil(async () => (await api.worker('w1')).connected === false, 30_000, 'the controller to see w1 disconnect');
    await L.startWorker('w1');
    await waitUntil(async () => (await api.worker('w1')).connected === true, 60_000, 'the restarted w1 to connect');
    await waitUntil(async () => {
      const vms = await api.vms();
      return ['net-a', 'net-b'].every((n) => vms.find((v: VmView) => v.name === n)?.state === 'running');
    }, 60_000, 'VMs of w1 running after the restart');
    const statusAfter = await hostStatus('w1', a);
    expect(statusAfter.pid).toBe(statusBefore.pid); // the same VM host process, adopted
    expect(statusAfter.qemuPid).toBe(statusBefore.qemuPid);
    const vmA = (await api.vm('net-a')) as VmView;
    expect(vmA.attempt).toBe(a.attempt); // not rescheduled
    expect(vmA.ip).toBe(a.ip);
    // Counted once: the adopted instances are the same (vm, attempt) allocations as before.
    expect((await api.worker('w1')).used).toEqual(usedBefore);
    expect((await vmSh('w1', a.ip!, `timeout 5 wget -q -O - http://${ADDR.x}:8080/`)).out.trim()).toBe(`external-ok ${ADDR.w1}`);
  }, 240_000);
});
