// A real controller process (the same startController as `fleet-controller run`) with a
// chosen SQLite `synchronous` setting, for bench/db-durability.ts. The setting has no CLI
// flag on purpose: FULL is the only supported production setting.
//
//   tsx bench/support/controller-sync.ts <data-dir> FULL|NORMAL
import { startController } from '@fleet/controller';

const [dataDir, mode] = process.argv.slice(2);
if (!dataDir || (mode !== 'FULL' && mode !== 'NORMAL')) {
  console.error('usage: controller-sync.ts <data-dir> FULL|NORMAL');
  process.exit(2);
}
const c = await startController({ dataDir, apiHost: '127.0.0.1', apiPort: 0, grpcHost: '127.0.0.1', grpcPort: 0, sqliteSynchronous: mode, logLevel: 'warn' });
console.log(`API: ${c.apiUrl}`);
console.log(`GRPC: ${c.grpcAddress}`);
console.log(`TOKEN: ${c.adminToken}`);
const stop = () => void c.stop().then(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
