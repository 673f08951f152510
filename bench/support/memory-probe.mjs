// Preloaded into a process under measurement (`node --import <this file> ...`): on SIGUSR2 it
// writes the process's own view of its memory (process.memoryUsage(), V8 heap and heap-space
// statistics) as JSON to $FLEET_MEMPROBE_OUT.<n>.json, and, while a file
// $FLEET_MEMPROBE_OUT.want-snapshot exists, also a heap snapshot next to it. Plain JavaScript so that it adds no loader (tsx) to the process.
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import v8 from 'node:v8';

const out = process.env.FLEET_MEMPROBE_OUT;
if (out) {
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
      snapshot: undefined,
    };
    if (existsSync(`${out}.want-snapshot`)) report.snapshot = v8.writeHeapSnapshot(`${out}.${seq}.heapsnapshot`);
    writeFileSync(`${file}.tmp`, JSON.stringify(report));
    renameSync(`${file}.tmp`, file);
  });
}
