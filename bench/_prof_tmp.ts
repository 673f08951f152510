import { planPlacements, type PendingVmView, type WorkerView } from '/work/main/apps/controller/src/scheduler/placement.ts';
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
    const cpus = mac ? (big ? 24 : 10) : big ? 64 : 16;
    const memoryMib = (mac ? (big ? 128 : 32) : big ? 256 : 64) * 1024;
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

const n = Number(process.argv[2] ?? 1000);
const workers = fleet(n, 42); const vms = queue(10000, 7);
for (let i = 0; i < 10; i++) planPlacements(vms, workers, 'pack');
const t0 = performance.now();
for (let i = 0; i < 20; i++) planPlacements(vms, workers, 'pack');
console.log((performance.now() - t0) / 20);
