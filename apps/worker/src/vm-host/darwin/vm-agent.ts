// The unprivileged half of a macOS VM (issue 17): runs as the VM user in that user's GUI session
// (a LaunchAgent), so Virtualization.framework has the login session and keychain macOS guests
// need, and never holds root. It owns the Virtualization.framework side only — the VM, its disk
// and serial log in the user's own directory, and the VM end of the NIC socketpair that root
// handed over. The network (vmnet, the packet filter, the pump) stays with root (net-host.ts).
//
// Root's link is the VM's lifeline: when it drops (root host gone), the VM is stopped hard at
// once — a VM whose supervisor is gone could no longer be fenced, and must never run twice.
import { VzVirtualMachine, normalizeMachineConfig, type VzAddon } from '@fleet/native-vz/vz';
import { mapVzError } from '../../vz/errors.ts';
import { installFromIpsw } from '../../vz/install.ts';
import { VzMachineRunner } from '../../vz/machine.ts';
import { readTartConfig } from '../../vz/tart-bundle.ts';
import type { AgentCommand, InstallJob, VmJob } from '../../host-process/agent-protocol.ts';
import type { JsonLineChannel } from '../../host-process/agent-link.ts';
import { machineConfigFor } from './machine-config.ts';

export interface VmAgentDeps {
  addon: VzAddon;
  closeFd(fd: number): void;
  /** SIGTERM/SIGINT = graceful stop (the real process only). */
  handleSignals?: boolean;
}

/** Runs one VM until it ends; returns the process exit code (0 stopped, 1 failed). */
export async function runVmAgent(job: VmJob, nicFd: number | undefined, link: JsonLineChannel<AgentCommand>, deps: VmAgentDeps): Promise<number> {
  link.send({ event: 'accepted', pid: process.pid });
  const fail = (message: string, failureKind: string): number => {
    link.send({ event: 'state', state: 'failed', message, failureKind });
    link.close();
    return 1;
  };
  let vm: VzVirtualMachine;
  try {
    const bundle = await readTartConfig(job.bundleDir);
    const { config, adjustments } = normalizeMachineConfig(machineConfigFor(job, bundle, nicFd), deps.addon.limits());
    for (const a of adjustments) link.send({ event: 'note', text: `adjusted ${a}` });
    vm = new VzVirtualMachine(deps.addon, config);
  } catch (e) {
    if (nicFd !== undefined) deps.closeFd(nicFd);
    const f = mapVzError(e, 'configure VM');
    return fail(f.message, f.kind);
  }
  if (nicFd !== undefined) deps.closeFd(nicFd); // the addon holds its own dup() of the NIC end
  vm.on('networkDisconnected', (e) => link.send({ event: 'note', text: `network-disconnected ${e.message}` }));

  const runner = new VzMachineRunner(vm, job.stopTimeoutMs !== undefined ? { stopTimeoutMs: job.stopTimeoutMs } : {});
  runner.on('state', (state, message) => {
    link.send({ event: 'state', state, ...(message !== undefined ? { message } : {}), ...(state === 'failed' ? { failureKind: runner.failure?.kind ?? 'vm' } : {}), paused: runner.paused });
  });
  link.onMessage((c) => {
    switch (c.cmd) {
      case 'stop':
        void runner.stop();
        break;
      case 'kill':
        void runner.kill(c.reason);
        break;
      case 'pause':
      case 'resume':
        (c.cmd === 'pause' ? runner.pause() : runner.resume()).then(
          () => link.send({ event: 'reply', id: c.id, ok: true, paused: runner.paused }),
          (e: Error) => link.send({ event: 'reply', id: c.id, ok: false, error: e.message }),
        );
        break;
    }
  });
  link.onInvalid((why) => link.send({ event: 'note', text: `ignored a bad command: ${why}` }));
  void link.closed.then(() => void runner.kill('the worker\'s VM host went away: stopped hard (the VM cannot be supervised or fenced without it)'));
  if (deps.handleSignals) {
    process.on('SIGTERM', () => void runner.stop());
    process.on('SIGINT', () => void runner.stop());
    process.on('SIGHUP', () => {});
  }
  await runner.start(job.recovery ? { recovery: true } : {}).catch(() => {
    /* reported as failed by the runner */
  });
  await runner.exited();
  vm.close();
  link.close();
  return runner.state === 'stopped' ? 0 : 1;
}

/** Installs macOS from an IPSW into the job's bundle dir (the VM user's), reporting progress. */
export async function runInstallAgent(job: InstallJob, link: JsonLineChannel<AgentCommand>, deps: Pick<VmAgentDeps, 'addon'>): Promise<number> {
  link.send({ event: 'accepted', pid: process.pid });
  const ac = new AbortController();
  void link.closed.then(() => ac.abort());
  try {
    await installFromIpsw(deps.addon, job.request, (e) => {
      if (e.phase === 'install') link.send({ event: 'install', message: e.message, percent: e.percent });
      else link.send({ event: 'install', message: e.message, ...(e.phase === 'done' ? { done: true } : {}) });
    }, ac.signal);
    link.close();
    return 0;
  } catch (e) {
    link.send({ event: 'install-failed', message: (e as Error).message });
    link.close();
    return 1;
  }
}
