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
    if (!/^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$/.test(key)) {
      throw new Error(`label key ${JSON.stringify(key)} may use letters, digits, ".", "_", "-", "/" and must start and end with a letter or digit`);
    }
    labels[key] = item.slice(eq + 1).trim();
  }
  return labels;
}
