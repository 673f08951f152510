// The macOS VM host process's configuration (one JSON file per instance, written by the vz
// driver) and the extra status it reports. The control socket, status.jsonl and the run-dir
// layout are the Linux host's (../config.ts, ../control-server.ts): the driver side is shared.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { VmHostFenceConfig, VmHostStatus } from './qemu-host-config.ts';

export interface VzHostConfig {
  vmId: string;
  attempt: number;
  name: string;
  guest: 'macos' | 'linux';
  /** The instance's Tart bundle (config.json, disk.img, nvram.bin). */
  bundleDir: string;
  /** control.sock, status.jsonl, serial.log. */
  runDir: string;
  cpus: number;
  memoryBytes: number;
  /** The guest NIC's MAC (bundle macAddress; also the filter's VM MAC). */
  mac: string;
  /** Linux guests: direct kernel boot; absent = EFI with nvram.bin as the variable store. */
  linuxKernel?: { kernelPath: string; initrdPath?: string; cmdline: string };
  display?: { width: number; height: number };
  /** vmnet shared mode; the gateway is startAddress. */
  network: { startAddress: string; endAddress: string; subnetMask: string; isolation?: boolean; dhcpLeaseSeconds?: number };
  /** Egress policy for the packet filter (InstanceSpec.network). */
  filter?: { allow?: string[]; block?: string[]; blockLocal?: boolean };
  /** Graceful stop budget before the hard stop (default 30 s). */
  stopTimeoutMs?: number;
  /** After vmnet is up (root), switch to this user (setgid, then setuid). */
  dropPrivileges?: { uid: number; gid: number };
  recovery?: boolean;
  /** Client-side fencing, as on Linux (../config.ts VmHostConfig.fence): set for "reschedule" VMs. */
  fence?: VmHostFenceConfig;
}

/** Status as the darwin host reports it: the Linux fields plus the failure kind. */
export interface VzHostStatus extends VmHostStatus {
  /** e.g. "limit-exceeded" (VZErrorVirtualMachineLimitExceeded), "entitlement-missing". */
  failureKind?: string | undefined;
}

const IPV4 = /^(\d{1,3})(\.\d{1,3}){3}$/;

export function readVzHostConfig(file: string): VzHostConfig {
  const c = JSON.parse(readFileSync(file, 'utf8')) as Partial<VzHostConfig>;
  const need = ['vmId', 'attempt', 'name', 'guest', 'bundleDir', 'runDir', 'cpus', 'memoryBytes', 'mac', 'network'] as const;
  for (const k of need) if (c[k] === undefined || c[k] === null) throw new Error(`vz host config ${file}: missing "${k}"`);
  if (c.guest !== 'macos' && c.guest !== 'linux') throw new Error(`vz host config ${file}: guest must be "macos" or "linux"`);
  for (const p of [c.bundleDir!, c.runDir!]) if (!path.isAbsolute(p)) throw new Error(`vz host config ${file}: ${p} is not absolute`);
  for (const k of ['startAddress', 'endAddress', 'subnetMask'] as const) {
    if (!IPV4.test(String(c.network![k]))) throw new Error(`vz host config ${file}: network.${k} is not an IPv4 address`);
  }
  return c as VzHostConfig;
}

/** "192.168.64.1" + "255.255.255.0" → "192.168.64.0/24". */
export function subnetCidr(address: string, mask: string): string {
  const toN = (s: string): number => s.split('.').reduce((a, o) => (a << 8) + Number(o), 0) >>> 0;
  const m = toN(mask);
  const bits = m.toString(2).replace(/0+$/, '');
  if (bits.includes('0')) throw new Error(`not a contiguous subnet mask: ${mask}`);
  const net = (toN(address) & m) >>> 0;
  return `${[24, 16, 8, 0].map((s) => (net >>> s) & 255).join('.')}/${bits.length}`;
}
