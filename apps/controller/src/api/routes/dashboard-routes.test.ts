import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dashboardRoutes } from './dashboard-routes.ts';

describe('serving the dashboard build', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-dash-'));
    await mkdir(path.join(dir, 'dist/assets'), { recursive: true });
    await writeFile(path.join(dir, 'dist/index.html'), '<!doctype html><div id="root"></div>');
    await writeFile(path.join(dir, 'dist/assets/app-1234.js'), 'console.log(1)');
    await writeFile(path.join(dir, 'secret.txt'), 'outside the build');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function app(root: string) {
    const a = Fastify();
    a.get('/v1/health', async () => ({ status: 'ok' }));
    await a.register(dashboardRoutes(root));
    return a;
  }

  it('serves index.html for / and for app paths (SPA fallback), never cached', async () => {
    const a = await app(path.join(dir, 'dist'));
    for (const url of ['/', '/vms/web-1', '/workers?x=1']) {
      const r = await a.inject({ url });
      expect(r.statusCode, url).toBe(200);
      expect(r.body).toContain('<div id="root">');
      expect(r.headers['cache-control']).toBe('no-cache');
    }
  });

  it('serves hashed assets with a long immutable cache, and 404s missing files', async () => {
    const a = await app(path.join(dir, 'dist'));
    const js = await a.inject({ url: '/assets/app-1234.js' });
    expect(js.statusCode).toBe(200);
    expect(js.headers['cache-control']).toMatch(/max-age=31536000.*immutable/);
    expect((await a.inject({ url: '/assets/missing.js' })).statusCode).toBe(404);
  });

  it('keeps the API\'s JSON 404 for unknown /v1 routes and leaves real API routes alone', async () => {
    const a = await app(path.join(dir, 'dist'));
    const r = await a.inject({ url: '/v1/nope' });
    expect(r.statusCode).toBe(404);
    expect(r.json()).toEqual({ error: { code: 'not_found', message: 'no route GET /v1/nope' } });
    expect((await a.inject({ url: '/v1/health' })).json()).toEqual({ status: 'ok' });
  });

  it('never serves files outside the build and refuses malformed URLs', async () => {
    const a = await app(path.join(dir, 'dist'));
    for (const url of ['/../secret.txt', '/%2e%2e/secret.txt', '/assets/..%2f..%2fsecret.txt']) {
      const r = await a.inject({ url });
      expect(r.body, url).not.toContain('outside the build');
    }
    expect((await a.inject({ url: '/%E0%A4%A' })).statusCode).toBe(400);
  });

  it('every dashboard answer carries CSP, no framing, nosniff and no referrer', async () => {
    const a = await app(path.join(dir, 'dist'));
    for (const url of ['/', '/vms/web-1', '/assets/app-1234.js', '/assets/missing.js', '/v1/nothing']) {
      const r = await a.inject({ url, headers: { host: 'fleet.example:8080' } });
      const csp = String(r.headers['content-security-policy']);
      expect(csp, url).toMatch(/default-src 'self'/);
      expect(csp).toMatch(/frame-ancestors 'none'/);
      expect(csp).toMatch(/script-src 'self'(;|$)/); // no inline or remote script
      expect(csp).toMatch(/connect-src 'self' ws:\/\/fleet\.example:8080 wss:\/\/fleet\.example:8080/);
      expect(r.headers['x-content-type-options']).toBe('nosniff');
      expect(r.headers['referrer-policy']).toBe('no-referrer');
      expect(r.headers['x-frame-options']).toBe('DENY');
    }
    const none = await app(path.join(dir, 'no-such-dist'));
    expect((await none.inject({ url: '/' })).headers['content-security-policy']).toMatch(/frame-ancestors 'none'/);
  });

  it('says how to build it when there is no build', async () => {
    const a = await app(path.join(dir, 'no-such-dist'));
    const r = await a.inject({ url: '/' });
    expect(r.statusCode).toBe(503);
    expect(r.body).toMatch(/scripts\/setup\.sh/);
  });
});
