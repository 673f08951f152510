// `--labels k=v,...`: checked with the controller's own label rules (@fleet/api), so a worker
// never starts with labels its controller would drop at Hello.
import { labelKeyProblem, labelValueProblem, MAX_LABELS } from '@fleet/api/syntax';

export function parseLabels(text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  if (!text) return labels;
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    const key = eq === -1 ? '' : item.slice(0, eq).trim();
    if (eq === -1 || key === '') throw new Error(`label ${JSON.stringify(item)} must look like key=value`);
    const value = item.slice(eq + 1).trim();
    const problem = labelKeyProblem(key) ?? labelValueProblem(value);
    if (problem) throw new Error(`${problem} (in --labels)`);
    labels[key] = value;
  }
  if (Object.keys(labels).length > MAX_LABELS) throw new Error(`at most ${MAX_LABELS} labels (got ${Object.keys(labels).length})`);
  return labels;
}
