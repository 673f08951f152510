// Preloaded into a process under measurement (`node --import <this file> ...`): on SIGUSR2 it
// writes the process's own view of its memory (process.memoryUsage(), V8 heap and heap-space
// statistics) as JSON to $FLEET_MEMPROBE_OUT.<n>.json, and, while a file
// $FLEET_MEMPROBE_OUT.want-snapshot exists, also a heap snapshot next to it. Plain JavaScript so that it adds no loader (tsx) to the process.
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';

const out = process.env.FLEET_MEMPROBE_OUT;
if (out) {
  // What the heap's size costs in time: every GC pause since start, and major (mark-compact) ones apart.
  const gc = { count: 0, ms: 0, majorCount: 0, majorMs: 0 };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gc.count++;
      gc.ms += e.duration;
      if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
        gc.majorCount++;
        gc.majorMs += e.duration;
      }
    }
  }).observe({ entryTypes: ['gc'] });
  let n = 0;
  process.on('SIGUSR2', () => {
    const seq = n++;
    const file = `${out}.${seq}.json`;
    const report = {
      seq,
      memoryUsage: process.memoryUsage(),
      heap: v8.getHeapStatistics(),
      spaces: v8.getHeapSpaceStatistics(),
      code: v8.getHeapCodeStatistics(),
      gc: { ...gc },
      cpu: process.cpuUsage(),
      snapshot: undefined,
    };
    if (existsSync(`${out}.want-snapshot`)) report.snapshot = v8.writeHeapSnapshot(`${out}.${seq}.heapsnapshot`);
    writeFileSync(`${file}.tmp`, JSON.stringify(report));
    renameSync(`${file}.tmp`, file);
  });
}
