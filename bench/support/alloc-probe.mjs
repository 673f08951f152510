// Preloaded into a process under measurement (`node --import <this file> ...`, e.g. through
// bench/control-plane.ts --node-flags): while $FLEET_ALLOC_PROFILE_DIR is set, V8's sampling heap
// profiler records every sampled allocation, including objects the young- and old-generation
// collectors have freed since (what a garbage-collection profile needs: the churn, not what
// survives), and writes one profile per window of $FLEET_ALLOC_PROFILE_MS (default 5,000 ms) as
// <dir>/alloc.<pid>.<n>.heapprofile. Read them with bench/support/alloc-profile-summary.mjs.
// Plain JavaScript so that it adds no loader (tsx) to the process.
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

const dir = process.env.FLEET_ALLOC_PROFILE_DIR;
if (dir) {
  mkdirSync(dir, { recursive: true });
  const windowMs = Number(process.env.FLEET_ALLOC_PROFILE_MS ?? 5000);
  const session = new Session();
  session.connect();
  const post = (method, params = {}) => new Promise((resolve, reject) => session.post(method, params, (err, res) => (err ? reject(err) : resolve(res))));
  const start = () => post('HeapProfiler.startSampling', { samplingInterval: 8192, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  let n = 0;
  await post('HeapProfiler.enable');
  await start();
  const t0 = Date.now();
  const timer = setInterval(async () => {
    const { profile } = await post('HeapProfiler.stopSampling');
    writeFileSync(`${dir}/alloc.${process.pid}.${String(n++).padStart(3, '0')}.heapprofile`, JSON.stringify({ fromMs: Date.now() - t0 - windowMs, toMs: Date.now() - t0, profile }));
    await start();
  }, windowMs);
  timer.unref();
}
