/**
 * Test-only: the setup of research §5 — VM 02:00:00:00:00:01 on 192.168.64.0/24 behind gateway
 * .64.1, leased .64.10, a peer VM at .64.11 — and frame shorthands for it. No vitest import, so the
 * benchmark can use it too.
 */
import type { FilterConfig } from '../config.ts';
import { type PacketFilter, createFilter } from '../filter.ts';
import { Verdict, reasonName } from '../verdict.ts';
import {
  DHCP,
  type DhcpOpt,
  type L3Addressing,
  TCP_FLAGS,
  arpFrame,
  dhcpFrame,
  opt,
  tcpFrame,
  udpFrame,
} from './frames.ts';

export const VM_MAC = '02:00:00:00:00:01';
export const PEER_MAC = '02:00:00:00:00:02';
export const GW_MAC = '02:00:00:00:00:fe';
export const BCAST_MAC = 'ff:ff:ff:ff:ff:ff';
export const ZERO_MAC = '00:00:00:00:00:00';
export const SUBNET = '192.168.64.0/24';
export const GW = '192.168.64.1';
export const VM_IP = '192.168.64.10';
export const PEER_IP = '192.168.64.11';
export const ANY = '0.0.0.0';
export const BCAST = '255.255.255.255';
/** An address used as "the Internet" in frames (never contacted: these are byte fixtures). */
export const NET = '8.8.8.8';
export const T0 = 1_000_000;
export const LEASE_S = 600;

export function baseConfig(over: Partial<FilterConfig> = {}): FilterConfig {
  return { vmMac: VM_MAC, gatewayIp: GW, gatewayMac: GW_MAC, subnet: SUBNET, ...over };
}

export function newFilter(over: Partial<FilterConfig> = {}): PacketFilter {
  return createFilter(baseConfig(over));
}

/** VM -> gateway addressing. */
export function vmAddr(src: string, dst: string, over: Partial<L3Addressing> = {}): L3Addressing {
  return { srcMac: VM_MAC, dstMac: GW_MAC, src, dst, ...over };
}

/** Gateway -> VM addressing. */
export function hostAddr(src: string, dst: string, over: Partial<L3Addressing> = {}): L3Addressing {
  return { srcMac: GW_MAC, dstMac: VM_MAC, src, dst, ...over };
}

export interface ClientMsg {
  type: number;
  xid: number;
  chaddr?: string;
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  ciaddr?: string;
  options?: readonly DhcpOpt[];
  addr?: Partial<L3Addressing>;
}

/** A DHCP client message from the VM (default 0.0.0.0:68 -> 255.255.255.255:67, broadcast MAC). */
export function vmDhcp(m: ClientMsg): Uint8Array {
  const src = m.src ?? ANY;
  const dst = m.dst ?? BCAST;
  return dhcpFrame(
    vmAddr(src, dst, { dstMac: dst === BCAST ? BCAST_MAC : GW_MAC, ...m.addr }),
    m.sport ?? 68,
    m.dport ?? 67,
    {
      op: 1,
      xid: m.xid,
      chaddr: m.chaddr ?? VM_MAC,
      ...(m.ciaddr !== undefined ? { ciaddr: m.ciaddr } : {}),
      options: m.options ?? [opt.type(m.type)],
    },
  );
}

export interface ServerMsg {
  type: number;
  xid: number;
  chaddr?: string;
  yiaddr?: string;
  leaseTime?: number | null;
  dns?: readonly string[];
  src?: string;
  srcMac?: string;
  dstMac?: string;
  dst?: string;
  /** Replace the option list entirely. */
  options?: readonly DhcpOpt[];
  trailer?: readonly number[];
  end?: boolean;
}

/** A DHCP server reply from the gateway (default unicast to the VM's MAC). */
export function hostDhcp(m: ServerMsg): Uint8Array {
  const options: DhcpOpt[] = [opt.type(m.type), opt.serverId(GW)];
  if (m.type !== DHCP.NAK) {
    if (m.leaseTime !== null) options.push(opt.leaseTime(m.leaseTime ?? LEASE_S));
    options.push(opt.subnetMask('255.255.255.0'), opt.router(GW), opt.dns(...(m.dns ?? [GW])));
  }
  const yiaddr = m.type === DHCP.NAK ? ANY : (m.yiaddr ?? VM_IP);
  return dhcpFrame(
    { srcMac: m.srcMac ?? GW_MAC, dstMac: m.dstMac ?? VM_MAC, src: m.src ?? GW, dst: m.dst ?? yiaddr },
    67,
    68,
    {
      op: 2,
      xid: m.xid,
      chaddr: m.chaddr ?? VM_MAC,
      yiaddr,
      options: m.options ?? options,
      ...(m.trailer ? { trailer: m.trailer } : {}),
      ...(m.end !== undefined ? { end: m.end } : {}),
    },
  );
}

export function vmTcp(dst: string, dport = 443, flags: number = TCP_FLAGS.ACK, src = VM_IP, sport = 50000): Uint8Array {
  return tcpFrame(vmAddr(src, dst), { sport, dport, flags, payload: new Uint8Array(16) });
}

export function vmUdp(dst: string, dport: number, src = VM_IP, sport = 50001): Uint8Array {
  return udpFrame(vmAddr(src, dst), { sport, dport, payload: new Uint8Array(24) });
}

export function hostTcp(src: string, sport = 443, dport = 50000, flags: number = TCP_FLAGS.ACK): Uint8Array {
  return tcpFrame(hostAddr(src, VM_IP), { sport, dport, flags, payload: new Uint8Array(16) });
}

export function hostUdp(src: string, sport: number, dport: number): Uint8Array {
  return udpFrame(hostAddr(src, VM_IP), { sport, dport, payload: new Uint8Array(24) });
}

export function vmArp(op: 1 | 2, spa: string, tpa: string, sha = VM_MAC, srcMac = VM_MAC): Uint8Array {
  return arpFrame(op === 1 ? BCAST_MAC : GW_MAC, srcMac, { op, sha, spa, tpa, tha: op === 1 ? ZERO_MAC : GW_MAC });
}

/** Asserts verdict and reason by name (failures read "expected verdict 'pass', got 'no_lease'"). */
export function expectVerdict(actual: number, expected: Verdict): void {
  if (actual !== expected) throw new Error(`expected verdict '${reasonName(expected)}', got '${reasonName(actual)}'`);
}

/**
 * A filter whose VM obtained VM_IP through a real exchange: DISCOVER, OFFER, REQUEST, ACK, all
 * passed through the filter. The ACK is seen at T0 and grants LEASE_S seconds.
 */
export function boundFilter(over: Partial<FilterConfig> = {}, dns: readonly string[] = [GW]): PacketFilter {
  const f = newFilter(over);
  const xid = 0x1000;
  expectVerdict(f.fromVm(vmDhcp({ type: DHCP.DISCOVER, xid }), T0 - 20), Verdict.PASS);
  expectVerdict(f.fromHost(hostDhcp({ type: DHCP.OFFER, xid, dns }), T0 - 15), Verdict.PASS);
  expectVerdict(
    f.fromVm(vmDhcp({ type: DHCP.REQUEST, xid, options: [opt.type(DHCP.REQUEST), opt.requestedIp(VM_IP), opt.serverId(GW)] }), T0 - 10),
    Verdict.PASS,
  );
  expectVerdict(f.fromHost(hostDhcp({ type: DHCP.ACK, xid, dns }), T0), Verdict.PASS);
  if (f.lease()?.ip !== VM_IP) throw new Error(`boundFilter: lease not learned (${f.leaseState()})`);
  return f;
}
