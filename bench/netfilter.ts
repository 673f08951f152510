/**
 * Microbenchmark for @fleet/netfilter: decisions per second and ns/frame for representative frame
 * mixes, against a baseline loop in the same run that only reads the EtherType, plus a check that
 * deciding allocates nothing (no GC during tens of millions of decisions, heap flat).
 *
 *   pnpm exec tsx bench/netfilter.ts            (from the repo root)
 *   NETFILTER_BENCH_FRAMES=20000000 pnpm exec tsx bench/netfilter.ts
 *   NETFILTER_BENCH_IMPL=/other/checkout/packages/netfilter/src/index.ts …   (measure another version
 *     of the filter with the same frames; bench/netfilter-compare.ts runs both in one go)
 *   NETFILTER_BENCH_JSON=1 …                    (also print the rows as one JSON line)
 *   NETFILTER_BENCH_NO_HOST_ADDRESSES=1 …       (without the host-address list the worker passes)
 *
 * Frames are built with the package's test frame builder; addresses are bytes only (nothing is sent).
 * Median and p99 are over batches of 4096 decisions (per-frame timing is below timer resolution).
 */
import { Session } from 'node:inspector/promises';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import os from 'node:os';
import v8 from 'node:v8';
import vm from 'node:vm';
import { type FilterConfig, type PacketFilter, createFilter as currentCreateFilter } from '@fleet/netfilter';
import { DHCP, ETHERTYPE, PROTO, TCP_FLAGS, ethernet, ipv4, ipv6Frame, icmp, opt, pad, tcp, tcpFrame, udpFrame } from '../packages/netfilter/src/testing/frames.ts';
import {
  BCAST_MAC,
  GW,
  PEER_IP,
  PEER_MAC,
  VM_IP,
  VM_MAC,
  baseConfig,
  hostAddr,
  hostDhcp,
  vmAddr,
  vmArp,
  vmDhcp,
} from '../packages/netfilter/src/testing/scenario.ts';

const IMPL = process.env.NETFILTER_BENCH_IMPL;
const createFilter = IMPL ? ((await import(IMPL)) as { createFilter: (c: FilterConfig) => PacketFilter }).createFilter : currentCreateFilter;

/**
 * What the worker configures today beyond the policy: the VM's reserved address and the host's
 * other addresses. An older filter that rejects these options is measured without them.
 */
const PRODUCTION_OPTIONS: Partial<FilterConfig> = (() => {
  const extra = { address: VM_IP, hostAddresses: process.env.NETFILTER_BENCH_NO_HOST_ADDRESSES ? [] : ['10.98.0.11', '203.0.113.2'] } as Partial<FilterConfig>;
  try {
    createFilter(baseConfig(extra));
    return extra;
  } catch {
    return {};
  }
})();

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const FRAMES = Number(process.env.NETFILTER_BENCH_FRAMES ?? 10_000_000);
/** Epoch-scale milliseconds, like Date.now(): a heap number, not a small integer. */
const NOW0 = 1_750_000_000_000.5;

/** A filter whose VM holds a lease (seeded, valid for the whole run), DNS at the gateway. */
function leased(over: Partial<FilterConfig> = {}): PacketFilter {
  return createFilter(baseConfig({ lease: { ip: VM_IP, expiresAt: NOW0 + 1e10, dns: [GW] }, ...PRODUCTION_OPTIONS, ...over }));
}
const BATCH = 4096;
const RING = 4096; // frames per mix, cycled

// ------------------------------------------------------------------ frames

const REMOTES = ['140.82.112.3', '151.101.1.69', '17.253.144.10', '104.16.132.229', '52.94.236.248', '13.107.42.14', '185.199.108.153', '34.117.59.81'];

function vmData(i: number, size: number): Uint8Array {
  return tcpFrame(vmAddr(VM_IP, REMOTES[i % REMOTES.length]!), {
    sport: 40000 + (i % 64),
    dport: 443,
    flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH,
    payload: new Uint8Array(size - 54),
  });
}
function hostAck(i: number): Uint8Array {
  return pad(tcpFrame(hostAddr(REMOTES[i % REMOTES.length]!, VM_IP), { sport: 443, dport: 40000 + (i % 64), flags: TCP_FLAGS.ACK }));
}
function hostData(i: number): Uint8Array {
  return tcpFrame(hostAddr(REMOTES[i % REMOTES.length]!, VM_IP), { sport: 443, dport: 40000 + (i % 64), flags: TCP_FLAGS.ACK, payload: new Uint8Array(1460) });
}
const DROPS: Uint8Array[] = [
  tcpFrame(vmAddr(VM_IP, REMOTES[0]!, { srcMac: PEER_MAC }), { sport: 1, dport: 443 }), // mac_spoof
  tcpFrame(vmAddr(PEER_IP, REMOTES[1]!), { sport: 1, dport: 443 }), // ip_spoof
  tcpFrame(vmAddr(VM_IP, PEER_IP), { sport: 1, dport: 22 }), // local_dst (peer VM)
  tcpFrame(vmAddr(VM_IP, '169.254.169.254'), { sport: 1, dport: 80 }), // local_dst (metadata)
  udpFrame(vmAddr(VM_IP, '224.0.0.251', { dstMac: '01:00:5e:00:00:fb' }), { sport: 5353, dport: 5353, payload: new Uint8Array(40) }), // local_dst (mDNS)
  ipv6Frame('33:33:00:00:00:01', VM_MAC, PROTO.ICMPV6, icmp({ type: 134, payload: new Uint8Array(8) })), // ipv6
  ethernet({ dst: '02:00:00:00:00:fe', src: VM_MAC, type: ETHERTYPE.IPV4, payload: ipv4({ src: VM_IP, dst: REMOTES[2]!, protocol: PROTO.TCP, payload: tcp({ sport: 1, dport: 443 }) }), tags: [{ tpid: ETHERTYPE.VLAN, vid: 0 }] }), // vlan
  pad(vmArp(2, GW, VM_IP)), // arp_ip_spoof
];
const ARPS: Uint8Array[] = [pad(vmArp(1, VM_IP, GW)), pad(vmArp(2, VM_IP, GW))];
const hostArp = pad(ethernet({ dst: BCAST_MAC, src: '02:00:00:00:00:fe', type: ETHERTYPE.ARP, payload: new Uint8Array([0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 0xfe, 192, 168, 64, 1, 0, 0, 0, 0, 0, 0, 192, 168, 64, 10]) }));
// DHCP that does not change the lease (a changing lease allocates a Lease object by design; measured separately).
const DHCPS: { frame: Uint8Array; host: boolean }[] = [
  { frame: vmDhcp({ type: DHCP.DISCOVER, xid: 0x5000 }), host: false },
  { frame: vmDhcp({ type: DHCP.REQUEST, xid: 0x5000, src: VM_IP, dst: GW, ciaddr: VM_IP }), host: false },
  { frame: hostDhcp({ type: DHCP.OFFER, xid: 0x5000 }), host: true },
  { frame: hostDhcp({ type: DHCP.ACK, xid: 0x6000, chaddr: PEER_MAC, yiaddr: PEER_IP, dstMac: BCAST_MAC, dst: '255.255.255.255' }), host: true },
];

interface Mix {
  name: string;
  frames: Uint8Array[];
  fromHost: Uint8Array; // 1 = host -> VM
  filter: () => PacketFilter;
}

function build(name: string, pick: (i: number) => { frame: Uint8Array; host: boolean }, filter: () => PacketFilter = () => leased()): Mix {
  const frames: Uint8Array[] = [];
  const fromHost = new Uint8Array(RING);
  for (let i = 0; i < RING; i++) {
    const p = pick(i);
    frames.push(p.frame);
    fromHost[i] = p.host ? 1 : 0;
  }
  return { name, frames, fromHost, filter };
}

const manyRules = (): PacketFilter => {
  const allow: string[] = [];
  const block: string[] = [];
  for (let i = 0; i < 1000; i++) (i % 2 ? allow : block).push(`${20 + (i % 100)}.${(i * 7) % 256}.${(i * 13) % 256}.0/24`);
  block.push('0.0.0.0/0');
  allow.push(...REMOTES.map((r) => `${r}/32`));
  return leased({ allow, block });
};

const ONLY = process.env.NETFILTER_BENCH_ONLY;
const ALL_MIXES: Mix[] = [
  build('vm->host TCP data, 1514 B, leased IP -> global', (i) => ({ frame: vmData(i, 1514), host: false })),
  build('host->VM TCP ACKs, 60 B', (i) => ({ frame: hostAck(i), host: true })),
  build('established TCP both ways (1514 B out, 60 B ACK in)', (i) => (i & 1 ? { frame: hostAck(i), host: true } : { frame: vmData(i, 1514), host: false })),
  build('realistic mix: 80% TCP, 8% ARP, 2% DHCP, 10% drops', (i) => {
    const r = (i * 2654435761) % 100;
    if (r < 40) return { frame: vmData(i, r < 20 ? 1514 : 66), host: false };
    if (r < 80) return { frame: r < 60 ? hostData(i) : hostAck(i), host: true };
    if (r < 84) return { frame: ARPS[i % 2]!, host: false };
    if (r < 88) return { frame: hostArp, host: true };
    if (r < 90) return DHCPS[i % DHCPS.length]!;
    return { frame: DROPS[i % DROPS.length]!, host: false };
  }),
  build('drops only (spoofs, local_dst, IPv6, VLAN, ARP spoof)', (i) => ({ frame: DROPS[i % DROPS.length]!, host: false })),
  build('DHCP only (client msgs mostly rate-limited, OFFER, foreign ACK)', (i) => DHCPS[i % DHCPS.length]!),
  build('vm->host TCP with 1009 allow/block CIDR rules', (i) => ({ frame: vmData(i, 1514), host: false }), manyRules),
];
const MIXES = ONLY === undefined ? ALL_MIXES : ALL_MIXES.filter((m) => m.name.includes(ONLY));

// ------------------------------------------------------------------ loops (kept separate so each stays monomorphic)

/**
 * `now` is constant within a call (a tagged parameter), as in a host loop that reads the clock once
 * per batch of frames; the caller advances it between chunks.
 */
function runFilter(f: PacketFilter, frames: Uint8Array[], fromHost: Uint8Array, n: number, now: number, times: Float64Array, t0Index: number): number {
  let acc = 0;
  let b = t0Index;
  for (let start = 0; start < n; start += BATCH) {
    const t0 = performance.now();
    const end = Math.min(n, start + BATCH);
    for (let i = start; i < end; i++) {
      const k = i & (RING - 1);
      acc += fromHost[k] === 1 ? f.fromHost(frames[k]!, now) : f.fromVm(frames[k]!, now);
    }
    times[b++] = ((performance.now() - t0) * 1e6) / (end - start);
  }
  return acc;
}

const CHUNK = 1 << 20;

/** Runs `n` decisions in chunks, advancing time by 1 ms per chunk. */
function runChunks(f: PacketFilter, mix: Mix, n: number, times: Float64Array): void {
  let done = 0;
  let chunk = 0;
  while (done < n) {
    const m = Math.min(CHUNK, n - done);
    runFilter(f, mix.frames, mix.fromHost, m, NOW0 + chunk, times, done / BATCH);
    done += m;
    chunk++;
  }
}

/** Baseline: the same loop, calling a function that only reads the EtherType. */
function readType(frame: Uint8Array): number {
  return ((frame[12]! << 8) | frame[13]!) === 0x0800 ? 0 : 1;
}
function runBaseline(frames: Uint8Array[], fromHost: Uint8Array, n: number, times: Float64Array): number {
  let acc = 0;
  let b = 0;
  for (let start = 0; start < n; start += BATCH) {
    const t0 = performance.now();
    const end = Math.min(n, start + BATCH);
    for (let i = start; i < end; i++) {
      const k = i & (RING - 1);
      acc += fromHost[k] === 1 ? readType(frames[k]!) : readType(frames[k]!) + 0;
    }
    times[b++] = ((performance.now() - t0) * 1e6) / (end - start);
  }
  return acc;
}

// ------------------------------------------------------------------ measurement

let gcCount = 0;
const gcKinds: Record<string, number> = {};
const GC_KIND: Record<number, string> = { 1: 'minor', 2: 'major', 4: 'incremental', 8: 'weakcb' };
const obs = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcCount++;
    const kind = GC_KIND[(e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0] ?? 'other';
    gcKinds[kind] = (gcKinds[kind] ?? 0) + 1;
  }
});
obs.observe({ entryTypes: ['gc'] });
const flush = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

function stats(times: Float64Array, count: number): { median: number; p99: number } {
  const s = Array.from(times.subarray(0, count)).sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, p99: s[Math.min(s.length - 1, Math.floor(s.length * 0.99))]! };
}

interface ProfileNode {
  callFrame: { functionName: string; url: string };
  selfSize: number;
  children: ProfileNode[];
}

/**
 * Bytes allocated while running `n` decisions, from V8's sampling heap profiler (one sample per
 * 64 bytes on average): total, and the part whose allocating frame is the filter's own code.
 */
async function sampledAllocation(run: () => void): Promise<{ total: number; filter: number }> {
  const session = new Session();
  session.connect();
  await session.post('HeapProfiler.startSampling', {
    samplingInterval: 64,
    // Count objects that die young too (by default only survivors are reported).
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  } as never);
  run();
  const { profile } = (await session.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: ProfileNode } };
  session.disconnect();
  let total = 0;
  let filter = 0;
  const walk = (node: ProfileNode, inBench: boolean): void => {
    const url = node.callFrame.url;
    const here = inBench || url.includes('/bench/netfilter.ts');
    if (here) {
      total += node.selfSize;
      if (url.includes('/packages/netfilter/src/') && !url.includes('/testing/')) filter += node.selfSize;
    }
    for (const c of node.children) walk(c, here);
  };
  walk(profile.head, false);
  return { total, filter };
}

interface Row {
  name: string;
  mfps: number;
  median: number;
  p99: number;
  baseMedian: number;
  gcs: number;
  allocFilter: number;
  allocTotal: number;
  verdicts: string;
}

async function measure(mix: Mix): Promise<Row> {
  const f = mix.filter();
  const batches = Math.ceil(FRAMES / BATCH);
  const times = new Float64Array(batches);
  const baseTimes = new Float64Array(batches);
  // Warm-up (JIT) for both loops, through the same code paths as the measured runs.
  runChunks(f, mix, 2_000_000, times);
  runBaseline(mix.frames, mix.fromHost, 2_000_000, baseTimes);
  const before = f.stats();

  runBaseline(mix.frames, mix.fromHost, FRAMES, baseTimes);

  gc();
  await flush();
  const gcBefore = gcCount;
  for (const k of Object.keys(gcKinds)) delete gcKinds[k];
  const t0 = performance.now();
  runChunks(f, mix, FRAMES, times);
  const elapsed = performance.now() - t0;
  await flush();
  const gcs = gcCount - gcBefore;
  if (gcs > 0 && process.env.NETFILTER_BENCH_VERBOSE) console.log(`  ${mix.name}: GCs ${JSON.stringify(gcKinds)}`);

  const after = f.stats();
  const diff: Record<string, number> = {};
  for (const dir of ['fromVm', 'fromHost'] as const) {
    for (const [k, v] of Object.entries(after[dir])) {
      const d = v - before[dir][k as keyof typeof before.fromVm];
      if (d > 0) diff[k] = (diff[k] ?? 0) + d;
    }
  }
  const verdicts = Object.entries(diff)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 4)
    .map(([k, v]) => `${k} ${Math.round((100 * v) / FRAMES)}%`)
    .join(', ');
  if (after.fromVm.internal_error + after.fromHost.internal_error > 0) throw new Error('internal_error during the benchmark');

  const s = stats(times, batches);
  const bs = stats(baseTimes, batches);
  const ALLOC_N = 2_000_000;
  const scratch = new Float64Array(Math.ceil(ALLOC_N / BATCH));
  const alloc = await sampledAllocation(() => runChunks(f, mix, ALLOC_N, scratch));
  return {
    name: mix.name,
    mfps: FRAMES / elapsed / 1000,
    median: s.median,
    p99: s.p99,
    baseMedian: bs.median,
    gcs,
    allocFilter: alloc.filter / ALLOC_N,
    allocTotal: alloc.total / ALLOC_N,
    verdicts,
  };
}

async function leaseChangeCost(): Promise<string> {
  // ACKs that renew the lease: each builds a Lease object and a LeaseEvent (by design; once per lease period in real life).
  const f = leased();
  f.onLeaseChange(() => {});
  const req = vmDhcp({ type: DHCP.REQUEST, xid: 0x7000, src: VM_IP, dst: GW, ciaddr: VM_IP, options: [opt.type(DHCP.REQUEST)] });
  const ack = hostDhcp({ type: DHCP.ACK, xid: 0x7000 });
  const n = 200_000;
  f.fromVm(req, NOW0);
  for (let i = 0; i < 20_000; i++) f.fromHost(ack, NOW0 + 1);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) f.fromHost(ack, NOW0 + 1);
  const el = performance.now() - t0;
  const alloc = await sampledAllocationOf(() => {
    for (let i = 0; i < n; i++) f.fromHost(ack, NOW0 + 1);
  });
  if (f.stats().snoop.renewed < 2 * n) throw new Error('renewals not counted');
  return `lease-changing ACK (renewal + one listener): ${((el * 1e6) / n).toFixed(0)} ns/frame, ~${(alloc / n).toFixed(0)} B allocated per ACK (new Lease + LeaseEvent, by design)`;
}

async function sampledAllocationOf(run: () => void): Promise<number> {
  const session = new Session();
  session.connect();
  await session.post('HeapProfiler.startSampling', {
    samplingInterval: 64,
    // Count objects that die young too (by default only survivors are reported).
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  } as never);
  run();
  const { profile } = (await session.post('HeapProfiler.stopSampling')) as unknown as { profile: { head: ProfileNode } };
  session.disconnect();
  let total = 0;
  const walk = (node: ProfileNode): void => {
    if (node.callFrame.url.includes('/packages/netfilter/src/')) total += node.selfSize;
    for (const c of node.children) walk(c);
  };
  walk(profile.head);
  return total;
}

async function main(): Promise<void> {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  console.log(`@fleet/netfilter microbenchmark — Node ${process.version}, ${os.platform()} ${os.arch()}, ${os.cpus().length} cores (${cpu})`);
  console.log(`${FRAMES.toLocaleString('en-US')} decisions per mix, one core, batches of ${BATCH}; baseline = same loop reading only the EtherType`);
  console.log(`filter: ${IMPL ?? '@fleet/netfilter (this checkout)'}; options beyond the policy: ${JSON.stringify(PRODUCTION_OPTIONS)}\n`);
  const rows: Row[] = [];
  for (const mix of MIXES) rows.push(await measure(mix));
  const w = Math.max(...rows.map((r) => r.name.length));
  console.log(`${'mix'.padEnd(w)}  Mdec/s  ns/frame median    p99  baseline  over baseline  GCs  B/dec filter  B/dec loop  verdicts`);
  for (const r of rows) {
    console.log(
      `${r.name.padEnd(w)}  ${r.mfps.toFixed(2).padStart(6)}  ${r.median.toFixed(1).padStart(15)}  ${r.p99.toFixed(1).padStart(5)}  ${r.baseMedian.toFixed(1).padStart(8)}  ${(r.median - r.baseMedian).toFixed(1).padStart(13)}  ${String(r.gcs).padStart(3)}  ${r.allocFilter.toFixed(3).padStart(12)}  ${r.allocTotal.toFixed(3).padStart(10)}  ${r.verdicts}`,
    );
  }
  console.log('B/dec filter: bytes allocated per decision by the filter\'s code; B/dec loop: by everything under the benchmark loop (sampling heap profiler, 2M decisions)');
  console.log(`\n${await leaseChangeCost()}`);
  const minRate = Math.min(...rows.map((r) => r.mfps));
  console.log(`\nslowest mix: ${minRate.toFixed(2)} M decisions/s (target >= 4); GCs during measured runs: ${rows.reduce((s, r) => s + r.gcs, 0)}`);
  if (process.env.NETFILTER_BENCH_JSON) console.log(`JSON ${JSON.stringify(rows)}`);
  obs.disconnect();
}

await main();
