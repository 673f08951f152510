/**
 * Frame pump benchmark for @fleet/native-vz (Linux): frames/s and Gbit/s for 1514-byte Ethernet
 * frames moved through AF_UNIX/SOCK_DGRAM socketpairs by FramePort (recvmmsg/sendmmsg, libuv
 * readiness), the way a VM host process moves a VM's frames.
 *
 *   pnpm exec tsx bench/frame-pump.ts            (from the repo root; TAP and veth rows need root)
 *   FRAME_PUMP_SECONDS=5 pnpm exec tsx bench/frame-pump.ts
 *
 * Threads: a worker thread is the "VM" (generator, blocking on writability, never dropping) and
 * the sink; the main thread is the pump being measured. Rows:
 *   baseline   generator -> socketpair -> main thread counts per batch (no JS per frame, no hop)
 *   pump       generator -> socketpair -> JS batch callback -> sendBatch (zero-copy) -> socketpair -> sink
 *   pump/frame same, but onFrames (a Buffer view per frame) + send(frames[])
 *   filter     same as pump, plus @fleet/netfilter fromVm() per frame (VM with a seeded lease, TCP to
 *              a global address: every frame passes), survivors forwarded with sendBatch
 *   pump>TAP   pump path, written to a TAP (root; in a network namespace this run creates, link up,
 *              no address: the kernel receives and discards the frames)
 *   filter>TAP the same with netfilter in the path (the VM host process's VM -> host direction)
 *   pump > AF_PACKET / filter > AF_PACKET   (VM -> host over the veth uplink, issue 20) the pump path
 *              written with sendmmsg on an AF_PACKET socket bound to the VM end of a veth pair (in
 *              a per-VM namespace this run creates, offloads off, as the worker sets it up); the
 *              frames are counted at the peer end (rx_packets, another namespace), as the veth row
 *   AF_PACKET > filter > socketpair   (host -> VM; "TAP > filter" the same from a TAP) a generator thread sendmmsg()s frames from the
 *              gateway to the VM on an AF_PACKET socket on the peer end; the pump recvmmsg()s them
 *              on the VM end, runs filter.fromHost and forwards to a socketpair; a sink thread
 *              counts them. The generator keeps at most a window of frames in flight (it waits on
 *              the sink's count), so it offers what the pump can take instead of burning a core
 *              on frames the pump's socket queue would drop (drops would be counted: rxQueueDrops).
 *              These two filter rows run the VM host process's own FramePump (apps/worker/src/vm-host/
 *              pump.ts; what the socketpair refuses is dropped and counted there: txDrops). The
 *              note gives frames per sink batch: how often the pump's sends wake the sink ("QEMU").
 *   ..., stream  (issue 20) the same rows with the VM's side on an AF_UNIX SOCK_STREAM socketpair in
 *              QEMU's -netdev stream framing (4-byte big-endian length, then the frame): the generator
 *              / sink ("QEMU") and the pump move many frames per read/sendmsg. FRAME_PUMP_FRAMING=
 *              dgram|stream|vnet (or a comma list) runs only those kinds; by default all run, for a
 *              same-run comparison.
 *   ..., vnet    (issue 20, the offload path, --vm-framing vnet) plain 1514-byte frames behind a
 *              10-byte virtio-net header (gso_type NONE, flags 0) through the VM host process's own
 *              FramePump with { vnetHdr: true }: QEMU's TAP (IFF_VNET_HDR, up) alone in a namespace
 *              this run creates, the pump's AF_PACKET socket with PACKET_VNET_HDR bound to it, the
 *              uplink TAP (IFF_VNET_HDR, CSUM|TSO4|TSO6|TSO_ECN, up) in a second namespace.
 *              VM -> host: a generator thread ("QEMU") write()s header + frame into the VM's TAP;
 *              counted at the uplink TAP's rx_packets; at most a window of frames in flight on the
 *              frames the pump's uplink port accepted. Host -> VM: a generator sendmmsg()s on a
 *              PACKET_VNET_HDR socket bound to the uplink TAP; a sink thread read()s the VM's TAP.
 *   veth       kernel-only baseline: a C program (cc at run time) sendmmsg()s the same frame on an
 *              AF_PACKET socket into one end of a veth pair in a namespace this run creates; frames
 *              counted at the peer (rx_packets). No JS, no socketpair hop, one thread.
 * Then an unloaded latency figure: one frame at a time through socketpair -> pump + netfilter ->
 * socketpair, all on the main thread (p50/p99 one-way, both hops included).
 * Host -> VM rows also note each thread's CPU per frame over the window (/proc/thread-self/schedstat:
 * generator, pump, sink; the rest of the process; the machine's idle share), and under the table
 * the ceilings that CPU allows: the generator alone (one thread: 1 s / its ns per frame), a pump that
 * cost nothing, and all the row's threads on the machine's CPUs (issue 20 tenth pass).
 * TAP ports use io_uring where the addon has it (FLEET_TAP_IO_URING=0: the read()/write() loops).
 * The pump applies backpressure (pause reading, wait for writability, resend the rest of the batch),
 * so nothing is dropped; frames are counted where they end up. Addresses in frames are bytes only.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { Verdict, createFilter } from '@fleet/netfilter';
import {
  FramePort,
  type FrameBatch,
  type FramePortStats,
  TunOffload,
  VNET_HDR_LEN,
  closeFd,
  getBufferSizes,
  linkOffloads,
  openPacketSocket,
  openTap,
  openVnetTap,
  socketpairDgram,
  socketpairStream,
} from '../packages/native-vz/src/index.ts';
import { TCP_FLAGS, tcpFrame } from '../packages/netfilter/src/testing/frames.ts';
import { GW, VM_IP, baseConfig, hostAddr, vmAddr } from '../packages/netfilter/src/testing/scenario.ts';
import { FramePump, PLAIN_FRAME_BATCH, RX_RING_FRAMES, UPLINK_SEND_QUEUE_BYTES } from '../apps/worker/src/vm-host/pump.ts';

const SECONDS = Number(process.env.FRAME_PUMP_SECONDS ?? 3);
const WARMUP_MS = 500;
const FRAME_LEN = 1514;
const BATCH = 64;
const addonPath = createRequire(import.meta.url).resolve('../packages/native-vz/build/Release/native_vz.node');

// ------------------------------------------------------------------ the frame

const FRAME = tcpFrame(vmAddr(VM_IP, '140.82.112.3'), {
  sport: 40000,
  dport: 443,
  flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH,
  payload: new Uint8Array(FRAME_LEN - 54),
});
if (FRAME.length !== FRAME_LEN) throw new Error(`frame is ${FRAME.length} bytes`);
/** Host -> VM: the reply direction of FRAME (gateway MAC -> VM MAC), which filter.fromHost passes. */
const HOST_FRAME = tcpFrame(hostAddr('140.82.112.3', VM_IP), {
  sport: 443,
  dport: 40000,
  flags: TCP_FLAGS.ACK | TCP_FLAGS.PSH,
  payload: new Uint8Array(FRAME_LEN - 54),
});
if (HOST_FRAME.length !== FRAME_LEN) throw new Error(`host frame is ${HOST_FRAME.length} bytes`);

// ------------------------------------------------------------------ worker: generator + sink

const WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const native = require(workerData.addon);
const { genFd, sinkFd, frame, batch } = workerData;
const len = frame.length;
const buf = Buffer.alloc(len * batch);
const offs = new Uint32Array(batch), lens = new Uint32Array(batch);
for (let i = 0; i < batch; i++) { Buffer.from(frame).copy(buf, i * len); offs[i] = i * len; lens[i] = len; }
const gen = new native.FramePort(genFd, new ArrayBuffer(2048), new Uint32Array(1), new Uint32Array(1), 64, 1, false, 1); // 2 KiB: a stream port needs room for one prefixed frame
let sinkFrames = 0, sinkBytes = 0, generated = 0, running = true;
let sink = null;
if (sinkFd >= 0) {
  const sinkLens = new Uint32Array(batch);
  sink = new native.FramePort(sinkFd, new ArrayBuffer(2048 * batch), new Uint32Array(batch), sinkLens, 2048, batch, false, 16);
  sink.start((n) => { sinkFrames += n; for (let i = 0; i < n; i++) sinkBytes += sinkLens[i]; });
}
function pump() {
  for (let k = 0; running && k < 16; k++) {
    const n = gen.sendBatch(buf, offs, lens, batch);
    generated += n;
    if (n < batch) { gen.waitWritable(pump); return; } // the rest of this batch is simply regenerated
  }
  if (running) setImmediate(pump);
}
parentPort.on('message', (m) => {
  if (m === 'start') pump();
  else if (m === 'snap') parentPort.postMessage({ sinkFrames, sinkBytes, generated });
  else if (m === 'stop') {
    running = false;
    gen.close();
    if (sink) sink.close();
    parentPort.postMessage({ sinkFrames, sinkBytes, generated, stopped: true });
    parentPort.close();
  }
});
`;

interface Snap {
  sinkFrames: number;
  sinkBytes: number;
  generated: number;
}

class VmThread {
  private readonly worker: Worker;
  private pending: Array<(s: Snap) => void> = [];
  constructor(genFd: number, sinkFd: number) {
    this.worker = new Worker(WORKER, { eval: true, workerData: { addon: addonPath, genFd, sinkFd, frame: FRAME, batch: BATCH } });
    this.worker.on('message', (s: Snap) => this.pending.shift()?.(s));
    this.worker.on('error', (e) => {
      console.error('worker failed', e);
      process.exit(1);
    });
  }
  start(): void {
    this.worker.postMessage('start');
  }
  snap(): Promise<Snap> {
    return new Promise((r) => {
      this.pending.push(r);
      this.worker.postMessage('snap');
    });
  }
  async stop(): Promise<Snap> {
    // Listen for 'exit' before asking: Node drains the worker's last messages and emits 'exit' in
    // one go, before an await continuation could attach the listener.
    const exited = new Promise((r) => this.worker.once('exit', r));
    const s = await new Promise<Snap>((r) => {
      this.pending.push(r);
      this.worker.postMessage('stop');
    });
    await exited;
    return s;
  }
}

// ------------------------------------------------------------------ pumps (main thread)

type Out = { sendBatch(buf: Uint8Array, o: Uint32Array, l: Uint32Array, n: number): number; writable(): Promise<void> };

/** Forwards [0, count) of (offs, lens) to `out`; on partial acceptance pauses `input` until all is sent. */
function forward(input: FramePort, resume: () => void, out: Out, buf: Uint8Array, offs: Uint32Array, lens: Uint32Array, count: number): void {
  const n = out.sendBatch(buf, offs, lens, count);
  if (n === count) return;
  input.pause(); // the receive area stays untouched until we read again
  let done = n;
  const retry = (): void => {
    done += out.sendBatch(buf, offs.subarray(done), lens.subarray(done), count - done);
    if (done < count) void out.writable().then(retry);
    else resume();
  };
  void out.writable().then(retry);
}

function startPlainPump(input: FramePort, out: FramePort): void {
  const onBatch = (b: FrameBatch): void => forward(input, () => input.onBatch(onBatch), out, b.buffer, b.offsets, b.lengths, b.count);
  input.onBatch(onBatch);
}

function startPerFramePump(input: FramePort, out: FramePort): void {
  const onFrames = (frames: Buffer[]): void => {
    const n = out.send(frames);
    if (n === frames.length) return;
    input.pause();
    let done = n;
    const retry = (): void => {
      done += out.send(frames.slice(done));
      if (done < frames.length) void out.writable().then(retry);
      else input.onFrames(onFrames);
    };
    void out.writable().then(retry);
  };
  input.onFrames(onFrames);
}

let filterDrops = 0;
function startFilterPump(input: FramePort, out: FramePort, dir: 'vm' | 'host' = 'vm'): void {
  const filter = createFilter(baseConfig({ lease: { ip: VM_IP, expiresAt: Date.now() + 1e9, dns: [GW] } }));
  const judge = dir === 'vm' ? filter.fromVm.bind(filter) : filter.fromHost.bind(filter);
  const passOffs = new Uint32Array(input.batchSize);
  const passLens = new Uint32Array(input.batchSize);
  const onBatch = (b: FrameBatch): void => {
    const now = Date.now();
    let k = 0;
    for (let i = 0; i < b.count; i++) {
      const off = b.offsets[i]!;
      const len = b.lengths[i]!;
      if (judge(b.buffer.subarray(off, off + len), now) === Verdict.PASS) {
        passOffs[k] = off;
        passLens[k] = len;
        k++;
      } else filterDrops++;
    }
    if (k > 0) forward(input, () => input.onBatch(onBatch), out, b.buffer, passOffs, passLens, k);
  };
  input.onBatch(onBatch);
}

// ------------------------------------------------------------------ runs

interface Row {
  name: string;
  frames: number;
  seconds: number;
  pumpBatch: number;
  /** Main-thread (pump) event-loop utilisation over the measured window, 0..1. */
  elu: number;
  note: string;
}
const rows: Row[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let elu0 = performance.eventLoopUtilization();
function markStart(): void {
  elu0 = performance.eventLoopUtilization();
}
function record(name: string, frames: number, ns: bigint, pumpBatch: number, elu: number, note = ''): void {
  rows.push({ name, frames, seconds: Number(ns) / 1e9, pumpBatch, elu, note });
}

async function runBaseline(): Promise<void> {
  const [g, m] = socketpairDgram();
  const vm = new VmThread(g, -1);
  const port = new FramePort(m, { batch: BATCH, frameSize: 2048 });
  let frames = 0;
  port.onBatch((b) => {
    frames += b.count;
  });
  vm.start();
  await sleep(WARMUP_MS);
  const f0 = frames;
  markStart();
  const t0 = process.hrtime.bigint();
  await sleep(SECONDS * 1000);
  const f1 = frames;
  const t1 = process.hrtime.bigint();
  const elu = performance.eventLoopUtilization(elu0).utilization;
  await vm.stop();
  const s = port.stats();
  port.close();
  record('baseline: socketpair -> count per batch (no JS per frame)', f1 - f0, t1 - t0, s.rxFrames / s.rxBatches, elu);
}

async function runPump(name: string, start: (input: FramePort, out: FramePort) => void): Promise<void> {
  const [g, m1] = socketpairDgram();
  const [m2, sk] = socketpairDgram();
  const vm = new VmThread(g, sk);
  const input = new FramePort(m1, { batch: BATCH, frameSize: 2048 });
  const out = new FramePort(m2, { batch: 1, frameSize: 64 });
  start(input, out);
  vm.start();
  await sleep(WARMUP_MS);
  const s0 = await vm.snap();
  markStart();
  const t0 = process.hrtime.bigint();
  await sleep(SECONDS * 1000);
  const s1 = await vm.snap();
  const t1 = process.hrtime.bigint();
  const elu = performance.eventLoopUtilization(elu0).utilization;
  await vm.stop();
  const si = input.stats();
  const so = out.stats();
  input.close();
  out.close();
  record(name, s1.sinkFrames - s0.sinkFrames, t1 - t0, si.rxFrames / si.rxBatches, elu, `pump out: eagain ${so.eagain}, enobufs ${so.enobufs}`);
}

/** The VM's side of the pump: one datagram per frame, or QEMU's -netdev stream framing (issue 20). */
type Framing = 'dgram' | 'stream';
const vmPair = (framing: Framing): [number, number] => (framing === 'stream' ? socketpairStream() : socketpairDgram());

/** A TAP in a network namespace this run creates (link up, no address: the kernel receives and discards). */
async function runTap(name: string, start: (input: FramePort, out: FramePort) => void, framing: Framing = 'dgram'): Promise<void> {
  const ns = `fvz-bench-${process.pid}`;
  const dev = `fvzb${process.pid % 100000}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const tap = openTap(dev);
    execFileSync('ip', ['link', 'set', dev, 'netns', ns]);
    execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
    execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', dev, 'up']);
    const [g, m1] = vmPair(framing);
    const vm = new VmThread(g, -1);
    const input = new FramePort(m1, { batch: BATCH, frameSize: 2048 });
    const out = new FramePort(tap.fd, { batch: 1, frameSize: 64 });
    start(input, out);
    vm.start();
    await sleep(WARMUP_MS);
    const f0 = out.stats().txFrames;
    markStart();
    const t0 = process.hrtime.bigint();
    await sleep(SECONDS * 1000);
    const f1 = out.stats().txFrames;
    const t1 = process.hrtime.bigint();
    const elu = performance.eventLoopUtilization(elu0).utilization;
    await vm.stop();
    const si = input.stats();
    const so = out.stats();
    const rx = execFileSync('ip', ['netns', 'exec', ns, 'cat', `/sys/class/net/${dev}/statistics/rx_packets`], { encoding: 'utf8' }).trim();
    input.close();
    out.close();
    record(name, f1 - f0, t1 - t0, si.rxFrames / si.rxBatches, elu, `TAP rx_packets ${rx}, tx errors ${so.txErrors}${framing === 'stream' ? `; stream in: ${si.rxWakeups} wakeups, truncated ${si.rxTruncated}, bad length ${si.rxBadLength}` : ''}`);
  } finally {
    spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  }
}

// ------------------------------------------------------------------ the veth uplink (issue 20)

/**
 * Two namespaces like the worker's: "host" holds the bridge-side end (here the peer that counts or
 * generates), "vm" holds only the VM end, on which the pump's AF_PACKET socket is bound. Offloads
 * off on both ends (NatNetwork does the same). Returns the namespaces and a cleanup.
 */
function vethUplink(): { hostNs: string; vmNs: string; cleanup: () => void } {
  const hostNs = `fvz-uph-${process.pid}`;
  const vmNs = `fvz-upv-${process.pid}`;
  const cleanup = (): void => {
    for (const ns of [vmNs, hostNs]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  };
  try {
    for (const ns of [hostNs, vmNs]) {
      execFileSync('ip', ['netns', 'add', ns]);
      execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
      execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1']);
    }
    execFileSync('ip', ['-n', hostNs, 'link', 'add', 'upA', 'type', 'veth', 'peer', 'name', 'upB', 'netns', vmNs]);
    execFileSync('ip', ['-n', hostNs, 'link', 'set', 'upA', 'up']);
    execFileSync('ip', ['-n', vmNs, 'link', 'set', 'upB', 'up']);
    linkOffloads('upA', { netns: hostNs, disable: true });
    linkOffloads('upB', { netns: vmNs, disable: true });
  } catch (e) {
    cleanup();
    throw e;
  }
  return { hostNs, vmNs, cleanup };
}
const QDISC_BYPASS = process.env.FRAME_PUMP_QDISC_BYPASS === '1';
/**
 * The veth uplink's send queue in the rows that have one (AF_PACKET out, and the production
 * pump's uplink): the production pump's (`UPLINK_SEND_QUEUE_BYTES` in apps/worker/src/vm-host/
 * pump.ts, a sender thread) unless FRAME_PUMP_SEND_QUEUE says otherwise (0: send on the pump's
 * thread, as before issue 20's sixth pass). TAP rows send on the pump's thread, as production does.
 */
const SEND_QUEUE = process.env.FRAME_PUMP_SEND_QUEUE !== undefined ? Number(process.env.FRAME_PUMP_SEND_QUEUE) : UPLINK_SEND_QUEUE_BYTES;
/** The receive ring of the production pump's AF_PACKET uplink (FRAME_PUMP_RX_RING=0: recvmmsg, as before the sixth pass). */
const RX_RING = process.env.FRAME_PUMP_RX_RING !== undefined ? Number(process.env.FRAME_PUMP_RX_RING) : RX_RING_FRAMES;
/** Host -> VM: frames the generator keeps in flight (FRAME_PUMP_WINDOW; default 512, below what the pump's socketpair send buffer holds). */
const WINDOW = Number(process.env.FRAME_PUMP_WINDOW ?? 512);
const PACKET_BUF = 4 << 20;
const peerStat = (ns: string, dev: string, what: string): number =>
  Number(execFileSync('ip', ['netns', 'exec', ns, 'cat', `/sys/class/net/${dev}/statistics/${what}`], { encoding: 'utf8' }).trim());

/** VM -> host: socketpair -> pump (+ filter) -> AF_PACKET sendmmsg -> veth -> peer (counted at rx_packets). */
async function runPacketOut(name: string, start: (input: FramePort, out: FramePort) => void, framing: Framing = 'dgram'): Promise<void> {
  const up = vethUplink();
  try {
    const sock = openPacketSocket('upB', { netns: up.vmNs, rcvbuf: PACKET_BUF, sndbuf: PACKET_BUF, qdiscBypass: QDISC_BYPASS });
    const [g, m1] = vmPair(framing);
    const vm = new VmThread(g, -1);
    const input = new FramePort(m1, { batch: BATCH, frameSize: 2048 });
    const out = new FramePort(sock.fd, { batch: 1, frameSize: 2048, sendQueueBytes: SEND_QUEUE });
    out.onBatch(() => {}); // frames towards the VM (none here) are read and ignored
    start(input, out);
    vm.start();
    await sleep(WARMUP_MS);
    const t0 = process.hrtime.bigint();
    const f0 = peerStat(up.hostNs, 'upA', 'rx_packets');
    markStart();
    await sleep(SECONDS * 1000);
    const t1 = process.hrtime.bigint();
    const f1 = peerStat(up.hostNs, 'upA', 'rx_packets');
    const elu = performance.eventLoopUtilization(elu0).utilization;
    await vm.stop();
    const si = input.stats();
    const so = out.stats();
    input.close();
    out.close();
    const dropped = peerStat(up.hostNs, 'upA', 'rx_dropped');
    record(name, f1 - f0, t1 - t0, si.rxFrames / si.rxBatches, elu, `counted at the peer (rx_packets); peer rx_dropped ${dropped}; AF_PACKET tx: eagain ${so.eagain}, enobufs ${so.enobufs}, errors ${so.txErrors}, sender thread ${out.sendThread ? `yes (queue ${SEND_QUEUE} B, refused ${so.txQueueFull}, drops ${so.txDrops})` : 'no'}`);
  } finally {
    up.cleanup();
  }
}

// Host -> VM generator and sink, each on its own thread (the pump is the main thread). The sink
// publishes its count in shared memory; the generator keeps at most WINDOW frames in flight.
const HV_WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const native = require(workerData.addon);
const { role, fd, frame, batch, shared, window } = workerData;
const count = new Int32Array(shared); // [0] frames sunk, [1] window resets (stalls), [2] sink batches (callbacks)
const len = frame.length;
let running = true, generated = 0, base = 0;
let port;
if (role === 'sink') {
  // + 4: a TAP's receive area needs a spare byte past its slots (the offload path's sink reads a TAP).
  port = new native.FramePort(fd, new ArrayBuffer(2048 * batch + 4), new Uint32Array(batch), new Uint32Array(batch), 2048, batch, false, 16);
  port.start((n) => { Atomics.add(count, 0, n); Atomics.notify(count, 0); count[2]++; });
} else {
  const buf = Buffer.alloc(len * batch);
  const offs = new Uint32Array(batch), lens = new Uint32Array(batch);
  for (let i = 0; i < batch; i++) { Buffer.from(frame).copy(buf, i * len); offs[i] = i * len; lens[i] = len; }
  port = new native.FramePort(fd, new ArrayBuffer(64 + 4), new Uint32Array(1), new Uint32Array(1), 64, 1, false, 1);
  const pump = () => {
    for (let k = 0; running && k < 16; k++) {
      let sunk = Atomics.load(count, 0);
      if (generated - base - sunk + batch > window) {
        // Wait for the sink to make room; a frame lost on the way would shrink the window for
        // good, so after 50 ms without progress the window starts afresh (counted).
        if (Atomics.wait(count, 0, sunk, 50) === 'timed-out' && Atomics.load(count, 0) === sunk) { base = generated - sunk; Atomics.add(count, 1, 1); }
        break;
      }
      const n = port.sendBatch(buf, offs, lens, batch);
      generated += n;
      if (n < batch) { port.waitWritable(pump); return; }
    }
    if (running) setImmediate(pump);
  };
  parentPort.once('message', () => pump());
}
parentPort.on('message', (m) => {
  // This thread's CPU time (ns on a CPU, /proc/thread-self/schedstat), asked for at each end of the window.
  if (m === 'cpu') parentPort.postMessage({ cpuNs: Number(require('node:fs').readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) });
  if (m === 'stop') { running = false; port.close(); parentPort.postMessage({ generated }); parentPort.close(); }
});
`;

/** Host -> VM: AF_PACKET generator on the peer -> veth -> pump recvmmsg (+ filter.fromHost) -> socketpair -> sink. */
/** The veth uplink for runPacketIn: generator on the peer end, the pump's AF_PACKET socket on the VM end. */
function vethIn(): { genFd: number; vmFd: number; cleanup: () => void } {
  const up = vethUplink();
  try {
    const genSock = openPacketSocket('upA', { netns: up.hostNs, sndbuf: PACKET_BUF, qdiscBypass: QDISC_BYPASS });
    const vmSock = openPacketSocket('upB', { netns: up.vmNs, rcvbuf: PACKET_BUF, sndbuf: PACKET_BUF });
    return { genFd: genSock.fd, vmFd: vmSock.fd, cleanup: up.cleanup };
  } catch (e) {
    up.cleanup();
    throw e;
  }
}

/**
 * The TAP uplink for the same host -> VM row: the generator sendmmsg()s on an AF_PACKET socket
 * bound to the TAP inside a namespace (the kernel transmits on the TAP = queues to its fd); the
 * pump reads the TAP fd (read() loop).
 */
function tapIn(): { genFd: number; vmFd: number; cleanup: () => void } {
  const ns = `fvz-tapin-${process.pid}`;
  const dev = `fvzi${process.pid % 100000}`;
  execFileSync('ip', ['netns', 'add', ns]);
  const cleanup = (): void => void spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  try {
    const tap = openTap(dev);
    execFileSync('ip', ['link', 'set', dev, 'netns', ns]);
    execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
    execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', dev, 'txqueuelen', '10000', 'up']);
    const genSock = openPacketSocket(dev, { netns: ns, sndbuf: PACKET_BUF, qdiscBypass: QDISC_BYPASS });
    return { genFd: genSock.fd, vmFd: tap.fd, cleanup };
  } catch (e) {
    cleanup();
    throw e;
  }
}

/** A host -> VM generator or sink thread (HV_WORKER) counting into `shared`. */
const hvWorker = (role: 'gen' | 'sink', fd: number, frame: Uint8Array, shared: SharedArrayBuffer): Worker =>
  new Worker(HV_WORKER, { eval: true, workerData: { addon: addonPath, role, fd, frame, batch: BATCH, shared, window: WINDOW } });

/** A worker thread's CPU time so far, in ns (its reply to 'cpu'). */
const workerCpuNs = (w: Worker): Promise<number> =>
  new Promise((resolve) => {
    const on = (m: { cpuNs?: number }): void => {
      if (typeof m.cpuNs !== 'number') return;
      w.off('message', on);
      resolve(m.cpuNs);
    };
    w.on('message', on);
    w.postMessage('cpu');
  });
/** The calling thread's CPU time so far, in ns. */
const threadCpuNs = (): number => Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
/** The machine's idle time so far (all CPUs, in USER_HZ ticks) and its total, from /proc/stat. */
const machineTicks = (): { idle: number; total: number } => {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { idle: f[3]! + f[4]!, total: f.reduce((a, b) => a + b, 0) };
};

/**
 * CPU per frame of each thread of a host -> VM row over its window: the generator (the kernel's
 * side: the kernel row's own send into the veth or TAP, plus the delivery into the pump's socket),
 * the pump (main thread), the sink ("QEMU"), the rest of this process, and the machine's idle share.
 */
type RowCpu = { genNs: number; pumpNs: number; sinkNs: number; otherNs: number; idle: number };

const stopWorker = (w: Worker): Promise<unknown> =>
  new Promise((r) => {
    w.once('exit', r);
    w.postMessage('stop');
  });

/**
 * Starts the generator, counts what the sink received (counts[0]) and its wake-ups (counts[2])
 * over SECONDS after the warm-up, then stops the generator and, once the last frames are in, the sink.
 */
async function measureSink(gen: Worker, sink: Worker, counts: Int32Array): Promise<{ frames: number; sinkBatches: number; ns: bigint; elu: number; cpu: RowCpu }> {
  gen.postMessage('go');
  await sleep(WARMUP_MS);
  const cpu0 = { gen: await workerCpuNs(gen), sink: await workerCpuNs(sink), pump: threadCpuNs(), proc: process.cpuUsage(), machine: machineTicks() };
  const f0 = Atomics.load(counts, 0);
  const w0 = Atomics.load(counts, 2);
  markStart();
  const t0 = process.hrtime.bigint();
  await sleep(SECONDS * 1000);
  const f1 = Atomics.load(counts, 0);
  const w1 = Atomics.load(counts, 2);
  const t1 = process.hrtime.bigint();
  const elu = performance.eventLoopUtilization(elu0).utilization;
  const cpu1 = { gen: await workerCpuNs(gen), sink: await workerCpuNs(sink), pump: threadCpuNs(), proc: process.cpuUsage(cpu0.proc), machine: machineTicks() };
  await stopWorker(gen);
  await sleep(100); // let the last frames reach the sink
  await stopWorker(sink);
  const frames = Math.max(1, f1 - f0);
  const genNs = (cpu1.gen - cpu0.gen) / frames;
  const sinkNs = (cpu1.sink - cpu0.sink) / frames;
  const pumpNs = (cpu1.pump - cpu0.pump) / frames;
  // process.cpuUsage() counts every thread of this process (µs): the rest is V8's and libuv's helpers.
  const otherNs = Math.max(0, ((cpu1.proc.user + cpu1.proc.system) * 1000) / frames - genNs - sinkNs - pumpNs);
  const idle = (cpu1.machine.idle - cpu0.machine.idle) / Math.max(1, cpu1.machine.total - cpu0.machine.total);
  return { frames: f1 - f0, sinkBatches: w1 - w0, ns: t1 - t0, elu, cpu: { genNs, pumpNs, sinkNs, otherNs, idle } };
}

/** The CPU note of a host -> VM row (see RowCpu). */
const cpuNote = (c: RowCpu): string =>
  `CPU ns/frame: generator ${Math.round(c.genNs)}, pump ${Math.round(c.pumpNs)}, sink ${Math.round(c.sinkNs)}, other threads ${Math.round(c.otherNs)}; machine idle ${Math.round(c.idle * 100)}%`;

/** Rows whose CPU per frame was measured, for the ceiling printed under the table. */
const rowCpu = new Map<string, RowCpu>();

/** runPacketIn's `start` for the production path: the VM host process's FramePump (pump.ts) with netfilter, owning both fds. */
const PRODUCTION = 'FramePump' as const;
/** FRAME_PUMP_PUMP_BATCH=<n>: the plain-frame rows' FramePump batch instead of its default (pump.ts PLAIN_FRAME_BATCH), to compare; the harness's own ports keep BATCH, the vnet rows their 32. */
const PUMP_BATCH = process.env.FRAME_PUMP_PUMP_BATCH !== undefined ? Number(process.env.FRAME_PUMP_PUMP_BATCH) : undefined;
if (PUMP_BATCH !== undefined && (!Number.isInteger(PUMP_BATCH) || PUMP_BATCH < 1 || PUMP_BATCH > 1024)) throw new Error('FRAME_PUMP_PUMP_BATCH must be a whole number from 1 to 1024');

async function runPacketIn(
  name: string,
  start: ((input: FramePort, out: FramePort) => void) | typeof PRODUCTION,
  link: () => { genFd: number; vmFd: number; cleanup: () => void } = vethIn,
  framing: Framing = 'dgram',
): Promise<void> {
  const up = link();
  try {
    const genSock = { fd: up.genFd };
    const vmSock = { fd: up.vmFd };
    const [m2, sk] = vmPair(framing);
    const shared = new SharedArrayBuffer(12);
    const counts = new Int32Array(shared);
    const sink = hvWorker('sink', sk, HOST_FRAME, shared);
    const gen = hvWorker('gen', genSock.fd, HOST_FRAME, shared);
    let pump: FramePump | undefined;
    let input: FramePort | undefined;
    let out: FramePort | undefined;
    if (start === PRODUCTION) {
      pump = new FramePump(m2, vmSock.fd, createFilter(baseConfig({ lease: { ip: VM_IP, expiresAt: Date.now() + 1e9, dns: [GW] } })), { rxRingFrames: RX_RING, ...(process.env.FRAME_PUMP_SEND_QUEUE !== undefined ? { sendQueueBytes: SEND_QUEUE } : {}), ...(PUMP_BATCH !== undefined ? { batch: PUMP_BATCH } : {}) });
      pump.start();
    } else {
      input = new FramePort(vmSock.fd, { batch: BATCH, frameSize: 2048 });
      out = new FramePort(m2, { batch: 1, frameSize: 64 });
      start(input, out);
    }
    const m = await measureSink(gen, sink, counts);
    rowCpu.set(name, m.cpu);
    const ps = pump?.stats();
    const si = (ps?.tap ?? input!.stats()) as FramePortStats;
    const so = ps?.vm ?? out!.stats();
    const kind = pump ? (link === tapIn ? 'tap' : 'packet') : input!.kind;
    pump?.close();
    input?.close();
    out?.close();
    // The workers' ports do not own their fds.
    closeFd(genSock.fd);
    closeFd(sk);
    record(
      name,
      m.frames,
      m.ns,
      si.rxFrames / si.rxBatches,
      m.elu,
      `${cpuNote(m.cpu)}; sink thread count, ${(m.frames / Math.max(1, m.sinkBatches)).toFixed(1)} frames per sink batch; ${pump ? `FramePump (filter dropped ${ps!.hostToVm.dropped}), ` : ''}pump rx (${kind}${si.rxRingSlots > 0 ? `, ring ${si.rxRingSlots} slots` : ''}): queue drops ${si.rxQueueDrops}, csum-partial ${si.rxCsumPartial}, truncated ${si.rxTruncated}; window resets ${Atomics.load(counts, 1)}; ${framing} socketpair eagain ${so.eagain}, enobufs ${so.enobufs}, txDrops ${so.txDrops}${framing === 'stream' ? `, partial writes ${so.txPartial}, pending bytes ${so.txPendingBytes}` : ''}`,
    );
  } finally {
    up.cleanup();
  }
}

// ------------------------------------------------------------------ the offload path (issue 20, --vm-framing vnet)

/** virtio_net_hdr for a plain frame: flags 0, gso_type VIRTIO_NET_HDR_GSO_NONE, the rest 0. */
const withVnetHdr = (frame: Uint8Array): Uint8Array => {
  const f = new Uint8Array(VNET_HDR_LEN + frame.length);
  f.set(frame, VNET_HDR_LEN);
  return f;
};
const VNET_FRAME = withVnetHdr(FRAME);
const VNET_HOST_FRAME = withVnetHdr(HOST_FRAME);
const UPLINK_OFFLOADS = TunOffload.CSUM | TunOffload.TSO4 | TunOffload.TSO6 | TunOffload.TSO_ECN;

/**
 * The offload path as the worker and the VM host process set it up: QEMU's TAP `vm0` (IFF_VNET_HDR,
 * up) alone in a namespace of its own (IPv6 off), the pump's AF_PACKET socket with PACKET_VNET_HDR
 * bound to it (4 MiB / 1 MiB, as the QEMU driver opens it), and the uplink TAP `up0` (IFF_VNET_HDR,
 * CSUM|TSO4|TSO6|TSO_ECN, up) in a second namespace (no address: the kernel receives and discards
 * what the pump writes, as in the TAP rows). `vm0` keeps openVnetTap's offloads 0 (QEMU sets them
 * from the guest's features; plain frames need none). Frames never leave the two namespaces.
 */
function vnetLinks(): { vmNs: string; upNs: string; vmTapFd: number; upTapFd: number; sockFd: number; cleanup: () => void } {
  const vmNs = `fvz-vnv-${process.pid}`;
  const upNs = `fvz-vnu-${process.pid}`;
  const fds: number[] = [];
  const cleanup = (): void => {
    for (const fd of fds.splice(0)) closeFd(fd);
    for (const ns of [vmNs, upNs]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  };
  try {
    for (const ns of [vmNs, upNs]) {
      execFileSync('ip', ['netns', 'add', ns]);
      execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    }
    const vmTap = openVnetTap('vm0', { netns: vmNs, up: true });
    fds.push(vmTap.fd);
    const upTap = openVnetTap('up0', { netns: upNs, offloads: UPLINK_OFFLOADS, up: true });
    fds.push(upTap.fd);
    const sock = openPacketSocket('vm0', { netns: vmNs, vnetHdr: true, rcvbuf: PACKET_BUF, sndbuf: 1 << 20 });
    fds.push(sock.fd);
    // The pump owns the socket and the uplink TAP once it is built: only vm0 stays ours to close.
    fds.splice(1);
    return { vmNs, upNs, vmTapFd: vmTap.fd, upTapFd: upTap.fd, sockFd: sock.fd, cleanup };
  } catch (e) {
    cleanup();
    throw e;
  }
}

const vnetPump = (l: { sockFd: number; upTapFd: number }): FramePump =>
  new FramePump(l.sockFd, l.upTapFd, createFilter(baseConfig({ lease: { ip: VM_IP, expiresAt: Date.now() + 1e9, dns: [GW] } })), { vnetHdr: true });

/**
 * VM -> host on the offload path: a generator thread ("QEMU") write()s header + frame into vm0's
 * fd; the VM host process's FramePump ({ vnetHdr: true }) reads them from the PACKET_VNET_HDR
 * socket, runs filter.fromVm on the frame behind the header and writes header + frame to the
 * uplink TAP; counted at up0's rx_packets (as the TAP rows). A TAP write has no backpressure (a
 * frame the packet socket's full queue cannot take is dropped: rxQueueDrops), so the generator
 * keeps at most WINDOW frames in flight: the bench wraps the pump's uplink port's sendBatch to
 * publish the frames it accepted in shared memory (one Atomics.add per batch), on which the
 * generator waits.
 */
async function runVnetOut(name: string): Promise<void> {
  const l = vnetLinks();
  try {
    const shared = new SharedArrayBuffer(12);
    const counts = new Int32Array(shared);
    const pump = vnetPump(l);
    const up = (pump as unknown as { tap: FramePort }).tap;
    // The generator's window counts the frames the uplink port accepted (this path's uplink has
    // no sender thread, so accepted is written).
    const send = up.sendBatch.bind(up);
    up.sendBatch = (buf, o, len, n) => {
      const k = send(buf, o, len, n);
      Atomics.add(counts, 0, k);
      Atomics.notify(counts, 0);
      return k;
    };
    pump.start();
    const gen = hvWorker('gen', l.vmTapFd, VNET_FRAME, shared);
    gen.postMessage('go');
    await sleep(WARMUP_MS);
    const t0 = process.hrtime.bigint();
    const f0 = peerStat(l.upNs, 'up0', 'rx_packets');
    markStart();
    await sleep(SECONDS * 1000);
    const t1 = process.hrtime.bigint();
    const f1 = peerStat(l.upNs, 'up0', 'rx_packets');
    const elu = performance.eventLoopUtilization(elu0).utilization;
    await stopWorker(gen);
    await sleep(100);
    const ps = pump.stats();
    const si = ps.vm;
    const so = ps.tap as FramePortStats;
    const vmRxDropped = peerStat(l.vmNs, 'vm0', 'rx_dropped');
    const upRxDropped = peerStat(l.upNs, 'up0', 'rx_dropped');
    pump.close();
    record(
      name,
      f1 - f0,
      t1 - t0,
      si.rxFrames / si.rxBatches,
      elu,
      `counted at up0 rx_packets; FramePump vnet (filter dropped ${ps.vmToHost.dropped}, super-frames ${ps.vmToHost.superFrames}); pump rx (PACKET_VNET_HDR socket): queue drops ${si.rxQueueDrops}, csum-partial ${si.rxCsumPartial}, truncated ${si.rxTruncated}; vm0 rx_dropped ${vmRxDropped}; window resets ${Atomics.load(counts, 1)}; uplink TAP tx: eagain ${so.eagain}, txDrops ${so.txDrops}, errors ${so.txErrors}; up0 rx_dropped ${upRxDropped}`,
    );
  } finally {
    l.cleanup();
  }
}

/**
 * Host -> VM on the offload path: a generator thread sendmmsg()s header + gateway->VM frame on an
 * AF_PACKET socket with PACKET_VNET_HDR bound to up0 (the kernel transmits on up0 = queues to its
 * fd, as the bridge would); the FramePump reads the uplink TAP (read() loop), runs filter.fromHost
 * and sends header + frame on the PACKET_VNET_HDR socket (vm0 transmits = queues to its fd); a
 * sink thread ("QEMU") read()s vm0's fd and counts. The generator keeps at most WINDOW frames in
 * flight on the sink's count, as in the other host -> VM rows. up0's txqueuelen is 10000 as in the
 * "TAP > filter" row (the generator's side); vm0 keeps its default, as the worker's.
 */
async function runVnetIn(name: string): Promise<void> {
  const l = vnetLinks();
  try {
    execFileSync('ip', ['-n', l.upNs, 'link', 'set', 'up0', 'txqueuelen', '10000']);
    const genSock = openPacketSocket('up0', { netns: l.upNs, vnetHdr: true, sndbuf: PACKET_BUF, qdiscBypass: QDISC_BYPASS });
    const shared = new SharedArrayBuffer(12);
    const counts = new Int32Array(shared);
    const sink = hvWorker('sink', l.vmTapFd, VNET_HOST_FRAME, shared);
    const pump = vnetPump(l);
    pump.start();
    const gen = hvWorker('gen', genSock.fd, VNET_HOST_FRAME, shared);
    const m = await measureSink(gen, sink, counts);
    rowCpu.set(name, m.cpu);
    const ps = pump.stats();
    const si = ps.tap as FramePortStats;
    const so = ps.vm;
    const upTxDropped = peerStat(l.upNs, 'up0', 'tx_dropped');
    const vmTxDropped = peerStat(l.vmNs, 'vm0', 'tx_dropped');
    pump.close();
    closeFd(genSock.fd); // the workers' ports do not own their fds
    record(
      name,
      m.frames,
      m.ns,
      si.rxFrames / si.rxBatches,
      m.elu,
      `${cpuNote(m.cpu)}; sink thread count (read() on vm0), ${(m.frames / Math.max(1, m.sinkBatches)).toFixed(1)} frames per sink batch; FramePump vnet (filter dropped ${ps.hostToVm.dropped}, super-frames ${ps.hostToVm.superFrames}); pump rx (uplink TAP): truncated ${si.rxTruncated}, errors ${si.rxErrors}; up0 tx_dropped ${upTxDropped}; window resets ${Atomics.load(counts, 1)}; AF_PACKET vnet tx: eagain ${so.eagain}, enobufs ${so.enobufs}, txDrops ${so.txDrops}, errors ${so.txErrors}; vm0 tx_dropped ${vmTxDropped}`,
    );
  } finally {
    l.cleanup();
  }
}

// The kernel-only baseline: a small C program (compiled here with cc) writes the same frame with
// sendmmsg (batches of 64) on an AF_PACKET socket bound to one end of a veth pair; the peer end
// (link up, no address, in the same namespace this run creates) receives and discards it, as the
// TAP rows' namespace does. One thread, no JavaScript, no socketpair hop: what the kernel alone
// costs to move a 1514-byte frame from a user-space writer into a receiving interface.
const VETH_C = String.raw`
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
static long long now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
static long long stat_of(const char *dev, const char *what) {
  char p[256]; snprintf(p, sizeof p, "/sys/class/net/%s/statistics/%s", dev, what);
  FILE *f = fopen(p, "r"); long long v = -1; if (f) { if (fscanf(f, "%lld", &v) != 1) v = -1; fclose(f); } return v;
}
int main(int argc, char **argv) {
  if (argc != 6) { fprintf(stderr, "usage: tx-dev rx-dev frame-file warmup-ms measure-ms\n"); return 2; }
  unsigned char frame[2048]; FILE *f = fopen(argv[3], "rb"); if (!f) { perror("frame"); return 1; }
  size_t len = fread(frame, 1, sizeof frame, f); fclose(f);
  int s = socket(AF_PACKET, SOCK_RAW, 0); if (s < 0) { perror("socket"); return 1; }
  struct sockaddr_ll a; memset(&a, 0, sizeof a); a.sll_family = AF_PACKET; a.sll_ifindex = if_nametoindex(argv[1]);
  if (!a.sll_ifindex || bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
  enum { B = 64 }; struct mmsghdr m[B]; struct iovec v[B]; memset(m, 0, sizeof m);
  for (int i = 0; i < B; i++) { v[i].iov_base = frame; v[i].iov_len = len; m[i].msg_hdr.msg_iov = &v[i]; m[i].msg_hdr.msg_iovlen = 1; }
  long long warm = atoll(argv[4]) * 1000000LL, dur = atoll(argv[5]) * 1000000LL;
  long long start = now_ns(), t0 = 0, t1 = 0, sent = 0, sent0 = 0, rx0 = 0, drop0 = 0;
  for (;;) {
    int n = sendmmsg(s, m, B, 0); if (n < 0) { perror("sendmmsg"); return 1; }
    sent += n;
    long long t = now_ns();
    if (!t0 && t - start >= warm) { t0 = t; sent0 = sent; rx0 = stat_of(argv[2], "rx_packets"); drop0 = stat_of(argv[2], "rx_dropped"); }
    if (t0 && t - t0 >= dur) { t1 = t; break; }
  }
  printf("{\"ns\":%lld,\"sent\":%lld,\"rx\":%lld,\"rxDropped\":%lld}\n", t1 - t0, sent - sent0, stat_of(argv[2], "rx_packets") - rx0, stat_of(argv[2], "rx_dropped") - drop0);
  return 0;
}
`;

function runVeth(): void {
  const name = 'kernel veth: C sendmmsg on AF_PACKET -> veth -> peer (no JS)';
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fvz-veth-'));
  const ns = `fvz-veth-${process.pid}`;
  try {
    const bin = path.join(dir, 'veth-send');
    const cc = spawnSync('cc', ['-O2', '-o', bin, '-x', 'c', '-'], { input: VETH_C, encoding: 'utf8' });
    if (cc.status !== 0) {
      rows.push({ name, frames: 0, seconds: 0, pumpBatch: 0, elu: 0, note: `skipped: cc failed: ${(cc.stderr || cc.error?.message || '').trim().split('\n')[0]}` });
      return;
    }
    writeFileSync(path.join(dir, 'frame.bin'), FRAME);
    execFileSync('ip', ['netns', 'add', ns]);
    const inNs = (...a: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...a], { encoding: 'utf8' });
    inNs('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
    inNs('ip', 'link', 'add', 'vbA', 'type', 'veth', 'peer', 'name', 'vbB');
    inNs('ip', 'link', 'set', 'vbA', 'up');
    inNs('ip', 'link', 'set', 'vbB', 'up');
    const out = inNs(bin, 'vbA', 'vbB', path.join(dir, 'frame.bin'), String(WARMUP_MS), String(SECONDS * 1000));
    const r = JSON.parse(out) as { ns: number; sent: number; rx: number; rxDropped: number };
    rows.push({ name, frames: r.rx, seconds: r.ns / 1e9, pumpBatch: BATCH, elu: NaN, note: `counted at the peer (rx_packets); sent ${r.sent}, peer rx_dropped ${r.rxDropped}` });
  } finally {
    spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Latency, unloaded: one frame at a time, all on the main thread: sendmmsg -> libuv wakeup -> pump
 * callback -> netfilter -> sendmmsg -> libuv wakeup -> sink callback; the next frame is sent from
 * the sink callback. One-way time through the pump including both socketpair hops.
 */
async function runLatency(n = 20_000, warmup = 2_000): Promise<{ p50: number; p99: number; max: number }> {
  const [a, m1] = socketpairDgram();
  const [m2, z] = socketpairDgram();
  const gen = new FramePort(a, { batch: 1, frameSize: 64 });
  const input = new FramePort(m1, { batch: BATCH, frameSize: 2048 });
  const out = new FramePort(m2, { batch: 1, frameSize: 64 });
  const sink = new FramePort(z, { batch: BATCH, frameSize: 2048 });
  startFilterPump(input, out);
  const samples = new Float64Array(n);
  const frames = [FRAME];
  let i = -warmup;
  let t = 0n;
  await new Promise<void>((resolve) => {
    sink.onBatch((b) => {
      if (i >= 0) samples[i] = Number(process.hrtime.bigint() - t) / 1000;
      i += b.count;
      if (i >= n) return resolve();
      t = process.hrtime.bigint();
      gen.send(frames);
    });
    t = process.hrtime.bigint();
    gen.send(frames);
  });
  for (const p of [gen, input, out, sink]) p.close();
  samples.sort();
  const q = (x: number) => samples[Math.min(n - 1, Math.floor(x * n))]!;
  return { p50: q(0.5), p99: q(0.99), max: samples[n - 1]! };
}

// ------------------------------------------------------------------ main

const [probeA, probeB] = socketpairDgram();
const sizes = getBufferSizes(probeA);
new FramePort(probeA).close();
new FramePort(probeB).close();

console.log(`frame pump: ${FRAME_LEN}-byte frames, batch ${BATCH} (the plain-frame FramePump rows: ${PUMP_BATCH ?? PLAIN_FRAME_BATCH}), ${SECONDS} s per row (+${WARMUP_MS} ms warm-up)`);
console.log(`${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, Node ${process.version}, ${os.platform()} ${os.release()}`);
console.log(`socketpair buffers as reported: sndbuf ${sizes.sndbuf}, rcvbuf ${sizes.rcvbuf}`);
const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').trim();
const loadBefore = loadavg();
console.log(`${new Date().toISOString()}  /proc/loadavg before: ${loadBefore}${QDISC_BYPASS ? '  (PACKET_QDISC_BYPASS on)' : ''}\n`);

// FRAME_PUMP_ONLY=<regex>: only the AF_PACKET/kernel rows whose name matches (e.g. for perf).
const only = process.env.FRAME_PUMP_ONLY ? new RegExp(process.env.FRAME_PUMP_ONLY) : undefined;
const want = (name: string): boolean => !only || only.test(name);
// FRAME_PUMP_FRAMING=dgram|stream: only the datagram (-netdev dgram) or stream (-netdev stream) rows of
// the VM's side where both exist; default both, for a same-run comparison.
// FRAME_PUMP_FRAMING=vnet: only the offload path's rows (virtio-net header, --vm-framing vnet); a
// comma list (e.g. stream,vnet) runs several kinds. Default all three.
const FRAMINGS: Array<Framing | 'vnet'> = (process.env.FRAME_PUMP_FRAMING ?? 'dgram,stream,vnet').split(',').filter((f): f is Framing | 'vnet' => f === 'dgram' || f === 'stream' || f === 'vnet');
// FRAME_PUMP_ROWS=uplink: only the TAP, AF_PACKET and kernel rows (the ones compared in BENCHMARKS.md).
const ONLY_UPLINK = process.env.FRAME_PUMP_ROWS === 'uplink' || only !== undefined;
if (!ONLY_UPLINK) {
  await runBaseline();
  await runPump('pump: socketpair -> JS batch -> sendBatch -> socketpair', startPlainPump);
  await runPump('pump/frame: ... -> onFrames (Buffer per frame) -> send(frames[])', startPerFramePump);
  await runPump('filter: ... -> netfilter fromVm per frame -> sendBatch', startFilterPump);
}
if (only) {
  // only selected AF_PACKET rows
} else if (process.getuid?.() === 0 && existsSync('/dev/net/tun')) {
  await runTap('pump > TAP: socketpair -> JS batch -> TAP write loop', startPlainPump);
  await runTap('filter > TAP: ... -> netfilter -> TAP write loop', startFilterPump);
  if (FRAMINGS.includes('stream')) await runTap('filter > TAP, stream: stream socket -> netfilter -> TAP write loop', startFilterPump, 'stream');
} else {
  for (const name of ['pump > TAP', 'filter > TAP']) rows.push({ name, frames: 0, seconds: 0, pumpBatch: 0, elu: 0, note: 'skipped: needs root and /dev/net/tun' });
}
if (process.getuid?.() === 0) {
  for (const [name, start] of [
    ['pump > AF_PACKET: socketpair -> JS batch -> sendmmsg -> veth', startPlainPump],
    ['filter > AF_PACKET (VM -> host): ... -> netfilter fromVm -> veth', startFilterPump],
  ] as const) {
    if (want(name) && FRAMINGS.includes('dgram')) await runPacketOut(name, start);
  }
  const oName = 'filter > AF_PACKET (VM -> host), stream: stream socket -> netfilter -> veth';
  if (want(oName) && FRAMINGS.includes('stream')) await runPacketOut(oName, startFilterPump, 'stream');
  if (want('TAP > filter (host -> VM)') && existsSync('/dev/net/tun')) {
    if (FRAMINGS.includes('dgram')) await runPacketIn('TAP > filter (host -> VM): TAP read loop -> FramePump + netfilter -> socketpair', PRODUCTION, tapIn);
    if (FRAMINGS.includes('stream')) await runPacketIn('TAP > filter (host -> VM), stream: ... -> FramePump + netfilter -> stream socket', PRODUCTION, tapIn, 'stream');
  }
  for (const [name, start] of [
    ['AF_PACKET > pump (host -> VM): veth -> recvmmsg -> JS -> socketpair', startPlainPump],
    ['AF_PACKET > filter (host -> VM): ... -> FramePump + netfilter -> socketpair', PRODUCTION],
  ] as const) {
    if (want(name) && FRAMINGS.includes('dgram')) await runPacketIn(name, start);
  }
  const sName = 'AF_PACKET > filter (host -> VM), stream: ... -> FramePump + netfilter -> stream socket';
  if (want(sName) && FRAMINGS.includes('stream')) await runPacketIn(sName, PRODUCTION, vethIn, 'stream');
  if (FRAMINGS.includes('vnet') && existsSync('/dev/net/tun')) {
    const outName = 'filter > TAP, vnet (VM -> host): QEMU TAP -> AF_PACKET vnet -> FramePump -> TAP';
    const inName = 'TAP > filter (host -> VM), vnet: TAP -> FramePump -> AF_PACKET vnet -> QEMU TAP';
    if (want(outName)) await runVnetOut(outName);
    if (want(inName)) await runVnetIn(inName);
  }
  if (want('kernel veth')) runVeth();
} else {
  for (const name of ['AF_PACKET rows', 'kernel veth']) rows.push({ name, frames: 0, seconds: 0, pumpBatch: 0, elu: 0, note: 'skipped: needs root (namespaces, AF_PACKET)' });
}

const lat = ONLY_UPLINK ? undefined : await runLatency();
const loadAfter = loadavg();
const kernel = rows.find((r) => r.name.startsWith('kernel veth') && r.seconds > 0);
const kernelFps = kernel ? kernel.frames / kernel.seconds : NaN;

const pad = (s: string, n: number) => s.padEnd(n);
const lpad = (s: string, n: number) => s.padStart(n);
console.log(`${pad('path', 72)} ${lpad('frames/s', 12)} ${lpad('Gbit/s', 8)} ${lpad('% kernel', 9)} ${lpad('frames/cb', 10)} ${lpad('pump ELU', 9)}  notes`);
for (const r of rows) {
  if (r.seconds === 0) {
    console.log(`${pad(r.name, 72)} ${lpad('-', 12)} ${lpad('-', 8)} ${lpad('-', 9)} ${lpad('-', 10)} ${lpad('-', 9)}  ${r.note}`);
    continue;
  }
  const fps = r.frames / r.seconds;
  const gbps = (fps * FRAME_LEN * 8) / 1e9;
  const share = Number.isNaN(kernelFps) ? '-' : `${Math.round((fps / kernelFps) * 100)}%`;
  console.log(`${pad(r.name, 72)} ${lpad(Math.round(fps).toLocaleString('en-US'), 12)} ${lpad(gbps.toFixed(2), 8)} ${lpad(share, 9)} ${lpad(r.pumpBatch.toFixed(1), 10)} ${lpad(Number.isNaN(r.elu) ? 'n/a' : `${Math.round(r.elu * 100)}%`, 9)}  ${r.note}`);
}
console.log(`\nGbit/s counts Ethernet frame bytes (${FRAME_LEN} B, no FCS/preamble). frames/cb = frames per JS callback at the pump input.`);
console.log('pump ELU = main-thread event-loop utilisation; below 100% the pump waited for the worker thread (generator + sink share one thread), so the row is a lower bound for the pump.');
if (lat) {
  console.log(
    `\nlatency, one frame at a time (socketpair -> pump + netfilter -> socketpair, one thread): p50 ${lat.p50.toFixed(1)} µs, p99 ${lat.p99.toFixed(1)} µs, max ${lat.max.toFixed(1)} µs`,
  );
}
if (rowCpu.size > 0) {
  // What the row's own feeders allow at this CPU per frame, whatever the pump costs: the generator
  // is one thread, so it alone caps the row at 1 s / its ns per frame; all the row's threads
  // together cap it at (the machine's CPUs) s / their ns per frame.
  const cpus = os.cpus().length;
  console.log(`\nceilings of the host -> VM rows at the CPU per frame measured (${cpus} CPUs), frames/s and % of the kernel row:`);
  for (const [name, c] of rowCpu) {
    const share = (fps: number): string => (Number.isNaN(kernelFps) ? '' : ` (${Math.round((fps / kernelFps) * 100)}%)`);
    const genCap = 1e9 / c.genNs;
    const allCap = (cpus * 1e9) / (c.genNs + c.pumpNs + c.sinkNs + c.otherNs);
    const noPumpCap = Math.min(genCap, (cpus * 1e9) / (c.genNs + c.sinkNs));
    console.log(`  ${name.split(':')[0]}: generator alone ${Math.round(genCap).toLocaleString('en-US')}${share(genCap)}; a pump that cost nothing ${Math.round(noPumpCap).toLocaleString('en-US')}${share(noPumpCap)}; all threads on ${cpus} CPUs ${Math.round(allCap).toLocaleString('en-US')}${share(allCap)}`);
  }
}
console.log(`\n/proc/loadavg before: ${loadBefore}; after: ${loadAfter}`);
if (filterDrops > 0) console.log(`netfilter dropped ${filterDrops} frames (expected 0)`);
