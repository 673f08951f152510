// Where a heap snapshot's bytes are (issue 20: controller memory), beyond the by-constructor
// summary that bench/controller-memory.ts prints: retained sizes (dominator tree) of the biggest
// objects, self sizes of strings, arrays and code grouped by the object that holds them, and the
// largest strings.
//
//   node --max-old-space-size=4096 bench/support/heap-snapshot-memory.mjs FILE.heapsnapshot [--top 30]
//
// (bench/controller-memory.ts --snapshot --keep-snapshot FILE keeps one.) Plain JavaScript: it
// loads a few hundred MB of JSON and is run by hand.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '30' } } });
const file = positionals[0];
if (!file) throw new Error('usage: heap-snapshot-memory.mjs FILE.heapsnapshot [--top N]');
const TOP = Number(values.top);
const s = JSON.parse(readFileSync(file, 'utf8'));
const meta = s.snapshot.meta;
const nf = meta.node_fields.length;
const ef = meta.edge_fields.length;
const nodeTypes = meta.node_types[0];
const edgeTypes = meta.edge_types[0];
const iType = meta.node_fields.indexOf('type');
const iName = meta.node_fields.indexOf('name');
const iSize = meta.node_fields.indexOf('self_size');
const iEdges = meta.node_fields.indexOf('edge_count');
const eType = meta.edge_fields.indexOf('type');
const eName = meta.edge_fields.indexOf('name_or_index');
const eTo = meta.edge_fields.indexOf('to_node');
const nodes = s.nodes;
const edges = s.edges;
const strings = s.strings;
const N = nodes.length / nf;
const type = (n) => nodeTypes[nodes[n * nf + iType]];
const name = (n) => strings[nodes[n * nf + iName]];
const size = (n) => nodes[n * nf + iSize];

// Edges: first edge index per node, and reverse edges (retainers).
const firstEdge = new Uint32Array(N + 1);
for (let n = 0, e = 0; n < N; n++) {
  firstEdge[n] = e;
  e += nodes[n * nf + iEdges] * ef;
}
firstEdge[N] = edges.length;
const WEAK = edgeTypes.indexOf('weak');
const SHORTCUT = edgeTypes.indexOf('shortcut');
const retCount = new Uint32Array(N + 1);
for (let e = 0; e < edges.length; e += ef) {
  if (edges[e + eType] === WEAK || edges[e + eType] === SHORTCUT) continue;
  retCount[edges[e + eTo] / nf]++;
}
const retFirst = new Uint32Array(N + 1);
for (let n = 0, acc = 0; n < N; n++) {
  retFirst[n] = acc;
  acc += retCount[n];
}
retFirst[N] = retFirst[N - 1] + retCount[N - 1];
const retNode = new Uint32Array(retFirst[N]);
const retEdge = new Uint32Array(retFirst[N]);
const fill = new Uint32Array(N);
for (let n = 0; n < N; n++) {
  for (let e = firstEdge[n]; e < firstEdge[n + 1]; e += ef) {
    if (edges[e + eType] === WEAK || edges[e + eType] === SHORTCUT) continue;
    const to = edges[e + eTo] / nf;
    const k = retFirst[to] + fill[to]++;
    retNode[k] = n;
    retEdge[k] = e;
  }
}

// Dominators (Cooper, Harvey, Kennedy: iterative on reverse postorder), root = node 0.
const order = new Int32Array(N).fill(-1); // postorder index
const post = new Uint32Array(N);
let count = 0;
{
  const stack = new Uint32Array(N);
  const iter = new Uint32Array(N);
  const seen = new Uint8Array(N);
  let sp = 0;
  stack[sp++] = 0;
  seen[0] = 1;
  iter[0] = firstEdge[0];
  while (sp > 0) {
    const n = stack[sp - 1];
    let pushed = false;
    while (iter[n] < firstEdge[n + 1]) {
      const e = iter[n];
      iter[n] += ef;
      if (edges[e + eType] === WEAK || edges[e + eType] === SHORTCUT) continue;
      const to = edges[e + eTo] / nf;
      if (seen[to]) continue;
      seen[to] = 1;
      iter[to] = firstEdge[to];
      stack[sp++] = to;
      pushed = true;
      break;
    }
    if (!pushed) {
      sp--;
      order[n] = count;
      post[count++] = n;
    }
  }
}
const idom = new Int32Array(N).fill(-1);
idom[0] = 0;
for (let changed = true; changed; ) {
  changed = false;
  for (let i = count - 2; i >= 0; i--) {
    const n = post[i];
    let d = -1;
    for (let k = retFirst[n]; k < retFirst[n + 1]; k++) {
      const p = retNode[k];
      if (order[p] < 0 || idom[p] < 0) continue;
      if (d < 0) {
        d = p;
        continue;
      }
      let a = p;
      let b = d;
      while (a !== b) {
        while (order[a] < order[b]) a = idom[a];
        while (order[b] < order[a]) b = idom[b];
      }
      d = a;
    }
    if (d >= 0 && idom[n] !== d) {
      idom[n] = d;
      changed = true;
    }
  }
}
const retained = new Float64Array(N);
for (let i = 0; i < count; i++) {
  const n = post[i];
  retained[n] += size(n);
  if (n !== 0 && idom[n] >= 0) retained[idom[n]] += retained[n];
}

const mib = (b) => (b / 1048576).toFixed(2);
const label = (n) => {
  const t = type(n);
  const nm = name(n);
  return t === 'object' || t === 'closure' || t === 'native' ? `${t} ${nm.slice(0, 70)}` : `(${t}) ${nm.slice(0, 50).replace(/\s+/g, ' ')}`;
};
const isOwner = (n) => {
  const t = type(n);
  const nm = name(n);
  return (t === 'object' || t === 'closure' || t === 'native') && !nm.startsWith('system /') && nm !== 'Object' && nm !== 'Array';
};
/** The nearest named object above n in the dominator tree, and the edge that leads to it. */
function owner(n) {
  let m = idom[n];
  let hops = 0;
  while (m > 0 && !isOwner(m) && hops++ < 50) m = idom[m];
  return m;
}
function edgeLabel(parent, child) {
  for (let e = firstEdge[parent]; e < firstEdge[parent + 1]; e += ef) {
    if (edges[e + eTo] / nf !== child) continue;
    const t = edgeTypes[edges[e + eType]];
    return t === 'element' || t === 'hidden' ? `[${edges[e + eName]}]` : strings[edges[e + eName]];
  }
  return '?';
}

console.log(`${file}: ${N} nodes, total self size ${mib(retained[0])} MiB\n`);

// Retained by the biggest owners, children of the root's direct children (GC roots) skipped.
const owners = [];
for (let n = 1; n < N; n++) if (isOwner(n) && retained[n] > 256 * 1024 && !isOwner(idom[n] > 0 ? owner(n) : 0)) owners.push(n);
console.log('## largest retained sizes (named objects not inside another listed one)\n');
for (const n of owners.sort((a, b) => retained[b] - retained[a]).slice(0, TOP)) {
  const o = owner(n);
  console.log(`${mib(retained[n]).padStart(8)} MiB  ${label(n)}${o > 0 ? `  ← ${label(o)}` : ''}`);
}

// Every node's self size, grouped by (its type, the named object that dominates it).
const groups = new Map();
for (let n = 1; n < N; n++) {
  const o = owner(n);
  const key = `${type(n).padEnd(12)} in ${o > 0 ? label(o) : '(root)'}`;
  const g = groups.get(key) ?? { count: 0, bytes: 0 };
  g.count++;
  g.bytes += size(n);
  groups.set(key, g);
}
console.log('\n## self sizes by node type and dominating named object\n');
for (const [k, g] of [...groups].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, TOP * 2)) console.log(`${mib(g.bytes).padStart(8)} MiB ${String(g.count).padStart(8)}  ${k}`);

// Code: by kind.
const code = new Map();
for (let n = 1; n < N; n++) {
  if (type(n) !== 'code') continue;
  const k = name(n).replace(/\(.*$/, '').slice(0, 40) || '(unnamed)';
  const g = code.get(k) ?? { count: 0, bytes: 0 };
  g.count++;
  g.bytes += size(n);
  code.set(k, g);
}
console.log('\n## (code) by name\n');
for (const [k, g] of [...code].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, TOP)) console.log(`${mib(g.bytes).padStart(8)} MiB ${String(g.count).padStart(8)}  ${k}`);

console.log('\n## largest strings\n');
const strs = [];
for (let n = 1; n < N; n++) if (type(n) === 'string' && size(n) > 64 * 1024) strs.push(n);
for (const n of strs.sort((a, b) => size(b) - size(a)).slice(0, TOP)) {
  const o = owner(n);
  console.log(`${mib(size(n)).padStart(8)} MiB  ${JSON.stringify(name(n).slice(0, 60))}  ← ${o > 0 ? `${label(o)}.${edgeLabel(idom[n], n)}` : '(root)'}`);
}
