// Entry point of the VM agent (vm-agent.ts): started by launchd as a LaunchAgent in the VM user's
// GUI session, on the worker's signed node copy (the virtualization entitlement):
//   <signed node> apps/worker/src/vm-host/darwin/agent-launch.mjs <agent.sock>
// Everything it needs arrives on that socket from the root host: the job and the NIC fd.
import { closeFd, peerCredentials, recvFds, sendFds, unixAccept, unixConnect, unixListen } from '@fleet/native-vz';
import { loadVzAddon } from '@fleet/native-vz/vz';
import { parseAgentCommand } from '../../host-process/agent-protocol.ts';
import { receiveJob, type FdPassing } from '../../host-process/agent-link.ts';
import { runInstallAgent, runVmAgent } from './vm-agent.ts';

const socketPath = process.argv[2];
if (!socketPath || !socketPath.startsWith('/')) {
  process.stderr.write('usage: fleet-vm-agent <absolute path of the host\'s agent.sock>\n');
  process.exit(2);
}
if (process.getuid?.() === 0) {
  // The point of the agent is that the VM never runs as root.
  process.stderr.write('fleet-vm-agent: refusing to run as root\n');
  process.exit(2);
}
process.umask(0o077);

const fd: FdPassing = { unixListen, unixAccept, unixConnect, peerCredentials, sendFds, recvFds, closeFd };
const run = async (): Promise<number> => {
  const { job, fds, channel } = await receiveJob(fd, socketPath, parseAgentCommand);
  const addon = loadVzAddon();
  if (job.kind === 'install') {
    for (const f of fds) closeFd(f);
    return runInstallAgent(job, channel, { addon });
  }
  const [nic, ...extra] = fds;
  for (const f of extra) closeFd(f);
  if (nic === undefined && !job.noNetwork) {
    channel.send({ event: 'state', state: 'failed', message: 'the host handed over no NIC', failureKind: 'agent' });
    channel.close();
    return 1;
  }
  return runVmAgent(job, nic, channel, { addon, closeFd, handleSignals: true });
};
run().then(
  (code) => setTimeout(() => process.exit(code), 50),
  (err: unknown) => {
    process.stderr.write(`fleet-vm-agent: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
