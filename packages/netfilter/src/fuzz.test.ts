/**
 * Robustness: every truncation and every single-byte corruption of every fixture (exhaustive), then
 * random multi-byte corruptions, random bytes and random sequences (fast-check, time-boxed), through
 * several filter configurations in both directions. Each decision must be a valid verdict, never an
 * exception and never the INTERNAL_ERROR guard; every PASS must satisfy the filter's invariants.
 * Set NETFILTER_FUZZ_MS to fuzz longer than the CI budget (per property).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddressClass, classifyIpv4 } from './address-classes.ts';
import type { PacketFilter } from './filter.ts';
import { VERDICT_COUNT, Verdict, reasonName } from './verdict.ts';
import { ip, mac } from './testing/frames.ts';
import { fixtures } from './testing/fixtures.ts';
import { T0, VM_IP, boundFilter, newFilter } from './testing/scenario.ts';

const BUDGET_MS = Number(process.env.NETFILTER_FUZZ_MS ?? 2000);
const FIXTURES = fixtures();
const VMMAC = mac('02:00:00:00:00:01');
const GWMAC = mac('02:00:00:00:00:fe');
const GW = ip('192.168.64.1');
const PEER = ip('192.168.64.11');
const SUBNET = ip('192.168.64.0');

function makeFilters(): PacketFilter[] {
  return [
    newFilter(),
    boundFilter(),
    boundFilter({ blockLocal: true, expose: ['2222:22', '5353:53/udp'], allow: ['33.33.33.33'], block: ['8.8.4.0/24'], verifyIpChecksum: true }),
    boundFilter({ ingress: 'restricted', hostAccess: false, dhcpRate: { perSecond: 1e6, burst: 1e6 } }, ['10.0.0.53']),
  ];
}

const u16 = (f: Uint8Array, o: number): number => (f[o]! << 8) | f[o + 1]!;
const u32 = (f: Uint8Array, o: number): number => ((f[o]! << 24) | (f[o + 1]! << 16) | (f[o + 2]! << 8) | f[o + 3]!) >>> 0;
const macIs = (f: Uint8Array, o: number, m: Uint8Array): boolean => m.every((b, i) => f[o + i] === b);

function fail(msg: string, frame: Uint8Array): never {
  throw new Error(`${msg}; frame=${Buffer.from(frame).toString('hex')}`);
}

/** What any PASS from the VM must satisfy. */
function checkVmPass(f: Uint8Array, leaseIp: number | null): void {
  if (f.length < 14 || f.length > 1514) fail('passed a frame of bad length', f);
  if (!macIs(f, 6, VMMAC)) fail('passed a foreign source MAC', f);
  const type = u16(f, 12);
  if (type === 0x0806) {
    if (f[18] !== 6 || f[19] !== 4) fail('passed ARP with bad sizes', f);
    if (!macIs(f, 22, VMMAC)) fail('passed ARP with foreign SHA', f);
    const spa = u32(f, 28);
    if (spa !== 0 && spa !== leaseIp) fail('passed ARP with foreign SPA', f);
    return;
  }
  if (type !== 0x0800) fail(`passed EtherType ${type.toString(16)}`, f);
  if (f[14] !== 0x45) fail('passed IPv4 with options or bad version', f);
  const src = u32(f, 26);
  const dst = u32(f, 30);
  const proto = f[23]!;
  const fragOff = u16(f, 20) & 0x1fff;
  const mf = (u16(f, 20) & 0x2000) !== 0;
  const isDhcpClient = proto === 17 && fragOff === 0 && !mf && u16(f, 34) === 68 && u16(f, 36) === 67;
  if (src !== leaseIp && !(src === 0 && isDhcpClient)) fail('passed a foreign source IP', f);
  if (isDhcpClient) {
    if (!macIs(f, 42 + 28, VMMAC)) fail('passed a DHCP message with foreign chaddr', f);
    if (dst !== 0xffffffff && dst !== GW) fail('passed DHCP to an untrusted destination', f);
    if (u32(f, 42 + 24) !== 0) fail('passed a DHCP message with giaddr set', f);
    // An independent walk over the options (not the filter's parser).
    const end = Math.min(f.length, 42 + u16(f, 38) - 8);
    for (let p = 42 + 240; p < end; ) {
      const code = f[p]!;
      if (code === 0) { p++; continue; }
      if (code === 255 || p + 1 >= end) break;
      const len = f[p + 1]!;
      if (code === 82) fail('passed a DHCP message with relay agent information', f);
      if (code === 12 || code === 81) fail('passed a DHCP message that still names a host', f);
      if (code === 61 && !(len === 7 && f[p + 2] === 1 && macIs(f, p + 3, VMMAC))) fail('passed a foreign DHCP client identifier', f);
      p += 2 + len;
    }
    return;
  }
  if (proto === 17 && fragOff === 0 && (u16(f, 34) === 67 || u16(f, 36) === 68)) fail('passed DHCP server traffic from the VM', f);
  if (fragOff === 1) fail('passed an offset-1 fragment', f);
  if (dst === PEER) fail('passed traffic to a peer VM', f);
  if (((dst & 0xffffff00) >>> 0) === SUBNET && dst !== GW) fail('passed traffic into the subnet', f);
  const c = classifyIpv4(dst);
  if (c === AddressClass.MULTICAST || c === AddressClass.BROADCAST || c === AddressClass.LINK_LOCAL || c === AddressClass.LOOPBACK) {
    fail('passed traffic to a non-unicast or link-local destination', f);
  }
}

/** What any PASS towards the VM must satisfy. */
function checkHostPass(f: Uint8Array): void {
  if (f.length < 14 || f.length > 1514) fail('passed a frame of bad length', f);
  if (!macIs(f, 0, VMMAC) && !f.subarray(0, 6).every((b) => b === 0xff)) fail('passed a frame for another MAC', f);
  const type = u16(f, 12);
  if (type !== 0x0800 && type !== 0x0806) fail(`passed EtherType ${type.toString(16)}`, f);
  if (type === 0x0800) {
    if (f[14] !== 0x45) fail('passed IPv4 with options or bad version', f);
    const proto = f[23]!;
    const fragOff = u16(f, 20) & 0x1fff;
    if (proto === 17 && fragOff === 0 && (u16(f, 34) === 67 || u16(f, 36) === 68)) {
      if (u32(f, 26) !== GW || !macIs(f, 6, GWMAC)) fail('passed DHCP server traffic from an untrusted server', f);
    }
  }
}

function checkLease(filter: PacketFilter, f: Uint8Array): void {
  const l = filter.lease();
  if (l === null) return;
  const n = l.ipNumber;
  if (((n & 0xffffff00) >>> 0) !== SUBNET || n === SUBNET || n === GW || n === ((SUBNET | 255) >>> 0)) {
    fail(`learned an impossible lease ${l.ip}`, f);
  }
}

let decisions = 0;

function decide(filter: PacketFilter, input: Uint8Array, dir: 'vm' | 'host', now: number): number {
  // The filter may blank DHCP name options in place: judge a copy, so the corpus stays as it is.
  const frame = input.slice();
  const leaseIp = filter.lease()?.ipNumber ?? null;
  const v = dir === 'vm' ? filter.fromVm(frame, now) : filter.fromHost(frame, now);
  decisions++;
  if (!Number.isInteger(v) || v < 0 || v >= VERDICT_COUNT) fail(`not a verdict: ${String(v)}`, frame);
  if (v === Verdict.INTERNAL_ERROR) fail('the internal-error guard fired', frame);
  if (v === Verdict.PASS) {
    if (dir === 'vm') checkVmPass(frame, leaseIp);
    else checkHostPass(frame);
  }
  checkLease(filter, frame);
  return v;
}

function noInternalErrors(filters: PacketFilter[]): void {
  for (const f of filters) {
    expect(f.counters.fromVm[Verdict.INTERNAL_ERROR]).toBe(0);
    expect(f.counters.fromHost[Verdict.INTERNAL_ERROR]).toBe(0);
  }
}

describe('fuzz: exhaustive', () => {
  it('fixtures decide as expected before fuzzing (sanity)', () => {
    // A fresh bound filter per fixture (the RELEASE fixture would end the lease for the ones after it).
    const verdicts = Object.fromEntries(FIXTURES.map((x) => [`${x.dir} ${x.name}`, reasonName(decide(boundFilter(), x.frame, x.dir, T0 + 1))]));
    expect(verdicts['vm tcp data']).toBe('pass');
    expect(verdicts['host tcp data']).toBe('pass');
    expect(verdicts['vm arp plen 16']).toBe('malformed');
    expect(new Set(Object.values(verdicts)).size).toBeGreaterThan(12);
  });

  it('every truncation of every fixture, both directions, four configurations', () => {
    const filters = makeFilters();
    for (const { frame } of FIXTURES) {
      for (let n = 0; n <= frame.length; n++) {
        const cut = frame.subarray(0, n);
        for (const f of filters) {
          decide(f, cut, 'vm', T0 + 1);
          decide(f, cut, 'host', T0 + 1);
        }
      }
    }
    noInternalErrors(filters);
  });

  it('every single-byte corruption (0x00, 0xff, +1, bit 7) of every fixture, both directions', () => {
    const filters = makeFilters();
    for (const { frame, dir } of FIXTURES) {
      const copy = frame.slice();
      // The 1460-byte payloads add nothing past the headers; corrupt the first 400 bytes.
      const limit = Math.min(copy.length, 400);
      for (let i = 0; i < limit; i++) {
        const orig = copy[i]!;
        for (const b of [0x00, 0xff, (orig + 1) & 255, orig ^ 0x80]) {
          copy[i] = b;
          for (const f of filters) decide(f, copy, dir, T0 + 2);
          decide(filters[1]!, copy, dir === 'vm' ? 'host' : 'vm', T0 + 2);
        }
        copy[i] = orig;
      }
    }
    noInternalErrors(filters);
  });
});

type Mutation =
  | { kind: 'set'; at: number; value: number }
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; count: number }
  | { kind: 'extend'; bytes: Uint8Array };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 16 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }) },
);

function mutate(frame: Uint8Array, muts: readonly Mutation[]): Uint8Array {
  let f = frame.slice();
  for (const m of muts) {
    const at = f.length === 0 ? 0 : m.kind === 'extend' ? 0 : m.at % (f.length + 1);
    switch (m.kind) {
      case 'set':
        if (at < f.length) f[at] = m.value;
        break;
      case 'flip':
        if (at < f.length) f[at] = f[at]! ^ (1 << m.bit);
        break;
      case 'truncate':
        f = f.slice(0, at);
        break;
      case 'insert': {
        const g = new Uint8Array(f.length + m.bytes.length);
        g.set(f.subarray(0, at));
        g.set(m.bytes, at);
        g.set(f.subarray(at), at + m.bytes.length);
        f = g;
        break;
      }
      case 'delete': {
        const g = new Uint8Array(Math.max(0, f.length - m.count));
        g.set(f.subarray(0, at).subarray(0, g.length));
        if (at < g.length) g.set(f.subarray(at + m.count), at);
        f = g;
        break;
      }
      case 'extend': {
        const g = new Uint8Array(f.length + m.bytes.length);
        g.set(f);
        g.set(m.bytes, f.length);
        f = g;
        break;
      }
    }
  }
  return f;
}

const SOAK = process.env.NETFILTER_FUZZ_MS !== undefined;

/**
 * Runs a property for BUDGET_MS in chunks of at most 1 s (fresh seed per chunk), yielding to the
 * event loop between chunks so a long soak does not starve vitest's worker RPC. In CI mode it also
 * stops after `maxRuns`. Throws fast-check's report (seed, path, counterexample) on failure.
 */
async function timeBoxed<Ts>(prop: fc.IProperty<Ts>, maxRuns: number): Promise<number> {
  const deadline = performance.now() + BUDGET_MS;
  let runs = 0;
  while (performance.now() < deadline && (SOAK || runs < maxRuns)) {
    const details = fc.check(prop, {
      numRuns: SOAK ? 1e9 : maxRuns - runs,
      interruptAfterTimeLimit: Math.max(1, Math.min(1000, deadline - performance.now())),
      markInterruptAsFailure: false,
    });
    if (details.failed) throw new Error(fc.defaultReportMessage(details) ?? 'property failed');
    runs += details.numRuns;
    await new Promise((r) => setImmediate(r));
  }
  return runs;
}

describe('fuzz: random (fast-check, time-boxed)', () => {
  it('random multi-byte corruptions of fixtures yield valid verdicts and respect the invariants', async () => {
    const filters = makeFilters();
    await timeBoxed(
      fc.property(
        fc.nat({ max: FIXTURES.length - 1 }),
        fc.array(mutationArb, { minLength: 1, maxLength: 8 }),
        fc.nat({ max: filters.length - 1 }),
        fc.boolean(),
        (fi, muts, which, swap) => {
          const fx = FIXTURES[fi]!;
          const frame = mutate(fx.frame, muts);
          const dir = swap ? (fx.dir === 'vm' ? 'host' : 'vm') : fx.dir;
          decide(filters[which]!, frame, dir, T0 + 3);
        },
      ),
      200_000,
    );
    noInternalErrors(filters);
  });

  it('random bytes, with and without a plausible Ethernet/IPv4 prefix', async () => {
    const filters = makeFilters();
    const prefix = FIXTURES.find((x) => x.name === 'tcp data' && x.dir === 'vm')!.frame.subarray(0, 34);
    await timeBoxed(
      fc.property(fc.uint8Array({ maxLength: 1600 }), fc.nat({ max: 34 }), fc.nat({ max: filters.length - 1 }), (bytes, keep, which) => {
        const frame = new Uint8Array(keep + bytes.length);
        frame.set(prefix.subarray(0, keep));
        frame.set(bytes, keep);
        decide(filters[which]!, frame, 'vm', T0 + 4);
        decide(filters[which]!, frame, 'host', T0 + 4);
      }),
      100_000,
    );
    noInternalErrors(filters);
  });

  it('random sequences of (corrupted) frames over time keep the lease sane', async () => {
    await timeBoxed(
      fc.property(
        fc.array(
          fc.record({
            fi: fc.nat({ max: FIXTURES.length - 1 }),
            muts: fc.array(mutationArb, { maxLength: 3 }),
            dt: fc.integer({ min: 0, max: 400_000 }),
          }),
          { minLength: 1, maxLength: 40 },
        ),
        (steps) => {
          const f = newFilter({ dhcpRate: { perSecond: 1000, burst: 1000 } });
          let now = T0;
          for (const s of steps) {
            now += s.dt;
            const fx = FIXTURES[s.fi]!;
            decide(f, mutate(fx.frame, s.muts), fx.dir, now);
            const l = f.lease();
            if (l !== null && now >= l.expiresAt) throw new Error('an expired lease is still in force');
            if (l !== null && f.leaseState() !== 'bound') throw new Error('lease state mismatch');
          }
          noInternalErrors([f]);
        },
      ),
      20_000,
    );
  });

  it('learns the lease from an uncorrupted exchange inside any random sequence', async () => {
    // Liveness: noise before a clean DISCOVER/REQUEST/ACK does not stop the lease from being learned.
    const byName = (n: string, dir: 'vm' | 'host') => FIXTURES.find((x) => x.name === n && x.dir === dir)!.frame;
    await timeBoxed(
      fc.property(fc.array(fc.record({ fi: fc.nat({ max: FIXTURES.length - 1 }), muts: fc.array(mutationArb, { maxLength: 3 }) }), { maxLength: 20 }), (noise) => {
        const f = newFilter();
        for (const s of noise) decide(f, mutate(FIXTURES[s.fi]!.frame, s.muts), FIXTURES[s.fi]!.dir, T0);
        decide(f, byName('dhcp request', 'vm'), 'vm', T0 + 10);
        decide(f, byName('dhcp ack', 'host'), 'host', T0 + 20);
        if (f.lease()?.ipNumber !== ip(VM_IP)) throw new Error(`lease not learned: ${f.leaseState()}`);
      }),
      5_000,
    );
  });

  it('made decisions', () => {
    if (process.env.NETFILTER_FUZZ_REPORT) console.log(`fuzz decisions: ${decisions}`);
    expect(decisions).toBeGreaterThan(100_000);
  });
});
