// A NAT network for driver tests that need no root: the real reservation table (AddressPool),
// no bridge, no dnsmasq, no nftables.
import { AddressPool } from '../uplink/address-pool.ts';
import { parseIpv4 } from '../uplink/ipv4.ts';
import type { QemuNat } from './qemu.ts';

export function fakeNat(
  range: [string, string] = ['192.168.64.2', '192.168.64.254'],
  net: { subnet: string; gatewayIp: string; name?: string } = { subnet: '192.168.64.0/24', gatewayIp: '192.168.64.1' },
): QemuNat & { pool: AddressPool } {
  const pool = new AddressPool(parseIpv4(range[0]), parseIpv4(range[1]), net.subnet);
  return {
    pool,
    addTap: async () => {},
    removeTap: async () => {},
    reserve: async (req) => pool.reserve(req),
    release: async (key) => {
      pool.release(key);
    },
    releaseAllBut: async (keep) => {
      const gone = pool.list().filter((r) => !keep.has(r.key));
      for (const r of gone) pool.release(r.key);
      return gone.map((r) => r.key);
    },
    hostAddresses: async () => [],
    get addresses() {
      return { size: pool.size, used: pool.used, free: pool.free };
    },
    gatewayIp: net.gatewayIp,
    gatewayMac: 'be:d0:74:00:00:64',
    subnet: net.subnet,
    dhcpServerIp: net.gatewayIp,
    name: net.name ?? 'fake0',
  };
}
