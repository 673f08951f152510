// The controller's process when benchmarks start it through its bin: the bin's own process, or
// its child when the bin's launcher started the controller again with start-up settings
// (apps/controller/bin/relaunch.cjs). RSS and CPU profiles must be the child's then.
import { readFile } from 'node:fs/promises';

export async function controllerPids(pid: number): Promise<{ controller: number; launcher?: number }> {
  const children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')).trim().split(/\s+/).filter(Boolean).map(Number);
  for (const c of children) {
    const cmdline = await readFile(`/proc/${c}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes('fleet-controller.js')) return { controller: c, launcher: pid };
  }
  return { controller: pid };
}
