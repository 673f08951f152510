// The vmnet shared-mode gateway (bridge100 …) and its MAC, from `ifconfig` output. The packet
// filter trusts DHCP replies only from the gateway's IP *and* MAC; vmnet reports the subnet but
// not the bridge's MAC, so the VM host process reads it here once the interface is up.
import { runCommand, type RunCommand } from './run-command.ts';

export interface InterfaceAddr {
  name: string;
  mac?: string;
  inet: string[];
}

/** Parses BSD `ifconfig -a` output into interfaces with their ether address and IPv4 addresses. */
export function parseIfconfig(text: string): InterfaceAddr[] {
  const out: InterfaceAddr[] = [];
  let cur: InterfaceAddr | undefined;
  for (const line of text.split('\n')) {
    const head = /^([A-Za-z0-9]+):\s+flags=/.exec(line);
    if (head) {
      cur = { name: head[1]!, inet: [] };
      out.push(cur);
      continue;
    }
    if (!cur) continue;
    const ether = /^\s+ether\s+([0-9a-fA-F:]{11,17})\b/.exec(line);
    if (ether) cur.mac = ether[1]!.toLowerCase().split(':').map((o) => o.padStart(2, '0')).join(':');
    const inet = /^\s+inet\s+(\d+\.\d+\.\d+\.\d+)\b/.exec(line);
    if (inet) cur.inet.push(inet[1]!);
  }
  return out;
}

/** The interface holding `gatewayIp` (e.g. bridge100 with 192.168.64.1), or undefined. */
export function findGateway(ifaces: readonly InterfaceAddr[], gatewayIp: string): InterfaceAddr | undefined {
  return ifaces.find((i) => i.inet.includes(gatewayIp) && i.mac !== undefined);
}

/** Polls `ifconfig -a` until the bridge with `gatewayIp` shows up (vmnet creates it asynchronously). */
export async function waitForGateway(gatewayIp: string, opts: { timeoutMs?: number; run?: RunCommand } = {}): Promise<InterfaceAddr> {
  const run = opts.run ?? runCommand;
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    const r = await run('/sbin/ifconfig', ['-a']);
    const gw = r.code === 0 ? findGateway(parseIfconfig(r.stdout), gatewayIp) : undefined;
    if (gw) return gw;
    if (Date.now() > deadline) throw new Error(`no interface with the vmnet gateway address ${gatewayIp} appeared (ifconfig -a)`);
    await new Promise((res) => setTimeout(res, 200));
  }
}
