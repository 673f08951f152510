import type { ImageOperation__Output, ImageOperationStatus } from '@fleet/proto';
import { describe, expect, it } from 'vitest';
import { FakeDriver } from '../reconcile/fake-driver.test-helper.ts';
import type { ImageCache } from './image-cache.ts';
import { ImageCacheError } from './image-cache.ts';
import { ImageOperations } from './image-operations.ts';

const DIGEST = `sha256:${'d'.repeat(64)}`;
const REF = `127.0.0.1:5000/fleet/guest@${DIGEST}`;

function harness(cache: Partial<ImageCache>) {
  const sent: ImageOperationStatus[] = [];
  const ops = new ImageOperations({ cache: cache as ImageCache, driver: new FakeDriver(), send: (s) => sent.push(s), workDir: '/nonexistent', log: { info() {}, warn() {} } });
  return { ops, sent, finals: () => sent.filter((s) => s.state !== 'running') };
}

const prefetch = (id: string): ImageOperation__Output => ({ id, op: 'prefetch', prefetch: { pull: { reference: REF, access: { insecure: true, caPem: '', username: '', password: '' } } } }) as ImageOperation__Output;
const del = (id: string, digest = DIGEST): ImageOperation__Output => ({ id, op: 'delete', delete: { digest } }) as ImageOperation__Output;

describe('ImageOperations', () => {
  it('runs a prefetch once, reports running then succeeded with the digest, and answers a re-sent op with its final status without running it again', async () => {
    let pulls = 0;
    const h = harness({
      prefetch: async (req, onProgress) => {
        pulls++;
        expect(req).toEqual({ reference: REF, access: { insecure: true } }); // empty proto fields are no credentials
        onProgress?.({ bytesDone: 5, bytesTotal: 10 });
        return { digest: DIGEST, reference: REF, format: 'fleet-qemu', dir: '/c' };
      },
    });
    h.ops.setDesired([prefetch('op-1')]);
    h.ops.setDesired([prefetch('op-1')]); // the next DesiredState while it runs
    await h.ops.idle();
    expect(pulls).toBe(1);
    expect(h.sent[0]).toMatchObject({ id: 'op-1', state: 'running' });
    expect(h.finals()).toEqual([{ id: 'op-1', state: 'succeeded', message: `${REF} is in the cache`, digest: DIGEST }]);
    // The controller did not hear it (a reconnect): the op comes again, the answer is repeated.
    h.ops.setDesired([prefetch('op-1')]);
    await h.ops.idle();
    expect(pulls).toBe(1);
    expect(h.finals()).toHaveLength(2);
  });

  it('a failed prefetch and a refused delete are reported failed with the cause', async () => {
    const h = harness({
      prefetch: async () => {
        throw Object.assign(new Error('registry 127.0.0.1:5000 answered 401 for fleet/guest: wrong or missing credentials'), { code: 'unauthorized' });
      },
      delete: async () => {
        throw new ImageCacheError(`image ${DIGEST} is used by VM instances on this worker; delete those VMs first`, 'in-use');
      },
    });
    h.ops.setDesired([prefetch('p'), del('d')]);
    await h.ops.idle();
    expect(h.finals()).toEqual(
      expect.arrayContaining([
        { id: 'p', state: 'failed', message: expect.stringContaining('wrong or missing credentials'), digest: '' },
        { id: 'd', state: 'failed', message: expect.stringContaining('used by VM instances'), digest: DIGEST },
      ]),
    );
  });

  it('an operation it does not know, or a push its driver cannot do, fails clearly instead of hanging', async () => {
    const h = harness({});
    h.ops.setDesired([{ id: 'x', op: 'rebase' } as unknown as ImageOperation__Output, { id: 'y', op: 'push', push: { vmId: 'v', attempt: 1, reference: '127.0.0.1:5000/a:1', access: null } } as ImageOperation__Output]);
    await h.ops.idle();
    expect(h.finals()).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ id: 'x', state: 'failed', message: expect.stringContaining('unknown image operation') }),
        expect.objectContaining({ id: 'y', state: 'failed', message: 'the fake driver cannot push images' }),
      ]),
    );
  });
});
