// Placement planner benchmark: pnpm exec tsx bench/scheduler.ts
//
// Builds fleets of 1,000 and 10,000 workers with mixed labels, drivers and
// platforms (some macOS hosts with 2 macOS slots, some paused or offline),
// queues 10,000 VMs with mixed priorities, selectors, drivers and sizes, and
// times planPlacements (pack and spread) against the naive O(VMs x workers)
// reference in the same run. Before timing, it checks that both planners make
// identical placements. Pure CPU: no database, no network.
import { planPlacements, type PendingVmView, type SchedulerProfile, type WorkerView } from '../apps/controller/src/scheduler/placement.ts';
import { planPlacementsNaive } from '../apps/controller/src/scheduler/reference.ts';

/** mulberry32: small, fast, seeded. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const REGIONS = ['eu', 'us', 'ap'];
const POOLS = ['ci', 'build', 'test', 'batch'];

function fleet(n: number, seed: number): WorkerView[] {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const workers: WorkerView[] = [];
  for (let i = 0; i < n; i++) {
    const mac = rnd() < 0.3;
    const big = rnd() < 0.2;
    const cpus = mac ? (big ? 24 : 12) : big ? 96 : 32;
    const memoryMib = (mac ? (big ? 128 : 48) : big ? 384 : 96) * 1024;
    const vmSlots = mac ? 2 + Math.floor(rnd() * 3) : big ? 32 : 12;
    const labels: Record<string, string> = { region: pick(REGIONS), pool: pick(POOLS), host: `h${i}` };
    if (!mac && rnd() < 0.1) labels.gpu = 'true';
    if (rnd() < 0.5) labels.tier = pick(['gold', 'silver']);
    const usedVms = Math.floor(rnd() * 3);
    workers.push({
      id: `w-${String(i).padStart(5, '0')}`,
      name: `${mac ? 'mac' : 'linux'}-${String(i).padStart(5, '0')}`,
      online: rnd() > 0.03,
      paused: rnd() < 0.03,
      labels,
      drivers: mac ? ['synthetic', 'vz'] : rnd() < 0.7 ? ['synthetic', 'qemu'] : ['synthetic'],
      os: mac ? 'darwin' : 'linux',
      arch: mac ? 'arm64' : pick(['arm64', 'amd64']),
      capacity: { cpus, memoryMib, vmSlots, macosSlots: mac ? 2 : 0 },
      used: { cpus: usedVms * 2, memoryMib: usedVms * 4096, vms: usedVms, macosVms: 0 },
    });
  }
  return workers;
}

function queue(n: number, seed: number): PendingVmView[] {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const vms: PendingVmView[] = [];
  for (let i = 0; i < n; i++) {
    const r = rnd();
    let selector: Record<string, string> = {};
    if (r < 0.2) selector = { region: pick(REGIONS) };
    else if (r < 0.3) selector = { region: pick(REGIONS), pool: pick(POOLS) };
    else if (r < 0.35) selector = { gpu: 'true' };
    else if (r < 0.38) selector = { tier: 'gold', region: pick(REGIONS) };
    else if (r < 0.385) selector = { host: `h${Math.floor(rnd() * 2000)}` };
    else if (r < 0.39) selector = { region: 'mars' };
    const macos = rnd() < 0.05;
    const size = pick([
      [1, 2048],
      [2, 4096],
      [2, 4096],
      [4, 8192],
      [8, 16384],
    ] as const);
    vms.push({
      id: `vm-${String(i).padStart(6, '0')}`,
      name: `vm-${i}`,
      priority: pick([0, 0, 0, 1, 2, 5]),
      createdAtMs: 1_700_000_000_000 + i * 7,
      cpus: rnd() < 0.002 ? 128 : size[0],
      memoryMib: size[1],
      os: macos ? 'macos' : 'linux',
      selector,
      driver: macos ? 'vz' : rnd() < 0.1 ? 'qemu' : '',
    });
  }
  return vms;
}

type Planner = typeof planPlacements;

function time(plan: Planner, vms: PendingVmView[], workers: WorkerView[], profile: SchedulerProfile, runs: number) {
  const samples: number[] = [];
  let placed = 0;
  let pending = 0;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const r = plan(vms, workers, profile);
    samples.push(performance.now() - t0);
    placed = r.placements.length;
    pending = r.pending.size;
  }
  samples.sort((a, b) => a - b);
  return { ms: samples[Math.floor(samples.length / 2)]!, placed, pending };
}

function same(a: ReturnType<Planner>, b: ReturnType<Planner>): boolean {
  if (a.placements.length !== b.placements.length || a.pending.size !== b.pending.size) return false;
  return a.placements.every((p, i) => p.vmId === b.placements[i]!.vmId && p.workerId === b.placements[i]!.workerId);
}

const VMS = 10_000;
const rows: string[][] = [];
console.log(`placement planner: ${VMS.toLocaleString('en-US')} pending VMs; median of timed runs after warm-up; node ${process.version}`);
for (const workerCount of [1_000, 10_000]) {
  const workers = fleet(workerCount, 42);
  const vms = queue(VMS, 7);
  for (const profile of ['pack', 'spread'] as const) {
    // Warm up both and check they agree.
    const fastResult = planPlacements(vms, workers, profile);
    const naiveResult = planPlacementsNaive(vms, workers, profile);
    if (!same(fastResult, naiveResult)) throw new Error(`planners disagree (${workerCount} workers, ${profile})`);
    for (let i = 0; i < 5; i++) planPlacements(vms, workers, profile);
    const fast = time(planPlacements, vms, workers, profile, 15);
    const naive = time(planPlacementsNaive, vms, workers, profile, workerCount >= 10_000 ? 3 : 5);
    const perSec = (r: { ms: number; placed: number }) => Math.round((r.placed / r.ms) * 1000).toLocaleString('en-US');
    rows.push([
      workerCount.toLocaleString('en-US'),
      profile,
      `${fast.placed}/${fast.pending}`,
      fast.ms.toFixed(1),
      perSec(fast),
      naive.ms.toFixed(1),
      perSec(naive),
      `${(naive.ms / fast.ms).toFixed(0)}x`,
    ]);
  }
}
const header = ['workers', 'profile', 'placed/pending', 'fast ms/plan', 'fast placements/s', 'naive ms/plan', 'naive placements/s', 'speed-up'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (r: string[]) => r.map((c, i) => c.padStart(widths[i]!)).join('  ');
console.log(line(header));
for (const r of rows) console.log(line(r));
console.log('fast = planPlacements (includes computing every pending reason); naive = O(VMs x workers) reference (placements only, generic reasons).');
