// The virtio-net header (struct virtio_net_hdr, 10 bytes, little-endian) that precedes every frame
// on the offload path (issue 20: `--vm-framing vnet`): QEMU's TAP ↔ an AF_PACKET socket with
// PACKET_VNET_HDR, and the uplink TAP with IFF_VNET_HDR. The kernel writes the headers we read
// (from the skb it built), and validates the ones we write; the pump only ever needs one thing
// from them: a frame whose checksum is still to be filled in (VIRTIO_NET_HDR_F_NEEDS_CSUM) must
// be completed before the packet filter may edit it, since the filter's one edit (blanking a DHCP
// option) recomputes the whole UDP checksum.
import { VNET_HDR_LEN } from '@fleet/native-vz';

export { VNET_HDR_LEN };

/** flags bit: the checksum at csum_start + csum_offset covers the pseudo header only, the rest is to be added. */
export const VNET_F_NEEDS_CSUM = 1;

const ETH = 14;

/**
 * True for an IPv4/UDP frame to port 67 (a DHCP client message, which the filter may edit) whose
 * header says its checksum is still pending. `frame` starts at the header (`buf[off]`).
 */
export function pendingDhcpChecksum(buf: Uint8Array, off: number, len: number): boolean {
  if ((buf[off]! & VNET_F_NEEDS_CSUM) === 0) return false;
  const f = off + VNET_HDR_LEN;
  if (len < VNET_HDR_LEN + ETH + 20 + 8) return false;
  if (buf[f + 12] !== 0x08 || buf[f + 13] !== 0x00) return false; // IPv4
  const ip = f + ETH;
  if (buf[ip] !== 0x45 || buf[ip + 9] !== 17) return false; // no options (the filter refuses them), UDP
  return buf[ip + 20 + 2] === 0 && buf[ip + 20 + 3] === 67;
}

/**
 * Fills in a pending checksum as the kernel's skb_checksum_help does (the ones'-complement sum
 * from csum_start to the end of the frame, the field holding the pseudo-header sum, stored at
 * csum_start + csum_offset; a computed 0 is sent as 0xffff, as UDP needs) and clears NEEDS_CSUM.
 * `buf[off]` is the header, the frame follows it; `len` covers both. Returns false (nothing
 * changed) when the header's offsets do not lie inside the frame.
 */
export function completeUdpChecksum(buf: Uint8Array, off: number, len: number): boolean {
  const start = buf[off + 6]! | (buf[off + 7]! << 8);
  const field = start + (buf[off + 8]! | (buf[off + 9]! << 8));
  const frameLen = len - VNET_HDR_LEN;
  if (frameLen < 0 || start >= frameLen || field + 2 > frameLen) return false;
  const f = off + VNET_HDR_LEN;
  const end = f + frameLen;
  let sum = 0;
  let i = f + start;
  for (; i + 1 < end; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) sum += buf[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const c = ~sum & 0xffff || 0xffff;
  buf[f + field] = c >>> 8;
  buf[f + field + 1] = c & 0xff;
  buf[off] = buf[off]! & ~VNET_F_NEEDS_CSUM;
  return true;
}
