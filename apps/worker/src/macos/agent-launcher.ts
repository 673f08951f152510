// Starts VM agents (the unprivileged half of a macOS VM or IPSW install, vm-host/darwin/agent-main.ts)
// as LaunchAgents in the VM user's GUI session, on the signed node copy — after checking that the
// copy is still root-owned and has the content pinned when it was signed.
import path from 'node:path';
import { startLaunchAgent, stopLaunchAgent, writeLaunchAgentPlist } from './launch-agent.ts';
import { verifyPinned } from './root-owned.ts';

export interface AgentStart {
  label: string;
  uid: number;
  gid: number;
  socketPath: string;
  logPath: string;
}

export interface AgentLauncher {
  start(a: AgentStart): Promise<void>;
  stop(a: { label: string; uid: number }): Promise<void>;
}

/**
 * @param node the signed node copy and its pinned SHA-256
 * @param agentScript the agent's entry script (vm-host/darwin/agent-launch.mjs)
 * @param plistDir a root-owned directory for the job's plist
 */
export function launchdAgentLauncher(node: { path: string; sha256: string }, agentScript: string, plistDir: string): AgentLauncher {
  return {
    start: async ({ label, uid, socketPath, logPath }) => {
      await verifyPinned(node.path, node.sha256);
      const plistPath = path.join(plistDir, `${label}.plist`);
      await writeLaunchAgentPlist(plistPath, {
        label,
        uid,
        programArguments: [node.path, agentScript, socketPath],
        workingDirectory: path.dirname(logPath),
        stdoutPath: logPath,
        stderrPath: logPath,
        env: { PATH: '/usr/bin:/bin:/usr/sbin:/sbin', LANG: 'en_US.UTF-8' },
      });
      await startLaunchAgent({ uid, label, plistPath });
    },
    stop: async ({ label, uid }) => {
      await stopLaunchAgent({ uid, label });
    },
  };
}
