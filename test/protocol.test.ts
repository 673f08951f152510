// The Connect stream from the controller's side, driven by a raw gRPC client
// holding a real enrolled credential: version refusal, unknown payloads from a
// newer worker, malformed reports, and a worker reporting on VMs not its own.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startController, type ControllerHandle } from '@fleet/controller';
import { enrollWorker, silentLogger } from '@fleet/worker';
import { loadFleetProto, PROTOCOL_VERSION, type ControllerMessage__Output, type WorkerMessage } from '@fleet/proto';
import { ApiClient, removeDir, tempDir, waitUntil } from './support/fleet-processes.ts';

let controller: ControllerHandle;
let api: ApiClient;
const dirs: string[] = [];

async function enrolled(name: string): Promise<{ dataDir: string; machineId: string; creds: grpc.ChannelCredentials }> {
  const dataDir = await tempDir(`proto-${name}`);
  dirs.push(dataDir);
  const { token } = await api.createBootstrapToken();
  const res = await enrollWorker({ controller: controller.grpcAddress, token, name, dataDir, logger: silentLogger() });
  const file = (f: string) => readFile(path.join(dataDir, f));
  const creds = grpc.credentials.createSsl(await file('ca.pem'), await file('key.pem'), await file('cert.pem'));
  return { dataDir, machineId: res.machineId, creds };
}

function open(creds: grpc.ChannelCredentials) {
  const Client = loadFleetProto().WorkerService;
  const client = new Client(controller.grpcAddress, creds, { 'grpc.ssl_target_name_override': 'fleet-controller' });
  const call = client.Connect();
  const received: ControllerMessage__Output[] = [];
  const ended = new Promise<grpc.StatusObject | grpc.ServiceError>((resolve) => {
    call.on('error', resolve);
    call.on('status', (s) => {
      if (s.code === grpc.status.OK) resolve(s);
    });
  });
  call.on('data', (m: ControllerMessage__Output) => received.push(m));
  return { client, call, received, ended };
}

const hello = (machineId: string, version = PROTOCOL_VERSION, vms: WorkerMessage['hello'] extends infer H ? (H extends { vms?: infer V } ? V : never) : never = []) => ({
  hello: {
    protocolVersion: version,
    workerVersion: 'test',
    hostname: 'raw-client',
    machineId,
    platform: { os: 'linux', arch: 'amd64' },
    capacity: { cpus: 4, memoryMib: 8192, vmSlots: 4, macosSlots: 0 },
    labels: { raw: 'yes' },
    drivers: ['synthetic'],
    vms,
  },
});

beforeAll(async () => {
  const dataDir = await tempDir('ctl-proto');
  dirs.push(dataDir);
  controller = await startController({ dataDir, apiPort: 0, grpcPort: 0, grpcHost: '127.0.0.1', logLevel: 'silent', heartbeatIntervalMs: 500 });
  api = new ApiClient(controller.apiUrl, controller.adminToken);
});
afterAll(async () => {
  await controller?.stop();
  await Promise.all(dirs.map(removeDir));
});

describe('Connect protocol', () => {
  it('refuses a worker speaking an unsupported protocol version, naming both ranges', async () => {
    const w = await enrolled('future-worker');
    const s = open(w.creds);
    s.call.write(hello(w.machineId, 99));
    const end = await s.ended;
    expect(end.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(end.details).toMatch(/protocol v99.*supports v1\.\.v1/);
    s.client.close();
  });

  it('refuses a connection without a client certificate', async () => {
    const s = open(grpc.credentials.createSsl(Buffer.from(controller.identity.serverCaPem)));
    s.call.write(hello('x'));
    const end = await s.ended;
    expect(end.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(end.details).toMatch(/enroll/);
    s.client.close();
  });

  it('welcomes, ignores payloads from a newer worker and malformed reports, and keeps the stream', async () => {
    const w = await enrolled('raw-worker');
    const s = open(w.creds);
    s.call.write(hello(w.machineId));
    await waitUntil(() => s.received.some((m) => m.payload === 'desiredState'), 10_000, 'welcome + desired state');
    expect(s.received[0]).toMatchObject({ payload: 'welcome', welcome: { protocolVersion: PROTOCOL_VERSION, workerName: 'raw-worker', heartbeatIntervalMs: 500 } });

    // A message whose payload this controller does not know arrives empty: ignored.
    s.call.write({});
    // Malformed and foreign reports: a non-UUID id, an unknown phase, someone else's VM.
    const other = await api.createVm({ name: 'not-yours', image: 'synthetic:ok', selector: { nowhere: 'true' } });
    s.call.write({
      vmStatus: {
        vms: [
          { vmId: 'not-a-uuid', attempt: 1, phase: 'VM_PHASE_RUNNING' },
          { vmId: other.id, attempt: 0, phase: 42 as unknown as 'VM_PHASE_RUNNING' },
          { vmId: other.id, attempt: 0, phase: 'VM_PHASE_RUNNING', ip: '10.0.0.9' },
        ],
      },
    });
    s.call.write({ heartbeat: { sentAtUnixMs: Date.now(), runningVms: 0, seq: 41 } });
    // Every heartbeat is answered with a lease renewal that names it (issue 12: client-side fencing).
    await waitUntil(() => s.received.some((m) => m.payload === 'lease'), 5_000, 'a lease renewal');
    expect(s.received.find((m) => m.payload === 'lease')).toMatchObject({ lease: { heartbeatSeq: '41', fenceAfterMs: s.received[0]!.welcome!.fenceAfterMs } });
    expect(s.received[0]!.welcome!.fenceAfterMs).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 500));
    const vm = await api.vm('not-yours');
    expect(vm).toMatchObject({ state: 'pending', ip: null });
    expect((await api.worker('raw-worker')).connected).toBe(true);

    // The stream is still alive: a second Hello is answered with a protocol error.
    s.call.write(hello(w.machineId));
    const end = await s.ended;
    expect(end.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(end.details).toMatch(/Hello may only be sent once/);
    s.client.close();
  });

  it('refuses a credential presented from another machine', async () => {
    const w = await enrolled('cloned-worker');
    const s = open(w.creds);
    s.call.write(hello('some-other-machine'));
    const end = await s.ended;
    expect(end.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(end.details).toMatch(/another machine/);
    s.client.close();
  });
});
