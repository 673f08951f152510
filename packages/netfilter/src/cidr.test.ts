import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type PrefixRule, PrefixTable, RuleAction, cidrContains, cidrLast, formatCidr, parseCidr, prefixMask } from './cidr.ts';
import { ip } from './testing/frames.ts';

function cidr(text: string) {
  const r = parseCidr(text);
  if (!r.ok) throw new Error(r.error);
  return r.cidr;
}

describe('parseCidr', () => {
  it('parses prefixes and bare addresses', () => {
    expect(parseCidr('10.0.0.0/8')).toEqual({ ok: true, cidr: { base: ip('10.0.0.0'), prefix: 8 } });
    expect(parseCidr('1.2.3.4')).toEqual({ ok: true, cidr: { base: ip('1.2.3.4'), prefix: 32 } });
    expect(parseCidr('0.0.0.0/0')).toEqual({ ok: true, cidr: { base: 0, prefix: 0 } });
    expect(formatCidr(cidr('192.168.64.0/24'))).toBe('192.168.64.0/24');
  });

  it('rejects host bits, bad prefixes and bad addresses with a reason', () => {
    const r = parseCidr('10.0.0.1/8');
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error).toMatch(/host bits.*10\.0\.0\.0\/8/);
    for (const bad of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/08', '10.0.0/8', '256.0.0.0/8', '01.0.0.0/8', '', 'a.b.c.d', '1.2.3.4/8/9']) {
      expect(parseCidr(bad).ok, bad).toBe(false);
    }
  });

  it('masks, contains, last address', () => {
    expect(prefixMask(0)).toBe(0);
    expect(prefixMask(24)).toBe(0xffffff00);
    expect(prefixMask(32)).toBe(0xffffffff);
    const c = cidr('192.168.64.0/24');
    expect(cidrContains(c, ip('192.168.64.200'))).toBe(true);
    expect(cidrContains(c, ip('192.168.65.0'))).toBe(false);
    expect(cidrLast(c)).toBe(ip('192.168.64.255'));
    expect(cidrLast(cidr('0.0.0.0/0'))).toBe(0xffffffff);
  });
});

const allow = (t: string): PrefixRule => ({ cidr: cidr(t), action: RuleAction.ALLOW });
const block = (t: string): PrefixRule => ({ cidr: cidr(t), action: RuleAction.BLOCK });

describe('PrefixTable', () => {
  it('is empty without rules', () => {
    const t = new PrefixTable([]);
    expect(t.empty).toBe(true);
    expect(t.lookup(ip('8.8.8.8'))).toBe(RuleAction.NONE);
  });

  it('longest prefix wins, in both directions of nesting', () => {
    const t = new PrefixTable([allow('33.33.33.33/32'), block('33.33.33.0/24'), allow('33.0.0.0/8'), block('0.0.0.0/0')]);
    expect(t.lookup(ip('33.33.33.33'))).toBe(RuleAction.ALLOW);
    expect(t.lookup(ip('33.33.33.32'))).toBe(RuleAction.BLOCK);
    expect(t.lookup(ip('33.33.34.1'))).toBe(RuleAction.ALLOW);
    expect(t.lookup(ip('34.0.0.0'))).toBe(RuleAction.BLOCK);
    expect(t.lookup(0)).toBe(RuleAction.BLOCK);
    expect(t.lookup(0xffffffff)).toBe(RuleAction.BLOCK);
  });

  it('block wins a tie on an identical prefix, whatever the order', () => {
    expect(new PrefixTable([allow('10.0.0.0/8'), block('10.0.0.0/8')]).lookup(ip('10.1.2.3'))).toBe(RuleAction.BLOCK);
    expect(new PrefixTable([block('10.0.0.0/8'), allow('10.0.0.0/8')]).lookup(ip('10.1.2.3'))).toBe(RuleAction.BLOCK);
  });

  it('handles the edges of the address space', () => {
    const t = new PrefixTable([allow('255.255.255.255/32'), allow('0.0.0.0/32'), block('128.0.0.0/1')]);
    expect(t.lookup(0)).toBe(RuleAction.ALLOW);
    expect(t.lookup(1)).toBe(RuleAction.NONE);
    expect(t.lookup(0x7fffffff)).toBe(RuleAction.NONE);
    expect(t.lookup(0x80000000)).toBe(RuleAction.BLOCK);
    expect(t.lookup(0xfffffffe)).toBe(RuleAction.BLOCK);
    expect(t.lookup(0xffffffff)).toBe(RuleAction.ALLOW);
  });

  it('compiles to merged intervals', () => {
    const t = new PrefixTable([block('10.0.0.0/9'), block('10.128.0.0/9')]);
    expect(Array.from(t.starts)).toEqual([0, ip('10.0.0.0'), ip('11.0.0.0')]);
    expect(Array.from(t.actions)).toEqual([RuleAction.NONE, RuleAction.BLOCK, RuleAction.NONE]);
  });

  it('agrees with a naive longest-prefix match (property)', () => {
    const rule = fc.record({
      base: fc.nat({ max: 0xffffffff }),
      prefix: fc.integer({ min: 0, max: 32 }),
      action: fc.constantFrom(RuleAction.ALLOW, RuleAction.BLOCK),
    });
    // Bias addresses towards rule boundaries, where off-by-one errors live.
    fc.assert(
      fc.property(fc.array(rule, { maxLength: 24 }), fc.array(fc.nat({ max: 0xffffffff }), { maxLength: 40 }), (raw, probes) => {
        const rules: PrefixRule[] = raw.map((r) => ({
          cidr: { base: (r.base & prefixMask(r.prefix)) >>> 0, prefix: r.prefix },
          action: r.action as typeof RuleAction.ALLOW | typeof RuleAction.BLOCK,
        }));
        const t = new PrefixTable(rules);
        const naive = (a: number): number => {
          let best = -1;
          let act: number = RuleAction.NONE;
          for (const r of rules) {
            if (!cidrContains(r.cidr, a)) continue;
            if (r.cidr.prefix > best || (r.cidr.prefix === best && r.action === RuleAction.BLOCK)) {
              best = r.cidr.prefix;
              act = r.action;
            }
          }
          return act;
        };
        const edges = rules.flatMap((r) => [r.cidr.base, cidrLast(r.cidr), (r.cidr.base - 1) >>> 0, (cidrLast(r.cidr) + 1) >>> 0]);
        for (const a of [...probes, ...edges, 0, 0xffffffff]) expect(t.lookup(a)).toBe(naive(a));
      }),
      { numRuns: 300 },
    );
  });
});
