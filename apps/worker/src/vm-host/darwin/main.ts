// Entry point of the macOS VM host's root half (net-host.ts), spawned detached by the vz driver
// on the worker's own node (it needs root for vmnet, not the virtualization entitlement):
//   node apps/worker/src/vm-host/darwin/launch.mjs <run-dir>/vz-host.json
// The VM itself runs in the VM agent, started here as a LaunchAgent in the VM user's GUI session
// on the signed node copy — after checking that copy is still root-owned and the binary pinned.
import { fileURLToPath } from 'node:url';
import { closeFd, peerCredentials, recvFds, sendFds, socketpairDgram, unixAccept, unixConnect, unixListen } from '@fleet/native-vz';
import { loadVzAddon } from '@fleet/native-vz/vz';
import { ensureLeaseTime } from '../../macos/bootpd.ts';
import { waitForGateway } from '../../macos/ifconfig.ts';
import { launchdAgentLauncher } from '../../macos/agent-launcher.ts';
import { readVzHostConfig } from '../../host-process/vz-host-config.ts';
import { runNetHost } from './net-host.ts';

const AGENT_LAUNCH = fileURLToPath(new URL('./agent-launch.mjs', import.meta.url));

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: vz-host <vz-host.json>\n');
  process.exit(2);
}

const run = async (): Promise<number> => {
  const cfg = readVzHostConfig(file);
  if (!cfg.agentNode) throw new Error(`${file}: agentNode (the signed node copy and its pinned sha256) is missing`);
  const agent = launchdAgentLauncher(cfg.agentNode, AGENT_LAUNCH, cfg.runDir);
  return runNetHost(cfg, {
    addon: loadVzAddon(),
    fd: { unixListen, unixAccept, unixConnect, peerCredentials, sendFds, recvFds, closeFd },
    socketpairDgram: (o) => socketpairDgram(o),
    gatewayMac: async (ip) => (await waitForGateway(ip)).mac!,
    ensureLeaseTime: (s) => ensureLeaseTime(s),
    agent,
    handleSignals: true,
  });
};
run().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`vz-host: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
