// Installs macOS from an IPSW into a new Tart bundle, on the signed node (VZMacOSInstaller needs
// the virtualization entitlement like any VM). Prints one JSON line per InstallEvent on stdout;
// the vz driver turns them into status messages (VM events). Exit 0 = installed.
//   <signed node> .../install-launch.mjs '{"ipsw":"/abs/x.ipsw","bundleDir":"/abs/dir","cpus":4,"memoryMib":8192,"diskGib":64}'
import { loadVzAddon } from '@fleet/native-vz/vz';
import { installFromIpsw, type InstallRequest } from '../../vz/install.ts';

const arg = process.argv[2];
if (!arg) {
  process.stderr.write('usage: vz-install <request-json>\n');
  process.exit(2);
}
const ac = new AbortController();
process.on('SIGTERM', () => ac.abort());
installFromIpsw(loadVzAddon(), JSON.parse(arg) as InstallRequest, (e) => process.stdout.write(JSON.stringify(e) + '\n'), ac.signal).then(
  () => process.exit(0),
  (err: unknown) => {
    process.stdout.write(JSON.stringify({ phase: 'error', message: (err as Error).message }) + '\n');
    process.exit(1);
  },
);
