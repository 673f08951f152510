// Whether and how the REST API (and its WebSockets and the dashboard) speaks TLS.
// `auto` = TLS unless the API listens on a loopback address, so bearer tokens and
// exec streams never cross a network in clear text by default.
import { readFile } from 'node:fs/promises';
import type { ControllerIdentity } from '../identity/controller-identity.ts';
import type { ApiTlsOptions } from './api-server.ts';

export type ApiTlsMode = 'auto' | 'on' | 'off';

/** 127.0.0.0/8, ::1 and localhost: only this machine can reach them. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export function apiTlsEnabled(mode: ApiTlsMode, apiHost: string): boolean {
  return mode === 'on' || (mode === 'auto' && !isLoopback(apiHost));
}

/** Names the controller's certificate must carry for the API: --api-hostname values and a concrete listen address. */
export function apiCertificateNames(apiHost: string, apiHostnames: string[]): string[] {
  const wildcard = apiHost === '0.0.0.0' || apiHost === '::' || apiHost === '';
  return [...apiHostnames, ...(wildcard || isLoopback(apiHost) ? [] : [apiHost])];
}

/**
 * The key and chain the API serves: the operator's (--api-cert/--api-key), or the
 * controller's server certificate (issued by its CA) followed by the CA, so a client
 * can pin the CA by its fingerprint.
 */
export async function apiTlsMaterial(identity: ControllerIdentity, certFile?: string, keyFile?: string): Promise<ApiTlsOptions> {
  if (certFile || keyFile) {
    if (!certFile || !keyFile) throw new Error('--api-cert and --api-key go together');
    return { cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8') };
  }
  return { key: identity.server.keyPem, cert: identity.server.certPem.trimEnd() + '\n' + identity.serverCaPem };
}
