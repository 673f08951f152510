// VM images from an OCI registry (issue 15), end to end with real components:
//
//   host: controller (API 127.0.0.1, gRPC 10.214.N.1) + Debian's docker-registry (the CNCF
//         distribution registry) on 10.214.N.1, plain HTTP, marked insecure with `fleet registry login`
//   netns fleet-ses-N: worker (qemu driver, image cache in its data dir) ─ NAT bridge ─ VMs
//
// - Push with skopeo → run with Fleet: the built-in guest's kernel and initrd packed as a Fleet qemu
//   image, written as an OCI layout and copied into the registry by skopeo; a VM created from
//   `10.214.N.1:PORT/fleet/guest:1` records the digest the tag named, boots from the pulled image and
//   answers `fleet exec`; the worker's cache lists it (in use).
// - The tag moves: the VM keeps its digest, a new VM gets the new one; prefetch warms the worker.
// - Push with Fleet → skopeo: the stopped VM's disk is pushed by its worker; `skopeo inspect` and
//   `skopeo copy` read it.
// - Bad input: an unknown tag is refused at create; a blob corrupted in the registry fails the VM
//   with a digest error (event and reason) and leaves no image in the cache; the worker stays online
//   and its other VM keeps answering.
// Needs root, ip netns, QEMU, docker-registry and skopeo; otherwise skipped loudly.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, open, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureGuestImage } from '../guest-image/src/index.ts';
import { packFleetQemu, writeOciLayout } from '@fleet/vm-image';
import { registryToolsMissing, startTestRegistry } from '@fleet/oci/testing';
import { runFleet, sessionsPrerequisites, startSessionsEnv, type SessionsEnv } from './support/sessions-env.ts';
import { waitUntil } from './support/fleet-processes.ts';

const why = sessionsPrerequisites() || registryToolsMissing() || '';
if (why) {
  console.warn(`\n!!!!!!!! SKIPPING test/registry-images.test.ts: ${why}. Registry images (issue 15) are NOT tested end to end on this machine; run the e2e suite as root on Linux with QEMU, docker-registry and skopeo (scripts/install-system-deps.sh). !!!!!!!!\n`);
}

type Api = SessionsEnv['controller']['api'];

describe.skipIf(why !== '')('VM images from an OCI registry (real registry, skopeo, QEMU)', () => {
  let env: SessionsEnv;
  let registry: Awaited<ReturnType<typeof startTestRegistry>>;
  let host = '';
  let api: Api;

  /** Packs the built-in guest as a Fleet qemu image (kernel boot) and pushes it with skopeo as `repo:tag`. */
  const pushGuestWithSkopeo = async (repoTag: string, cmdlineExtra = ''): Promise<string> => {
    const img = await ensureGuestImage();
    const work = path.join(env.tmp, `pack-${createHash('sha256').update(repoTag + cmdlineExtra).digest('hex').slice(0, 8)}`);
    await mkdir(work, { recursive: true });
    const packed = await packFleetQemu({ kernel: img.kernel, initrd: img.initrd, cmdline: `${img.cmdlineBase}${cmdlineExtra}`, architecture: 'amd64' }, path.join(work, 'blobs'));
    await writeOciLayout(packed, path.join(work, 'layout'), 'v');
    execFileSync('skopeo', ['copy', '--quiet', '--preserve-digests', '--dest-tls-verify=false', `oci:${path.join(work, 'layout')}:v`, `docker://${host}/${repoTag}`], { stdio: 'pipe', timeout: 120_000 });
    return packed.manifestDigest;
  };

  const waitVm = async (name: string, until: (vm: { state: string; ip: string | null; reason: string }) => boolean, what: string, timeoutMs = 180_000) => {
    let last: { state: string; ip: string | null; reason: string } | null = null;
    try {
      await waitUntil(async () => {
        last = await api.vm(name);
        return !!last && until(last);
      }, timeoutMs, what, 250);
    } catch (error) {
      // What the VM and the worker said, for whoever reads a failed run.
      throw new Error(`${(error as Error).message}; last: ${JSON.stringify(last)}; worker log tail:\n${env.worker.output().split('\n').slice(-40).join('\n')}`);
    }
    return last! as { state: string; ip: string | null; reason: string; imageDigest: string | null };
  };

  const exec = async (vm: string, word: string) => {
    const r = await runFleet(env, ['exec', vm, '--', 'echo', word]);
    // A VM that has just booted may still be starting its SSH server: exec says it waits (a
    // progress line naming the stage), and that is all it may say.
    expect(r.stderr.replace(/^fleet: [^\n]*\[waiting-[a-z]+\]\n/gm, '')).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(`${word}\n`);
  };

  beforeAll(async () => {
    env = await startSessionsEnv();
    api = env.controller.api;
    registry = await startTestRegistry({ address: env.hostIp });
    host = registry.host;
    // Plain HTTP only for a registry the operator marks insecure.
    const login = await runFleet(env, ['registry', 'login', host, '--insecure']);
    expect(login.code, login.stderr).toBe(0);
  }, 240_000);

  afterAll(async () => {
    await registry?.stop();
    await env?.destroy();
  }, 60_000);

  it('push with skopeo → a VM from the tag runs the digest it named, answers exec, and the worker caches the image', async () => {
    const digest = await pushGuestWithSkopeo('fleet/guest:1');
    const created = await api.request('POST', '/v1/vms', { name: 'reg-a', image: `${host}/fleet/guest:1`, driver: 'qemu', cpus: 1, memoryMib: 256 });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect((created.body as { imageDigest: string }).imageDigest).toBe(digest);
    const vm = await waitVm('reg-a', (v) => v.state === 'failed' || (v.state === 'running' && !!v.ip), 'reg-a running');
    expect(vm.state, vm.reason).toBe('running');
    expect(vm.imageDigest).toBe(digest);
    await exec('reg-a', 'from-the-registry');

    const images = await api.request('GET', `/v1/workers/${env.workerName}/images`);
    expect(images.status).toBe(200);
    const items = (images.body as { items: { digest: string; state: string; inUse: number; format: string; sizeBytes: number }[] }).items;
    const cached = items.find((i) => i.digest === digest);
    expect(cached, JSON.stringify(items)).toMatchObject({ state: 'ready', format: 'fleet-qemu' });
    expect(cached!.inUse).toBeGreaterThanOrEqual(1);
    expect(cached!.sizeBytes).toBeGreaterThan(0);
    // An image in use is never deleted.
    const del = await api.request('DELETE', `/v1/workers/${env.workerName}/images/${digest}`);
    expect(del.status).toBe(409);
  }, 300_000);

  it('a moved tag: the running VM keeps its digest, a new VM gets the new one; prefetch warms the worker first', async () => {
    const before = (await api.vm('reg-a')).imageDigest as string;
    const moved = await pushGuestWithSkopeo('fleet/guest:1', ' fleet.variant=2');
    expect(moved).not.toBe(before);
    // `fleet image prefetch --wait` returns once every targeted worker holds it.
    const pre = await runFleet(env, ['image', 'prefetch', `${host}/fleet/guest:1`, '--wait'], { timeoutMs: 180_000 });
    expect(pre.code, pre.stderr).toBe(0);
    const cached = async () => ((await api.request('GET', `/v1/workers/${env.workerName}/images`)).body as { items: { digest: string; state: string }[] }).items;
    await waitUntil(async () => (await cached()).find((i) => i.digest === moved)?.state === 'ready', 5_000, 'the prefetched image listed as ready');
    const listed = await runFleet(env, ['image', 'list', '--worker', env.workerName]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout.toString()).toContain(moved.slice('sha256:'.length, 'sha256:'.length + 12));

    // Through the CLI as a user would: `fleet vm create --wait` returns once it runs.
    const created = await runFleet(env, ['vm', 'create', 'reg-b', '--image', `${host}/fleet/guest:1`, '--driver', 'qemu', '--cpus', '1', '--memory', '256M', '--wait', '--json'], { timeoutMs: 240_000 });
    expect(created.code, created.stderr).toBe(0);
    expect((JSON.parse(created.stdout.toString()) as { imageDigest: string }).imageDigest).toBe(moved);
    expect((await api.vm('reg-a')).imageDigest).toBe(before);
    const b = await waitVm('reg-b', (v) => v.state === 'failed' || (v.state === 'running' && !!v.ip), 'reg-b running');
    expect(b.state, b.reason).toBe('running');
    await exec('reg-b', 'moved-tag');
    const cmdline = await runFleet(env, ['exec', 'reg-b', '--', 'cat', '/proc/cmdline']);
    expect(cmdline.stdout.toString()).toContain('fleet.variant=2');
  }, 300_000);

  it("push with Fleet → skopeo: a stopped VM's disk becomes an image skopeo inspects and copies", async () => {
    // Something on the VM's disk to find in the pushed image's size.
    const stop = await api.request('PATCH', '/v1/vms/reg-b', { powerState: 'stopped' });
    expect(stop.status, JSON.stringify(stop.body)).toBe(200);
    await waitVm('reg-b', (v) => v.state === 'stopped', 'reg-b stopped', 60_000);
    const push = await api.request('POST', '/v1/vms/reg-b/push', { reference: `${host}/fleet/pushed:1` });
    expect(push.status, JSON.stringify(push.body)).toBe(202);
    const id = (push.body as { id: string }).id;
    let op: { state: string; message: string; digest: string } = { state: '', message: '', digest: '' };
    await waitUntil(async () => {
      op = (await api.request('GET', `/v1/image-operations/${id}`)).body as typeof op;
      return op.state === 'succeeded' || op.state === 'failed';
    }, 180_000, 'push finished');
    expect(op.state, op.message).toBe('succeeded');
    const raw = execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${host}/fleet/pushed:1`], { timeout: 60_000 });
    expect(`sha256:${createHash('sha256').update(raw).digest('hex')}`).toBe(op.digest);
    const manifest = JSON.parse(raw.toString()) as { config: { mediaType: string }; layers: { mediaType: string }[] };
    expect(manifest.config.mediaType).toBe('application/vnd.fleet.qemu.config.v1+json');
    expect(manifest.layers.map((l) => l.mediaType)).toEqual(expect.arrayContaining(['application/vnd.fleet.qemu.disk.v1', 'application/vnd.fleet.qemu.kernel.v1', 'application/vnd.fleet.qemu.initrd.v1']));
    const copyDir = path.join(env.tmp, 'skopeo-copy');
    execFileSync('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${host}/fleet/pushed:1`, `dir:${copyDir}`], { stdio: 'pipe', timeout: 120_000 });
    expect(readdirSync(copyDir).length).toBeGreaterThanOrEqual(manifest.layers.length + 2);

    // The pushed image runs as a VM of its own (in reg-b's place: the worker has 2 CPUs).
    expect([202, 204]).toContain((await api.request('DELETE', '/v1/vms/reg-b')).status);
    await waitUntil(async () => (await api.vm('reg-b')) === null, 60_000, 'reg-b deleted');
    const created = await api.request('POST', '/v1/vms', { name: 'reg-c', image: `${host}/fleet/pushed:1`, driver: 'qemu', cpus: 1, memoryMib: 256 });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const c = await waitVm('reg-c', (v) => v.state === 'failed' || (v.state === 'running' && !!v.ip), 'reg-c running');
    expect(c.state, c.reason).toBe('running');
    await exec('reg-c', 'pushed-by-fleet');
    await api.request('DELETE', '/v1/vms/reg-c');
    await waitUntil(async () => (await api.vm('reg-c')) === null, 60_000, 'reg-c deleted');

    // No VM uses the pushed image any more: the worker says so soon, and it can be deleted from its cache.
    const images = async () => ((await api.request('GET', `/v1/workers/${env.workerName}/images`)).body as { items: { digest: string; inUse: number }[] }).items;
    await waitUntil(async () => (await images()).find((i) => i.digest === op.digest)?.inUse === 0, 15_000, 'the pushed image no longer in use');
    const del = await api.request('DELETE', `/v1/workers/${env.workerName}/images/${op.digest}`);
    expect(del.status, JSON.stringify(del.body)).toBe(202);
    await waitUntil(async () => !(await images()).some((i) => i.digest === op.digest), 30_000, 'the pushed image deleted from the cache');
  }, 420_000);

  it('a registry with htpasswd auth and TLS from a private CA: wrong credentials are refused at login; the right ones (sealed in the controller) reach the worker only for its pull', async () => {
    const secure = await startTestRegistry({ address: env.hostIp, auth: { username: 'ci', password: 's3cret-pw' }, tls: true });
    try {
      const caFile = path.join(env.tmp, 'registry-ca.pem');
      await writeFile(caFile, secure.caPem!);
      const img = await ensureGuestImage();
      const work = path.join(env.tmp, 'pack-secure');
      const packed = await packFleetQemu({ kernel: img.kernel, initrd: img.initrd, cmdline: img.cmdlineBase, architecture: 'amd64' }, path.join(work, 'blobs'));
      await writeOciLayout(packed, path.join(work, 'layout'), 'v');
      execFileSync('skopeo', ['copy', '--quiet', '--preserve-digests', '--dest-creds', 'ci:s3cret-pw', '--dest-cert-dir', secure.certDir!, `oci:${path.join(work, 'layout')}:v`, `docker://${secure.host}/fleet/private:1`], { stdio: 'pipe', timeout: 120_000 });

      // Without credentials the tag cannot even be resolved: no VM is accepted that could never run.
      const anon = await api.request('POST', '/v1/vms', { name: 'sec-anon', image: `${secure.host}/fleet/private:1`, driver: 'qemu', cpus: 1, memoryMib: 256 });
      expect(anon.status, JSON.stringify(anon.body)).toBeGreaterThanOrEqual(400);
      expect(anon.status).toBeLessThan(600);
      const wrong = await runFleet(env, ['registry', 'login', secure.host, '--username', 'ci', '--password-stdin', '--ca-file', caFile], { input: 'wrong-pw\n' });
      expect(wrong.code).not.toBe(0);
      expect(wrong.stderr).toMatch(/401|unauthori[sz]ed|credentials/i);
      const right = await runFleet(env, ['registry', 'login', secure.host, '--username', 'ci', '--password-stdin', '--ca-file', caFile], { input: 's3cret-pw\n' });
      expect(right.code, right.stderr).toBe(0);
      const listed = await api.request('GET', '/v1/registries');
      expect(JSON.stringify(listed.body)).not.toContain('s3cret-pw');

      const pre = await api.request('POST', '/v1/images/prefetch', { reference: `${secure.host}/fleet/private:1` });
      expect(pre.status, JSON.stringify(pre.body)).toBe(202);
      const body = pre.body as { digest: string; operations: { id: string }[] };
      expect(body.digest).toBe(packed.manifestDigest);
      let op: { state: string; message: string } = { state: '', message: '' };
      await waitUntil(async () => {
        op = (await api.request('GET', `/v1/image-operations/${body.operations[0]!.id}`)).body as typeof op;
        return op.state === 'succeeded' || op.state === 'failed';
      }, 120_000, 'prefetch from the secure registry finished');
      expect(op.state, op.message).toBe('succeeded');
      // The password is nowhere on the worker's disk.
      const onDisk = spawnSync('grep', ['-rl', 's3cret-pw', path.join(env.tmp, 'w')], { encoding: 'utf8' });
      expect(onDisk.status, onDisk.stdout).toBe(1); // 1 = no file contains it
    } finally {
      await secure.stop();
    }
  }, 300_000);

  it('bad input: an unknown tag is refused at create; a corrupted blob fails the VM clearly, caches nothing, and the worker stays healthy', async () => {
    const unknown = await api.request('POST', '/v1/vms', { name: 'reg-missing', image: `${host}/fleet/guest:nope`, driver: 'qemu', cpus: 1, memoryMib: 256 });
    expect(unknown.status).toBeGreaterThanOrEqual(400);
    expect(unknown.status).toBeLessThan(500);
    expect(JSON.stringify(unknown.body)).toMatch(/nope|not found|unknown/i);
    expect(await api.vm('reg-missing')).toBeNull();

    // A new image whose biggest blob (the initrd) is then flipped in the registry's storage.
    const digest = await pushGuestWithSkopeo('fleet/corrupt:1', ' fleet.variant=corrupt');
    const manifest = JSON.parse((await readFile(blobPath(registry.dataDir, digest))).toString()) as { layers: { digest: string; size: number }[] };
    const biggest = [...manifest.layers].sort((a, b) => b.size - a.size)[0]!;
    const file = blobPath(registry.dataDir, biggest.digest);
    expect((await stat(file)).size).toBe(biggest.size);
    const fh = await open(file, 'r+');
    await fh.write(Buffer.from('garbage!'), 0, 8, Math.floor(biggest.size / 2));
    await fh.close();

    const created = await api.request('POST', '/v1/vms', { name: 'reg-bad', image: `${host}/fleet/corrupt:1`, driver: 'qemu', cpus: 1, memoryMib: 256 });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const bad = await waitVm('reg-bad', (v) => v.state === 'failed', 'reg-bad failed', 120_000);
    expect(bad.reason).toMatch(/digest/i);
    const events = await api.request('GET', '/v1/vms/reg-bad/events');
    expect(JSON.stringify(events.body)).toMatch(/digest/i);
    const images = (await api.request('GET', `/v1/workers/${env.workerName}/images`)).body as { items: { digest: string; state: string }[] };
    expect(images.items.find((i) => i.digest === digest && i.state === 'ready')).toBeUndefined();
    // Nothing half-written in the worker's cache.
    const cacheImages = path.join(env.tmp, 'w', 'image-cache', 'images');
    expect(existsSync(path.join(cacheImages, digest.replace(':', '-')))).toBe(false);
    // The worker is fine and its other VM still answers.
    expect((await api.worker(env.workerName)).status).toBe('online');
    await exec('reg-a', 'still-here');
  }, 300_000);
});

/** Where the distribution registry's filesystem driver keeps a blob. */
function blobPath(root: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return path.join(root, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}
