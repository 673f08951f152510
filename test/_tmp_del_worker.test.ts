import { it, expect } from 'vitest';
import { enrollWorker, runWorker, startControllerProcess, tempDir, waitUntil } from '/work/main/test/support/fleet-processes.ts';
it('del', async () => {
  const controller = await startControllerProcess({ dataDir: await tempDir('ctl-x') });
  const dataDir = await tempDir('w-del');
  expect((await enrollWorker({ controller, name: 'doomed-1', dataDir })).code).toBe(0);
  process.env.FLEET_LOG_LEVEL = 'debug';
  const w = runWorker({ name: 'doomed-1', dataDir });
  await waitUntil(async () => (await controller.api.worker('doomed-1'))?.status === 'online', 30_000, 'online');
  await controller.api.ok('DELETE', '/v1/workers/doomed-1');
  const code = await Promise.race([w.exited, new Promise<'running'>((r) => setTimeout(() => r('running'), 8_000))]);
  console.log('CODE', code);
  console.log(w.output().split('\n').slice(-25).join('\n'));
  console.log('CTL', controller.output().split('\n').slice(-15).join('\n'));
  await w.kill(); await controller.kill();
}, 60000);
