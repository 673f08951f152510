/** Parses `k=v,k2=v2` (whitespace around items ignored). Throws on malformed items. */
export function parseLabels(text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  if (!text) return labels;
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    const key = eq === -1 ? '' : item.slice(0, eq).trim();
    if (eq === -1 || key === '') throw new Error(`label ${JSON.stringify(item)} must look like key=value`);
    // Kubernetes label syntax (as the controller checks it): [DNS-subdomain prefix "/"] name; name and value ≤ 63.
    if (!(key.length <= 317 && /^((?=[^/]{1,253}\/)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/.test(key))) {
      throw new Error(`label key ${JSON.stringify(key)} must be an optional DNS-subdomain prefix and "/", then at most 63 letters, digits, ".", "_", "-", starting and ending with a letter or digit`);
    }
    const value = item.slice(eq + 1).trim();
    if (!/^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/.test(value)) {
      throw new Error(`label value ${JSON.stringify(value)} of ${key} must be empty or at most 63 letters, digits, ".", "_", "-", starting and ending with a letter or digit`);
    }
    labels[key] = value;
  }
  if (Object.keys(labels).length > 64) throw new Error(`at most 64 labels (got ${Object.keys(labels).length})`);
  return labels;
}
