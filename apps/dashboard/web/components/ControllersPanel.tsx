// The fleet's controllers (issue 13): several may share one PostgreSQL database, one of them the
// leader (scheduler and worker liveness); every one serves the API, this dashboard and worker
// streams. A single SQLite controller shows as one row, the leader.
import type { ControllerObject } from '../api/types.ts';
import { useLive } from '../live.tsx';
import { ago, time } from '../format.ts';
import { useNow } from '../use-now.ts';
import { DataTable, type Column } from './DataTable.tsx';

export function ControllersPanel() {
  const { controllers, controllersError, servedBy } = useLive();
  const now = useNow(1000);
  const columns: Column<ControllerObject>[] = [
    {
      key: 'name',
      header: 'Name',
      cell: (c) => (
        <>
          <strong>{c.name}</strong>
          {servedBy?.id === c.id && <span className="muted"> (serving this page)</span>}
        </>
      ),
      sortValue: (c) => c.name,
    },
    {
      key: 'role',
      header: 'Role',
      cell: (c) => (
        <span className={`badge role-${c.role}`} title={c.role === 'leader' ? 'runs the scheduler and worker liveness' : 'serves the API and worker streams; takes over if the leader goes'}>
          {c.role}
        </span>
      ),
      // Leader first, then by name.
      sortValue: (c) => `${c.role === 'leader' ? 0 : 1} ${c.name}`,
    },
    { key: 'alive', header: 'State', cell: (c) => <span className={`badge ${c.alive ? 'worker-online' : 'worker-offline'}`}>{c.alive ? 'alive' : 'down'}</span>, sortValue: (c) => (c.alive ? 0 : 1) },
    { key: 'streams', header: 'Worker streams', cell: (c) => c.connectedWorkers, sortValue: (c) => c.connectedWorkers, className: 'num' },
    { key: 'version', header: 'Version', cell: (c) => c.version, sortValue: (c) => c.version },
    { key: 'api', header: 'API URL', cell: (c) => <code>{c.apiUrl}</code> },
    { key: 'grpc', header: 'gRPC (workers dial)', cell: (c) => <code>{c.grpcAddress}</code> },
    {
      key: 'seen',
      header: 'Last seen',
      // The row's time is written by that controller's clock: a small skew can show "0s ago".
      cell: (c) => <span title={`${time(c.lastSeenAt)}; started ${time(c.startedAt)}`}>{ago(c.lastSeenAt, now)}</span>,
      sortValue: (c) => -new Date(c.lastSeenAt).getTime(),
    },
  ];
  const leaderAlive = controllers?.some((c) => c.role === 'leader' && c.alive) ?? false;
  return (
    <section aria-labelledby="controllers-title">
      <h2 id="controllers-title">Controllers</h2>
      {controllersError && (
        <p className="error-text" role="status">
          Could not refresh the controllers: {controllersError}
          {controllers ? ' (showing the last list)' : ''}
        </p>
      )}
      {controllers === null ? (
        !controllersError && <p className="loading">Loading controllers…</p>
      ) : (
        <>
          {controllers.length > 0 && !leaderAlive && (
            <p className="notice" role="status">
              No live leader right now: nothing is scheduled and worker liveness is not judged until a controller takes over.
            </p>
          )}
          <DataTable
            caption={`${controllers.length} ${controllers.length === 1 ? 'controller' : 'controllers'}, ${controllers.filter((c) => c.alive).length} alive (refreshed every 2 s)`}
            columns={columns}
            rows={controllers}
            rowKey={(c) => c.id}
            empty="This controller lists no controllers."
            initialSort={{ key: 'role', dir: 'asc' }}
          />
        </>
      )}
    </section>
  );
}
