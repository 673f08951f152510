// Serves the dashboard's production build (apps/dashboard/dist, built by
// scripts/setup.sh) at `/`: files by path, and index.html for every other page
// path so the browser app's own routes (/vms/x, /workers) survive a reload.
// API-looking paths keep the API's JSON 404.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync } from 'fastify';
import fastifyStatic from '@fastify/static';
import { setDashboardHeaders } from '../browser-security.ts';

export const DEFAULT_DASHBOARD_DIR = fileURLToPath(new URL('../../../../dashboard/dist', import.meta.url));

const NOT_BUILT = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Fleet</title></head>
<body><main><h1>Fleet dashboard not built</h1><p>Run <code>scripts/setup.sh</code> (it builds <code>apps/dashboard</code>) and restart the controller. The REST API is at <code>/v1</code>.</p></main></body></html>`;

export function dashboardRoutes(root: string = process.env.FLEET_DASHBOARD_DIR || DEFAULT_DASHBOARD_DIR): FastifyPluginAsync {
  return async (app) => {
    const built = existsSync(path.join(root, 'index.html'));
    await app.register(fastifyStatic, { root, serve: false });
    // Every answer of the dashboard (pages, assets, its 404s) carries the browser hardening headers.
    app.addHook('onRequest', async (req, reply) => setDashboardHeaders(req, reply));
    app.get('/*', { schema: { hide: true } }, async (req, reply) => {
      let urlPath: string;
      try {
        urlPath = decodeURIComponent(req.url.split('?')[0] ?? '/');
      } catch {
        return reply.code(400).send({ error: { code: 'bad_url', message: 'the URL path is not valid percent-encoding' } });
      }
      if (urlPath.startsWith('/v1/') || urlPath === '/v1' || urlPath === '/metrics') {
        return reply.code(404).send({ error: { code: 'not_found', message: `no route ${req.method} ${urlPath}` } });
      }
      if (!built) return reply.code(503).type('text/html').send(NOT_BUILT);
      const rel = path.posix.normalize(urlPath).replace(/^\/+/, '');
      if (rel && !rel.startsWith('..') && isFile(path.join(root, rel))) {
        // Vite names assets by content hash: cache them forever.
        const immutable = rel.startsWith('assets/');
        return reply.sendFile(rel, { maxAge: immutable ? '365d' : 0, immutable });
      }
      if (path.posix.extname(rel)) return reply.code(404).type('text/plain').send('not found');
      return reply.header('cache-control', 'no-cache').sendFile('index.html', { cacheControl: false });
    });
  };
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}
