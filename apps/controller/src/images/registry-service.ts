// Registries the fleet pulls from and pushes to (issue 15): credentials, the insecure (plain HTTP)
// flag and an extra CA, per host[:port]. The password is write-only like a VM password: sealed at
// rest (RegistrySecrets), never in a view, an event or a log; it leaves the controller only inside
// the DesiredState of a worker that pulls or pushes from that registry (`accessFor`).
import { X509Certificate } from 'node:crypto';
import { isIPv6 } from 'node:net';
import type { FleetDb, Registry } from '@fleet/db';
import type { RegistryAccess } from '@fleet/proto';
import { RegistryClient } from '@fleet/oci';
import type { EventLog } from '../events/event-log.ts';
import type { RegistrySecrets } from '../secrets/registry-secrets.ts';
import { badRequest, FleetError, notFound } from '../errors.ts';
import { loginError } from './registry-errors.ts';

export interface RegistrySettings {
  /** Omitted: keep the stored one ("" when new). */
  username?: string;
  /** Omitted: keep the stored one; null: remove it (anonymous). */
  password?: string | null;
  insecure?: boolean;
  /** PEM (one or more certificates); "" removes it; omitted: keep the stored one. */
  caPem?: string;
  /** Check the settings against the registry before storing them (default true). */
  verify?: boolean;
}

export interface RegistryView {
  host: string;
  username: string;
  passwordSet: boolean;
  insecure: boolean;
  caSet: boolean;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

/** What `verify` needs of a registry client (tests may replace it). */
export interface RegistryPinger {
  ping(): Promise<void>;
}
export type RegistryClientFactory = (opts: { registry: string; insecure: boolean; caPem?: string; username?: string; password?: string; timeoutMs: number }) => RegistryPinger;

export const ANONYMOUS_ACCESS: Readonly<Required<RegistryAccess>> = Object.freeze({ insecure: false, caPem: '', username: '', password: '' });

const MAX_CA_PEM = 64 * 1024;
const DNS_LABEL = /^(?:[a-z0-9]|[a-z0-9][a-z0-9-]{0,61}[a-z0-9])$/;
const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * host[:port] as written in image references: a DNS name or IPv4 address (lower-cased), or
 * [IPv6]; port 1-65535. Returns the canonical form, or throws a 400 saying what is wrong.
 */
export function normalizeRegistryHost(input: string): string {
  const fail = (why: string) => badRequest(`invalid registry ${JSON.stringify(input.slice(0, 300))}: ${why}; write it as HOST[:PORT] as in image references (ghcr.io, 127.0.0.1:5000, [::1]:5000)`);
  if (typeof input !== 'string' || input.length === 0) throw fail('it is empty');
  if (input.length > 262) throw fail('it is too long');
  let host: string;
  let port: string | undefined;
  if (input.startsWith('[')) {
    const close = input.indexOf(']');
    if (close < 0) throw fail("unclosed '['");
    const addr = input.slice(1, close);
    if (!isIPv6(addr)) throw fail(`${addr} is not an IPv6 address`);
    const rest = input.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) throw fail(`unexpected ${JSON.stringify(rest)} after the address`);
    if (rest !== '') port = rest.slice(1);
    host = `[${addr.toLowerCase()}]`;
  } else {
    const parts = input.split(':');
    if (parts.length > 2) throw fail("IPv6 addresses must be written in brackets ([::1]:5000)");
    host = parts[0]!.toLowerCase();
    port = parts[1];
    if (host === '') throw fail('the host is empty');
    if (host.length > 253) throw fail('the host name is too long');
    for (const label of host.split('.')) {
      if (!DNS_LABEL.test(label)) throw fail(label === '' ? 'the host has an empty label' : `host label ${JSON.stringify(label)} may only hold letters, digits and inner '-'`);
    }
  }
  if (port !== undefined) {
    if (!/^[0-9]{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) throw fail(`port ${JSON.stringify(port)} must be a number from 1 to 65535`);
    port = String(Number(port));
  }
  return port === undefined ? host : `${host}:${port}`;
}

/** Checks that `pem` holds one or more X.509 certificates (and nothing that is not one). */
export function checkCaPem(pem: string): void {
  if (pem.length > MAX_CA_PEM) throw badRequest(`caPem is ${pem.length} bytes; at most ${MAX_CA_PEM} are allowed`);
  const blocks = pem.match(PEM_BLOCK) ?? [];
  if (blocks.length === 0) throw badRequest('caPem holds no PEM certificate (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----)');
  if (pem.replace(PEM_BLOCK, '').trim() !== '') throw badRequest('caPem holds text besides PEM certificates (a private key? only the CA certificate belongs here)');
  blocks.forEach((block, i) => {
    try {
      new X509Certificate(block);
    } catch (err) {
      throw badRequest(`caPem: certificate ${i + 1} of ${blocks.length} does not parse as X.509: ${err instanceof Error ? err.message : String(err)}`);
    }
  });
}

export function toRegistryView(r: Registry): RegistryView {
  return {
    host: r.host,
    username: r.username,
    passwordSet: r.passwordSealed !== null && r.passwordSealed !== '',
    insecure: r.insecure,
    caSet: r.caPem !== '',
    createdBy: r.createdBy,
    createdAt: r.createdAt.toISOString(),
    updatedAt: r.updatedAt.toISOString(),
  };
}

export interface RegistryServiceOptions {
  /** Builds the client `verify` pings (default: @fleet/oci's RegistryClient). */
  clientFactory?: RegistryClientFactory;
  /**
   * Which registries VM images, prefetches and pushes may name: "any" (default), or "known": only
   * hosts an admin added with `fleet registry login` (anonymous ones too) — `--registries known`.
   */
  policy?: RegistryPolicy;
  /** Timeout of the verification (default 15 s). */
  timeoutMs?: number;
}

export type RegistryPolicy = 'any' | 'known';

export class RegistryService {
  private readonly clientFactory: RegistryClientFactory;
  private readonly policy: RegistryPolicy;
  private readonly timeoutMs: number;

  constructor(
    private readonly db: FleetDb,
    private readonly secrets: RegistrySecrets,
    private readonly events: EventLog,
    opts: RegistryServiceOptions = {},
  ) {
    this.clientFactory = opts.clientFactory ?? ((o) => new RegistryClient(o));
    this.policy = opts.policy ?? 'any';
    this.timeoutMs = opts.timeoutMs ?? 15_000;
  }

  /** Creates or changes a registry's settings (`fleet registry login`). Omitted fields keep their stored values. */
  async put(hostInput: string, s: RegistrySettings, actor: string): Promise<RegistryView> {
    const host = normalizeRegistryHost(hostInput);
    if (s.caPem) checkCaPem(s.caPem);
    if (s.username !== undefined && /[\u0000-\u001f\u007f:]/.test(s.username)) throw badRequest('username may not contain ":" or control characters');
    const existing = await this.db.registry.findUnique({ where: { host } });
    const username = s.username ?? existing?.username ?? '';
    const insecure = s.insecure ?? existing?.insecure ?? false;
    const caPem = s.caPem ?? existing?.caPem ?? '';
    let password: string | null;
    if (s.password !== undefined) password = s.password;
    else password = existing ? await this.secrets.passwordOf(existing) : null;
    if (password !== null && username === '') throw badRequest(`a password for ${host} needs a username`);

    if (s.verify !== false) {
      const client = this.clientFactory({
        registry: host,
        insecure,
        ...(caPem ? { caPem } : {}),
        ...(username ? { username } : {}),
        ...(password !== null ? { password } : {}),
        timeoutMs: this.timeoutMs,
      });
      try {
        await client.ping();
      } catch (err) {
        throw loginError(err, host);
      }
    }

    // Sealed only when it changes: re-putting the insecure flag keeps the same envelope.
    const passwordSealed = s.password === undefined ? (existing?.passwordSealed ?? null) : s.password === null ? null : await this.secrets.seal(host, s.password);
    const data = { username, passwordSealed, insecure, caPem };
    const row = await this.db.registry.upsert({ where: { host }, create: { host, ...data, createdBy: actor }, update: data });
    const facts = [username ? `user ${username}` : 'anonymous', password !== null ? 'password set' : null, insecure ? 'insecure (plain HTTP allowed)' : null, caPem ? 'own CA' : null, s.verify === false ? 'not verified' : 'verified'].filter(Boolean);
    await this.events.append([
      {
        kind: 'registry.login',
        message: `registry ${host} ${existing ? 'updated' : 'added'} by ${actor} (${facts.join(', ')})`,
        actor,
        data: { host, username, passwordSet: password !== null, insecure, caSet: caPem !== '', verified: s.verify !== false },
      },
    ]);
    return toRegistryView(row);
  }

  async remove(hostInput: string, actor: string): Promise<void> {
    const host = normalizeRegistryHost(hostInput);
    const { count } = await this.db.registry.deleteMany({ where: { host } });
    if (count === 0) throw notFound('registry', host);
    await this.events.append([{ kind: 'registry.logout', message: `registry ${host} removed by ${actor}: pulls from it are anonymous now`, actor, data: { host } }]);
  }

  async get(hostInput: string): Promise<RegistryView> {
    const host = normalizeRegistryHost(hostInput);
    const row = await this.db.registry.findUnique({ where: { host } });
    if (!row) throw notFound('registry', host);
    return toRegistryView(row);
  }

  async list(): Promise<RegistryView[]> {
    return (await this.db.registry.findMany({ orderBy: { host: 'asc' } })).map(toRegistryView);
  }

  /**
   * Refuses a registry the fleet may not use (policy "known" and no `fleet registry login` for it):
   * 403 `registry_not_allowed`. Every VM image, prefetch and push passes here first.
   */
  async assertAllowed(registry: string): Promise<void> {
    if (this.policy === 'any') return;
    let host: string;
    try {
      host = normalizeRegistryHost(registry);
    } catch {
      host = registry;
    }
    if ((await this.db.registry.count({ where: { host } })) > 0) return;
    throw new FleetError(403, 'registry_not_allowed', `registry ${host} is not one this fleet uses: the controller runs with --registries known, so an admin must add it first (fleet registry login ${host}, --anonymous for a public one)`, { registry: host });
  }

  /** How a worker (or the controller) reaches `registry`: unknown registries are anonymous over TLS. */
  async accessFor(registry: string): Promise<Required<RegistryAccess>> {
    return (await this.accessForHosts([registry])).get(registry) ?? { ...ANONYMOUS_ACCESS };
  }

  /** `accessFor` of several registries with one query (keys: the hosts as given). */
  async accessForHosts(registries: Iterable<string>): Promise<Map<string, Required<RegistryAccess>>> {
    const byCanonical = new Map<string, string[]>();
    for (const r of new Set(registries)) {
      let canonical: string;
      try {
        canonical = normalizeRegistryHost(r);
      } catch {
        continue; // not a host we could store: anonymous
      }
      byCanonical.set(canonical, [...(byCanonical.get(canonical) ?? []), r]);
    }
    const out = new Map<string, Required<RegistryAccess>>();
    for (const list of byCanonical.values()) for (const r of list) out.set(r, { ...ANONYMOUS_ACCESS });
    if (byCanonical.size === 0) return out;
    const rows = await this.db.registry.findMany({ where: { host: { in: [...byCanonical.keys()] } } });
    for (const row of rows) {
      const access = { insecure: row.insecure, caPem: row.caPem, username: row.username, password: (await this.secrets.passwordOf(row)) ?? '' };
      for (const r of byCanonical.get(row.host) ?? []) out.set(r, access);
    }
    return out;
  }
}
