/**
 * The only error @fleet/netfilter throws: a configuration (or lease seed) that does not make sense.
 * Frames never cause a throw; a bad frame is a drop verdict.
 */
export class NetfilterConfigError extends Error {
  /** Dotted path of the offending option, e.g. "allow[2]" or "expose[0].vmPort". */
  readonly field: string;
  /** The offending value as given. */
  readonly value: unknown;

  constructor(field: string, value: unknown, problem: string) {
    super(`netfilter config: ${field} = ${describe(value)}: ${problem}`);
    this.name = 'NetfilterConfigError';
    this.field = field;
    this.value = value;
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === undefined) return 'undefined';
  try {
    const s = JSON.stringify(value);
    return s === undefined ? String(value) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    return String(value);
  }
}
