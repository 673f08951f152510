// Unit tests of the VM host process's pieces that need neither root nor QEMU: the frame pump
// (socketpairs standing in for the VM's NIC and the TAP), the control socket, the QMP client.
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FramePort, socketpairDgram, socketpairStream } from '@fleet/native-vz';
import { createFilter } from '@fleet/netfilter';
import type { VmHostStatus } from '../host-process/qemu-host-config.ts';
import { ControlServer } from '../host-process/control-server.ts';
import { controlRequest, watchControl } from '../host-process/control-client.ts';
import { FramePump } from './pump.ts';
import { qmpCommands } from './qmp.ts';

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
