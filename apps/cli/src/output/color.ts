// A few ANSI colours, switched off when stdout is not a terminal or NO_COLOR is set.

export interface Colors {
  enabled: boolean;
  bold(s: string): string;
  dim(s: string): string;
  red(s: string): string;
  green(s: string): string;
  yellow(s: string): string;
  /** Colours a VM state by how healthy it is. */
  state(s: string): string;
  /** Colours an event level. */
  level(level: string, s: string): string;
}

export function makeColors(enabled: boolean): Colors {
  const wrap = (open: number, close: number) => (s: string) => (enabled && s ? `\x1b[${open}m${s}\x1b[${close}m` : s);
  const bold = wrap(1, 22);
  const dim = wrap(2, 22);
  const red = wrap(31, 39);
  const green = wrap(32, 39);
  const yellow = wrap(33, 39);
  return {
    enabled,
    bold,
    dim,
    red,
    green,
    yellow,
    state(s) {
      switch (s) {
        case 'running':
        case 'online':
          return green(s);
        case 'failed':
        case 'offline':
          return red(s);
        case 'pending':
        case 'scheduled':
        case 'starting':
        case 'stopping':
        case 'deleting':
          return yellow(s);
        default:
          return s;
      }
    },
    level(level, s) {
      if (level === 'error') return red(s);
      if (level === 'warn') return yellow(s);
      return s;
    },
  };
}
