// What a process's memory is made of, from outside it (/proc) and, when it preloads
// bench/support/memory-probe.mjs, from inside it (V8's own statistics). Shared by
// bench/controller-memory.ts and bench/worker-memory.ts.
import { readFile, rm, stat } from 'node:fs/promises';

const MIB = 1024 * 1024;
export const mib = (bytes: number): number => Math.round(bytes / MIB);

export interface ProcStatus {
  rss: number;
  hwm: number;
  anon: number;
  file: number;
}

/** VmRSS, VmHWM, RssAnon and RssFile of a process, in bytes. */
export async function procStatus(pid: number): Promise<ProcStatus> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM'), anon: kb('RssAnon'), file: kb('RssFile') };
}

/** Proportional set size (bytes): RSS with each shared page divided among the processes mapping it. */
export async function procPss(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
  return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? NaN) * 1024;
}

export interface SmapsSummary {
  /** Resident anonymous executable mappings: V8's JIT code and WebAssembly code space. */
  anonExec: number;
  /** Resident anonymous writable mappings of at least 8 MiB: glibc malloc arenas and large V8 reservations. */
  bigAnonRw: number;
  /** Resident pages of the node binary itself. */
  nodeBinary: number;
}

/** Sums over /proc/<pid>/smaps: where the anonymous memory sits. */
export async function smapsSummary(pid: number): Promise<SmapsSummary> {
  const text = await readFile(`/proc/${pid}/smaps`, 'utf8');
  const out: SmapsSummary = { anonExec: 0, bigAnonRw: 0, nodeBinary: 0 };
  let perms = '';
  let name = '';
  let size = 0;
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      size = parseInt(head[2]!, 16) - parseInt(head[1]!, 16);
      perms = head[3]!;
      name = head[4]!;
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (!rss) continue;
    const bytes = Number(rss[1]) * 1024;
    if (name === '' && perms.includes('x')) out.anonExec += bytes;
    else if ((name === '' || name === '[heap]') && perms.startsWith('rw') && size >= 8 * MIB) out.bigAnonRw += bytes;
    else if (/\/node$/.test(name)) out.nodeBinary += bytes;
  }
  return out;
}

/** What memory-probe.mjs writes. */
export interface ProbeReport {
  memoryUsage: NodeJS.MemoryUsage;
  heap: { total_physical_size: number; used_heap_size: number; total_heap_size: number; external_memory: number; malloced_memory: number };
  spaces: { space_name: string; space_used_size: number; physical_space_size: number }[];
  code: { code_and_metadata_size: number; bytecode_and_metadata_size: number; external_script_source_size: number };
  /** GC pauses since the process started (all, and major ones), in ms. */
  gc: { count: number; ms: number; majorCount: number; majorMs: number };
  /** process.cpuUsage() (µs). */
  cpu: { user: number; system: number };
  snapshot?: string;
}

/** Asks a process that preloads memory-probe.mjs for its report (SIGUSR2) and waits for it. */
export async function probe(pid: number, outPrefix: string, seq: number, timeoutMs = 60_000): Promise<ProbeReport> {
  const file = `${outPrefix}.${seq}.json`;
  process.kill(pid, 'SIGUSR2');
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      await stat(file);
      const r = JSON.parse(await readFile(file, 'utf8')) as ProbeReport;
      await rm(file, { force: true });
      return r;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (Date.now() > end) throw new Error(`process ${pid} wrote no memory report to ${file} within ${timeoutMs} ms (does it preload bench/support/memory-probe.mjs?)`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A heap snapshot's self sizes summed by constructor (objects, closures), native class, or node type (strings, code, ...). */
export async function summariseHeapSnapshot(file: string, top = 15): Promise<{ what: string; count: number; bytes: number }[]> {
  interface Snapshot {
    snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
    nodes: number[];
    strings: string[];
  }
  const s = JSON.parse(await readFile(file, 'utf8')) as Snapshot;
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const nf = fields.length;
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const iSize = fields.indexOf('self_size');
  const by = new Map<string, { count: number; bytes: number }>();
  for (let i = 0; i < s.nodes.length; i += nf) {
    const type = types[s.nodes[i + iType]!]!;
    const key = type === 'object' || type === 'closure' || type === 'native' ? `${type} ${s.strings[s.nodes[i + iName]!]!.slice(0, 50)}` : `(${type})`;
    const e = by.get(key) ?? { count: 0, bytes: 0 };
    e.count++;
    e.bytes += s.nodes[i + iSize]!;
    by.set(key, e);
  }
  return [...by].map(([what, e]) => ({ what, ...e })).sort((a, b) => b.bytes - a.bytes).slice(0, top);
}
