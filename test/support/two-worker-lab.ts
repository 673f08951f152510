// A fleet of real VMs in network namespaces this test creates (test/support/lab.ts): a controller,
// two qemu workers w1 and w2 on one "LAN" segment with the controller, and an "external" host
// standing in for the Internet (an HTTP server on port 8080 that answers with the caller's
// address). Used by test/fleet-network.test.ts and test/network-modes.test.ts.
import { execFile, execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureGuestImage } from '../../guest-image/src/index.ts';
import { ApiClient, REPO_ROOT, removeDir, tempDir, waitUntil, type RunningProcess } from './fleet-processes.ts';
import { buildLan, killProcessesMentioning, removeNetworks, startInNetns } from './lab.ts';
import { vmLab } from './vm-lab.ts';

const run = promisify(execFile);
const CONTROLLER_MAIN = path.join(REPO_ROOT, 'apps/controller/bin/fleet-controller.js');
export const WORKER_MAIN = path.join(REPO_ROOT, 'apps/worker/bin/fleet-worker.js');

export type LabWorker = 'w1' | 'w2';

export class TwoWorkerLab {
  readonly ns: { c: string; w1: string; w2: string; x: string };
  readonly addr: { root: string; c: string; w1: string; w2: string; x: string };
  readonly hub: string;
  readonly rootVeth: string;
  readonly api: ApiClient;
  readonly workers: Record<LabWorker, RunningProcess | undefined> = { w1: undefined, w2: undefined };
  readonly vms: ReturnType<typeof vmLab>;
  tmp = '';
  key = '';
  private readonly procs: RunningProcess[] = [];

  /**
   * @param tag 2 letters naming this test's namespaces and links (with the pid)
   * @param net the first three octets of the lab's /24, e.g. "10.98.0"
   * @param workerArgs the `fleet-worker run` options beyond data dir, driver, keys and label
   */
  constructor(
    private readonly tag: string,
    net: string,
    private readonly workerArgs: (name: LabWorker) => string[],
    admin: string,
  ) {
    const id = process.pid % 1000;
    this.hub = `${tag}h${id}`;
    this.ns = { c: `${tag}c${id}`, w1: `${tag}w1-${id}`, w2: `${tag}w2-${id}`, x: `${tag}x${id}` };
    this.addr = { root: `${net}.2`, c: `${net}.10`, w1: `${net}.11`, w2: `${net}.12`, x: `${net}.20` };
    this.rootVeth = `${tag}r${id}`;
    this.api = new ApiClient(`http://${this.addr.c}:18080`, admin);
    const self = this;
    this.vms = vmLab({ api: this.api, netnsOf: (w) => this.ns[w as LabWorker], dataDirOf: (w) => path.join(this.tmp, w), get key() { return self.key; } });
    this.admin = admin;
  }

  private readonly admin: string;

  startIn(ns: string, args: string[], env: Record<string, string> = {}): RunningProcess {
    const p = startInNetns(ns, args, env);
    this.procs.push(p);
    return p;
  }

  /** Namespaces, the external host, the controller, and both workers enrolled and online. */
  async setUp(name: string): Promise<void> {
    this.tmp = await tempDir(name);
    this.key = path.join(this.tmp, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `fleet-e2e-${name}`, '-f', this.key]);
    await ensureGuestImage();
    buildLan({ hub: this.hub, hosts: Object.fromEntries(Object.entries(this.ns).map(([k, ns]) => [k, { ns, addr: this.addr[k as keyof typeof this.ns] }])), rootVeth: this.rootVeth, rootAddr: this.addr.root });
    writeFileSync(path.join(this.tmp, 'external.mjs'), `
      import http from 'node:http';
      http.createServer((req, res) => res.end('external-ok ' + req.socket.remoteAddress + '\\n')).listen(8080, '${this.addr.x}');
    `);
    this.startIn(this.ns.x, [path.join(this.tmp, 'external.mjs')]);
    const controller = this.startIn(
      this.ns.c,
      [CONTROLLER_MAIN, 'run', '--data-dir', path.join(this.tmp, 'controller'), '--listen', `${this.addr.c}:18080`, '--grpc-listen', `${this.addr.c}:17443`,
        // Plain HTTP on purpose: the lab's API client does not pin CAs (test/api-tls.test.ts covers TLS).
        '--api-tls', 'off', '--heartbeat-interval', '500ms', '--worker-offline-timeout', '5s'],
      { FLEET_BOOTSTRAP_ADMIN_TOKEN: this.admin },
    );
    await controller.waitFor(/worker gRPC:\s+(\S+)/, 60_000);
    for (const w of ['w1', 'w2'] as const) {
      const { token } = await this.api.createBootstrapToken();
      await run('ip', ['netns', 'exec', this.ns[w], process.execPath, WORKER_MAIN, 'enroll', '--controller', `${this.addr.c}:17443`, '--token', token, '--name', w, '--data-dir', path.join(this.tmp, w)], { cwd: REPO_ROOT });
      await this.startWorker(w);
    }
  }

  /** (Re)starts a worker and waits until the controller sees it online. */
  async startWorker(name: LabWorker): Promise<RunningProcess> {
    const args = [
      WORKER_MAIN, 'run',
      '--data-dir', path.join(this.tmp, name),
      '--driver', 'qemu',
      '--accel', 'tcg',
      '--uplink', 'eth0',
      '--authorized-keys', `${this.key}.pub`,
      '--labels', `host=${name}`,
      ...this.workerArgs(name),
    ];
    const w = this.startIn(this.ns[name], args, { FLEET_LOG_LEVEL: 'info' });
    this.workers[name] = w;
    await waitUntil(async () => (await this.api.worker(name))?.status === 'online', 90_000, `worker ${name} online`);
    return w;
  }

  async tearDown(): Promise<void> {
    if (process.env.FLEET_E2E_KEEP_LAB) {
      console.warn(`FLEET_E2E_KEEP_LAB: leaving the lab up (${this.tmp}; namespaces ${Object.values(this.ns).join(' ')} ${this.hub})`);
      return;
    }
    for (const p of this.procs) await Promise.race([p.kill('SIGKILL'), new Promise((r) => setTimeout(r, 3000))]);
    if (this.tmp) killProcessesMentioning(this.tmp);
    removeNetworks({ namespaces: [...Object.values(this.ns), this.hub], links: [this.rootVeth] });
    if (this.tmp) await removeDir(this.tmp);
  }
}
