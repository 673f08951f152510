// A VM agent for IPSW installs on the fake addon, as its own process (vz-driver.test.ts starts it
// as another uid, the way launchd starts the real one in the VM user's session):
//   node --import tsx install-agent.test-helper.ts <agent.sock> <ipsw path the fake can load>
import { closeFd, peerCredentials, recvFds, sendFds, unixAccept, unixConnect, unixListen } from '@fleet/native-vz';
import { FakeVzHost } from '@fleet/native-vz/vz-fake';
import { receiveJob } from '../../host-process/agent-link.ts';
import { parseAgentCommand, type InstallJob } from '../../host-process/agent-protocol.ts';
import { runInstallAgent } from '../../vm-host/darwin/vm-agent.ts';

const sock = process.argv[2]!;
const np = { unixListen, unixAccept, unixConnect, peerCredentials, sendFds, recvFds, closeFd };
const { job, channel } = await receiveJob(np, sock, parseAgentCommand);
const supported = { buildVersion: '24B83', osVersion: '15.1.0', supported: { hardwareModel: new Uint8Array(Buffer.from('hw:mac15')), minCpus: 2, minMemoryBytes: 4 * 1024 ** 3 } };
const host = new FakeVzHost({ restoreImages: { [process.argv[3]!]: supported } });
const code = await runInstallAgent(job as InstallJob, channel, { addon: host.addon() });
setTimeout(() => process.exit(code), 50);
