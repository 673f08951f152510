// The root half of a macOS VM (issue 17), one process per VM, started detached by the vz driver:
//
//   root (this process)                              VM user, GUI session (vm-agent.ts)
//   ─────────────────────────                        ─────────────────────────────────
//   control.sock, status.jsonl (root's run dir)
//   vmnet shared interface (root) ⇄ pump ⇄ filter ⇄ socketpair end ═══ SCM_RIGHTS ═══▶ VZ NIC
//   agent.sock (root's dir, socket 0600 VM user) ◀── connect ── LaunchAgent gui/<uid>
//   fencing (lease file)            ── JSON lines: stop/kill/pause/resume ──▶ VZ VM runner
//                                   ◀── state events ──
//
// The packet filter and the pump never run as the VM user, and the VM never runs as root. Root
// opens nothing in the VM user's directories: the bundle, the disk and the serial log are the
// agent's. The control socket and status.jsonl are those of the Linux host, so the driver side
// (re-attach after a worker restart, stop/kill, pause/resume, lease reports) is shared.
// Fencing (issue 12): with `fence`, the lease file is read from the start; when the lease ran
// out the agent stops the VM hard at once (or it is never handed the job) and the VM ends
// "stopped" with a "fenced: …" message. The agent stops its VM itself if this process goes away.
import { networkInterfaces } from 'node:os';
import { appendFileSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { createFilter } from '@fleet/netfilter';
import { VmnetPort, type VzAddon } from '@fleet/native-vz/vz';
import { CONTROL_SOCKET, FENCE_CHECK_MS, STATUS_LOG } from '../../host-process/qemu-host-config.ts';
import { ControlServer } from '../../host-process/control-server.ts';
import { subnetCidr, type VzHostConfig, type VzHostStatus } from '../../host-process/vz-host-config.ts';
import { watchLeaseFile, type LeaseFileWatch } from '../../fencing/lease-file.ts';
import { FramePump } from '../pump.ts';
import { parseAgentEvent, type AgentEvent, type AgentVmState, type VmJob } from '../../host-process/agent-protocol.ts';
import { AgentListener, handOver, type FdPassing, type JsonLineChannel } from '../../host-process/agent-link.ts';

/** Starts / stops the agent for `label` as `uid` (launchd gui/<uid> on a Mac: macos/agent-launcher.ts; in-process in tests). */
export type { AgentLauncher } from '../../macos/agent-launcher.ts';
import type { AgentLauncher } from '../../macos/agent-launcher.ts';

export interface NetHostDeps {
  /** Only its vmnet calls are used here: Virtualization.framework is the agent's. */
  addon: VzAddon;
  fd: FdPassing;
  socketpairDgram(opts: { nonblock: boolean }): [number, number];
  /** MAC of the interface holding the gateway IP (bridge100 …). */
  gatewayMac(gatewayIp: string): Promise<string>;
  /** Sets bootpd's lease time (root); failures are logged, not fatal. */
  ensureLeaseTime?(seconds: number): Promise<unknown>;
  agent: AgentLauncher;
  /** How long the agent may take to connect (launchd start + node start). Default 60 s. */
  agentConnectTimeoutMs?: number;
  /** Called once the control socket listens (tests). */
  onListening?(): void;
  /** SIGTERM/SIGINT handlers (the real process only). */
  handleSignals?: boolean;
  /** Lease file check interval (default FENCE_CHECK_MS; tests). */
  fenceCheckMs?: number;
}

const TERMINAL = new Set<AgentVmState>(['stopped', 'failed']);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runNetHost(cfg: VzHostConfig, deps: NetHostDeps): Promise<number> {
  mkdirSync(cfg.runDir, { recursive: true, mode: 0o700 });
  const statusLog = path.join(cfg.runDir, STATUS_LOG);
  const startedAt = Date.now();
  let state: AgentVmState = 'starting';
  let message: string | undefined;
  let failureKind: string | undefined;
  let paused = false;
  let agentPid: number | undefined;
  let uplink: VmnetPort | undefined;
  let pump: FramePump | undefined;
  let control: ControlServer | undefined;
  let listener: AgentListener | undefined;
  let link: JsonLineChannel<AgentEvent> | undefined;
  let bootToIpMs: number | undefined;
  let vmStartedAt: number | undefined;
  let filter: ReturnType<typeof createFilter> | undefined;
  let fence: LeaseFileWatch | undefined;
  /** Set when the lease ran out before the VM was handed over (it then never starts). */
  let fenced: string | undefined;
  /** A stop/kill asked for before the agent was connected: the job is never handed over. */
  let abandoned: string | undefined;
  const setup = new AbortController();
  const pending = new Map<number, (r: { ok: boolean; error?: string }) => void>();
  let nextId = 1;

  const status = (): VzHostStatus => {
    const lease = filter?.lease(Date.now());
    return {
      vmId: cfg.vmId,
      attempt: cfg.attempt,
      name: cfg.name,
      state,
      pid: process.pid,
      ...(agentPid !== undefined ? { agentPid } : {}),
      mac: cfg.mac,
      tap: uplink?.info ? `vmnet:${uplink.info.mac}` : cfg.networkMode === 'none' ? '' : 'vmnet',
      ip: state === 'running' ? lease?.ip : undefined,
      paused,
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
    const line = JSON.stringify({ at: Date.now(), event, state: s.state, ip: s.ip ?? null, paused: s.paused, pid: s.pid, agentPid, bootToIpMs: s.bootToIpMs, message: s.message, failureKind: s.failureKind }) + '\n';
    try {
      appendFileSync(statusLog, line);
    } catch {
      /* run dir removed under us */
    }
    control?.broadcast();
  };
  const setState = (s: AgentVmState, why?: string, kind?: string): void => {
    state = s;
    message = why;
    failureKind = s === 'failed' ? (kind ?? failureKind ?? 'setup') : undefined;
    record('state');
  };
  const cleanup = async (): Promise<void> => {
    fence?.stop();
    setup.abort();
    pump?.close();
    uplink?.close();
    listener?.close();
    link?.close();
    rmSync(cfg.agentSocket, { force: true });
    await deps.agent.stop({ label: cfg.agentLabel, uid: cfg.vmUser.uid }).catch(() => {});
    await control?.close();
    rmSync(path.join(cfg.runDir, CONTROL_SOCKET), { force: true });
  };
  /** Ends before the VM ran: fenced or abandoned = stopped (exit 0), else failed (exit 1). */
  const endEarly = async (why: string, kind?: string): Promise<number> => {
    const stoppedWhy = fenced ?? abandoned;
    if (stoppedWhy !== undefined) setState('stopped', stoppedWhy);
    else setState('failed', why, kind ?? 'setup');
    await cleanup();
    return stoppedWhy !== undefined ? 0 : 1;
  };
  const toAgent = (cmd: 'stop' | 'kill', reason?: string): void => {
    if (link) link.send(cmd === 'kill' && reason ? { cmd, reason } : { cmd });
    else {
      abandoned ??= cmd === 'kill' ? (reason ?? 'killed') : 'stopped';
      setup.abort();
    }
  };
  const request = (cmd: 'pause' | 'resume'): Promise<void> => {
    if (!link || state !== 'running') return Promise.reject(new Error(`the VM is ${state}`));
    const id = nextId++;
    link.send({ cmd, id });
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`the VM agent did not answer ${cmd} within 30 s`));
      }, 30_000);
      pending.set(id, (r) => {
        clearTimeout(t);
        if (r.ok) resolve();
        else reject(new Error(r.error ?? `${cmd} failed`));
      });
    });
  };

  // Control first, so the driver sees the host at once (and a failure below is reported through it).
  control = await ControlServer.listen(path.join(cfg.runDir, CONTROL_SOCKET), {
    status,
    stop: () => toAgent('stop'),
    kill: (reason) => toAgent('kill', reason),
    pause: () => request('pause'),
    resume: () => request('resume'),
  });
  record('listening');
  deps.onListening?.();
  if (cfg.fence) {
    fence = watchLeaseFile(
      cfg.fence,
      (why) => {
        fenced = why;
        record(`fenced ${why}`);
        if (link) link.send({ cmd: 'kill', reason: why });
        else setup.abort();
      },
      { intervalMs: deps.fenceCheckMs ?? FENCE_CHECK_MS, startedAt },
    );
    fence.check();
  }
  if (deps.handleSignals) {
    process.on('SIGTERM', () => toAgent('stop'));
    process.on('SIGINT', () => toAgent('stop'));
    process.on('SIGHUP', () => {}); // the worker going away is not our business
  }

  const mode = cfg.networkMode ?? 'nat';
  // Network mode "none" (issue 18): no vmnet, no filter, no NIC; only the VM is handed over.
  const wired = mode !== 'none';
  let pair: [number, number] | undefined;
  if (wired) {
    // 1. vmnet (root): shared mode (NAT) or host mode (host-only: the Mac and its VMs, no route out).
    try {
      uplink = await VmnetPort.start(deps.addon, {
        mode: mode === 'host-only' ? 'host' : 'shared',
        startAddress: cfg.network.startAddress,
        endAddress: cfg.network.endAddress,
        subnetMask: cfg.network.subnetMask,
        ...(cfg.network.isolation !== undefined ? { isolation: cfg.network.isolation } : {}),
      });
    } catch (e) {
      return endEarly((e as Error).message, 'vmnet');
    }
    const info = uplink.info!;
    const gatewayIp = info.startAddress ?? cfg.network.startAddress;
    const subnet = subnetCidr(gatewayIp, info.subnetMask ?? cfg.network.subnetMask);
    let gatewayMac: string;
    try {
      gatewayMac = await deps.gatewayMac(gatewayIp);
    } catch (e) {
      return endEarly(`cannot find the vmnet gateway's MAC: ${(e as Error).message}`, 'vmnet');
    }
    if (deps.ensureLeaseTime && cfg.network.dhcpLeaseSeconds) {
      await deps.ensureLeaseTime(cfg.network.dhcpLeaseSeconds).catch((e: Error) => record(`lease-time-error ${e.message}`));
    }

    // 2. The filter and the NIC socketpair; the VM end goes to the agent.
    // A host-only VM reaches the Mac unless block-local says no (the point of host-only).
    const allow = [...(cfg.filter?.allow ?? []), ...(mode === 'host-only' && !cfg.filter?.blockLocal ? ['@host'] : [])];
    filter = createFilter({
      vmMac: cfg.mac,
      gatewayIp,
      gatewayMac,
      subnet,
      dhcpServers: [gatewayIp],
      ...(mode === 'host-only' ? { hostOnly: true } : {}),
      ...(allow.length ? { allow } : {}),
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
    try {
      // Blocking on both ends: VZ gets a plain blocking socket (as Tart hands it); our FramePort
      // end needs no O_NONBLOCK because it always uses MSG_DONTWAIT.
      pair = deps.socketpairDgram({ nonblock: false });
    } catch (e) {
      return endEarly(`cannot create the VM's socketpair: ${(e as Error).message}`);
    }
  }
  const closePair = (): void => {
    if (!pair) return;
    deps.fd.closeFd(pair[0]);
    deps.fd.closeFd(pair[1]);
  };

  // 3. The agent: listen, start it in the VM user's session, accept only that uid, hand over.
  let accepted: { fd: number; pid: number | undefined };
  try {
    rmSync(cfg.agentSocket, { force: true });
    listener = AgentListener.open(deps.fd, cfg.agentSocket, cfg.vmUser);
    await deps.agent.start({ label: cfg.agentLabel, uid: cfg.vmUser.uid, gid: cfg.vmUser.gid, socketPath: cfg.agentSocket, logPath: cfg.agentLog });
    accepted = await listener.accept(deps.agentConnectTimeoutMs ?? 60_000, {
      signal: setup.signal,
      onRefused: (uid) => record(`agent-refused uid ${uid}`),
    });
  } catch (e) {
    closePair();
    return endEarly((e as Error).message, 'agent');
  } finally {
    listener?.close();
    listener = undefined;
    rmSync(cfg.agentSocket, { force: true });
  }
  if (fenced !== undefined || abandoned !== undefined) {
    deps.fd.closeFd(accepted.fd);
    closePair();
    return endEarly('not started');
  }
  const job: VmJob = {
    kind: 'vm',
    vmId: cfg.vmId,
    attempt: cfg.attempt,
    name: cfg.name,
    guest: cfg.guest,
    bundleDir: cfg.bundleDir,
    cpus: cfg.cpus,
    memoryBytes: cfg.memoryBytes,
    mac: cfg.mac,
    serialLogPath: cfg.serialLogPath,
    ...(cfg.linuxKernel ? { linuxKernel: cfg.linuxKernel } : {}),
    ...(cfg.display ? { display: cfg.display } : {}),
    ...(cfg.stopTimeoutMs !== undefined ? { stopTimeoutMs: cfg.stopTimeoutMs } : {}),
    ...(cfg.recovery ? { recovery: true } : {}),
    ...(pair ? {} : { noNetwork: true }),
  };
  try {
    link = handOver(deps.fd, accepted.fd, job, pair ? [pair[1]] : [], parseAgentEvent);
  } catch (e) {
    closePair();
    return endEarly((e as Error).message, 'agent');
  }
  if (pair) deps.fd.closeFd(pair[1]); // the agent has its own copy now
  agentPid = accepted.pid;
  vmStartedAt = Date.now();

  // 4. The pump, and the agent's events.
  if (pair && uplink && filter) {
    pump = new FramePump(pair[0], uplink, filter);
    pump.start();
  }
  const tick = setInterval(() => filter?.tick(Date.now()), 5000);
  let invalid = 0;
  link.onInvalid((why) => {
    record(`agent-bad-line ${why.slice(0, 200)}`);
    // A handful of bad lines is a bug; a stream of them is an agent gone wrong: stop listening.
    if (++invalid > 100) link?.close();
  });
  link.onMessage((e) => {
    switch (e.event) {
      case 'accepted':
        agentPid = e.pid;
        record('agent-accepted');
        break;
      case 'state':
        if (TERMINAL.has(state)) return; // the end is final
        paused = e.paused ?? false;
        setState(e.state, fenced !== undefined && e.state === 'stopped' ? fenced : e.message, e.failureKind);
        break;
      case 'reply':
        if (e.paused !== undefined) paused = e.paused;
        pending.get(e.id)?.(e);
        pending.delete(e.id);
        if (e.ok) record('state');
        break;
      case 'note':
        record(e.text.slice(0, 300));
        break;
      default:
        record(`agent-unexpected ${e.event}`);
    }
  });
  // The VM ends when its agent says so; the agent exits after that (or dies: then it failed).
  await link.closed;
  clearInterval(tick);
  for (const r of pending.values()) r({ ok: false, error: 'the VM agent went away' });
  if (!TERMINAL.has(state)) {
    // Its VM cannot run without it (the agent's VZ process is the VM).
    if (fenced !== undefined) setState('stopped', fenced);
    else setState('failed', `the VM agent (pid ${agentPid ?? '?'}) exited while the VM was ${state}`, 'agent');
  }
  await sleep(0);
  await cleanup();
  return (state as AgentVmState) === 'stopped' ? 0 : 1;
}

/** The host's IPv4 addresses other than the gateway (read when the VM starts). */
function hostIpv4Addresses(gatewayIp: string): string[] {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && a.address !== gatewayIp) out.add(a.address);
  }
  return [...out];
}
