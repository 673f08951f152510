// Several controllers behind one context (issue 13): the URLs a command may use, and which one
// answered. Like the CA pin (controller-trust.ts) this is process-wide and keyed by URL, so a
// session WebSocket opened after an API request goes to the controller that request reached,
// without plumbing. The first URL that answers is kept for the rest of the process.
//
// Only "no connection could be made" moves on to the next URL: refused, unreachable, reset before
// any answer, a connect timeout, a name that does not resolve. An HTTP response of any status is
// an answer; a TLS verification failure is reported, never skipped (it may be an impostor).

/** The URLs of one context (or one --url list), in order, and the one in use. */
export class ControllerEndpoints {
  #active = 0;

  constructor(readonly urls: readonly string[]) {
    if (urls.length === 0) throw new Error('ControllerEndpoints needs at least one URL');
  }

  /** The URL in use: the first, until another one answered instead. */
  get active(): string {
    return this.urls[this.#active]!;
  }

  /** The order to try: the one in use first, then the others in their order. */
  candidates(): string[] {
    return [...this.urls.slice(this.#active), ...this.urls.slice(0, this.#active)];
  }

  /** `url` answered: use it from now on. */
  answered(url: string): void {
    const i = this.urls.indexOf(url);
    if (i >= 0) this.#active = i;
  }
}

const groups = new Map<string, ControllerEndpoints>();

/** Declares that `urls` (normalised base URLs) reach one fleet; later lookups of any of them find the group. */
export function registerControllerUrls(urls: readonly string[]): ControllerEndpoints {
  const key = urls.join('\n');
  const existing = groups.get(urls[0] ?? '');
  if (existing && existing.urls.join('\n') === key) return existing;
  const group = new ControllerEndpoints([...urls]);
  for (const url of urls) groups.set(url, group);
  return group;
}

/** The group `url` belongs to, or a group of its own. */
export function endpointsFor(url: string): ControllerEndpoints {
  return groups.get(url) ?? registerControllerUrls([url]);
}

/** Test support: forget every group. */
export function resetControllerEndpoints(): void {
  groups.clear();
}

/**
 * Network error codes meaning no connection was made (or it broke before any answer), so another
 * controller may be tried. ECONNRESET and EPIPE only count where repeating the request is safe
 * (see `failoverCode`): the request may have reached the controller before the reset.
 */
const NO_CONNECTION = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);
const BROKEN_BEFORE_ANSWER = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

/** True when an error with this code allows trying the next controller. */
export function failoverCode(code: string | undefined, repeatable: boolean): boolean {
  if (code === undefined) return false;
  return NO_CONNECTION.has(code) || (repeatable && BROKEN_BEFORE_ANSWER.has(code));
}
