/** One challenge from a WWW-Authenticate header, e.g. Bearer realm="…",service="…". */
export interface AuthChallenge {
  /** Lowercased scheme: "basic", "bearer", … */
  scheme: string;
  /** Lowercased parameter names → unquoted values. */
  params: Record<string, string>;
}

const TOKEN_CHAR = /[!#$%&'*+.^_`|~0-9A-Za-z-]/;

/**
 * Parses WWW-Authenticate values (RFC 9110 §11.6.1). Handles several challenges in one
 * header, quoted strings containing commas and escaped quotes, and headers repeated
 * on the response (pass each value). Unparseable garbage is skipped, never thrown.
 */
export function parseChallenges(values: readonly string[]): AuthChallenge[] {
  const out: AuthChallenge[] = [];
  for (const value of values) parseOne(value, out);
  return out;
}

function parseOne(s: string, out: AuthChallenge[]): void {
  let i = 0;
  let current: AuthChallenge | undefined;
  const skipSpace = (): void => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < s.length && TOKEN_CHAR.test(s[i]!)) i++;
    return s.slice(start, i);
  };
  while (i < s.length) {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === ',')) i++;
    if (i >= s.length) break;
    const token = readToken();
    if (token === '') {
      i++; // not a token character: skip it
      continue;
    }
    skipSpace();
    if (s[i] === '=' && current) {
      i++;
      skipSpace();
      let value: string;
      if (s[i] === '"') {
        i++;
        value = '';
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++;
          value += s[i];
          i++;
        }
        i++; // closing quote
      } else {
        value = readToken();
      }
      current.params[token.toLowerCase()] = value;
    } else if (s[i] === '=') {
      // A parameter before any scheme: malformed; skip its value.
      i++;
      while (i < s.length && s[i] !== ',') i++;
    } else {
      current = { scheme: token.toLowerCase(), params: {} };
      out.push(current);
    }
  }
}
