import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { UsageError } from '../errors.ts';
import { configPath, contextNameFor, contextUrls, emptyConfig, loadConfig, maskToken, normalizeUrl, normalizeUrlList, resolveTarget, saveConfig, type Config } from './contexts.ts';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fleet-cli-config-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('configPath', () => {
  it('prefers FLEET_CONFIG, then XDG_CONFIG_HOME, then ~/.config', () => {
    expect(configPath({ FLEET_CONFIG: '/x/c.json', XDG_CONFIG_HOME: '/xdg' }, '/home/u')).toBe('/x/c.json');
    expect(configPath({ XDG_CONFIG_HOME: '/xdg' }, '/home/u')).toBe('/xdg/fleet/config.json');
    expect(configPath({}, '/home/u')).toBe('/home/u/.config/fleet/config.json');
  });
});

describe('several controller URLs', () => {
  it('an old config file with "url" only loads as one URL; a list round-trips; junk entries are dropped', () => {
    const path = join(dir, 'config.json');
    writeFileSync(path, JSON.stringify({ currentContext: 'old', contexts: { old: { url: 'http://a:8080', token: 'fleet_a_s' } } }));
    const old = loadConfig(path);
    expect(old.contexts.old).toEqual({ url: 'http://a:8080', token: 'fleet_a_s' });
    expect(contextUrls(old.contexts.old!)).toEqual(['http://a:8080']);
    const config: Config = { currentContext: 'ha', contexts: { ha: { url: 'http://a:8080', urls: ['http://a:8080', 'http://b:8080'], token: 'fleet_a_s' } } };
    saveConfig(path, config);
    expect(loadConfig(path)).toEqual(config);
    writeFileSync(path, JSON.stringify({ contexts: { ha: { url: 'http://a:8080', urls: ['http://b:8080/', 7, 'ftp://x', 'http://a:8080', 'b:9000'], token: 't' } } }));
    expect(contextUrls(loadConfig(path).contexts.ha!)).toEqual(['http://a:8080', 'http://b:8080', 'http://b:9000']);
  });

  it('normalizeUrlList: repeated and comma-separated, normalised, de-duplicated, one scheme', () => {
    expect(normalizeUrlList(['http://a:1/v1, b:2', 'http://a:1'])).toEqual(['http://a:1', 'http://b:2']);
    expect(() => normalizeUrlList(['https://a:1', 'http://b:2'], '--url')).toThrow(/mixes http/);
    expect(() => normalizeUrlList(' , ', '--url')).toThrow(UsageError);
  });

  it('resolveTarget: the context token and pinned CA apply only when every URL is the context\'s own', () => {
    const config: Config = { currentContext: 'ha', contexts: { ha: { url: 'http://a:1', urls: ['http://a:1', 'http://b:2'], token: 'fleet_ha_s', caPem: 'PEM' } } };
    const base = { env: {}, config, configPath: '/c' };
    expect(resolveTarget({ ...base, flags: {} })).toMatchObject({ url: 'http://a:1', urls: ['http://a:1', 'http://b:2'], token: 'fleet_ha_s', urlSource: 'context', caPem: 'PEM' });
    expect(resolveTarget({ ...base, flags: { url: ['http://b:2'] } })).toMatchObject({ urls: ['http://b:2'], token: 'fleet_ha_s' });
    expect(resolveTarget({ ...base, flags: { url: ['http://b:2', 'http://evil:3'] } })).toMatchObject({ token: null, caPem: null });
    expect(resolveTarget({ ...base, flags: {}, env: { FLEET_URL: 'http://b:2,http://a:1' } })).toMatchObject({ urls: ['http://b:2', 'http://a:1'], urlSource: 'env', token: 'fleet_ha_s' });
  });
});

describe('saveConfig / loadConfig', () => {
  it('writes the file with mode 0600 in a 0700 directory, and reads it back', () => {
    const path = join(dir, 'nested', 'fleet', 'config.json');
    const config: Config = { currentContext: 'a', contexts: { a: { url: 'http://a:8080', token: 'fleet_a_s', user: 'admin', roles: ['admin'] } } };
    saveConfig(path, config);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'nested', 'fleet')).mode & 0o777).toBe(0o700);
    expect(loadConfig(path)).toEqual(config);
  });

  it('tightens an existing file that was world-readable', () => {
    const path = join(dir, 'config.json');
    writeFileSync(path, '{}', { mode: 0o644 });
    saveConfig(path, emptyConfig());
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(path, 'utf8'))).toEqual({ currentContext: null, contexts: {} });
  });

  it('treats a missing file as empty and reports a broken one', () => {
    expect(loadConfig(join(dir, 'none.json'))).toEqual(emptyConfig());
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{not json');
    expect(() => loadConfig(bad)).toThrow(/is not valid JSON/);
  });
});

describe('resolveTarget precedence: flags > env > context', () => {
  const config: Config = {
    currentContext: 'prod',
    contexts: {
      prod: { url: 'http://prod:8080', token: 'fleet_prod_s' },
      dev: { url: 'http://dev:8080', token: 'fleet_dev_s' },
    },
  };
  const resolve = (flags: { url?: string; token?: string; context?: string }, env: Record<string, string> = {}) =>
    resolveTarget({ flags, env, config, configPath: '/c.json' });

  it('uses the current context by default', () => {
    expect(resolve({})).toMatchObject({ url: 'http://prod:8080', token: 'fleet_prod_s', urlSource: 'context', tokenSource: 'context', contextName: 'prod' });
  });

  it('--context and FLEET_CONTEXT pick another context; the flag wins', () => {
    expect(resolve({}, { FLEET_CONTEXT: 'dev' })).toMatchObject({ url: 'http://dev:8080', contextName: 'dev' });
    expect(resolve({ context: 'prod' }, { FLEET_CONTEXT: 'dev' })).toMatchObject({ url: 'http://prod:8080', contextName: 'prod' });
  });

  it('env beats the context, field by field, but a context token never goes to another URL', () => {
    expect(resolve({}, { FLEET_URL: 'http://env:1' })).toMatchObject({ url: 'http://env:1', urlSource: 'env', token: null, tokenSource: 'none' });
    expect(resolve({ url: 'http://other:9' })).toMatchObject({ url: 'http://other:9', token: null });
    expect(resolve({}, { FLEET_URL: 'http://prod:8080/' })).toMatchObject({ url: 'http://prod:8080', token: 'fleet_prod_s', tokenSource: 'context' });
    expect(resolve({}, { FLEET_TOKEN: 'fleet_env_s' })).toMatchObject({ url: 'http://prod:8080', token: 'fleet_env_s', tokenSource: 'env' });
  });

  it('flags beat env and context', () => {
    const t = resolve({ url: 'flag:9', token: 'fleet_flag_s' }, { FLEET_URL: 'http://env:1', FLEET_TOKEN: 'fleet_env_s' });
    expect(t).toMatchObject({ url: 'http://flag:9', urlSource: 'flag', token: 'fleet_flag_s', tokenSource: 'flag' });
  });

  it('an unknown --context is a usage error; a dangling current context is ignored', () => {
    expect(() => resolve({ context: 'nope' })).toThrow(UsageError);
    expect(() => resolve({ context: 'nope' })).toThrow(/context "nope" \(from --context\) not found/);
    const t = resolveTarget({ flags: {}, env: {}, config: { currentContext: 'gone', contexts: {} }, configPath: '/c.json' });
    expect(t).toMatchObject({ url: null, token: null, contextName: null, urlSource: 'none' });
  });
});

describe('URLs and names', () => {
  it.each([
    ['127.0.0.1:8080', 'http://127.0.0.1:8080'],
    ['http://127.0.0.1:8080/', 'http://127.0.0.1:8080'],
    ['https://fleet.example.com/v1', 'https://fleet.example.com'],
    ['https://example.com/fleet/v1/', 'https://example.com/fleet'],
    ['  http://h:1  ', 'http://h:1'],
  ])('normalizes %s', (input, url) => {
    expect(normalizeUrl(input)).toBe(url);
  });
  it('rejects other schemes and junk', () => {
    expect(() => normalizeUrl('ftp://x')).toThrow(/only http/);
    expect(() => normalizeUrl('http://')).toThrow(/expected a URL/);
  });
  it('derives context names and masks tokens', () => {
    expect(contextNameFor('http://127.0.0.1:8080')).toBe('127.0.0.1-8080');
    expect(contextNameFor('https://fleet.example.com')).toBe('fleet.example.com');
    expect(maskToken('fleet_abc123_s3cr3t')).toBe('fleet_abc123_****');
    expect(maskToken('short')).toBe('****');
  });
});

describe('pinned CA in a context', () => {
  const config: Config = { currentContext: 'prod', contexts: { prod: { url: 'https://prod:8080', token: 'fleet_prod_s', caPem: 'PEM' } } };
  it('is read back from the file and applies to the context URL only', () => {
    const path = join(dir, 'c.json');
    saveConfig(path, config);
    expect(loadConfig(path).contexts.prod?.caPem).toBe('PEM');
    expect(resolveTarget({ flags: {}, env: {}, config, configPath: path }).caPem).toBe('PEM');
    // Another URL (flag) gets neither the context's token nor its CA.
    expect(resolveTarget({ flags: { url: 'https://other:8080' }, env: {}, config, configPath: path }).caPem).toBeNull();
  });
});
