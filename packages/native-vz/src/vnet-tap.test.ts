/**
 * The offload path (issue 20), root only: a TAP with virtio-net headers (QEMU's side) alone in a
 * namespace the test creates, and an AF_PACKET socket with PACKET_VNET_HDR bound to it (the pump's
 * side). The test writes to the TAP what QEMU would write for a guest with TSO, and reads what
 * QEMU would read. Frames never leave the namespace. Skipped loudly without root or iproute2.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readSync, writeSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeFd, fdInfo, FramePort, linkStats, openPacketSocket, openVnetTap, TunOffload, VNET_HDR_LEN, VNET_MAX_FRAME } from './index.ts';
import { csum } from './testing/icmp-frames.ts';

const isRoot = process.getuid?.() === 0;
const hasIp = spawnSync('ip', ['-V'], { stdio: 'ignore' }).status === 0;
const skipReason = !isRoot ? 'not running as root' : !hasIp ? 'iproute2 (ip) is missing' : null;
if (skipReason !== null) console.warn(`\n*** native-vz virtio-net TAP tests SKIPPED: ${skipReason} ***\n`);

const NS = `fvz-vnet-${process.pid}`;
const IF = 'vm0';
const GSO_TCPV4 = 1;
const NEEDS_CSUM = 1;
const MSS = 1448;

/** A virtio-net header + an Ethernet/IPv4/TCP frame with `payload` bytes, as a guest with TSO hands it to QEMU: one header, a pending checksum. */
function tsoFrame(payload: number): Buffer {
  const h = Buffer.alloc(VNET_HDR_LEN);
  h[0] = NEEDS_CSUM;
  h[1] = GSO_TCPV4;
  h.writeUInt16LE(14 + 20 + 20, 2); // hdr_len
  h.writeUInt16LE(MSS, 4); // gso_size
  h.writeUInt16LE(14 + 20, 6); // csum_start
  h.writeUInt16LE(16, 8); // csum_offset (TCP checksum)
  const f = Buffer.alloc(14 + 20 + 20 + payload);
  Buffer.from([2, 0, 0, 0, 0x20, 1]).copy(f, 0);
  Buffer.from([2, 0, 0, 0, 0x20, 2]).copy(f, 6);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f.writeUInt16BE(20 + 20 + payload, 16);
  f[20] = 0x40; // DF
  f[22] = 64;
  f[23] = 6;
  Buffer.from([10, 233, 0, 2]).copy(f, 26);
  Buffer.from([10, 233, 0, 1]).copy(f, 30);
  f.writeUInt16BE(csum(f, 14, 34), 24);
  f.writeUInt16BE(40000, 34);
  f.writeUInt16BE(80, 36);
  f.writeUInt32BE(1000, 38);
  f[46] = 0x50; // data offset 5
  f[47] = 0x18; // PSH, ACK
  f.writeUInt16BE(65535, 48);
  for (let i = 0; i < payload; i++) f[54 + i] = i & 0xff;
  // The pseudo-header sum, not complemented: what a stack leaves for the device to finish.
  let sum = 6 + 20 + payload;
  for (let i = 26; i < 34; i += 2) sum += f.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  f.writeUInt16BE(sum, 50);
  return Buffer.concat([h, f]);
}

describe.skipIf(skipReason !== null)('virtio-net TAP and PACKET_VNET_HDR socket in a namespace (root)', () => {
  let tap: { fd: number; name: string; ifindex: number };
  let sock: { fd: number; ifindex: number };
  let port: FramePort;
  const received: Buffer[] = [];

  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', NS]);
    // As the worker's per-VM namespace: nothing of the kernel's own on the TAP.
    execFileSync('ip', ['netns', 'exec', NS, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    tap = openVnetTap(IF, { netns: NS, up: true });
    sock = openPacketSocket(IF, { netns: NS, vnetHdr: true });
    port = new FramePort(sock.fd, { batch: 8, frameSize: VNET_HDR_LEN + VNET_MAX_FRAME });
    port.onFrames((frames) => received.push(...frames), { copy: true });
  });

  afterAll(() => {
    port?.close();
    if (tap) closeFd(tap.fd);
    spawnSync('ip', ['netns', 'del', NS], { stdio: 'ignore' });
  });

  async function waitFor(pred: () => boolean, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error('timeout waiting for frames');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it('creates the TAP in the namespace with the header on, up, close-on-exec and non-blocking; gone with its fd', () => {
    const link = (JSON.parse(execFileSync('ip', ['-j', '-d', '-n', NS, 'link', 'show', IF], { encoding: 'utf8' })) as Array<{ ifindex: number; flags: string[]; linkinfo: { info_data: { type: string; vnet_hdr: boolean; persist: boolean } } }>)[0]!;
    expect(link).toMatchObject({ ifindex: tap.ifindex, linkinfo: { info_data: { type: 'tap', vnet_hdr: true, persist: false } } });
    expect(link.flags).toContain('UP');
    expect(fdInfo(tap.fd)).toMatchObject({ cloexec: true, nonblock: true });
    expect(sock.ifindex).toBe(tap.ifindex);
    // Not in this process's namespace.
    expect(spawnSync('ip', ['link', 'show', IF], { stdio: 'ignore' }).status).not.toBe(0);
    const other = openVnetTap('vm1', { netns: NS });
    closeFd(other.fd);
    expect(spawnSync('ip', ['-n', NS, 'link', 'show', 'vm1'], { stdio: 'ignore' }).status).not.toBe(0);
  });

  it('refuses offload bits it does not know, and segmentation without checksum offload', () => {
    expect(() => openVnetTap('vm2', { netns: NS, offloads: 0x10 })).toThrow(/offloads/);
    expect(() => openVnetTap('vm2', { netns: NS, offloads: TunOffload.TSO4 })).toThrow(/TUN_F_CSUM/);
  });

  it('a TSO super-frame written by "QEMU" reaches the socket whole, header and pending checksum included', async () => {
    const before = port.stats();
    const sent = tsoFrame(20_000);
    expect(writeSync(tap.fd, sent)).toBe(sent.length);
    await waitFor(() => received.some((f) => f.length === sent.length));
    const got = received.find((f) => f.length === sent.length)!;
    expect(got[1]).toBe(GSO_TCPV4);
    expect(got.readUInt16LE(4)).toBe(MSS);
    expect(got[0]! & NEEDS_CSUM).toBe(NEEDS_CSUM);
    expect(got.readUInt16LE(6)).toBe(14 + 20);
    expect(got.subarray(VNET_HDR_LEN).equals(sent.subarray(VNET_HDR_LEN))).toBe(true);
    const after = port.stats();
    expect(after.rxCsumPartial).toBe(before.rxCsumPartial); // forwarded, not refused
    expect(after.rxTruncated).toBe(before.rxTruncated);
  });

  it('a super-frame sent on the socket reaches a reader without TSO as segments the kernel cut, each with its checksum', async () => {
    // QEMU sets the TAP's offloads from the guest's features; here none: the kernel must segment.
    const payload = 10_000;
    const sent = tsoFrame(payload);
    expect(port.send([sent])).toBe(1);
    const segs: Buffer[] = [];
    const buf = Buffer.alloc(VNET_HDR_LEN + VNET_MAX_FRAME);
    const deadline = Date.now() + 5000;
    while (segs.reduce((n, s) => n + s.length - VNET_HDR_LEN - 54, 0) < payload && Date.now() < deadline) {
      try {
        const n = readSync(tap.fd, buf);
        const f = Buffer.from(buf.subarray(0, n));
        if (f.length > VNET_HDR_LEN + 14 && f.readUInt16BE(VNET_HDR_LEN + 12) === 0x0800 && f[VNET_HDR_LEN + 23] === 6) segs.push(f);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    expect(segs).toHaveLength(Math.ceil(payload / MSS));
    let data = Buffer.alloc(0);
    for (const s of segs) {
      expect(s[1]).toBe(0); // no GSO left
      const f = s.subarray(VNET_HDR_LEN);
      expect(f.length).toBeLessThanOrEqual(1514);
      expect(csum(f, 14, 34)).toBe(0); // IPv4 header checksum of the segment
      data = Buffer.concat([data, f.subarray(54)]);
    }
    expect(data.equals(sent.subarray(VNET_HDR_LEN + 54))).toBe(true);
  });

  it('linkStats reads a TAP\'s kernel counters in its namespace: frames its reader did not take are TX dropped', () => {
    const idle = openVnetTap('vm5', { netns: NS, up: true }); // nobody reads it: its 1,000-frame queue fills
    const out = openPacketSocket('vm5', { netns: NS, vnetHdr: true });
    const sender = new FramePort(out.fd, { batch: 64, frameSize: 2048 });
    try {
      const f = Buffer.alloc(VNET_HDR_LEN + 60);
      f.fill(0xff, VNET_HDR_LEN, VNET_HDR_LEN + 6);
      f.writeUInt16BE(0x88b5, VNET_HDR_LEN + 12);
      let sent = 0;
      for (let i = 0; i < 25; i++) sent += sender.send(Array.from({ length: 64 }, () => f));
      const st = linkStats('vm5', { netns: NS });
      expect(sent).toBe(1600); // the socket takes them all: a packet-socket send only queues
      // tun keeps txqueuelen (1,000) frames for its reader and drops the rest; tx_packets counts reads.
      expect(st).toMatchObject({ txPackets: 0, txDropped: 600 });
      expect(() => linkStats('vm9', { netns: NS })).toThrow(/vm9/);
    } finally {
      sender.close();
      closeFd(idle.fd);
    }
  });

  it('a FramePort on a TAP counts a frame longer than its slot as truncated and delivers the next one', async () => {
    const other = openVnetTap('vm3', { netns: NS, up: true });
    const out = openPacketSocket('vm3', { netns: NS, vnetHdr: true });
    const small = new FramePort(other.fd, { batch: 4, frameSize: 512 });
    const got: number[] = [];
    small.onFrames((fs) => got.push(...fs.map((f) => f.length)));
    try {
      const big = Buffer.alloc(VNET_HDR_LEN + 1000);
      const fit = Buffer.alloc(VNET_HDR_LEN + 300);
      for (const f of [big, fit]) {
        f.fill(0xff, VNET_HDR_LEN, VNET_HDR_LEN + 6);
        f.writeUInt16BE(0x88b5, VNET_HDR_LEN + 12); // local experimental EtherType
      }
      const sender = new FramePort(out.fd, { batch: 2, frameSize: 2048 });
      expect(sender.send([big, fit])).toBe(2);
      await waitFor(() => got.length >= 1);
      expect(got).toEqual([fit.length]);
      expect(small.stats().rxTruncated).toBe(1);
      sender.close();
    } finally {
      small.close();
    }
  });
});
