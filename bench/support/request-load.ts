// What the request benchmarks share: a fixed number of concurrent workers working through n
// tasks, and a process's CPU time from /proc.
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';

/** Runs task(0 .. n-1) with `width` of them in flight at a time (each worker takes the next index). */
export async function pool(n: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) await task(next++);
  }));
}

/** /proc/<pid>/stat counts CPU time in clock ticks: 100 per second on Linux (getconf CLK_TCK). */
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** CPU time (user + system) process `pid` has used, in ms. */
export async function processCpuMs(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).replace(/^.*\) /, '').split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
}
