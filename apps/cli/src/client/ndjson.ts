// NDJSON: one JSON document per line. Chunks from the network split lines (and
// multi-byte characters) anywhere; the splitter reassembles them. Blank lines
// are the controller's keepalives and are skipped.
import { CliError, ExitCode } from '../errors.ts';

export class LineSplitter {
  private readonly decoder = new TextDecoder('utf-8');
  private buffer = '';

  /** Feeds a chunk; returns the complete lines it finished (without the newline). */
  push(chunk: Uint8Array | string): string[] {
    this.buffer += typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true });
    const lines = this.buffer.split('\n');
    this.buffer = lines.pop() ?? '';
    return lines.map((l) => l.replace(/\r$/, ''));
  }

  /** The last line when the stream ends without a newline. */
  flush(): string[] {
    const rest = (this.buffer + this.decoder.decode()).replace(/\r$/, '');
    this.buffer = '';
    return rest === '' ? [] : [rest];
  }
}

/** Parses the non-blank lines of an NDJSON byte stream. */
export async function* readNdjson(chunks: AsyncIterable<Uint8Array | string>): AsyncGenerator<unknown> {
  const splitter = new LineSplitter();
  for await (const chunk of chunks) {
    for (const line of splitter.push(chunk)) if (line.trim() !== '') yield parseLine(line);
  }
  for (const line of splitter.flush()) if (line.trim() !== '') yield parseLine(line);
}

function parseLine(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    throw new CliError(`the controller sent a watch line that is not JSON: ${line.slice(0, 120)}`, ExitCode.ERROR);
  }
}
