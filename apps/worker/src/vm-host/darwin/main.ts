// Entry point of the macOS VM host process (spawned by drivers/vz on the signed node copy):
//   <signed node> apps/worker/src/vm-host/darwin/launch.mjs <run-dir>/vz-host.json
import { closeFd, socketpairDgram } from '@fleet/native-vz';
import { loadVzAddon } from '@fleet/native-vz/vz';
import { ensureLeaseTime } from '../../macos/bootpd.ts';
import { waitForGateway } from '../../macos/ifconfig.ts';
import { readVzHostConfig } from '../../host-process/vz-host-config.ts';
import { runVzHost } from './host.ts';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: vz-host <vz-host.json>\n');
  process.exit(2);
}
const run = async (): Promise<number> => {
  const cfg = readVzHostConfig(file);
  return runVzHost(cfg, {
    addon: loadVzAddon(),
    socketpairDgram: (o) => socketpairDgram(o),
    closeFd,
    gatewayMac: async (ip) => (await waitForGateway(ip)).mac!,
    ensureLeaseTime: (s) => ensureLeaseTime(s),
    dropPrivileges: ({ uid, gid }) => {
      // Group first: after setuid we could no longer change it.
      process.setgid!(gid);
      process.setuid!(uid);
    },
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
