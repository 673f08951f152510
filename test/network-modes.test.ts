// Network modes and custom MACs (issue 18) on real VMs, in a lab of network namespaces this test
// creates (test/support/lab.ts): a controller, two qemu workers that both offer a NAT network
// (192.168.64.0/24) and a host-only network (--host-only-subnet 192.168.128.0/24), and an
// "external" host standing in for the Internet.
//
//   - host-only: the VM gets an address of the host-only network, reaches its worker there, and
//     nothing beyond (the external host, the worker's LAN address, the controller, a NAT VM); the
//     filter counts `beyond_host_only`; the attack kit (ARP spoofing of the gateway, IP spoofing,
//     a rogue DHCP server) changes nothing for its host-only neighbour;
//   - none: the VM runs without any NIC (QEMU has no network device, the API shows no address);
//   - custom MAC: the guest's NIC has it; a second VM with the same MAC is placed on the other
//     worker, a third waits with a reason naming the MAC.
// Needs root, ip netns, qemu-system-x86_64, dnsmasq, nft, ssh; otherwise skipped loudly.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayMacFor } from '../apps/worker/src/uplink/nat-network.ts';
import { waitUntil } from './support/fleet-processes.ts';
import { realVmsMissing, warnSkipped } from './support/lab.ts';
import { TwoWorkerLab } from './support/two-worker-lab.ts';
import { dhcpOffer, type VmView } from './support/vm-lab.ts';

const run = promisify(execFile);
const ADMIN = 'fleet_e2emodesadmin1_' + 'M'.repeat(42);
const HOST_ONLY_GW = '192.168.128.1';
const CUSTOM_MAC = '02:fe:ed:00:18:01';

const why = realVmsMissing(['ssh', 'ssh-keygen']);
if (why) warnSkipped('test/network-modes.test.ts', why, 'Network modes (host-only, none) and custom MACs with real VMs are');

const L = new TwoWorkerLab('fm', '10.97.0', () => ['--host-only-subnet', '192.168.128.0/24', '--global-prefixes', '10.97.0.20/32', '--cpus', '5', '--memory-mib', '2048', '--vm-slots', '5'], ADMIN);
const NS = L.ns;
const ADDR = L.addr;
const api = L.api;
const lab = L.vms;

describe.skipIf(why !== '')('network modes and custom MACs (issue 18), real VMs', () => {
  let hoA: VmView; // host-only, w1: the victim
  let hoB: VmView; // host-only, w1: the attacker
  let natA: VmView; // nat, w1, custom MAC
  let hoC: VmView; // host-only, w1, no rules

  beforeAll(async () => {
    await L.setUp('modes');
  }, 600_000);

  afterAll(async () => {
    await L.tearDown();
  }, 60_000);

  it('workers report their networks; VMs of each mode boot; a custom MAC is the guest\'s NIC', async () => {
    const w1 = await api.worker('w1');
    expect(w1.networks.map((n: { mode: string; subnet: string; gateway: string }) => [n.mode, n.subnet, n.gateway])).toEqual([
      ['nat', '192.168.64.0/24', '192.168.64.1'],
      ['host-only', '192.168.128.0/24', HOST_ONLY_GW],
    ]);
    const base = { image: 'fleet-guest', cpus: 1, memoryMib: 256, diskGib: 1, disconnectPolicy: 'wait' };
    // ho-a and ho-b allow each other (their host-only subnet); ho-c allows nothing.
    const peers = { mode: 'host-only', allow: ['192.168.128.0/24'] };
    await api.createVm({ ...base, name: 'ho-a', selector: { host: 'w1' }, network: peers });
    await api.createVm({ ...base, name: 'ho-b', selector: { host: 'w1' }, network: peers });
    await api.createVm({ ...base, name: 'ho-c', selector: { host: 'w1' }, network: { mode: 'host-only' } });
    await api.createVm({ ...base, name: 'nat-a', selector: { host: 'w1' }, mac: CUSTOM_MAC });
    await api.createVm({ ...base, name: 'no-nic', selector: { host: 'w2' }, network: { mode: 'none' } });
    [hoA, hoB, natA, hoC] = await Promise.all([lab.runningVm('ho-a'), lab.runningVm('ho-b'), lab.runningVm('nat-a'), lab.runningVm('ho-c')]);
    expect(hoA.ip).toMatch(/^192\.168\.128\.\d+$/);
    expect(hoB.ip).toMatch(/^192\.168\.128\.\d+$/);
    expect(natA.ip).toMatch(/^192\.168\.64\.\d+$/);
    expect(natA.mac).toBe(CUSTOM_MAC);
    await Promise.all([lab.sshReady('w1', hoA.ip!), lab.sshReady('w1', hoB.ip!), lab.sshReady('w1', natA.ip!)]);
    expect((await lab.vmSh('w1', natA.ip!, 'cat /sys/class/net/eth0/address')).out.trim()).toBe(CUSTOM_MAC);
  }, 420_000);

  it('host-only VMs reach each other only where both policies allow it', async () => {
    await Promise.all([lab.sshReady('w1', hoC.ip!)]);
    const ab = await lab.vmSh('w1', hoA.ip!, `ping -c 1 -W 2 ${hoB.ip} >/dev/null 2>&1 && echo b-reached || echo b-unreachable; ping -c 1 -W 2 ${hoC.ip} >/dev/null 2>&1 && echo c-reached || echo c-unreachable`);
    expect(ab.out).toContain('b-reached');
    expect(ab.out).toContain('c-unreachable');
    const c = await lab.hostStatus('w1', hoC);
    expect(c.counters.filter!.fromVm.local_dst ?? 0).toBeGreaterThan(0); // ho-c's own filter kept its reply in
  }, 180_000);

  it('a host-only VM reaches its worker on the host-only network and nothing beyond', async () => {
    const before = (await lab.hostStatus('w1', hoA)).counters.filter!.fromVm;
    // The worker's host-only address: reachable (host access is what host-only is for).
    const gw = await lab.vmSh('w1', hoA.ip!, `ping -c 1 -W 2 ${HOST_ONLY_GW} >/dev/null 2>&1 && echo gw-ok || echo gw-unreachable`);
    expect(gw.out.trim()).toBe('gw-ok');
    // Beyond: the "Internet", the worker's LAN address, the controller, a NAT VM of the same worker.
    for (const target of [ADDR.x, ADDR.w1, ADDR.c, natA.ip!]) {
      const r = await lab.vmSh('w1', hoA.ip!, `ping -c 1 -W 2 ${target} >/dev/null 2>&1 && echo reached || echo unreachable`);
      expect(`${target}: ${r.out.trim()}`).toBe(`${target}: unreachable`);
    }
    const web = await lab.vmSh('w1', hoA.ip!, `timeout 4 wget -q -O - http://${ADDR.x}:8080/ || echo no-way-out`);
    expect(web.out.trim()).toMatch(/no-way-out/);
    // DNS answers Fleet's names only: no upstream to tunnel through.
    const dns = await lab.vmSh('w1', hoA.ip!, `nslookup ho-b ${HOST_ONLY_GW}; nslookup example.com ${HOST_ONLY_GW} || echo no-upstream`);
    expect(dns.out).toMatch(new RegExp(`ho-b[\\s\\S]*?Address:\\s*${hoB.ip!.replace(/\./g, '\\.')}`));
    expect(dns.out).toContain('no-upstream');
    const after = (await lab.hostStatus('w1', hoA)).counters.filter!.fromVm;
    expect((after.beyond_host_only ?? 0) - (before.beyond_host_only ?? 0)).toBeGreaterThanOrEqual(4);
    // The worker's nftables table has no masquerade for the host-only subnet.
    const rules = (await run('ip', ['netns', 'exec', NS.w1, 'nft', 'list', 'table', 'inet', 'fleet_fleet1'])).stdout;
    expect(rules).not.toContain('masquerade');
  }, 180_000);

  it('the attack kit in host-only mode: ARP spoofing of the gateway, IP spoofing and a rogue DHCP server change nothing for the neighbour', async () => {
    const attacker = hoB;
    const victim = hoA;
    const before = (await lab.hostStatus('w1', attacker)).counters.filter!.fromVm;
    await lab.vmSh('w1', attacker.ip!, `ip addr add ${HOST_ONLY_GW}/32 dev eth0; arping -c 3 -U -s ${HOST_ONLY_GW} -I eth0 ${HOST_ONLY_GW} >/dev/null 2>&1; ip addr del ${HOST_ONLY_GW}/32 dev eth0; true`);
    await lab.vmSh('w1', attacker.ip!, `ip addr add ${victim.ip}/32 dev eth0; ping -c 3 -W 1 -I ${victim.ip} ${HOST_ONLY_GW} >/dev/null 2>&1; ip addr del ${victim.ip}/32 dev eth0; true`);
    await lab.vmSh('w1', attacker.ip!, [
      'mkdir -p /var/lib/misc',
      `printf "start 192.168.128.200\\nend 192.168.128.210\\ninterface eth0\\noption router 192.168.128.66\\noption subnet 255.255.255.0\\nlease_file /tmp/udhcpd.leases\\n" > /tmp/udhcpd.conf`,
      'touch /tmp/udhcpd.leases',
      'udhcpd /tmp/udhcpd.conf',
    ].join('; '));
    // A DHCPOFFER with a rogue router sent straight at the victim (through the gateway's MAC: its
    // port is isolated; busybox tftp sends one datagram to any port).
    const offer = dhcpOffer(victim.mac!, '192.168.128.200', '192.168.128.66');
    await lab.vmSh('w1', attacker.ip!, [
      `echo ${offer.toString('base64')} | base64 -d > /tmp/offer.bin`,
      `arp -s ${victim.ip} ${gatewayMacFor('fleet1')}`,
      `timeout 3 tftp -p -l /tmp/offer.bin -r offer ${victim.ip} 68`,
      `arp -d ${victim.ip}; true`,
    ].join('; '));
    await lab.vmSh('w1', victim.ip!, 'kill -USR1 $(pidof udhcpc) 2>/dev/null; sleep 3; true');
    const after = (await lab.hostStatus('w1', attacker)).counters.filter!.fromVm;
    const delta = (k: string): number => (after[k] ?? 0) - (before[k] ?? 0);
    const dropped = Object.entries(after).filter(([k]) => k !== 'pass').map(([k, v]) => `${k}=${v - (before[k] ?? 0)}`);
    expect(delta('arp_ip_spoof'), dropped.join(' ')).toBeGreaterThan(0);
    expect(delta('ip_spoof'), dropped.join(' ')).toBeGreaterThan(0);
    expect(delta('rogue_dhcp'), dropped.join(' ')).toBeGreaterThan(0);
    // The victim keeps its address and its way to the worker.
    const v = await lab.vmSh('w1', victim.ip!, `ip -4 addr show eth0 | grep -o 'inet [0-9.]*'; ip route | grep default; ping -c 1 -W 2 ${HOST_ONLY_GW} >/dev/null && echo gw-ok`);
    expect(v.out).toContain(`inet ${victim.ip}`);
    expect(v.out).toContain(`default via ${HOST_ONLY_GW}`);
    expect(v.out).toContain('gw-ok');
    expect((await api.vm('ho-a')).ip).toBe(victim.ip);
    await lab.vmSh('w1', attacker.ip!, 'killall udhcpd; true');
  }, 240_000);

  it('network mode none: the VM runs with no NIC at all', async () => {
    const vm = await lab.runningVm('no-nic', { noIp: true });
    expect(vm.worker).toBe('w2');
    const st = await lab.hostStatus('w2', vm);
    expect(st.tap).toBe('');
    expect(st.counters.filter).toBeUndefined();
    const cmdline = readFileSync(`/proc/${st.qemuPid}/cmdline`, 'utf8').split('\0');
    expect(cmdline.some((a) => a.includes('netdev') || a.includes('virtio-net'))).toBe(false);
    // Still no address a while later (nothing to lease with).
    await new Promise((r) => setTimeout(r, 3000));
    expect((await api.vm('no-nic')).ip).toBeNull();
  }, 120_000);

  it('two VMs with one custom MAC never share a worker: the second goes to the other worker, a third waits and says why', async () => {
    const base = { image: 'fleet-guest', cpus: 1, memoryMib: 256, diskGib: 1 };
    await api.createVm({ ...base, name: 'mac-b', mac: CUSTOM_MAC });
    const b = await lab.runningVm('mac-b');
    expect(b.worker).toBe('w2');
    await api.createVm({ ...base, name: 'mac-c', mac: CUSTOM_MAC });
    await waitUntil(async () => /MAC/i.test(String((await api.vm('mac-c'))?.reason ?? '')), 30_000, 'mac-c to wait with a reason naming the MAC');
    const c = await api.vm('mac-c');
    expect(c.worker).toBeNull();
    expect(c.reason).toContain(CUSTOM_MAC);
    // Once the MAC is free on a worker, the waiting VM is placed there.
    await api.ok('DELETE', '/v1/vms/mac-b');
    const placed = await lab.runningVm('mac-c');
    expect(placed.worker).toBe('w2');
  }, 300_000);
});
