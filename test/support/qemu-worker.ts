// A real QEMU worker for browser tests: `fleet-worker run --driver qemu` inside a
// network namespace this test creates (its NAT bridge, dnsmasq and nftables live
// there), joined to the root namespace by one veth pair so the worker can dial the
// controller's gRPC listener on the root side. Nothing leaves the namespace.
import path from 'node:path';
import { REPO_ROOT, type RunningProcess } from './fleet-processes.ts';
import { ipCmd, killProcessesMentioning, realVmsMissing, removeNetworks, startInNetns } from './lab.ts';

const WORKER_MAIN = path.join(REPO_ROOT, 'apps/worker/bin/fleet-worker.js');

/** Why real VMs cannot run here ('' when they can). */
export const qemuMissing = (): string => realVmsMissing();

const ip = ipCmd;

export interface QemuLab {
  /** The root-side address the controller's gRPC listener binds (workers dial it). */
  controllerAddress: string;
  netns: string;
  /** Runs `node <args>` inside the namespace. */
  run(args: string[], env?: Record<string, string>): RunningProcess;
  enrollArgs(grpcAddress: string, token: string, name: string, dataDir: string): string[];
  workerArgs(dataDir: string, extra?: string[]): string[];
  destroy(tmpMarker: string): void;
}

export function createQemuLab(): QemuLab {
  const id = process.pid % 250;
  const netns = `fdash${id}`;
  const rootVeth = `fdashr${id}`;
  const controllerAddress = `10.96.${id}.1`;
  ip('netns', 'add', netns);
  ip('-n', netns, 'link', 'set', 'lo', 'up');
  ip('link', 'add', rootVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
  ip('addr', 'add', `${controllerAddress}/24`, 'dev', rootVeth);
  ip('link', 'set', rootVeth, 'up');
  ip('-n', netns, 'addr', 'add', `10.96.${id}.2/24`, 'dev', 'eth0');
  ip('-n', netns, 'link', 'set', 'eth0', 'up');
  ip('-n', netns, 'route', 'add', 'default', 'via', controllerAddress);

  return {
    controllerAddress,
    netns,
    run: (args, env = {}) => startInNetns(netns, args, env),
    enrollArgs: (grpcAddress, token, name, dataDir) => [WORKER_MAIN, 'enroll', '--controller', grpcAddress, '--token', token, '--name', name, '--data-dir', dataDir],
    workerArgs: (dataDir, extra = []) => [WORKER_MAIN, 'run', '--data-dir', dataDir, '--driver', 'qemu', '--accel', 'tcg', '--uplink', 'eth0', ...extra],
    destroy(tmpMarker) {
      // VM host processes and QEMU run detached, with the worker's data dir in their command lines.
      killProcessesMentioning(tmpMarker);
      removeNetworks({ namespaces: [netns], links: [rootVeth] });
    },
  };
}
