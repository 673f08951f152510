// Contexts: named (controller URL, token) pairs saved by `fleet login`, one of
// them current. The file holds tokens, so it is written with mode 0600 (its
// directory 0700), atomically (temp file + rename).
//
// Which controller and token a command uses, highest first:
//   --url / --token flags  >  FLEET_URL / FLEET_TOKEN  >  the context
// where the context is --context NAME, else FLEET_CONTEXT, else the current one.
//
// Several controllers (issue 13): a context may hold several URLs (`urls`, `url` being the first,
// which is all an older CLI reads); --url is repeatable and --url / FLEET_URL may be comma-separated.
// The client tries them in order (client/controller-endpoints.ts).
import { chmodSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { CliError, ExitCode, UsageError } from '../errors.ts';

export interface Context {
  /** The first URL (older config files have only this). */
  url: string;
  /** Every URL, `url` first; absent when there is only one. */
  urls?: string[];
  token: string;
  /** The token's name at login time (from /v1/whoami), for display only. */
  user?: string;
  roles?: string[];
  /** PEM of the controller's CA, pinned by `fleet context add` (https controllers with their own CA). */
  caPem?: string;
}

export interface Config {
  currentContext: string | null;
  contexts: Record<string, Context>;
}

export type Source = 'flag' | 'env' | 'context' | 'none';

export interface Target {
  /** The first of `urls`, or null. */
  url: string | null;
  /** Every controller URL, in the order they are tried (empty when none is configured). */
  urls: string[];
  token: string | null;
  urlSource: Source;
  tokenSource: Source;
  /** The context consulted (null when there is none). */
  contextName: string | null;
  /** The CA pinned for `urls` by their context, or null (system trust store / plain http). */
  caPem: string | null;
  configPath: string;
}

export const CONTEXT_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function configPath(env: Record<string, string | undefined>, home: string = homedir()): string {
  if (env.FLEET_CONFIG) return env.FLEET_CONFIG;
  const base = env.XDG_CONFIG_HOME ? env.XDG_CONFIG_HOME : join(home, '.config');
  return join(base, 'fleet', 'config.json');
}

export function emptyConfig(): Config {
  return { currentContext: null, contexts: {} };
}

export function loadConfig(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyConfig();
    throw new CliError(`cannot read config file ${path}: ${(err as Error).message}`, ExitCode.ERROR, { cause: err });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new CliError(`config file ${path} is not valid JSON (${(err as Error).message}); fix or delete it`, ExitCode.ERROR);
  }
  if (typeof raw !== 'object' || raw === null) throw new CliError(`config file ${path} must hold a JSON object`, ExitCode.ERROR);
  const obj = raw as { currentContext?: unknown; contexts?: unknown };
  const config = emptyConfig();
  if (typeof obj.currentContext === 'string') config.currentContext = obj.currentContext;
  if (typeof obj.contexts === 'object' && obj.contexts !== null) {
    for (const [name, value] of Object.entries(obj.contexts as Record<string, unknown>)) {
      const c = value as Partial<Context> | null;
      if (c && typeof c.url === 'string' && typeof c.token === 'string') {
        const urls = storedUrls(c.url, c.urls);
        config.contexts[name] = {
          url: c.url,
          ...(urls.length > 1 ? { urls } : {}),
          token: c.token,
          ...(typeof c.user === 'string' ? { user: c.user } : {}),
          ...(Array.isArray(c.roles) ? { roles: c.roles.filter((r): r is string => typeof r === 'string') } : {}),
          ...(typeof c.caPem === 'string' ? { caPem: c.caPem } : {}),
        };
      }
    }
  }
  return config;
}

/** `url` first, then the valid entries of a stored `urls` (a hand-edited file may hold anything). */
function storedUrls(url: string, urls: unknown): string[] {
  const list = [url];
  if (!Array.isArray(urls)) return list;
  let first: string;
  try {
    first = normalizeUrl(url);
  } catch {
    return list; // reported when the context is used
  }
  for (const entry of urls) {
    if (typeof entry !== 'string') continue;
    try {
      const normalized = normalizeUrl(entry);
      if (normalized !== first && !list.includes(normalized)) list.push(normalized);
    } catch {
      // dropped: not a URL
    }
  }
  return list;
}

/** Every URL of a context, `url` first. */
export function contextUrls(context: Context): string[] {
  return context.urls && context.urls.length > 0 ? context.urls : [context.url];
}

export function saveConfig(path: string, config: Config): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
    chmodSync(tmp, 0o600); // in case the file existed or the umask widened it
    renameSync(tmp, path);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // nothing to clean up
    }
    throw new CliError(`cannot write config file ${path}: ${(err as Error).message}`, ExitCode.ERROR, { cause: err });
  }
}

/**
 * Accepts `host:port`, `http://host:port`, `https://host/` or a URL ending in `/v1`,
 * and returns the base URL without a trailing slash or `/v1`.
 */
export function normalizeUrl(input: string, flag = 'URL'): string {
  let text = input.trim();
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) text = `http://${text}`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`invalid ${flag} "${input}": expected a URL like http://127.0.0.1:8080`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`invalid ${flag} "${input}": only http:// and https:// are supported`);
  }
  if (url.search || url.hash) throw new UsageError(`invalid ${flag} "${input}": no query or fragment, please`);
  const path = url.pathname.replace(/\/+$/, '').replace(/\/v1$/, '');
  return `${url.protocol}//${url.host}${path}`;
}

/**
 * Several controller URLs: repeated values and comma-separated lists, each normalised (see
 * normalizeUrl), duplicates dropped, in the order given. All must use one scheme: a context must
 * not fall back from https to plain http and send its token in the clear.
 */
export function normalizeUrlList(input: string | readonly string[], flag = 'URL'): string[] {
  const items = (typeof input === 'string' ? [input] : input).flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
  if (items.length === 0) throw new UsageError(`invalid ${flag}: no URL given`);
  const urls = [...new Set(items.map((item) => normalizeUrl(item, flag)))];
  const schemes = new Set(urls.map((u) => new URL(u).protocol));
  if (schemes.size > 1) throw new UsageError(`invalid ${flag}: mixes http:// and https:// URLs (${urls.join(', ')}); use one scheme for all controllers`);
  return urls;
}

/** A context name derived from a URL: http://127.0.0.1:8080 → 127.0.0.1-8080. */
export function contextNameFor(url: string): string {
  const u = new URL(url);
  const name = `${u.hostname}${u.port ? `-${u.port}` : ''}`.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '');
  return (name || 'default').slice(0, 63);
}

export function validateContextName(name: string): string {
  if (!CONTEXT_NAME_PATTERN.test(name)) {
    throw new UsageError(`invalid context name "${name}": letters, digits, ".", "_" and "-", at most 63 characters`);
  }
  return name;
}

export interface TargetInputs {
  flags: { url?: string | readonly string[] | undefined; token?: string | undefined; context?: string | undefined };
  env: Record<string, string | undefined>;
  config: Config;
  configPath: string;
}

export function resolveTarget({ flags, env, config, configPath }: TargetInputs): Target {
  const explicit = flags.context ?? (env.FLEET_CONTEXT || undefined);
  let contextName: string | null = explicit ?? config.currentContext;
  let context: Context | undefined;
  if (contextName !== null) {
    context = config.contexts[contextName];
    if (!context) {
      if (explicit !== undefined) {
        const from = flags.context !== undefined ? '--context' : 'FLEET_CONTEXT';
        throw new UsageError(`context "${contextName}" (from ${from}) not found in ${configPath}; see "fleet context list"`);
      }
      contextName = null; // a dangling currentContext is ignored
    }
  }
  const pick = <T>(flag: T | undefined, envValue: T | undefined, ctxValue: T | undefined): [T | null, Source] => {
    if (flag) return [flag, 'flag'];
    if (envValue) return [envValue, 'env'];
    if (ctxValue) return [ctxValue, 'context'];
    return [null, 'none'];
  };
  const flagUrls = typeof flags.url === 'string' ? [flags.url] : flags.url && flags.url.length > 0 ? [...flags.url] : undefined;
  const [rawUrls, urlSource] = pick<string[]>(flagUrls, env.FLEET_URL ? [env.FLEET_URL] : undefined, context ? contextUrls(context) : undefined);
  const urlFlag = urlSource === 'flag' ? '--url' : urlSource === 'env' ? 'FLEET_URL' : `the URL of context "${contextName}"`;
  const urls = rawUrls === null ? [] : normalizeUrlList(rawUrls, urlFlag);
  // A context's token is only ever sent to that context's controllers: never leak
  // it to another URL given by --url or FLEET_URL.
  const ownUrls = new Set<string>();
  for (const u of context ? contextUrls(context) : []) {
    try {
      ownUrls.add(normalizeUrl(u));
    } catch {
      // a malformed context URL matches nothing (and is reported when it is the one used)
    }
  }
  const contextTokenApplies = context !== undefined && urls.length > 0 && urls.every((u) => ownUrls.has(u));
  const [token, tokenSource] = pick(flags.token, env.FLEET_TOKEN, contextTokenApplies ? context?.token : undefined);
  return {
    url: urls[0] ?? null,
    urls,
    token,
    urlSource,
    tokenSource,
    contextName: context ? contextName : null,
    // Like the token, the pinned CA applies only to the context's own URL.
    caPem: contextTokenApplies ? (context?.caPem ?? null) : null,
    configPath,
  };
}

/** `fleet_abc123_s3cr3t` → `fleet_abc123_****` (enough to tell tokens apart). */
export function maskToken(token: string): string {
  const m = /^(fleet_[^_]+_)/.exec(token);
  if (m) return `${m[1]}****`;
  return token.length <= 8 ? '****' : `${token.slice(0, 4)}****`;
}
