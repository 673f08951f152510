// The macOS VM host process, as a function of its dependencies (so it runs in tests on Linux with
// the fake addon, a real socketpair and a fake vmnet). One per VM, started detached by the vz
// driver on the worker's ad-hoc-signed node copy, as root:
//
//   1. vmnet shared-mode interface up (needs root) → gateway IP from vmnet, gateway MAC from ifconfig
//   2. DHCP lease time set (root), then privileges dropped to the VM user
//   3. socketpair: one end → VZFileHandleNetworkDeviceAttachment, the other → the pump
//   4. pump: VM ⇄ packages/netfilter ⇄ vmnet (the same FramePump as Linux, vmnet as its uplink)
//   5. control.sock and status.jsonl exactly as the Linux host (the driver side is shared)
//   6. start the VZ VM; exit when it stops (0) or fails (1)
// Fencing (issue 12): with `fence` (a "reschedule" VM) the lease file is read every FENCE_CHECK_MS
// from the start; when the lease ran out the VM is stopped hard at once (or never started) and
// ends "stopped" with a "fenced: …" message, exactly as on Linux.
import { networkInterfaces } from 'node:os';
import { appendFileSync, chownSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { createFilter } from '@fleet/netfilter';
import { VmnetPort, VzVirtualMachine, normalizeMachineConfig, type VzAddon } from '@fleet/native-vz/vz';
import { CONTROL_SOCKET, FENCE_CHECK_MS, STATUS_LOG } from '../../host-process/qemu-host-config.ts';
import { watchLeaseFile, type LeaseFileWatch } from '../../fencing/lease-file.ts';
import { ControlServer } from '../../host-process/control-server.ts';
import { FramePump } from '../pump.ts';
import { readTartConfig } from '../../vz/tart-bundle.ts';
import { mapVzError } from '../../vz/errors.ts';
import { VzMachineRunner, type HostState } from '../../vz/machine.ts';
import { subnetCidr, type VzHostConfig, type VzHostStatus } from '../../host-process/vz-host-config.ts';
import { machineConfigFor } from './machine-config.ts';

export interface VzHostDeps {
  addon: VzAddon;
  socketpairDgram(opts: { nonblock: boolean }): [number, number];
  closeFd(fd: number): void;
  /** MAC of the interface holding the gateway IP (bridge100 …). */
  gatewayMac(gatewayIp: string): Promise<string>;
  /** Sets bootpd's lease time (root); failures are logged, not fatal. */
  ensureLeaseTime?(seconds: number): Promise<unknown>;
  /** setgid + setuid. */
  dropPrivileges?(ids: { uid: number; gid: number }): void;
  /** Called once the control socket listens (tests). */
  onListening?(): void;
  /** SIGTERM/SIGINT handlers (the real process only). */
  handleSignals?: boolean;
  /** Lease file check interval (default FENCE_CHECK_MS; tests). */
  fenceCheckMs?: number;
}

export async function runVzHost(cfg: VzHostConfig, deps: VzHostDeps): Promise<number> {
  mkdirSync(cfg.runDir, { recursive: true, mode: 0o700 });
  const statusLog = path.join(cfg.runDir, STATUS_LOG);
  const startedAt = Date.now();
  let state: HostState = 'starting';
  let message: string | undefined;
  let failureKind: string | undefined;
  let runner: VzMachineRunner | undefined;
  let vm: VzVirtualMachine | undefined;
  let uplink: VmnetPort | undefined;
  let pump: FramePump | undefined;
  let control: ControlServer | undefined;
  let bootToIpMs: number | undefined;
  let filter: ReturnType<typeof createFilter> | undefined;
  let vmStartedAt: number | undefined;

  const status = (): VzHostStatus => {
    const lease = filter?.lease(Date.now());
    return {
      vmId: cfg.vmId,
      attempt: cfg.attempt,
      name: cfg.name,
      state,
      pid: process.pid,
      mac: cfg.mac,
      tap: uplink?.info ? `vmnet:${uplink.info.mac}` : 'vmnet',
      ip: state === 'running' ? lease?.ip : undefined,
      paused: runner?.paused ?? false,
      leaseExpiresAt: lease?.expiresAt,
      startedAt,
      bootToIpMs,
      message,
      failureKind,
      counters: { filter: filter?.stats(), pump: pump?.stats() },
    };
  };
  const record = (event: string): void => {
    const s = status();
    const line = JSON.stringify({ at: Date.now(), event, state: s.state, ip: s.ip ?? null, paused: s.paused, pid: s.pid, bootToIpMs: s.bootToIpMs, message: s.message, failureKind: s.failureKind }) + '\n';
    try {
      appendFileSync(statusLog, line);
    } catch {
      /* run dir removed under us */
    }
    control?.broadcast();
  };
  const setState = (s: HostState, why?: string, kind?: string): void => {
    state = s;
    message = why;
    if (kind !== undefined) failureKind = kind;
    record('state');
  };
  let fence: LeaseFileWatch | undefined;
  /** Set when the lease ran out before the VM was started (it then never starts). */
  let fenced: string | undefined;
  const fail = async (why: string, kind?: string): Promise<number> => {
    fence?.stop();
    if (fenced !== undefined) {
      // Fenced during setup: the VM never ran; that is a stop, not a failure.
      why = fenced;
    }
    setState(fenced !== undefined ? 'stopped' : 'failed', why, fenced !== undefined ? undefined : (kind ?? 'setup'));
    pump?.close();
    uplink?.close();
    vm?.close();
    await control?.close();
    rmSync(path.join(cfg.runDir, CONTROL_SOCKET), { force: true });
    return fenced !== undefined ? 0 : 1;
  };

  // Control first, so the driver sees the host at once (and a failure below is reported through it).
  control = await ControlServer.listen(path.join(cfg.runDir, CONTROL_SOCKET), {
    status,
    stop: () => void (runner ? runner.stop() : undefined),
    kill: (reason) => void (runner ? runner.kill(reason) : undefined),
    pause: () => (runner ? runner.pause() : Promise.reject(new Error('the VM is not running'))),
    resume: () => (runner ? runner.resume() : Promise.reject(new Error('the VM is not running'))),
  });
  record('listening');
  deps.onListening?.();
  if (cfg.fence) {
    fence = watchLeaseFile(
      cfg.fence,
      (why) => {
        fenced = why;
        record(`fenced ${why}`);
        void runner?.kill(why);
      },
      { intervalMs: deps.fenceCheckMs ?? FENCE_CHECK_MS, startedAt },
    );
    fence.check();
  }

  // 1. vmnet (root).
  try {
    uplink = await VmnetPort.start(deps.addon, {
      mode: 'shared',
      startAddress: cfg.network.startAddress,
      endAddress: cfg.network.endAddress,
      subnetMask: cfg.network.subnetMask,
      ...(cfg.network.isolation !== undefined ? { isolation: cfg.network.isolation } : {}),
    });
  } catch (e) {
    return fail((e as Error).message, 'vmnet');
  }
  const info = uplink.info!;
  const gatewayIp = info.startAddress ?? cfg.network.startAddress;
  const subnet = subnetCidr(gatewayIp, info.subnetMask ?? cfg.network.subnetMask);
  let gatewayMac: string;
  try {
    gatewayMac = await deps.gatewayMac(gatewayIp);
  } catch (e) {
    return fail(`cannot find the vmnet gateway's MAC: ${(e as Error).message}`, 'vmnet');
  }

  // 2. lease time, then drop root.
  if (deps.ensureLeaseTime && cfg.network.dhcpLeaseSeconds) {
    await deps.ensureLeaseTime(cfg.network.dhcpLeaseSeconds).catch((e: Error) => record(`lease-time-error ${e.message}`));
  }
  if (cfg.dropPrivileges && deps.dropPrivileges) {
    try {
      // Files this process made as root must stay writable/removable after the drop.
      for (const f of [statusLog, path.join(cfg.runDir, CONTROL_SOCKET)]) {
        try {
          chownSync(f, cfg.dropPrivileges.uid, cfg.dropPrivileges.gid);
        } catch {
          /* absent */
        }
      }
      deps.dropPrivileges(cfg.dropPrivileges);
    } catch (e) {
      return fail(`cannot drop privileges to uid ${cfg.dropPrivileges.uid}: ${(e as Error).message}`);
    }
  }

  // 3. the VM and its NIC.
  filter = createFilter({
    vmMac: cfg.mac,
    gatewayIp,
    gatewayMac,
    subnet,
    dhcpServers: [gatewayIp],
    ...(cfg.filter?.allow ? { allow: cfg.filter.allow } : {}),
    ...(cfg.filter?.block ? { block: cfg.filter.block } : {}),
    ...(cfg.filter?.blockLocal ? { blockLocal: true } : {}),
    // There is no host firewall of ours on macOS: the filter alone keeps the VM off the Mac's
    // other addresses (en0, other vmnet bridges, ...), whatever their address class.
    hostAddresses: hostIpv4Addresses(gatewayIp),
  });
  filter.onLeaseChange((e) => {
    if (e.lease && bootToIpMs === undefined && vmStartedAt !== undefined) bootToIpMs = Date.now() - vmStartedAt;
    record(`lease-${e.cause}`);
  });
  let pair: [number, number];
  try {
    // Blocking on both ends: VZ gets a plain blocking socket (as Tart hands it); our FramePort
    // end needs no O_NONBLOCK because it always uses MSG_DONTWAIT.
    pair = deps.socketpairDgram({ nonblock: false });
  } catch (e) {
    return fail(`cannot create the VM's socketpair: ${(e as Error).message}`);
  }
  try {
    const bundle = await readTartConfig(cfg.bundleDir);
    const { config, adjustments } = normalizeMachineConfig(machineConfigFor(cfg, bundle, pair[1]), deps.addon.limits());
    for (const a of adjustments) record(`adjusted ${a}`);
    vm = new VzVirtualMachine(deps.addon, config);
  } catch (e) {
    deps.closeFd(pair[0]);
    deps.closeFd(pair[1]);
    const f = mapVzError(e, 'configure VM');
    return fail(f.message, f.kind);
  }
  deps.closeFd(pair[1]); // the addon holds its own dup() of the VM end

  vm.on('networkDisconnected', (e) => record(`network-disconnected ${e.message}`));

  // 4. pump.
  pump = new FramePump(pair[0], uplink, filter);
  pump.start();
  const tick = setInterval(() => filter!.tick(Date.now()), 5000);

  // 6. run.
  runner = new VzMachineRunner(vm, cfg.stopTimeoutMs !== undefined ? { stopTimeoutMs: cfg.stopTimeoutMs } : {});
  runner.on('state', (s, why) => setState(s, why, s === 'failed' ? (runner?.failure?.kind ?? 'vm') : undefined));
  if (deps.handleSignals) {
    process.on('SIGTERM', () => void runner?.stop());
    process.on('SIGINT', () => void runner?.stop());
    process.on('SIGHUP', () => {}); // the worker going away is not our business
  }
  if (fenced !== undefined) {
    clearInterval(tick);
    return fail(fenced);
  }
  vmStartedAt = Date.now();
  await runner.start(cfg.recovery ? { recovery: true } : {}).catch(() => {
    /* recorded as failed by the runner */
  });
  // Fenced while it was starting: the kill above found nothing to stop yet.
  if (fenced !== undefined) await runner.kill(fenced);
  await runner.exited();
  fence?.stop();
  clearInterval(tick);
  pump.close();
  vm.close();
  await control.close();
  rmSync(path.join(cfg.runDir, CONTROL_SOCKET), { force: true });
  return (state as HostState) === 'stopped' ? 0 : 1;
}

/** The host's IPv4 addresses other than the gateway (read when the VM starts). */
function hostIpv4Addresses(gatewayIp: string): string[] {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && a.address !== gatewayIp) out.add(a.address);
  }
  return [...out];
}
