// A worker's image cache (issue 15): `GET /v1/workers/{name}/images`, refreshed every 2 s while
// an image is being pulled (10 s otherwise), with a delete for users with the write role
// (`DELETE /v1/workers/{name}/images/{digest}`, refused by the UI and the API while a VM uses it).
import { useCallback, useEffect, useRef, useState } from 'react';
import { ApiError, type ApiClient } from '../api/client.ts';
import type { ImageOperationObject, WorkerImageList, WorkerImageObject } from '../api/types.ts';
import { ago, bytes, shortDigest, time } from '../format.ts';
import { useSession } from '../session.tsx';
import { useNow } from '../use-now.ts';
import { ConfirmButton } from './ConfirmButton.tsx';
import { CopyButton } from './CopyButton.tsx';
import { DataTable, type Column } from './DataTable.tsx';
import { ProgressBar } from './ProgressBar.tsx';

const PULLING_REFRESH_MS = 2000;
const IDLE_REFRESH_MS = 10_000;

/** "12 GiB of 100 GiB (12 %)", or "12 GiB (no limit)". */
export function cacheUse(used: number, limit: number): string {
  if (!(limit > 0)) return `${bytes(used)} (no limit)`;
  return `${bytes(used)} of ${bytes(limit)} (${Math.round((100 * used) / limit)} %)`;
}

/** `registry/repo@sha256:…` without the digest the row already shows. */
export function withoutDigest(reference: string, digest: string): string {
  return reference.endsWith(`@${digest}`) ? reference.slice(0, -digest.length - 1) : reference;
}

function inUseText(n: number): string {
  return n > 0 ? `${n} VM${n === 1 ? '' : 's'}` : 'no';
}

/** The table itself, without fetching (what the tests render). */
export function ImagesTable({ list, canDelete, onDelete, now }: { list: WorkerImageList; canDelete: boolean; onDelete: (image: WorkerImageObject) => Promise<unknown>; now: number }) {
  const columns: Column<WorkerImageObject>[] = [
    {
      key: 'digest',
      header: 'Digest',
      cell: (i) => (
        <span className="copy">
          <code className="digest" title={i.digest}>
            {shortDigest(i.digest)}
          </code>
          <CopyButton text={i.digest} accessibleLabel={`Copy digest ${shortDigest(i.digest)}`} />
        </span>
      ),
      sortValue: (i) => i.digest,
    },
    {
      key: 'reference',
      header: 'Reference',
      // The pinned reference repeats the digest of the first column: the repository is enough here.
      cell: (i) =>
        i.reference ? (
          <code className="reference" title={i.reference}>
            {withoutDigest(i.reference, i.digest)}
          </code>
        ) : (
          <span className="muted">—</span>
        ),
      sortValue: (i) => i.reference,
    },
    { key: 'format', header: 'Format', cell: (i) => i.format, sortValue: (i) => i.format, className: 'nowrap' },
    { key: 'size', header: 'Size', cell: (i) => bytes(i.sizeBytes), sortValue: (i) => i.sizeBytes, className: 'num nowrap' },
    {
      key: 'state',
      header: 'State',
      cell: (i) => (
        <span className="image-state">
          <span className={`badge image-${i.state}`}>{i.state}</span>
          {i.state === 'pulling' && i.progress && <ProgressBar progress={i.progress} label={`Pull of ${shortDigest(i.digest)}`} />}
          {i.state === 'failed' && i.error && <span className="error-text">{i.error}</span>}
        </span>
      ),
      sortValue: (i) => i.state,
    },
    { key: 'inUse', header: 'In use', cell: (i) => inUseText(i.inUse), sortValue: (i) => i.inUse },
    {
      key: 'lastUsed',
      header: 'Last used',
      cell: (i) => (i.lastUsedAt ? <span title={time(i.lastUsedAt)}>{ago(i.lastUsedAt, now)}</span> : <span className="muted">never</span>),
      sortValue: (i) => (i.lastUsedAt ? -new Date(i.lastUsedAt).getTime() : 0),
    },
  ];
  if (canDelete) {
    columns.push({
      key: 'actions',
      header: 'Actions',
      cell: (i) => (
        <ConfirmButton
          label="Delete"
          accessibleLabel={`Delete image ${shortDigest(i.digest)}`}
          title={`Delete image ${shortDigest(i.digest)} from ${list.worker}?`}
          confirmLabel="Delete image"
          disabledReason={i.inUse > 0 ? `In use by ${inUseText(i.inUse)} on ${list.worker}: delete or move ${i.inUse === 1 ? 'that VM' : 'those VMs'} first` : undefined}
          onConfirm={() => onDelete(i)}
        >
          The worker removes <code>{i.reference || i.digest}</code> ({bytes(i.sizeBytes)}) from its cache. A VM created from it later pulls it again.
        </ConfirmButton>
      ),
    });
  }
  const pulling = list.items.filter((i) => i.state === 'pulling').length;
  return (
    <DataTable
      caption={`${list.items.length} ${list.items.length === 1 ? 'image' : 'images'}${pulling ? `, ${pulling} pulling` : ''}; cache ${cacheUse(list.usedBytes, list.limitBytes)}`}
      columns={columns}
      rows={list.items}
      rowKey={(i) => i.digest}
      empty="No images in this worker's cache."
      initialSort={{ key: 'lastUsed', dir: 'asc' }}
    />
  );
}

async function deleteImage(api: ApiClient, worker: string, digest: string): Promise<ImageOperationObject> {
  return api.request<ImageOperationObject>('DELETE', `/v1/workers/${encodeURIComponent(worker)}/images/${encodeURIComponent(digest)}`);
}

export function ImagesPanel({ worker }: { worker: string }) {
  const { api, can } = useSession();
  const now = useNow(5000);
  const [list, setList] = useState<WorkerImageList | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [unsupported, setUnsupported] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);

  const load = useCallback(async (): Promise<WorkerImageList | null> => {
    try {
      const l = await api.get<WorkerImageList>(`/v1/workers/${encodeURIComponent(worker)}/images`);
      setList(l);
      setError(null);
      return l;
    } catch (err) {
      // A controller older than issue 15 has no such route ("no route GET /v1/…").
      if (err instanceof ApiError && err.status === 404 && err.message.startsWith('no route ')) setUnsupported(true);
      else setError(err instanceof Error ? err.message : String(err));
      return null;
    }
  }, [api, worker]);

  useEffect(() => {
    let stopped = false;
    const tick = async () => {
      const l = await load();
      if (stopped) return;
      const busy = l?.items.some((i) => i.state === 'pulling') ?? false;
      timer.current = setTimeout(() => void tick(), busy ? PULLING_REFRESH_MS : IDLE_REFRESH_MS);
    };
    void tick();
    return () => {
      stopped = true;
      clearTimeout(timer.current);
    };
  }, [load]);

  const onDelete = async (image: WorkerImageObject) => {
    const op = await deleteImage(api, worker, image.digest);
    setNotice(`Deleting ${shortDigest(image.digest)} from ${worker} (operation ${op.id}).`);
    await load();
  };

  return (
    <section aria-labelledby="images-title">
      <h2 id="images-title">Images</h2>
      {unsupported ? (
        <p className="muted">This controller does not report worker images.</p>
      ) : (
        <>
          {error && (
            <p className="error-text" role="status">
              Could not load the images: {error}
              {list ? ' (showing the last list)' : ''}
            </p>
          )}
          {notice && (
            <p className="muted" role="status">
              {notice}
            </p>
          )}
          {list && (
            <div className="cache">
              <span>Cache used</span>
              {list.limitBytes > 0 ? (
                <ProgressBar progress={{ bytesDone: list.usedBytes, bytesTotal: list.limitBytes, percent: Math.min(100, Math.round((100 * list.usedBytes) / list.limitBytes)) }} label={`Image cache of ${worker} used`} detail="(least recently used images are collected above the limit)" />
              ) : (
                <span className="muted">{bytes(list.usedBytes)} (no limit)</span>
              )}
            </div>
          )}
          {list === null ? !error && <p className="loading">Loading images…</p> : <ImagesTable list={list} canDelete={can('write')} onDelete={onDelete} now={now} />}
        </>
      )}
    </section>
  );
}
