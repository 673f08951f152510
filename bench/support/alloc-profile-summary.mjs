// Summarises heap profiles written by alloc-probe.mjs: bytes allocated (sampled) per function,
// self and with callees, optionally over several files (one window each).
//   node bench/support/alloc-profile-summary.mjs FILE... [--top 40]
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const topAt = args.indexOf('--top');
const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 40;
const self = new Map();
const total = new Map();
let all = 0;
const name = (cf) => `${cf.functionName || '(anonymous)'} ${cf.url.split('/').slice(-2).join('/')}:${cf.lineNumber + 1}`;
function walk(node, stack) {
  const k = name(node.callFrame);
  const size = node.selfSize;
  all += size;
  self.set(k, (self.get(k) ?? 0) + size);
  const seen = new Set([...stack, k]);
  for (const s of seen) total.set(s, (total.get(s) ?? 0) + size);
  for (const c of node.children) walk(c, seen);
}
for (const f of args) walk(JSON.parse(readFileSync(f, 'utf8')).profile.head, new Set());
const show = (m) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `${(v / 2 ** 20).toFixed(1).padStart(8)} MiB ${((v / all) * 100).toFixed(1).padStart(5)} %  ${k}`).join('\n');
console.log(`sampled allocations: ${(all / 2 ** 20).toFixed(1)} MiB in ${args.length} window(s)`);
console.log('--- self\n' + show(self));
console.log('--- with callees\n' + show(total));
