// The macOS VM host's configuration (one JSON file per instance, written by the vz driver into
// the instance's root-owned directory) and the extra status it reports. The host is the root
// half (network: vmnet, filter, pump); the VM itself runs in the VM agent as `vmUser`. The control socket, status.jsonl and the run-dir
// layout are the Linux host's (../config.ts, ../control-server.ts): the driver side is shared.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { VmHostFenceConfig, VmHostStatus } from './qemu-host-config.ts';

export interface VzHostConfig {
  vmId: string;
  attempt: number;
  name: string;
  guest: 'macos' | 'linux';
  /** The instance's Tart bundle (config.json, disk.img, nvram.bin), in the VM user's directory: only the agent opens it. */
  bundleDir: string;
  /** control.sock, status.jsonl (root's directory). */
  runDir: string;
  /** The guest's serial console, in the VM user's directory (the agent writes it). */
  serialLogPath: string;
  /** Who the VM agent runs as. */
  vmUser: { uid: number; gid: number };
  /** Where the host listens for its agent: a root-owned directory; the socket itself is the VM user's (0600). */
  agentSocket: string;
  /** The agent's launchd label (gui/<uid>/<label>) and its log file (in the VM user's directory). */
  agentLabel: string;
  agentLog: string;
  /** The signed node copy the agent runs on, with the SHA-256 pinned when it was signed (checked before each start). */
  agentNode?: { path: string; sha256: string };
  cpus: number;
  memoryBytes: number;
  /** The guest NIC's MAC (bundle macAddress; also the filter's VM MAC). */
  mac: string;
  /** Linux guests: direct kernel boot; absent = EFI with nvram.bin as the variable store. */
  linuxKernel?: { kernelPath: string; initrdPath?: string; cmdline: string };
  display?: { width: number; height: number };
  /** Issue 18: "nat" (vmnet shared mode, default), "host-only" (vmnet host mode), "none" (no NIC). */
  networkMode?: 'nat' | 'host-only' | 'none';
  /** vmnet's addresses (shared, or host mode for host-only); the gateway is startAddress. */
  network: { startAddress: string; endAddress: string; subnetMask: string; isolation?: boolean; dhcpLeaseSeconds?: number };
  /** Egress policy for the packet filter (InstanceSpec.network). */
  filter?: { allow?: string[]; block?: string[]; blockLocal?: boolean };
  /** Graceful stop budget before the hard stop (default 30 s). */
  stopTimeoutMs?: number;
  recovery?: boolean;
  /** Client-side fencing, as on Linux (../config.ts VmHostConfig.fence): set for "reschedule" VMs. */
  fence?: VmHostFenceConfig;
}

/** Status as the darwin host reports it: the Linux fields plus the failure kind. */
export interface VzHostStatus extends VmHostStatus {
  /** e.g. "limit-exceeded" (VZErrorVirtualMachineLimitExceeded), "entitlement-missing". */
  failureKind?: string | undefined;
  /** The VM agent's pid (the VM user's process that runs the VM), once it connected. */
  agentPid?: number | undefined;
}

const IPV4 = /^(\d{1,3})(\.\d{1,3}){3}$/;

export function readVzHostConfig(file: string): VzHostConfig {
  const c = JSON.parse(readFileSync(file, 'utf8')) as Partial<VzHostConfig>;
  const need = ['vmId', 'attempt', 'name', 'guest', 'bundleDir', 'runDir', 'serialLogPath', 'vmUser', 'agentSocket', 'agentLabel', 'agentLog', 'cpus', 'memoryBytes', 'mac', 'network'] as const;
  for (const k of need) if (c[k] === undefined || c[k] === null) throw new Error(`vz host config ${file}: missing "${k}"`);
  if (c.guest !== 'macos' && c.guest !== 'linux') throw new Error(`vz host config ${file}: guest must be "macos" or "linux"`);
  for (const p of [c.bundleDir!, c.runDir!, c.serialLogPath!, c.agentSocket!, c.agentLog!]) if (typeof p !== 'string' || !path.isAbsolute(p)) throw new Error(`vz host config ${file}: ${String(p)} is not an absolute path`);
  if (!Number.isInteger(c.vmUser!.uid) || !Number.isInteger(c.vmUser!.gid) || c.vmUser!.uid <= 0) throw new Error(`vz host config ${file}: vmUser needs a non-root uid and a gid`);
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(c.agentLabel!)) throw new Error(`vz host config ${file}: agentLabel ${JSON.stringify(c.agentLabel)} is not a launchd label`);
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
