import { describe, expect, it } from 'vitest';
import { EtherClass, classifyEtherType, etherTypeOf } from './ethernet.ts';
import { ETHERTYPE, ethernet, llcFrame } from '../testing/frames.ts';

describe('classifyEtherType', () => {
  it.each([
    [0x0800, EtherClass.IPV4],
    [0x0806, EtherClass.ARP],
    [0x0000, EtherClass.LLC],
    [0x0026, EtherClass.LLC],
    [0x05dc, EtherClass.LLC], // 1500: largest 802.3 length
    [0x05ff, EtherClass.LLC], // undefined gap below 0x0600
    [0x8100, EtherClass.VLAN],
    [0x88a8, EtherClass.VLAN],
    [0x9100, EtherClass.VLAN],
    [0x86dd, EtherClass.IPV6],
    [0x0600, EtherClass.OTHER],
    [0x88cc, EtherClass.OTHER], // LLDP
    [0x888e, EtherClass.OTHER], // EAPOL
    [0x8035, EtherClass.OTHER], // RARP
    [0xffff, EtherClass.OTHER],
  ])('0x%s -> class %s', (type, cls) => {
    expect(classifyEtherType(type)).toBe(cls);
  });

  it('reads the type field of a built frame, including an LLC length', () => {
    expect(etherTypeOf(ethernet({ dst: 'ff:ff:ff:ff:ff:ff', src: '02:00:00:00:00:01', type: ETHERTYPE.ARP, payload: new Uint8Array(28) }))).toBe(0x0806);
    expect(etherTypeOf(llcFrame('01:80:c2:00:00:00', '02:00:00:00:00:01', new Uint8Array(35)))).toBe(38);
  });
});
