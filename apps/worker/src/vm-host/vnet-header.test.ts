import { describe, expect, it } from 'vitest';
import { VNET_F_NEEDS_CSUM, VNET_HDR_LEN, completeUdpChecksum, pendingDhcpChecksum } from './vnet-header.ts';

const ETH = 14;
const UDP = ETH + 20;

/** A virtio-net header + an Ethernet/IPv4/UDP frame to port `dport`, its UDP checksum left as a guest with checksum offload leaves it: the pseudo-header sum only. */
function partialUdp(dport: number, payload: Buffer): Buffer {
  const f = Buffer.alloc(ETH + 20 + 8 + payload.length);
  f.writeUInt16BE(0x0800, 12);
  f[ETH] = 0x45;
  f.writeUInt16BE(20 + 8 + payload.length, ETH + 2);
  f[ETH + 8] = 64;
  f[ETH + 9] = 17;
  Buffer.from([192, 168, 64, 144]).copy(f, ETH + 12);
  Buffer.from([192, 168, 64, 1]).copy(f, ETH + 16);
  f.writeUInt16BE(68, UDP);
  f.writeUInt16BE(dport, UDP + 2);
  f.writeUInt16BE(8 + payload.length, UDP + 4);
  payload.copy(f, UDP + 8);
  // The pseudo-header sum, folded, not complemented (what the kernel leaves in a CHECKSUM_PARTIAL field).
  let sum = 17 + 8 + payload.length;
  for (let i = ETH + 12; i < ETH + 20; i += 2) sum += f.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  f.writeUInt16BE(sum, UDP + 6);
  const h = Buffer.alloc(VNET_HDR_LEN);
  h[0] = VNET_F_NEEDS_CSUM;
  h.writeUInt16LE(UDP, 6); // csum_start
  h.writeUInt16LE(6, 8); // csum_offset
  return Buffer.concat([h, f]);
}

/** The full UDP checksum of an IPv4 frame computed from scratch (pseudo header + datagram, checksum field as zero). */
function udpChecksum(f: Buffer, udp: number): number {
  const len = f.readUInt16BE(udp + 4);
  const words = Buffer.concat([f.subarray(ETH + 12, ETH + 20), Buffer.from([0, 17]), f.subarray(udp + 4, udp + 6), f.subarray(udp, udp + len), Buffer.alloc(len % 2)]);
  words.writeUInt16BE(0, 12 + 6);
  let sum = 0;
  for (let i = 0; i < words.length; i += 2) sum += words.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff || 0xffff;
}

describe('virtio-net header: pending checksums', () => {
  it('completes a pending UDP checksum exactly as a full computation gives it, and clears NEEDS_CSUM', () => {
    for (const n of [0, 1, 7, 300, 301]) {
      const b = partialUdp(67, Buffer.from(Array.from({ length: n }, (_, i) => (i * 37 + 11) & 0xff)));
      expect(pendingDhcpChecksum(b, 0, b.length)).toBe(true);
      expect(completeUdpChecksum(b, 0, b.length)).toBe(true);
      expect(b[0]! & VNET_F_NEEDS_CSUM).toBe(0);
      const frame = b.subarray(VNET_HDR_LEN);
      const got = frame.readUInt16BE(UDP + 6);
      frame.writeUInt16BE(0, UDP + 6);
      expect(got).toBe(udpChecksum(frame, UDP));
    }
  });

  it('only DHCP client messages with a pending checksum are picked, at any offset in a batch', () => {
    const dhcp = partialUdp(67, Buffer.alloc(240));
    const dns = partialUdp(53, Buffer.alloc(40));
    const done = partialUdp(67, Buffer.alloc(240));
    done[0] = 0;
    const batch = Buffer.concat([Buffer.alloc(5), dhcp]);
    expect(pendingDhcpChecksum(batch, 5, dhcp.length)).toBe(true);
    expect(pendingDhcpChecksum(dns, 0, dns.length)).toBe(false);
    expect(pendingDhcpChecksum(done, 0, done.length)).toBe(false);
    expect(pendingDhcpChecksum(dhcp, 0, VNET_HDR_LEN + 20)).toBe(false); // too short to be one
  });

  it('refuses (changes nothing) when the header points outside the frame', () => {
    const b = partialUdp(67, Buffer.alloc(10));
    b.writeUInt16LE(2000, 6);
    const before = Buffer.from(b);
    expect(completeUdpChecksum(b, 0, b.length)).toBe(false);
    expect(b).toEqual(before);
    b.writeUInt16LE(UDP, 6);
    b.writeUInt16LE(b.length, 8);
    expect(completeUdpChecksum(b, 0, b.length)).toBe(false);
  });
});
