/**
 * The filter's only in-place edit of a frame: blanking a DHCP option a VM may not send (its host
 * name or FQDN, which would otherwise name it in the host's DNS). The option's bytes become PAD
 * (0), so no length changes; the UDP checksum is then recomputed. Callers have bounds-checked the
 * option (parseDhcp) and the UDP header (checkUdp) already; nothing here allocates.
 */
import { ETH_HEADER_LENGTH } from './parse/ethernet.ts';

/** Blanks the DHCP option whose code byte is at `opt`; `udp` is the UDP header's offset. */
export function blankDhcpOption(f: Uint8Array, opt: number, udp: number): void {
  const end = opt + 2 + f[opt + 1]!;
  f.fill(0, opt, end);
  if (f[udp + 6] === 0 && f[udp + 7] === 0) return; // no checksum in use (allowed over IPv4)
  f[udp + 6] = 0;
  f[udp + 7] = 0;
  const sum = udpChecksum(f, udp);
  f[udp + 6] = sum >>> 8;
  f[udp + 7] = sum & 0xff;
}

/** The UDP checksum over the IPv4 pseudo-header and the datagram (its checksum field zeroed). */
export function udpChecksum(f: Uint8Array, udp: number): number {
  const ip = ETH_HEADER_LENGTH;
  const len = (f[udp + 4]! << 8) | f[udp + 5]!;
  let sum = 17 + len; // protocol + UDP length
  for (let i = ip + 12; i < ip + 20; i += 2) sum += (f[i]! << 8) | f[i + 1]!; // source, destination
  const end = udp + len;
  let i = udp;
  for (; i + 1 < end; i += 2) sum += (f[i]! << 8) | f[i + 1]!;
  if (i < end) sum += f[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const c = ~sum & 0xffff;
  return c === 0 ? 0xffff : c;
}
