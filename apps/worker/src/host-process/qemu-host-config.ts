// The VM host process's configuration: one JSON file per instance, written by the worker
// (drivers/qemu.ts) into the instance's run dir and passed as the only argument to main.ts.
import { readFileSync } from 'node:fs';

export interface VmHostFilterConfig {
  /** The NAT gateway (bridge) address and MAC; DHCP replies must come from them. */
  gatewayIp: string;
  gatewayMac: string;
  /** The NAT subnet, e.g. 192.168.64.0/24. */
  subnet: string;
  /** Trusted DHCP servers (default: the gateway). */
  dhcpServers?: string[];
  allow?: string[];
  block?: string[];
  blockLocal?: boolean;
  /** Prefixes treated as public (a lab network standing in for the Internet). */
  globalPrefixes?: string[];
  /** The address reserved for this VM on the NAT network: the only one it may hold. */
  address?: string;
  /** Host-only network (issue 18): nothing outside the subnet, either way (netfilter `hostOnly`). */
  hostOnly?: boolean;
  /** The host's other addresses: never reachable from the VM. */
  hostAddresses?: string[];
}

export interface VmHostConfig {
  vmId: string;
  attempt: number;
  name: string;
  cpus: number;
  memoryMib: number;
  /** Direct kernel boot (the built-in guest); absent = boot from `disk` through the firmware. */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** The instance's qcow2 disk (virtio-blk, first boot device). */
  disk?: string;
  /** The guest NIC's MAC (also the filter's VM MAC). */
  mac: string;
  /**
   * TAP device this process opens (≤ 15 bytes) and the worker attaches to its bridge. Absent (with
   * `filter`) for a VM without a NIC (network mode "none", issue 18).
   */
  tap?: string;
  /**
   * The veth uplink (issue 20): the AF_PACKET socket the worker opened on the VM's end of its veth
   * pair (in the VM's own network namespace) is this inherited fd; `tap` is then the name of the
   * bridge-side end. Absent: the process opens the TAP `tap` itself.
   */
  uplinkFd?: number;
  /**
   * How the VM's frames travel between QEMU and this process: 'dgram' (when absent) — a SOCK_DGRAM
   * socketpair, one frame per datagram (`-netdev dgram`); 'stream' — a SOCK_STREAM socketpair with
   * 4-byte length prefixes (`-netdev stream`), many frames per syscall (issue 20). The QEMU driver
   * always writes it out: 'vnet' with the TAP uplink, 'stream' with the veth one, unless the worker
   * runs with `--vm-framing`.
   * 'vnet' — the offload path (issue 20): QEMU's NIC is a TAP with a virtio-net header
   * (`-netdev tap,fd=3`; QEMU reads IFF_VNET_HDR off the fd) alone in the VM's own network namespace; the
   * worker hands over that TAP (`vnetNic.qemuFd`, for QEMU) and an AF_PACKET socket with
   * PACKET_VNET_HDR bound to it (`vnetNic.pumpFd`, the pump's VM side); the uplink TAP `tap` is
   * opened with IFF_VNET_HDR and checksum/TSO offloads. GSO super-frames cross whole.
   */
  nicFraming?: 'dgram' | 'stream' | 'vnet';
  /** With nicFraming 'vnet': the two inherited fds (see there). */
  vnetNic?: { pumpFd: number; qemuFd: number };
  /** Directory holding control.sock, qmp.sock, serial.log, status.jsonl, host.log. */
  runDir: string;
  filter?: VmHostFilterConfig;
  /** 'tcg' | 'kvm' | 'auto' (probe with chooseAccel). Default 'tcg'. */
  accel?: 'tcg' | 'kvm' | 'auto';
  /** Graceful stop: QMP system_powerdown, then SIGKILL after this many ms (default 10 s). */
  stopTimeoutMs?: number;
  /**
   * QEMU's seccomp sandbox (`-sandbox on,…`); the driver sets it for VMs that run as their own
   * unprivileged user (issue 14).
   */
  sandbox?: boolean;
  /** QEMU binary (default qemu-system-x86_64). */
  qemuBinary?: string;
  /**
   * Client-side fencing (issue 12), set for "reschedule" VMs: the host reads `leaseFile` (the
   * worker's <data dir>/lease.json) every FENCE_CHECK_MS and kills QEMU at once when the lease ran
   * out, or when no valid lease was readable for `graceMs` since it started; the VM then ends
   * "stopped" with a message starting "fenced:". Works with the worker dead (kill -9).
   */
  fence?: VmHostFenceConfig;
}

export interface VmHostFenceConfig {
  leaseFile: string;
  graceMs: number;
}

/** How often a VM host process reads the lease file. */
export const FENCE_CHECK_MS = 300;

export const CONTROL_SOCKET = 'control.sock';
export const QMP_SOCKET = 'qmp.sock';
/** QEMU's VNC server (issue 19): the VM's screen, for `vnc` sessions only (never a TCP port). */
export const VNC_SOCKET = 'vnc.sock';
export const SERIAL_LOG = 'serial.log';
export const STATUS_LOG = 'status.jsonl';
export const CONFIG_FILE = 'config.json';

export function readVmHostConfig(file: string): VmHostConfig {
  const c = JSON.parse(readFileSync(file, 'utf8')) as Partial<VmHostConfig>;
  const need = ['vmId', 'attempt', 'name', 'cpus', 'memoryMib', 'mac', 'runDir'] as const;
  for (const k of need) {
    if (c[k] === undefined || c[k] === null) throw new Error(`vm-host config ${file}: missing "${k}"`);
  }
  if (c.kernel === undefined && c.disk === undefined) throw new Error(`vm-host config ${file}: neither "kernel" nor "disk" to boot from`);
  if (c.kernel !== undefined && (c.initrd === undefined || c.cmdline === undefined)) throw new Error(`vm-host config ${file}: "kernel" needs "initrd" and "cmdline"`);
  if (c.sandbox !== undefined && typeof c.sandbox !== 'boolean') throw new Error(`vm-host config ${file}: "sandbox" must be a boolean`);
  if ((c.tap === undefined) !== (c.filter === undefined)) throw new Error(`vm-host config ${file}: "tap" and "filter" go together (both absent = no NIC)`);
  if (c.tap !== undefined && Buffer.byteLength(c.tap) > 15) throw new Error(`vm-host config: tap name "${c.tap}" is longer than 15 bytes`);
  if (c.uplinkFd !== undefined && (!Number.isInteger(c.uplinkFd) || c.uplinkFd < 3 || c.tap === undefined)) {
    throw new Error(`vm-host config ${file}: "uplinkFd" must be an inherited fd number ≥ 3, with "tap" (the bridge-side port)`);
  }
  if (c.nicFraming !== undefined && !['dgram', 'stream', 'vnet'].includes(c.nicFraming)) {
    throw new Error(`vm-host config ${file}: "nicFraming" must be "dgram", "stream" or "vnet"`);
  }
  const fdOk = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 3;
  if ((c.nicFraming === 'vnet') !== (c.vnetNic !== undefined)) throw new Error(`vm-host config ${file}: "vnetNic" goes with nicFraming "vnet" and only with it`);
  if (c.vnetNic !== undefined && (!fdOk(c.vnetNic.pumpFd) || !fdOk(c.vnetNic.qemuFd) || c.vnetNic.pumpFd === c.vnetNic.qemuFd || c.tap === undefined || c.uplinkFd !== undefined)) {
    throw new Error(`vm-host config ${file}: "vnetNic" needs two distinct inherited fds ≥ 3 (pumpFd, qemuFd), a "tap" uplink and no "uplinkFd"`);
  }
  if (c.fence !== undefined && (typeof c.fence?.leaseFile !== 'string' || typeof c.fence.graceMs !== 'number')) {
    throw new Error(`vm-host config ${file}: "fence" needs "leaseFile" (string) and "graceMs" (number)`);
  }
  return c as VmHostConfig;
}

/** Everything the control socket reports (`status`) and streams (`watch`). */
export type VmHostState = 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';

export interface VmHostStatus {
  vmId: string;
  attempt: number;
  name: string;
  state: VmHostState;
  pid: number;
  qemuPid?: number | undefined;
  mac: string;
  /** The TAP ('' without a NIC; "vmnet:…" on macOS). */
  tap: string;
  ip?: string | undefined;
  /** vCPUs paused through QMP (the state stays "running"). */
  paused?: boolean | undefined;
  leaseExpiresAt?: number | undefined;
  startedAt: number;
  /** ms from QEMU spawn to the filter learning the lease. */
  bootToIpMs?: number | undefined;
  message?: string | undefined;
  exitCode?: number | null | undefined;
  counters?: unknown;
}
