// Browser hardening (docs/security.md): the dashboard's response headers (CSP, no framing,
// no sniffing, no referrer) and the Origin check that keeps other sites' pages from opening
// a WebSocket with the user's token (cross-site WebSocket hijacking).
import type { FastifyReply, FastifyRequest } from 'fastify';
import { forbidden } from '../errors.ts';

const HOST = /^[A-Za-z0-9.\-:[\]]{1,300}$/;

/** The Content-Security-Policy of dashboard pages, for the Host the browser used. */
export function dashboardCsp(host: string | undefined): string {
  // The Vite build loads only its own /assets files: no inline or remote script. Inline styles
  // stay allowed (xterm.js and the plots set styles at run time). The terminal's WebSocket goes
  // to the same host: 'self' covers ws(s) of the same origin in current browsers; the explicit
  // ws:// and wss:// of this host cover the older ones.
  const self = host && HOST.test(host) ? ` ws://${host} wss://${host}` : '';
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    `connect-src 'self'${self}`,
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

/** Sets the dashboard's security headers on a reply. */
export function setDashboardHeaders(req: FastifyRequest, reply: FastifyReply): void {
  reply
    .header('content-security-policy', dashboardCsp(req.headers.host))
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('x-frame-options', 'DENY')
    .header('cross-origin-opener-policy', 'same-origin');
}

/**
 * Refuses (403) a browser WebSocket from another origin. Browsers always send Origin on a
 * WebSocket handshake; it must name the host the request was sent to (Host, or X-Forwarded-Host
 * behind a proxy: a page cannot set either header on a WebSocket). Requests without Origin are
 * not from a browser (the CLI, controllers relaying sessions) and are let through to the token check.
 */
export function checkWebSocketOrigin(req: FastifyRequest): void {
  const origin = req.headers.origin;
  if (origin === undefined) return;
  let originHost: string;
  try {
    const u = new URL(origin);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    originHost = u.host.toLowerCase();
  } catch {
    throw forbidden(`cross-origin WebSocket refused: Origin ${JSON.stringify(String(origin).slice(0, 100))} is not this controller`);
  }
  const forwarded = req.headers['x-forwarded-host'];
  const hosts = [req.headers.host, ...(typeof forwarded === 'string' ? forwarded.split(',') : [])]
    .filter((h): h is string => typeof h === 'string')
    .map((h) => h.trim().toLowerCase());
  // new URL() drops a default port (http://h:80 → h); compare both spellings.
  const withoutDefaultPort = (h: string) => h.replace(/:(80|443)$/, '');
  if (!hosts.some((h) => h === originHost || withoutDefaultPort(h) === originHost)) {
    throw forbidden(`cross-origin WebSocket refused: a page from ${origin.slice(0, 100)} may not open sessions on this controller (open the dashboard from the controller's own address)`);
  }
}
