// Scratch: keeps a sessions env up for manual experiments (not a test). Prints the API URL and token.
import { startSessionsEnv } from './sessions-env.ts';
const env = await startSessionsEnv({ id: 201 });
await env.createVm('ses-vm');
console.log(JSON.stringify({ url: env.controller.apiUrl, token: env.controller.adminToken, ns: env.ns, tmp: env.tmp }));
process.on('SIGTERM', async () => { await env.destroy(); process.exit(0); });
setInterval(() => {}, 1000);
