// The create form validates with the API's own TypeBox schema (VmCreate), so it
// accepts exactly what POST /v1/vms accepts and says why it would refuse.
import { useEffect, useMemo, useRef, useState, type FormEvent, type ReactElement } from 'react';
import { Value } from '@sinclair/typebox/value';
import { VmCreate as VmCreateSchema } from '@fleet/api';
import { macProblem, networkModeProblem, type NetworkMode } from '@fleet/api/syntax';
import '../api/unsafe-kind.ts';
import type { ImageSummaryList, ImageSummaryObject, VmCreate, VmObject } from '../api/types.ts';
import { ImageField, imageChoices, imageHint } from '../components/ImageField.tsx';
import { useLive } from '../live.tsx';
import { useSession } from '../session.tsx';
import { Link, useRouter } from '../router.tsx';

type Errors = Record<string, string>;

const FIELD_OF: Record<string, string> = { '': 'form' };

/** "k=v, k2=v2" or one pair per line → a label object; null when malformed. */
export function parsePairs(text: string): Record<string, string> | null {
  const out: Record<string, string> = {};
  for (const part of text.split(/[,\n]/).map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) return null;
    out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

export function validateVmCreate(body: unknown): Errors {
  const errors: Errors = {};
  for (const e of Value.Errors(VmCreateSchema, body)) {
    const [, field = '', sub = ''] = e.path.split('/');
    const key =
      field === 'network' ? (sub === 'allow' ? 'networkAllow' : sub === 'block' ? 'networkBlock' : sub === 'mode' ? 'networkMode' : 'networkBlockLocal') : (FIELD_OF[field] ?? field);
    if (errors[key]) continue;
    // A MAC: say what is wrong (multicast, broadcast, separators…), as the API does.
    if (key === 'mac') {
      errors[key] = macProblem((body as { mac?: unknown }).mac) ?? e.message;
      continue;
    }
    const description = (e.schema as { description?: string }).description;
    errors[key] = description && /pattern|match/i.test(e.message) ? `must be ${description}` : e.message;
  }
  // Mode "none" has no NIC: the API refuses rules or a MAC with it.
  const b = body as { network?: { mode?: NetworkMode; allow?: string[]; block?: string[]; blockLocal?: boolean }; mac?: string };
  const mode = b.network?.mode;
  if (mode && !errors.networkMode) {
    const problem = networkModeProblem(mode, b.network ?? {}, typeof b.mac === 'string' ? b.mac : undefined);
    if (problem) errors.networkMode = problem;
  }
  return errors;
}

export function VmCreatePage() {
  const { api, can } = useSession();
  const { navigate } = useRouter();
  const [errors, setErrors] = useState<Errors>({});
  const [busy, setBusy] = useState(false);
  // The images the workers hold (their caches, and qemu's built-in guest) are offered for the image field.
  const { workers } = useLive();
  const [images, setImages] = useState<ImageSummaryObject[] | null>(null);
  const [imagesFailed, setImagesFailed] = useState(false);
  useEffect(() => {
    let live = true;
    api.get<ImageSummaryList>('/v1/images').then(
      (list) => live && setImages(list.items),
      () => live && setImagesFailed(true),
    );
    return () => {
      live = false;
    };
  }, [api]);
  const choices = useMemo(() => imageChoices(workers, images), [workers, images]);
  const imagesLoading = (images === null && !imagesFailed) || workers === null;
  // Pre-filled with the first image a worker holds (never a made-up default); typed text wins.
  const [typedImage, setTypedImage] = useState<string | null>(null);
  const image = typedImage ?? (imagesLoading ? '' : (choices[0]?.value ?? ''));
  if (!can('write')) return <p role="alert">Creating VMs needs the write role.</p>;

  // One Idempotency-Key per VM being created: a second click, or a retry after a lost answer with
  // the same form, gets the VM created by the first instead of a conflict; a changed form gets a new key.
  const attempt = useRef<{ key: string; body: string } | null>(null);
  const submit = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const str = (k: string) => String(f.get(k) ?? '').trim();
    const int = (k: string) => (str(k) === '' ? undefined : Number(str(k)));
    const pre: Errors = {};
    const labels = parsePairs(str('labels'));
    const selector = parsePairs(str('selector'));
    if (!labels) pre.labels = 'write labels as key=value, separated by commas or lines';
    if (!selector) pre.selector = 'write the selector as key=value, separated by commas or lines';
    const body: Record<string, unknown> = {
      name: str('name'),
      image: str('image'),
      os: str('os'),
      ...(str('driver') ? { driver: str('driver') } : {}),
      cpus: int('cpus'),
      memoryMib: int('memoryMib'),
      diskGib: int('diskGib'),
      ...(str('username') ? { username: str('username') } : {}),
      // Not trimmed: spaces may be part of a password.
      ...(String(f.get('password') ?? '') ? { password: String(f.get('password')) } : {}),
      ...(labels && Object.keys(labels).length ? { labels } : {}),
      ...(selector && Object.keys(selector).length ? { selector } : {}),
      priority: int('priority'),
      restartPolicy: str('restartPolicy'),
      disconnectPolicy: str('disconnectPolicy'),
    };
    const list = (k: string) => str(k).split(/[\s,]+/).filter(Boolean);
    if (str('mac')) body.mac = str('mac');
    const network = {
      ...(str('networkMode') && str('networkMode') !== 'nat' ? { mode: str('networkMode') } : {}),
      ...(list('networkAllow').length ? { allow: list('networkAllow') } : {}),
      ...(list('networkBlock').length ? { block: list('networkBlock') } : {}),
      ...(f.get('networkBlockLocal') ? { blockLocal: true } : {}),
    };
    if (Object.keys(network).length) body.network = network;
    for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
    const found = { ...validateVmCreate(body), ...pre };
    setErrors(found);
    if (Object.keys(found).length) {
      // Focus the first invalid field so keyboard users land on the problem.
      const first = Object.keys(found)[0];
      (e.currentTarget.elements.namedItem(first!) as HTMLElement | null)?.focus();
      return;
    }
    setBusy(true);
    try {
      const text = JSON.stringify(body);
      if (attempt.current?.body !== text) attempt.current = { key: randomKey(), body: text };
      const vm = await api.post<VmObject>('/v1/vms', body as VmCreate, attempt.current.key);
      navigate(`/vms/${vm.name}`);
    } catch (err) {
      setErrors({ form: err instanceof Error ? err.message : String(err) });
    } finally {
      setBusy(false);
    }
  };

  const field = (name: string, label: string, input: ReactElement, hint?: string) => (
    <div className="field">
      <label htmlFor={`vm-${name}`}>{label}</label>
      {input}
      {hint && !errors[name] && <span className="hint" id={`vm-${name}-hint`}>{hint}</span>}
      {errors[name] && (
        <span className="field-error" id={`vm-${name}-error`}>
          {errors[name]}
        </span>
      )}
    </div>
  );
  const a11y = (name: string) => ({
    id: `vm-${name}`,
    name,
    'aria-invalid': errors[name] ? true : undefined,
    'aria-describedby': errors[name] ? `vm-${name}-error` : undefined,
  });

  return (
    <section aria-labelledby="create-title">
      <p>
        <Link to="/vms">← VMs</Link>
      </p>
      <h1 id="create-title">Create a VM</h1>
      {errors.form && (
        <p role="alert" className="error">
          {errors.form}
        </p>
      )}
      {Object.keys(errors).length > 0 && !errors.form && (
        <p role="alert" className="error">
          Fix the highlighted fields.
        </p>
      )}
      <form onSubmit={(e) => void submit(e)} noValidate className="form-grid">
        {field('name', 'Name', <input {...a11y('name')} required autoComplete="off" />, 'lower-case letters, digits and dashes')}
        {field('image', 'Image', <ImageField inputProps={a11y('image')} choices={choices} value={image} onChange={setTypedImage} loading={imagesLoading} />, imageHint(choices, imagesLoading))}
        {field(
          'os',
          'OS',
          <select {...a11y('os')} defaultValue="linux">
            <option value="linux">linux</option>
            <option value="macos">macos</option>
          </select>,
        )}
        {field(
          'driver',
          'Driver',
          <select {...a11y('driver')} defaultValue="">
            <option value="">any (the worker's default)</option>
            <option value="qemu">qemu</option>
            <option value="vz">vz</option>
            <option value="synthetic">synthetic</option>
          </select>,
        )}
        {field('cpus', 'CPUs', <input {...a11y('cpus')} type="number" defaultValue={1} />)}
        {field('memoryMib', 'Memory (MiB)', <input {...a11y('memoryMib')} type="number" defaultValue={512} />, 'at least 128')}
        {field('diskGib', 'Disk (GiB)', <input {...a11y('diskGib')} type="number" defaultValue={10} />)}
        {field('username', 'SSH user (optional)', <input {...a11y('username')} autoComplete="off" />)}
        {field('password', 'SSH password (optional)', <input {...a11y('password')} type="password" autoComplete="new-password" />, 'for images that cannot take the fleet key (macOS); never shown again')}
        {field('labels', 'Labels (optional)', <input {...a11y('labels')} placeholder="team=ci, purpose=build" />)}
        {field('selector', 'Worker selector (optional)', <input {...a11y('selector')} placeholder="pool=fast" />, 'place only on workers with these labels')}
        {field('priority', 'Priority', <input {...a11y('priority')} type="number" defaultValue={0} />, '-1000 to 1000; higher is placed first')}
        {field(
          'networkMode',
          'Network mode',
          <select {...a11y('networkMode')} defaultValue="nat">
            <option value="nat">nat (the worker's NAT network, out to the world)</option>
            <option value="host-only">host-only (the worker and VMs on its host-only network, never beyond)</option>
            <option value="none">none (no NIC)</option>
          </select>,
          'placed only on a worker that offers this mode',
        )}
        {field('mac', 'MAC address (optional)', <input {...a11y('mac')} autoComplete="off" placeholder="02:00:5e:10:00:01" />, 'unicast, six hex octets with ":"; default: the worker derives one. Two VMs with one MAC never share a worker')}
        {field('networkAllow', 'Network: also allow (optional)', <input {...a11y('networkAllow')} placeholder="10.0.0.0/8, @host" />, 'CIDRs or addresses besides public ones; @host = the worker (host access)')}
        {field('networkBlock', 'Network: block (optional)', <input {...a11y('networkBlock')} placeholder="203.0.113.0/24" />, 'longest prefix wins; block wins a tie')}
        <div className="field">
          <label className="inline">
            <input type="checkbox" name="networkBlockLocal" /> Block local (ARP only for the gateway; local sources reach the VM only when allowed)
          </label>
        </div>
        {field(
          'restartPolicy',
          'Restart policy',
          <select {...a11y('restartPolicy')} defaultValue="never">
            <option value="never">never</option>
            <option value="on-failure">on-failure</option>
          </select>,
        )}
        {field(
          'disconnectPolicy',
          'When its worker is unreachable',
          <select {...a11y('disconnectPolicy')} defaultValue="reschedule">
            <option value="reschedule">reschedule (stopped there, re-placed after the offline timeout)</option>
            <option value="wait">wait (keeps running, nothing re-placed)</option>
          </select>,
        )}
        <div>
          <button type="submit" className="primary" disabled={busy}>
            Create VM
          </button>
        </div>
      </form>
    </section>
  );
}

/** A random Idempotency-Key (crypto.randomUUID exists only in secure contexts; getRandomValues everywhere). */
function randomKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
