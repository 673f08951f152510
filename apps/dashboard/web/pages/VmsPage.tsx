import { useMemo } from 'react';
import type { VmObject } from '../api/types.ts';
import { useLive } from '../live.tsx';
import { useSession } from '../session.tsx';
import { Link, useRoute, useRouter } from '../router.tsx';
import { DataTable, type Column } from '../components/DataTable.tsx';
import { StateBadge } from '../components/Badge.tsx';
import { ProgressBar } from '../components/ProgressBar.tsx';
import { duration } from '../format.ts';
import { useNow } from '../use-now.ts';

const STATES = ['pending', 'scheduled', 'starting', 'running', 'stopping', 'stopped', 'unknown', 'failed', 'deleting'];

export function VmsPage() {
  const { vms, workers } = useLive();
  const { can } = useSession();
  const { query } = useRoute();
  const { navigate } = useRouter();
  const text = query.get('q') ?? '';
  const state = query.get('state') ?? '';
  const worker = query.get('worker') ?? '';
  // Filters live in the URL, so a filtered view can be shared and survives reload.
  const setFilter = (key: string, value: string) => {
    const q = new URLSearchParams(query);
    if (value) q.set(key, value);
    else q.delete(key);
    navigate(`/vms${q.size ? `?${q}` : ''}`, { replace: true });
  };

  const rows = useMemo(() => {
    const all = [...(vms?.values() ?? [])];
    const needle = text.toLowerCase();
    return all.filter(
      (vm) =>
        (!state || vm.state === state) &&
        (!worker || vm.worker === worker) &&
        (!needle || [vm.name, vm.image, vm.ip ?? '', vm.worker ?? '', ...Object.entries(vm.labels).map(([k, v]) => `${k}=${v}`)].some((s) => s.toLowerCase().includes(needle))),
    );
  }, [vms, text, state, worker]);

  const now = useNow(5000);
  const columns: Column<VmObject>[] = [
    { key: 'name', header: 'Name', cell: (vm) => <Link to={`/vms/${vm.name}`}>{vm.name}</Link>, sortValue: (vm) => vm.name },
    {
      key: 'state',
      header: 'State',
      cell: (vm) =>
        vm.pull ? (
          <span className="image-state">
            <StateBadge state={vm.state} />
            <ProgressBar progress={vm.pull} label={`${vm.name}: pulling image`} />
          </span>
        ) : (
          <StateBadge state={vm.state} />
        ),
      sortValue: (vm) => vm.state,
    },
    { key: 'worker', header: 'Worker', cell: (vm) => vm.worker ?? <span className="muted">—</span>, sortValue: (vm) => vm.worker ?? '' },
    { key: 'ip', header: 'IP', cell: (vm) => (vm.ip ? <code>{vm.ip}</code> : <span className="muted">—</span>), sortValue: (vm) => vm.ip ?? '' },
    { key: 'image', header: 'Image', cell: (vm) => vm.image, sortValue: (vm) => vm.image },
    { key: 'age', header: 'Age', cell: (vm) => duration((now - new Date(vm.createdAt).getTime()) / 1000), sortValue: (vm) => -new Date(vm.createdAt).getTime() },
    { key: 'restarts', header: 'Restarts', cell: (vm) => vm.restartCount, sortValue: (vm) => vm.restartCount, className: 'num' },
    { key: 'error', header: 'Last error / reason', cell: (vm) => <span className={vm.state === 'failed' ? 'error-text' : 'muted'}>{vm.reason}</span>, sortValue: (vm) => vm.reason },
  ];

  return (
    <section aria-labelledby="vms-title">
      <div className="page-head">
        <h1 id="vms-title">VMs</h1>
        {can('write') && (
          <Link to="/vms/new" className="button primary">
            Create VM
          </Link>
        )}
      </div>
      <form className="filters" role="search" aria-label="Filter VMs" onSubmit={(e) => e.preventDefault()}>
        <label>
          Search
          <input type="search" value={text} onChange={(e) => setFilter('q', e.target.value)} placeholder="name, image, IP, label" />
        </label>
        <label>
          State
          <select value={state} onChange={(e) => setFilter('state', e.target.value)}>
            <option value="">any</option>
            {STATES.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
        </label>
        <label>
          Worker
          <select value={worker} onChange={(e) => setFilter('worker', e.target.value)}>
            <option value="">any</option>
            {(workers ?? []).map((w) => (
              <option key={w.name}>{w.name}</option>
            ))}
          </select>
        </label>
      </form>
      {vms === null ? (
        <p className="loading">Loading VMs…</p>
      ) : (
        <DataTable caption={`${rows.length} of ${vms.size} VMs (live)`} columns={columns} rows={rows} rowKey={(vm) => vm.name} empty={vms.size ? 'No VMs match the filters.' : 'No VMs yet.'} initialSort={{ key: 'name', dir: 'asc' }} />
      )}
    </section>
  );
}
