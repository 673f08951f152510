/** Parses `host:port` (IPv6 as `[::1]:port`). Throws a clear error otherwise. */
export function parseHostPort(address: string): { host: string; port: number } {
  const trimmed = address.trim().replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
  const match = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(trimmed);
  const port = match ? Number(match[2]) : Number.NaN;
  if (!match || !(port >= 1 && port <= 65535)) {
    throw new Error(`controller address must be HOST:PORT (e.g. controller.example.com:7443), got ${JSON.stringify(address)}`);
  }
  const host = match[1]!.startsWith('[') ? match[1]!.slice(1, -1) : match[1]!;
  return { host, port };
}

/** Normalised `host:port` as stored in worker.json and used as the gRPC target. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
