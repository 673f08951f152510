/**
 * The veth uplink (issue 20), root only: an AF_PACKET socket opened inside a per-VM network
 * namespace that holds one end of a veth pair; the other end is a port of a bridge in a "host"
 * namespace the test creates (10.232.0.1/24, a static neighbour 10.232.0.2 = the VM side). A
 * second veth on the same bridge stands for another VM. Traffic never leaves these namespaces.
 * Skipped loudly without root or iproute2.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FramePort, fdInfo, linkOffloads, openPacketSocket, packetRebind } from './index.ts';
import { csum, echoRequest } from './testing/icmp-frames.ts';

const isRoot = process.getuid?.() === 0;
const hasIp = spawnSync('ip', ['-V'], { stdio: 'ignore' }).status === 0;
const skipReason = !isRoot ? 'not running as root' : !hasIp ? 'iproute2 (ip) is missing' : null;
if (skipReason !== null) console.warn(`\n*** native-vz packet socket tests SKIPPED: ${skipReason} ***\n`);

/**
 * Both ways the port can run on this socket: as before issue 20's sixth pass, and as the VM host
 * process's pump opens it (receive ring, sender thread). Every test below runs in both.
 */
const MODES = [
  { mode: 'recvmmsg, sends on the JS thread', port: {} },
  { mode: 'receive ring and sender thread (the pump\'s ports)', port: { rxRingFrames: 256, sendQueueBytes: 1 << 20 } },
] as const;
const BR = 'pkbr0';
const VBR = 'pkvbr'; // bridge-side end (the TAP's place)
const OTHER = 'pkother'; // another VM's port on the same bridge
const VM_IF = 'vm0';
const BR_MAC = Buffer.from([0x02, 0, 0, 0, 0x10, 0x01]);
const VM_MAC = Buffer.from([0x02, 0, 0, 0, 0x10, 0x02]);
const BR_IP = [10, 232, 0, 1];
const VM_IP = [10, 232, 0, 2];
const ENODEV = 19;

const inNs = (ns: string, ...args: string[]): string => execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8' });
const ifindex = (ns: string, dev: string): number => Number(inNs(ns, 'cat', `/sys/class/net/${dev}/ifindex`).trim());
const ifindexes = (ns: string): number[] =>
  (JSON.parse(inNs(ns, 'ip', '-j', 'link', 'show')) as Array<{ ifindex: number }>).map((l) => l.ifindex);

const ECHO = { srcMac: VM_MAC, dstMac: BR_MAC, srcIp: VM_IP, dstIp: BR_IP };

/** UDP checksum of an IPv4 frame (pseudo header included); 0 when it verifies. */
function udpChecksumResidue(f: Buffer): number {
  const udpLen = f.readUInt16BE(38);
  const pseudo = Buffer.alloc(12 + udpLen);
  f.copy(pseudo, 0, 26, 34);
  pseudo[9] = 17;
  pseudo.writeUInt16BE(udpLen, 10);
  f.copy(pseudo, 12, 34, 34 + udpLen);
  return csum(pseudo, 0, pseudo.length);
}

describe.skipIf(skipReason !== null).each(MODES.map((m, i) => ({ ...m, i })))('AF_PACKET uplink in a per-VM namespace (root): $mode', ({ port: portOpts, i: modeIndex }) => {
  const HOST_NS = `fvz-pkh-${process.pid}-${modeIndex}`;
  const VM_NS = `fvz-pkv-${process.pid}-${modeIndex}`;
  let sock: { fd: number; ifindex: number };
  let port: FramePort;
  const received: Buffer[] = [];

  beforeAll(() => {
    for (const ns of [HOST_NS, VM_NS]) {
      execFileSync('ip', ['netns', 'add', ns]);
      inNs(ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
      inNs(ns, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1');
    }
    inNs(HOST_NS, 'ip', 'link', 'add', BR, 'address', '02:00:00:00:10:01', 'type', 'bridge');
    inNs(HOST_NS, 'ip', 'addr', 'add', '10.232.0.1/24', 'dev', BR);
    // A high ifindex for the VM end, so that it collides with none of the host's (ifindexes are per namespace).
    inNs(VM_NS, 'ip', 'link', 'add', VM_IF, 'index', String(40000 + (process.pid % 20000)), 'type', 'veth', 'peer', 'name', VBR, 'netns', HOST_NS);
    inNs(HOST_NS, 'ip', 'link', 'add', OTHER, 'type', 'veth', 'peer', 'name', `${OTHER}p`);
    for (const d of [VBR, OTHER]) inNs(HOST_NS, 'ip', 'link', 'set', d, 'master', BR, 'up');
    inNs(HOST_NS, 'ip', 'link', 'set', BR, 'up');
    inNs(HOST_NS, 'ip', 'link', 'set', `${OTHER}p`, 'up');
    inNs(VM_NS, 'ip', 'link', 'set', VM_IF, 'up');
    inNs(HOST_NS, 'ip', 'neigh', 'replace', '10.232.0.2', 'lladdr', '02:00:00:00:10:02', 'dev', BR, 'nud', 'permanent');
    sock = openPacketSocket(VM_IF, { netns: VM_NS, rcvbuf: 1 << 20, sndbuf: 1 << 20 });
    port = new FramePort(sock.fd, { frameSize: 2048, ...portOpts });
    port.onFrames((frames) => received.push(...frames), { copy: true });
  });

  afterAll(() => {
    port?.close();
    spawnSync('ip', ['netns', 'del', VM_NS], { stdio: 'ignore' });
    spawnSync('ip', ['netns', 'del', HOST_NS], { stdio: 'ignore' });
  });

  async function waitFor(pred: () => boolean, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error('timeout waiting for frames on the packet socket');
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const udpTo = (port9: number) => () =>
    received.filter((f) => f.length >= 42 && f.readUInt16BE(12) === 0x0800 && f[23] === 17 && f.readUInt16BE(36) === port9);
  const sendUdp = (dport: number, n: number): void => {
    inNs(HOST_NS, 'python3', '-c', `import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(${n}): s.sendto(b'fleet-%03d' % i + bytes(1000), ('10.232.0.2', ${dport}))`);
  };

  it('opens a close-on-exec, non-blocking socket in the VM namespace; FramePort sees kind "packet"', () => {
    expect(fdInfo(sock.fd)).toMatchObject({ cloexec: true, nonblock: true });
    expect(sock.ifindex).toBe(ifindex(VM_NS, VM_IF));
    expect(port.kind).toBe('packet');
    expect(port.stats().rxRingSlots > 0).toBe('rxRingFrames' in portOpts);
    expect(port.sendThread).toBe('sendQueueBytes' in portOpts);
  });

  it('with veth offloads on, frames from the host stack carry a pending checksum: refused and counted, never forwarded', async () => {
    expect(linkOffloads(VBR, { netns: HOST_NS })).toMatchObject({ txChecksum: true, tso: true });
    sendUdp(7, 20);
    await waitFor(() => port.stats().rxCsumPartial >= 20);
    expect(udpTo(7)()).toHaveLength(0);
  });

  it('offloads off on both ends: the same datagrams arrive whole, with valid checksums, in batches', async () => {
    const off = { txChecksum: false, sg: false, tso: false, gso: false, gro: false };
    expect(linkOffloads(VBR, { netns: HOST_NS, disable: true })).toEqual(off);
    expect(linkOffloads(VM_IF, { netns: VM_NS, disable: true })).toEqual(off);
    const partial = port.stats().rxCsumPartial;
    const batches = port.stats().rxBatches;
    sendUdp(9, 100);
    await waitFor(() => udpTo(9)().length >= 100);
    const frames = udpTo(9)();
    expect(frames.map((f) => f.subarray(42, 51).toString())).toEqual(Array.from({ length: 100 }, (_, i) => `fleet-${String(i).padStart(3, '0')}`));
    expect(frames.every((f) => udpChecksumResidue(f) === 0)).toBe(true);
    expect(frames[0]!.subarray(0, 6).equals(VM_MAC)).toBe(true);
    expect(port.stats().rxCsumPartial).toBe(partial);
    expect(port.stats().rxBatches - batches).toBeLessThan(100);
    expect(port.stats().rxQueueDrops).toBe(0);
  });

  it('socket -> veth -> bridge -> host stack: 32 echo requests in one sendmmsg get 32 replies; sent frames are not looped back', async () => {
    const id = 0x5151;
    expect(port.send(Array.from({ length: 32 }, (_, seq) => echoRequest(ECHO, id, seq)))).toBe(32);
    const replies = () => received.filter((f) => f.length >= 42 && f[23] === 1 && f[34] === 0 && f.readUInt16BE(38) === id);
    await waitFor(() => replies().length >= 32);
    expect(replies().map((f) => f.readUInt16BE(40)).sort((a, b) => a - b)).toEqual(Array.from({ length: 32 }, (_, i) => i));
    expect(received.filter((f) => f.length >= 42 && f[23] === 1 && f[34] === 8 && f.readUInt16BE(38) === id)).toHaveLength(0); // PACKET_IGNORE_OUTGOING
    await waitFor(() => port.stats().txFrames === 32);
    const s = port.stats();
    expect(s.txErrors + s.eagain + s.enobufs + s.txDrops).toBe(0);
  });

  it('a holder of the socket cannot rebind it to the bridge, another VM\'s port or anything of the host namespace (ENODEV)', () => {
    const vmIndexes = new Set(ifindexes(VM_NS));
    const hostIndexes = [...new Set([...ifindexes(HOST_NS), ...(JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) as Array<{ ifindex: number }>).map((l) => l.ifindex)])];
    const foreign = hostIndexes.filter((i) => !vmIndexes.has(i));
    expect(foreign).toContain(ifindex(HOST_NS, BR));
    // Unprivileged, as the VM host process runs: the fd is handed over as fd 3 (spawn stdio).
    const addon = createRequire(import.meta.url).resolve('../build/Release/native_vz.node');
    const script = `const n = require(${JSON.stringify(addon)}); const out = {};
      for (const i of ${JSON.stringify(foreign)}) out[i] = n.packetRebind(3, i);
      out.back = n.packetRebind(3, ${sock.ifindex});
      try { n.openPacketSocket('', 'lo', {}); out.open = 'opened'; } catch (e) { out.open = e.code; }
      console.log(JSON.stringify(out));`;
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', process.execPath, '-e', script], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe', sock.fd],
    });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as Record<string, number | string>;
    for (const i of foreign) expect(out[i], `ifindex ${i}`).toBe(ENODEV);
    expect(out.back).toBe(0); // its own interface: fine
    expect(out.open).toBe('EPERM'); // and no new packet socket without CAP_NET_RAW
    // Root, same socket: the namespace, not privilege, is what confines it.
    expect(packetRebind(sock.fd, ifindex(HOST_NS, BR))).toBe(ENODEV);
  });

  it('still works after the rebind attempts (bound to its veth end)', async () => {
    const before = udpTo(9)().length;
    sendUdp(9, 10);
    await waitFor(() => udpTo(9)().length >= before + 10);
  });

  it('names the interface and namespace in errors; refuses over-long names', () => {
    expect(() => openPacketSocket('nope0', { netns: VM_NS })).toThrow(/if_nametoindex nope0.*in netns/);
    expect(() => openPacketSocket('x'.repeat(16))).toThrow(/interface name/);
  });
});
