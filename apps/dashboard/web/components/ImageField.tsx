// The create form's image field: a free text input whose suggestions are the images the
// workers hold — registry images in their caches (GET /v1/images) and "fleet-guest", the
// built-in guest of qemu workers — so the form never pre-fills one no worker has.
import type { ImageSummaryObject, WorkerObject } from '../api/types.ts';

export interface ImageChoice {
  value: string;
  /** Where it is, e.g. "on mac-1, mac-2". */
  detail: string;
}

/** The built-in guest image every qemu worker can boot without a pull. */
export const QEMU_GUEST_IMAGE = 'fleet-guest';

/**
 * Images worth offering: cached registry images that some worker holds ready (pinned references
 * as the API lists them), then fleet-guest when a qemu worker is online. Null while unknown.
 */
export function imageChoices(workers: WorkerObject[] | null, images: ImageSummaryObject[] | null): ImageChoice[] {
  const out: ImageChoice[] = [];
  const seen = new Set<string>();
  for (const img of images ?? []) {
    const ready = img.workers.filter((w) => w.state === 'ready').map((w) => w.name);
    if (ready.length === 0 || !img.reference || seen.has(img.reference)) continue;
    seen.add(img.reference);
    out.push({ value: img.reference, detail: `cached on ${ready.join(', ')}` });
  }
  out.sort((a, b) => a.value.localeCompare(b.value));
  const qemu = (workers ?? []).filter((w) => w.drivers.includes('qemu'));
  if (qemu.length > 0 && !seen.has(QEMU_GUEST_IMAGE)) {
    const online = qemu.filter((w) => w.status === 'online');
    out.unshift({ value: QEMU_GUEST_IMAGE, detail: `built into qemu workers (${(online.length ? online : qemu).map((w) => w.name).join(', ')})` });
  }
  return out;
}

export function ImageField({ inputProps, choices, value, onChange, loading }: {
  inputProps: { id: string; name: string; 'aria-invalid'?: boolean; 'aria-describedby'?: string };
  choices: ImageChoice[];
  value: string;
  onChange: (value: string) => void;
  loading: boolean;
}) {
  const listId = `${inputProps.id}-choices`;
  return (
    <>
      <input
        {...inputProps}
        required
        list={listId}
        autoComplete="off"
        placeholder={loading ? 'loading the workers’ images…' : 'registry/repository:tag or a local image'}
        value={value}
        onChange={(e) => onChange(e.target.value)}
      />
      <datalist id={listId} data-testid="image-choices">
        {choices.map((c) => (
          <option key={c.value} value={c.value} label={`${c.value} — ${c.detail}`} />
        ))}
      </datalist>
    </>
  );
}

/** The hint under the field: what the suggestions are, or what to type when there are none. */
export function imageHint(choices: ImageChoice[], loading: boolean): string {
  if (loading) return 'looking up the images the workers hold…';
  if (choices.length === 0) return 'no worker holds an image yet: give a registry reference (registry/repository:tag), pulled by the worker at start';
  return `${choices.length} image${choices.length === 1 ? '' : 's'} the workers hold (pick one, or type any local name or registry reference: the tag is resolved to a digest at create)`;
}
