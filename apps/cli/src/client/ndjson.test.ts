import { describe, expect, it } from 'vitest';
import { LineSplitter, readNdjson } from './ndjson.ts';

async function* chunks(...parts: (string | Uint8Array)[]): AsyncGenerator<string | Uint8Array> {
  for (const p of parts) yield p;
}

async function collect(gen: AsyncGenerator<unknown>): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const x of gen) out.push(x);
  return out;
}

describe('LineSplitter', () => {
  it('reassembles lines split across chunks and keeps the rest for later', () => {
    const s = new LineSplitter();
    expect(s.push('{"a":')).toEqual([]);
    expect(s.push('1}\n{"b"')).toEqual(['{"a":1}']);
    expect(s.push(':2}\r\n\n')).toEqual(['{"b":2}', '']);
    expect(s.flush()).toEqual([]);
  });

  it('reassembles a multi-byte character split between chunks', () => {
    const bytes = new TextEncoder().encode('{"m":"pending → running"}\n');
    const cut = bytes.indexOf(0xe2) + 1; // inside the arrow
    const s = new LineSplitter();
    expect(s.push(bytes.slice(0, cut))).toEqual([]);
    expect(s.push(bytes.slice(cut))).toEqual(['{"m":"pending → running"}']);
  });

  it('returns a last line without a newline on flush', () => {
    const s = new LineSplitter();
    s.push('{"x":1}');
    expect(s.flush()).toEqual(['{"x":1}']);
  });
});

describe('readNdjson', () => {
  it('parses documents and skips keepalive blank lines', async () => {
    const out = await collect(readNdjson(chunks('\n', '{"type":"ADDED"}\n\n{"ty', 'pe":"MODIFIED"}\n', '\n', '{"type":"DELETED"}')));
    expect(out).toEqual([{ type: 'ADDED' }, { type: 'MODIFIED' }, { type: 'DELETED' }]);
  });

  it('fails clearly on a line that is not JSON', async () => {
    await expect(collect(readNdjson(chunks('<html>\n')))).rejects.toThrow(/not JSON: <html>/);
  });
});
