// Unit tests of the VM host process's pieces that need neither root nor QEMU: the frame pump
// (socketpairs standing in for the VM's NIC and the TAP), the control socket, the QMP client.
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FramePort, socketpairDgram, socketpairStream, VNET_MAX_FRAME } from '@fleet/native-vz';
import { createFilter } from '@fleet/netfilter';
import { DHCP, TCP_FLAGS, opt, tcpFrame } from '../../../../packages/netfilter/src/testing/frames.ts';
import { GW, NET, VM_IP, baseConfig, hostAddr, vmAddr, vmDhcp } from '../../../../packages/netfilter/src/testing/scenario.ts';
import type { VmHostStatus } from '../host-process/qemu-host-config.ts';
import { ControlServer } from '../host-process/control-server.ts';
import { controlRequest, watchControl } from '../host-process/control-client.ts';
import { FramePump, PLAIN_FRAME_BATCH } from './pump.ts';
import { qmpCommands } from './qmp.ts';
import { VNET_F_NEEDS_CSUM, VNET_HDR_LEN } from './vnet-header.ts';

const VM_MAC = '52:54:00:aa:bb:cc';
const GW_MAC = 'be:d0:74:00:00:64';
const macBytes = (m: string): number[] => m.split(':').map((x) => parseInt(x, 16));

/** An ARP request (42 bytes): `from` asks who has `tpa`, with sender IP `spa`. */
function arp(from: string, spa: number[], tpa: number[]): Buffer {
  return Buffer.from([
    ...[255, 255, 255, 255, 255, 255], ...macBytes(from), 0x08, 0x06,
    0, 1, 8, 0, 6, 4, 0, 1, ...macBytes(from), ...spa, 0, 0, 0, 0, 0, 0, ...tpa,
  ]);
}
const ipv6 = (from: string, to: string): Buffer => Buffer.concat([Buffer.from([...macBytes(to), ...macBytes(from), 0x86, 0xdd]), Buffer.alloc(40)]);

let tmp = '';
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'fleet-vmhost-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('FramePump', () => {
  // The VM's side as QEMU's -netdev dgram (one datagram per frame) and -netdev stream (length-
  // prefixed frames on a stream socket, the driver's default): the pump is the same for both.
  it.each(['dgram', 'stream'] as const)('forwards what the filter passes, both directions, and counts the drops (VM side: %s)', async (framing) => {
    const [vmMine, vmPeer] = framing === 'stream' ? socketpairStream() : socketpairDgram({ nonblock: true });
    const [tapMine, tapPeer] = socketpairDgram({ nonblock: true });
    const filter = createFilter({ vmMac: VM_MAC, gatewayIp: '192.168.64.1', gatewayMac: GW_MAC, subnet: '192.168.64.0/24' });
    const pump = new FramePump(vmMine, tapMine, filter);
    pump.start();
    const vm = new FramePort(vmPeer);
    const tap = new FramePort(tapPeer);
    const atTap: Buffer[] = [];
    const atVm: Buffer[] = [];
    tap.onFrames((f) => atTap.push(...f), { copy: true });
    vm.onFrames((f) => atVm.push(...f), { copy: true });

    const probe = arp(VM_MAC, [0, 0, 0, 0], [192, 168, 64, 1]); // RFC 5227 probe: passes without a lease
    const spoof = arp('52:54:00:00:00:99', [0, 0, 0, 0], [192, 168, 64, 1]); // foreign MAC: mac_spoof
    expect(vm.send([probe, spoof, probe, ipv6(VM_MAC, GW_MAC)])).toBe(4);
    const fromGw = arp(GW_MAC, [192, 168, 64, 1], [192, 168, 64, 7]);
    expect(tap.send([fromGw, ipv6(GW_MAC, VM_MAC)])).toBe(2);

    for (let i = 0; i < 100 && (atTap.length < 2 || atVm.length < 1); i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 30));
    expect(atTap).toEqual([probe, probe]);
    expect(atVm).toEqual([fromGw]);
    const s = pump.stats();
    expect(s.vmToHost).toEqual({ passed: 2, dropped: 2 });
    expect(s.hostToVm).toEqual({ passed: 1, dropped: 1 });
    const f = filter.stats();
    expect(f.fromVm.mac_spoof).toBe(1);
    expect(f.fromVm.ipv6).toBe(1);
    expect(f.fromHost.ipv6).toBe(1);
    expect(s.vm.rxFrames).toBe(4);
    expect(s.vm.txFrames).toBe(1);
    expect(s.tap.txFrames).toBe(2);
    expect(vm.kind).toBe(framing);
    pump.close();
    vm.close();
    tap.close();
  });
});

describe('FramePump batches', () => {
  it('a burst of 256 frames crosses in one batch each way, whole and in order (PLAIN_FRAME_BATCH)', async () => {
    expect(PLAIN_FRAME_BATCH).toBe(256);
    const [vmMine, vmPeer] = socketpairStream();
    const [tapMine, tapPeer] = socketpairDgram({ nonblock: true });
    // A VM with a lease talking TCP to a public address: every frame passes (ARP from the VM is rate-limited).
    const filter = createFilter(baseConfig({ lease: { ip: VM_IP, expiresAt: Date.now() + 1e9, dns: [GW] } }));
    const pump = new FramePump(vmMine, tapMine, filter);
    const vm = new FramePort(vmPeer, { batch: 1024 });
    const tap = new FramePort(tapPeer, { batch: 1024 });
    const atTap: Buffer[] = [];
    const atVm: Buffer[] = [];
    tap.onFrames((f) => atTap.push(...f), { copy: true });
    vm.onFrames((f) => atVm.push(...f), { copy: true });
    // Queued before the pump starts: each side then finds all 256 at its first wake-up.
    const fromVm = Array.from({ length: 256 }, (_, i) => Buffer.from(tcpFrame(vmAddr(VM_IP, NET), { sport: 40000 + i, dport: 443, flags: TCP_FLAGS.ACK })));
    const fromGw = Array.from({ length: 256 }, (_, i) => Buffer.from(tcpFrame(hostAddr(NET, VM_IP), { sport: 443, dport: 40000 + i, flags: TCP_FLAGS.ACK })));
    expect(vm.send(fromVm)).toBe(256);
    expect(tap.send(fromGw)).toBe(256);
    pump.start();
    for (let i = 0; i < 200 && (atTap.length < 256 || atVm.length < 256); i++) await new Promise((r) => setTimeout(r, 10));
    expect(atTap).toEqual(fromVm);
    expect(atVm).toEqual(fromGw);
    const s = pump.stats();
    expect(s.vmToHost).toEqual({ passed: 256, dropped: 0 });
    expect(s.hostToVm).toEqual({ passed: 256, dropped: 0 });
    // One receive batch each way (four with the old 64), and one send each way carried it.
    expect(s.vm.rxBatches).toBe(1);
    expect(s.tap.rxBatches).toBe(1);
    expect(s.tap.txCalls).toBe(1);
    expect(s.vm.txCalls).toBe(1);
    pump.close();
    vm.close();
    tap.close();
  });
});

describe('FramePump on the offload path (virtio-net headers)', () => {
  // Datagram socketpairs stand in for the packet socket on QEMU's TAP and for the uplink TAP: the
  // pump's contract is the same, a 10-byte virtio-net header before every frame.
  const hdr = (gsoType: number, flags = 0, csumStart = 0, csumOffset = 0): Buffer => {
    const h = Buffer.alloc(VNET_HDR_LEN);
    h[0] = flags;
    h[1] = gsoType;
    h.writeUInt16LE(1448, 4);
    h.writeUInt16LE(csumStart, 6);
    h.writeUInt16LE(csumOffset, 8);
    return h;
  };
  /** The UDP checksum of an IPv4 frame, from scratch: 0 when the field is right. */
  const udpResidue = (f: Buffer): number => {
    const len = f.readUInt16BE(38);
    const w = Buffer.concat([f.subarray(26, 34), Buffer.from([0, 17]), f.subarray(38, 40), f.subarray(34, 34 + len), Buffer.alloc(len % 2)]);
    let sum = 0;
    for (let i = 0; i < w.length; i += 2) sum += w.readUInt16BE(i);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    return ~sum & 0xffff;
  };

  it('judges the frame behind the header, forwards header and frame unchanged, counts super-frames, completes a DHCP checksum the filter may edit', async () => {
    const [vmMine, vmPeer] = socketpairDgram({ nonblock: true });
    const [tapMine, tapPeer] = socketpairDgram({ nonblock: true });
    const filter = createFilter(baseConfig({ lease: { ip: VM_IP, expiresAt: Date.now() + 1e9, dns: [GW] }, maxFrame: VNET_MAX_FRAME }));
    const pump = new FramePump(vmMine, tapMine, filter, { vnetHdr: true });
    pump.start();
    const vm = new FramePort(vmPeer, { frameSize: VNET_HDR_LEN + VNET_MAX_FRAME, batch: 8 });
    const tap = new FramePort(tapPeer, { frameSize: VNET_HDR_LEN + VNET_MAX_FRAME, batch: 8 });
    const atTap: Buffer[] = [];
    tap.onFrames((f) => atTap.push(...f), { copy: true });

    // A TSO super-frame to a public address (passes), the same from a foreign MAC (mac_spoof).
    const superFrame = Buffer.concat([hdr(1, 1, 34, 16), Buffer.from(tcpFrame(vmAddr(VM_IP, NET), { sport: 40000, dport: 443, flags: TCP_FLAGS.ACK, payload: new Uint8Array(20_000) }))]);
    const spoofed = Buffer.concat([hdr(1, 1, 34, 16), Buffer.from(tcpFrame(vmAddr(VM_IP, NET, { srcMac: '02:00:00:00:00:99' }), { sport: 40000, dport: 443, flags: TCP_FLAGS.ACK, payload: new Uint8Array(20_000) }))]);
    // A DISCOVER naming a host (the filter blanks the name and recomputes the UDP checksum), its
    // checksum left pending as a guest with checksum offload leaves it: the pseudo-header sum only.
    const discover = Buffer.from(vmDhcp({ type: DHCP.DISCOVER, xid: 7, options: [opt.type(DHCP.DISCOVER), opt.raw(12, [...Buffer.from('evil-name')])] }));
    let pseudo = 17 + discover.readUInt16BE(38);
    for (let i = 26; i < 34; i += 2) pseudo += discover.readUInt16BE(i);
    while (pseudo > 0xffff) pseudo = (pseudo & 0xffff) + (pseudo >>> 16);
    discover.writeUInt16BE(pseudo, 40);
    const pendingDiscover = Buffer.concat([hdr(0, VNET_F_NEEDS_CSUM, 34, 6), discover]);
    const short = Buffer.alloc(VNET_HDR_LEN - 2); // shorter than its header: malformed, dropped
    // The same DISCOVER with its checksum field placed past the frame's end: it cannot be completed.
    const badOffsets = Buffer.concat([hdr(0, VNET_F_NEEDS_CSUM, 34, discover.length), discover]);
    expect(vm.send([superFrame, spoofed, pendingDiscover, short, badOffsets])).toBe(5);

    for (let i = 0; i < 100 && atTap.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 30));
    expect(atTap).toHaveLength(2);
    expect(atTap[0]!.equals(superFrame)).toBe(true);
    const out = atTap[1]!;
    expect(out[0]! & VNET_F_NEEDS_CSUM).toBe(0); // the checksum is complete now: the kernel must not add to it
    const frame = out.subarray(VNET_HDR_LEN);
    expect(frame.includes(Buffer.from('evil-name'))).toBe(false);
    expect(udpResidue(frame)).toBe(0);
    expect(pump.stats().vmToHost).toEqual({ passed: 2, dropped: 2, superFrames: 1, badChecksumHeader: 1 });
    expect(filter.stats().fromVm.mac_spoof).toBe(1);
    expect(filter.stats().dhcpNamesStripped).toBe(1); // the bad-offset copy never reached the filter
    pump.close();
    vm.close();
    tap.close();
  });
});

describe('control socket', () => {
  it('answers status, streams changes to watchers, and routes stop/kill', async () => {
    const sock = path.join(tmp, 'control.sock');
    let state: VmHostStatus['state'] = 'starting';
    const calls: string[] = [];
    const status = (): VmHostStatus => ({ vmId: 'v', attempt: 1, name: 'n', state, pid: process.pid, mac: VM_MAC, tap: 't', startedAt: 1 });
    const server = await ControlServer.listen(sock, {
      status,
      stop: () => calls.push('stop'),
      kill: () => calls.push('kill'),
      pause: async () => void calls.push('pause'),
      resume: async () => {
        throw new Error('not paused');
      },
    });

    expect((await controlRequest(sock, 'status')).status).toMatchObject({ state: 'starting', mac: VM_MAC });
    const seen: string[] = [];
    const w = watchControl(sock, (s) => seen.push(s.state));
    for (let i = 0; i < 100 && seen.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
    state = 'running';
    server.broadcast();
    for (let i = 0; i < 100 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    expect(seen).toEqual(['starting', 'running']);

    expect((await controlRequest(sock, 'stop')).ok).toBe(true);
    expect((await controlRequest(sock, 'kill')).ok).toBe(true);
    expect((await controlRequest(sock, 'pause')).ok).toBe(true);
    expect(await controlRequest(sock, 'resume')).toMatchObject({ ok: false, error: 'not paused' });
    expect(calls).toEqual(['stop', 'kill', 'pause']);

    // A request naming another VM (a path swapped by a VM's user) is refused, and obeyed by nobody.
    await expect(controlRequest(sock, 'kill', 1000, { vmId: 'other', attempt: 1 })).rejects.toThrow(/belongs to vm v attempt 1/);
    await expect(controlRequest(sock, 'stop', 1000, { vmId: 'v', attempt: 2 })).rejects.toThrow(/belongs to vm v attempt 1/);
    expect(calls).toEqual(['stop', 'kill', 'pause']);
    expect((await controlRequest(sock, 'kill', 1000, { vmId: 'v', attempt: 1 })).ok).toBe(true);
    expect(calls).toEqual(['stop', 'kill', 'pause', 'kill']);
    const wrongWatch = await new Promise<Error>((resolve) => watchControl(sock, () => undefined, resolve, { vmId: 'other', attempt: 1 }));
    expect(wrongWatch.message).toMatch(/belongs to another VM: .*vm v attempt 1/);

    // Garbage and unknown commands get an error line, not a crash.
    const raw = await new Promise<string>((resolve) => {
      const c = net.connect(sock, () => c.write('nope\n{"cmd":"dance","id":7}\n'));
      let b = '';
      c.setEncoding('utf8');
      c.on('data', (d: string) => {
        b += d;
        if (b.split('\n').length > 2) {
          c.end();
          resolve(b);
        }
      });
    });
    const [l1, l2] = raw.trim().split('\n').map((l) => JSON.parse(l) as { ok: boolean; id?: number; error?: string });
    expect(l1).toMatchObject({ ok: false, error: 'bad JSON' });
    expect(l2).toMatchObject({ ok: false, id: 7 });

    await server.close();
    await w.closed;
    await expect(controlRequest(sock, 'status')).rejects.toThrow();
  });
});

describe('QMP client', () => {
  it('greets, negotiates capabilities, runs commands in order, ignores events', async () => {
    const sock = path.join(tmp, 'qmp.sock');
    const got: string[] = [];
    const server = net.createServer((c) => {
      c.setEncoding('utf8');
      c.write('{"QMP": {"version": {}, "capabilities": []}}\r\n');
      let b = '';
      c.on('data', (d: string) => {
        b += d;
        let nl: number;
        while ((nl = b.indexOf('\n')) >= 0) {
          const m = JSON.parse(b.slice(0, nl)) as { execute: string };
          b = b.slice(nl + 1);
          got.push(m.execute);
          if (m.execute === 'system_powerdown') c.write('{"timestamp": {}, "event": "POWERDOWN"}\r\n');
          c.write(m.execute === 'bogus' ? '{"error": {"class": "CommandNotFound", "desc": "no"}}\r\n' : '{"return": {}}\r\n');
        }
      });
    });
    await new Promise<void>((r) => server.listen(sock, r));
    const replies = await qmpCommands(sock, [{ execute: 'system_powerdown' }, { execute: 'bogus' }]);
    expect(got).toEqual(['qmp_capabilities', 'system_powerdown', 'bogus']);
    expect(replies).toEqual([{ return: {} }, { error: { class: 'CommandNotFound', desc: 'no' } }]);
    await new Promise<void>((r) => server.close(() => r()));
    await expect(qmpCommands(sock, [], 500)).rejects.toThrow();
  });
});
