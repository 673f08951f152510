import { describe, expect, it } from 'vitest';
import { OutputLog } from './output-log.ts';

const text = (r: { data: Buffer[] }) => Buffer.concat(r.data).toString();

describe('OutputLog (re-attach replay buffer)', () => {
  it('replays from any offset it still holds', () => {
    const log = new OutputLog(100);
    log.append(Buffer.from('hello '));
    log.append(Buffer.from('world'));
    expect(log.end).toBe(11);
    expect(text(log.since(0))).toBe('hello world');
    expect(log.since(3)).toMatchObject({ offset: 3 });
    expect(text(log.since(3))).toBe('lo world');
    expect(text(log.since(11))).toBe('');
    expect(text(log.since(50))).toBe('');
  });

  it('drops the oldest chunks beyond its capacity and says where replay starts', () => {
    const log = new OutputLog(10);
    for (let i = 0; i < 5; i++) log.append(Buffer.from(`chunk${i}`)); // 6 bytes each
    expect(log.end).toBe(30);
    // Whole chunks are dropped while the rest still holds the capacity: 12 bytes stay.
    expect(log.start).toBe(18);
    const r = log.since(0);
    expect(r.offset).toBe(18);
    expect(text(r)).toBe('chunk3chunk4');
    expect(text(log.since(20))).toBe('unk3chunk4');
  });
});
