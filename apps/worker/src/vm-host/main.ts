// The VM host process: one per VM, started detached by the worker (drivers/qemu.ts) as
//   node --import tsx apps/worker/src/vm-host/main.ts <run-dir>/config.json
// so that the VM outlives a worker restart. It owns the VM: takes its uplink (the AF_PACKET socket
// on its veth, inherited from the worker — issue 20 — or opens a TAP), creates the
// socketpair (or, on the offload path, takes QEMU's TAP and the packet socket on it from the
// worker), starts QEMU with the VM end as its NIC, pumps frames through the packet filter,
// records every state/lease change as a line in <run-dir>/status.jsonl (and on stdout), serves
// <run-dir>/control.sock, and exits when QEMU exits.
// Fencing (issue 12): with `fence` in its config (a "reschedule" VM) it reads the worker's lease
// file every FENCE_CHECK_MS and kills QEMU at once when the lease ran out — the worker may be
// dead (kill -9) or cut off; the controller re-places the VM a few seconds later. The VM then
// ends "stopped" with a "fenced: …" message (never "failed"), in status.jsonl too.
import { appendFileSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { openTap, openVnetTap, socketpairDgram, socketpairStream, closeFd, setCloexec, setNonDumpable, TunOffload, VNET_MAX_FRAME } from '@fleet/native-vz';
import { createFilter } from '@fleet/netfilter';
import { chooseAccel, type Accel } from '@fleet/guest-image';
import { watchLeaseFile, type LeaseFileWatch } from '../fencing/lease-file.ts';
import { CONTROL_SOCKET, FENCE_CHECK_MS, QMP_SOCKET, STATUS_LOG, readVmHostConfig, type VmHostState, type VmHostStatus } from '../host-process/qemu-host-config.ts';
import { ControlServer } from '../host-process/control-server.ts';
import { FramePump } from './pump.ts';
import { qmpCommands } from './qmp.ts';
import { spawnQemu, type QemuProcess } from './qemu-process.ts';

async function main(configFile: string): Promise<number> {
  if (process.getuid?.() !== 0) {
    // Started as the VM's own user (setpriv: no capabilities, no_new_privs; issue 14). Its QEMU
    // runs as the same uid: non-dumpable, so an escaped QEMU can neither ptrace this process nor
    // open its /proc/<pid>/mem or fd/ — the TAP fd and the packet filter stay out of its reach.
    // umask 077: the sockets, logs and status this process and QEMU create are the VM user's only.
    setNonDumpable();
    process.umask(0o077);
  }
  const cfg = readVmHostConfig(configFile);
  // The uplink socket is inherited without close-on-exec: QEMU (spawned below) must never hold it,
  // or the guest could send past the packet filter.
  if (cfg.uplinkFd !== undefined) setCloexec(cfg.uplinkFd);
  // The same for the offload path's packet socket; QEMU's TAP is handed to it explicitly (stdio).
  if (cfg.vnetNic) {
    setCloexec(cfg.vnetNic.pumpFd);
    setCloexec(cfg.vnetNic.qemuFd);
  }
  mkdirSync(cfg.runDir, { recursive: true, mode: 0o700 });
  const statusLog = path.join(cfg.runDir, STATUS_LOG);
  const startedAt = Date.now();
  let state: VmHostState = 'starting';
  let message: string | undefined;
  let exitCode: number | null | undefined;
  let qemu: QemuProcess | undefined;
  let pump: FramePump | undefined;
  let bootToIpMs: number | undefined;
  let stopRequested = false;
  let paused = false;
  let killTimer: NodeJS.Timeout | undefined;
  let pressTimer: NodeJS.Timeout | undefined;

  // No NIC (network mode "none"): no filter, no TAP, no pump; QEMU gets no network device.
  const f = cfg.filter;
  const filter = f
    ? createFilter({
        vmMac: cfg.mac,
        gatewayIp: f.gatewayIp,
        gatewayMac: f.gatewayMac,
        subnet: f.subnet,
        dhcpServers: f.dhcpServers ?? [f.gatewayIp],
        ...(f.allow ? { allow: f.allow } : {}),
        ...(f.block ? { block: f.block } : {}),
        ...(f.blockLocal ? { blockLocal: true } : {}),
        ...(f.globalPrefixes ? { globalPrefixes: f.globalPrefixes } : {}),
        ...(f.address ? { address: f.address } : {}),
        ...(f.hostAddresses ? { hostAddresses: f.hostAddresses } : {}),
        ...(f.hostOnly ? { hostOnly: true } : {}),
        // GSO super-frames on the offload path: judged by their headers, whole.
        ...(cfg.nicFraming === 'vnet' ? { maxFrame: VNET_MAX_FRAME } : {}),
      })
    : undefined;

  const status = (): VmHostStatus => {
    const lease = filter?.lease(Date.now());
    return {
      vmId: cfg.vmId,
      attempt: cfg.attempt,
      name: cfg.name,
      state,
      pid: process.pid,
      qemuPid: qemu?.child.pid,
      mac: cfg.mac,
      tap: cfg.tap ?? '',
      ip: lease?.ip,
      paused,
      leaseExpiresAt: lease?.expiresAt,
      startedAt,
      bootToIpMs,
      message,
      exitCode,
      counters: { filter: filter?.stats(), pump: pump?.stats() },
    };
  };
  let control: ControlServer | undefined;
  const record = (event: string): void => {
    const s = status();
    const line = JSON.stringify({ at: Date.now(), event, state: s.state, ip: s.ip ?? null, paused: s.paused, pid: s.pid, qemuPid: s.qemuPid, bootToIpMs: s.bootToIpMs, message: s.message, exitCode: s.exitCode }) + '\n';
    try {
      appendFileSync(statusLog, line);
    } catch {
      /* run dir removed under us: nothing to record into */
    }
    process.stdout.write(line);
    control?.broadcast();
  };
  const setState = (s: VmHostState, why?: string): void => {
    state = s;
    if (why !== undefined) message = why;
    record('state');
  };

  const stop = (): void => {
    if (!qemu || state === 'stopped' || state === 'failed') return;
    if (stopRequested) return;
    stopRequested = true;
    setState('stopping');
    // The power button is pressed again every second: a press before the guest's acpid runs
    // (early boot) is lost otherwise.
    const press = (): void => {
      qmpCommands(path.join(cfg.runDir, QMP_SOCKET), [{ execute: 'system_powerdown' }]).catch((e: Error) => {
        record(`qmp-error ${e.message}`);
        qemu?.child.kill('SIGKILL');
      });
    };
    press();
    pressTimer = setInterval(press, 1000);
    killTimer = setTimeout(() => {
      message = `guest did not power off within ${cfg.stopTimeoutMs ?? 10_000} ms: killed`;
      qemu?.child.kill('SIGKILL');
    }, cfg.stopTimeoutMs ?? 10_000);
  };
  const qmpSetRunning = async (run: boolean): Promise<void> => {
    if (!qemu || state !== 'running') throw new Error(`cannot ${run ? 'resume' : 'pause'}: the VM is ${state}`);
    const [r] = await qmpCommands(path.join(cfg.runDir, QMP_SOCKET), [{ execute: run ? 'cont' : 'stop' }]);
    if (r?.error) throw new Error(`QMP ${run ? 'cont' : 'stop'}: ${r.error.desc}`);
    paused = !run;
    record(run ? 'resumed' : 'paused');
  };
  const kill = (reason?: string): void => {
    stopRequested = true;
    if (reason) message = reason;
    qemu?.child.kill('SIGKILL');
  };
  // Fenced before QEMU runs: it never starts. Once it runs: killed at once.
  let fencedBeforeStart: string | undefined;
  let fence: LeaseFileWatch | undefined;
  const onFence = (why: string): void => {
    record(`fenced ${why}`);
    if (qemu) kill(why);
    else fencedBeforeStart = why;
  };

  let tap: { fd: number; name: string } | undefined;
  // [the pump's end, QEMU's end] of the VM's NIC.
  let pair: [number, number] | undefined;
  // The VM's NIC: a stream socketpair moves many length-prefixed frames per syscall (nicFraming).
  const nicPair = (): [number, number] => (cfg.nicFraming === 'stream' ? socketpairStream() : socketpairDgram({ nonblock: true }));
  try {
    if (cfg.vnetNic && cfg.tap !== undefined) {
      // The offload path: the kernel may hand this process GSO super-frames and frames with a
      // pending checksum from the bridge, as QEMU's TAP hands them over from the guest.
      tap = openVnetTap(cfg.tap, { offloads: TunOffload.CSUM | TunOffload.TSO4 | TunOffload.TSO6 | TunOffload.TSO_ECN });
      pair = [cfg.vnetNic.pumpFd, cfg.vnetNic.qemuFd];
    } else if (cfg.uplinkFd !== undefined) {
      tap = { fd: cfg.uplinkFd, name: cfg.tap ?? '' };
      pair = nicPair();
    } else if (cfg.tap !== undefined) {
      tap = openTap(cfg.tap);
      pair = nicPair();
    }
  } catch (e) {
    setState('failed', `cannot set up the VM's network: ${(e as Error).message}`);
    return 1;
  }
  // The TAP exists once the control socket answers: the worker attaches it to its bridge then.
  control = await ControlServer.listen(path.join(cfg.runDir, CONTROL_SOCKET), { status, stop, kill, pause: () => qmpSetRunning(false), resume: () => qmpSetRunning(true) });
  if (cfg.fence) {
    fence = watchLeaseFile(cfg.fence, onFence, { intervalMs: FENCE_CHECK_MS, startedAt });
    fence.check();
  }
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGHUP', () => {}); // the worker going away is not our business

  filter?.onLeaseChange((e) => {
    if (e.lease && bootToIpMs === undefined && qemu) bootToIpMs = Date.now() - qemu.spawnedAt;
    record(`lease-${e.cause}`);
  });

  let accel: Accel;
  try {
    accel = cfg.accel === 'auto' ? await chooseAccel() : (cfg.accel ?? 'tcg');
    if (fencedBeforeStart !== undefined) throw new FencedError(fencedBeforeStart);
    if (pair && tap && filter) pump = new FramePump(pair[0], tap.fd, filter, { vnetHdr: cfg.nicFraming === 'vnet' });
    qemu = spawnQemu(cfg, pair?.[1], accel);
  } catch (e) {
    fence?.stop();
    if (pair) closeFd(pair[1]);
    pump?.close();
    if (e instanceof FencedError) {
      if (pair) closeFd(pair[0]);
      setState('stopped', e.message);
    } else {
      setState('failed', `cannot start QEMU: ${(e as Error).message}`);
    }
    await control.close();
    rmSync(path.join(cfg.runDir, CONTROL_SOCKET), { force: true });
    return (state as VmHostState) === 'stopped' ? 0 : 1;
  }
  // A kill (or a fence) that came while QEMU was being spawned.
  if (stopRequested) qemu.child.kill('SIGKILL');
  pump?.start();
  qemu.child.once('spawn', () => setState('running'));
  const tick = setInterval(() => filter?.tick(Date.now()), 5000);

  const { code, signal } = await qemu.exited;
  fence?.stop();
  clearInterval(tick);
  if (killTimer) clearTimeout(killTimer);
  if (pressTimer) clearInterval(pressTimer);
  exitCode = code;
  pump?.close();
  if (code === 0 || stopRequested) setState('stopped', message ?? (stopRequested ? 'stopped' : 'guest powered off'));
  else setState('failed', `QEMU exited with ${signal ?? `code ${code}`} (see ${path.join(cfg.runDir, 'qemu.log')})`);
  await control.close();
  rmSync(path.join(cfg.runDir, CONTROL_SOCKET), { force: true });
  return (state as VmHostState) === 'stopped' ? 0 : 1;
}

class FencedError extends Error {}

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: vm-host <config.json>\n');
  process.exit(2);
}
main(file).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`vm-host: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
