import type { WorkerObject } from '../api/types.ts';
import { useLive } from '../live.tsx';
import { useSession } from '../session.tsx';
import { Link } from '../router.tsx';
import { DataTable, type Column } from '../components/DataTable.tsx';
import { ConfirmButton } from '../components/ConfirmButton.tsx';
import { ago, duration, labels, mib } from '../format.ts';
import { useNow } from '../use-now.ts';

function workerState(w: WorkerObject): string {
  if (w.status !== 'online') return 'offline';
  return w.paused ? 'draining' : 'online';
}

export function WorkersPage() {
  const { workers } = useLive();
  const { api, can } = useSession();
  const now = useNow(1000);
  const columns: Column<WorkerObject>[] = [
    {
      key: 'name',
      header: 'Name',
      cell: (w) => (
        <Link to={`/workers/${encodeURIComponent(w.name)}`} title={`${w.name}: details and image cache`}>
          <strong>{w.name}</strong>
        </Link>
      ),
      sortValue: (w) => w.name,
    },
    { key: 'state', header: 'State', cell: (w) => <span className={`badge worker-${workerState(w)}`}>{workerState(w)}</span>, sortValue: workerState },
    { key: 'seen', header: 'Seen', cell: (w) => ago(w.lastSeenAt, now), sortValue: (w) => (w.lastSeenAt ? -new Date(w.lastSeenAt).getTime() : 0) },
    { key: 'version', header: 'Version', cell: (w) => `${w.version} (${w.os}/${w.arch})`, sortValue: (w) => w.version },
    { key: 'labels', header: 'Labels', cell: (w) => labels(w.labels) || <span className="muted">none</span> },
    { key: 'cpu', header: 'CPU', cell: (w) => `${w.used.cpus} / ${w.capacity.cpus}`, sortValue: (w) => w.used.cpus },
    { key: 'mem', header: 'Memory', cell: (w) => `${mib(w.used.memoryMib)} / ${mib(w.capacity.memoryMib)}`, sortValue: (w) => w.used.memoryMib },
    { key: 'slots', header: 'VM slots', cell: (w) => `${w.used.vms} / ${w.capacity.vmSlots}`, sortValue: (w) => w.used.vms },
    { key: 'macos', header: 'macOS slots', cell: (w) => `${w.used.macosVms} / ${w.capacity.macosSlots}` },
    {
      // One per VM the worker holds (stopped ones included); 0 = its network does not limit them.
      key: 'addresses',
      header: 'VM addresses',
      cell: (w) =>
        (w.capacity.natAddresses ?? 0) > 0 ? (
          <span className={w.used.natAddresses >= w.capacity.natAddresses ? 'badge worker-offline' : undefined} title="NAT addresses held: one per VM on this worker, in any power state">
            {w.used.natAddresses} / {w.capacity.natAddresses}
          </span>
        ) : (
          <span className="muted">not limited</span>
        ),
      sortValue: (w) => ((w.capacity.natAddresses ?? 0) > 0 ? w.capacity.natAddresses - w.used.natAddresses : Number.MAX_SAFE_INTEGER),
    },
    {
      key: 'cert',
      header: 'Certificate',
      cell: (w) => {
        if (!w.certificateExpiresAt) return <span className="badge worker-offline">none valid</span>;
        const left = (new Date(w.certificateExpiresAt).getTime() - now) / 1000;
        // Renewal starts with a third of the lifetime left (~4 months); 30 days left means it is failing.
        return <span className={left < 30 * 86400 ? 'badge worker-offline' : 'muted'} title={w.certificateExpiresAt}>expires in {duration(left)}</span>;
      },
      sortValue: (w) => (w.certificateExpiresAt ? new Date(w.certificateExpiresAt).getTime() : 0),
    },
    { key: 'vms', header: 'VMs', cell: (w) => <Link to={`/vms?worker=${encodeURIComponent(w.name)}`}>{w.used.vms} VMs</Link>, sortValue: (w) => w.used.vms },
  ];
  if (can('write')) {
    columns.push({
      key: 'actions',
      header: 'Actions',
      sticky: true,
      cell: (w) => (
        <span className="actions">
          {w.paused ? (
            <ConfirmButton label="Resume" accessibleLabel={`Resume ${w.name}`} title={`Resume worker ${w.name}?`} confirmLabel="Resume" danger={false} onConfirm={() => api.post(`/v1/workers/${w.name}/resume`)}>
              The scheduler will place new VMs on {w.name} again.
            </ConfirmButton>
          ) : (
            <ConfirmButton label="Drain" accessibleLabel={`Drain ${w.name}`} title={`Drain worker ${w.name}?`} confirmLabel="Drain" onConfirm={() => api.post(`/v1/workers/${w.name}/drain`)}>
              {w.name} keeps its {w.used.vms} running VMs but gets no new ones until resumed.
            </ConfirmButton>
          )}
          {can('admin') && (
            <ConfirmButton label="Delete" accessibleLabel={`Delete ${w.name}`} title={`Delete worker ${w.name}?`} confirmLabel="Delete worker" onConfirm={() => api.del(`/v1/workers/${w.name}`)}>
              This revokes the worker's credential. Its {w.used.vms} VMs fail and are rescheduled per their restart policy. The host must enroll again to come back.
            </ConfirmButton>
          )}
        </span>
      ),
    });
  }
  return (
    <section aria-labelledby="workers-title">
      <div className="page-head">
        <h1 id="workers-title">Workers</h1>
        {can('admin') && (
          <Link to="/workers/enroll" className="button primary">
            Enroll a worker
          </Link>
        )}
      </div>
      {workers === null ? (
        <p className="loading">Loading workers…</p>
      ) : (
        <DataTable caption={`${workers.length} workers (live)`} columns={columns} rows={workers} rowKey={(w) => w.name} empty="No workers enrolled yet." initialSort={{ key: 'name', dir: 'asc' }} compact />
      )}
    </section>
  );
}
