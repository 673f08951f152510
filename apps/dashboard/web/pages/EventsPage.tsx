import { useEffect, useState, type FormEvent } from 'react';
import type { EventObject, EventPage } from '../api/types.ts';
import { useSession } from '../session.tsx';
import { useLive } from '../live.tsx';
import { Link, useRoute, useRouter } from '../router.tsx';
import { DataTable, type Column } from '../components/DataTable.tsx';
import { time } from '../format.ts';

const FILTERS = ['vm', 'worker', 'actor', 'kind'] as const;
const DEFAULT_PAGE_SIZE = 50;

export function EventsPage() {
  const { api } = useSession();
  const { workers } = useLive();
  const { query } = useRoute();
  const { navigate } = useRouter();
  const [page, setPage] = useState<EventPage | null>(null);
  const [error, setError] = useState<string | null>(null);
  // Cursor stack: the cursors of the pages before this one, for "Newer".
  const [cursors, setCursors] = useState<number[]>([]);
  const cursor = query.get('cursor');
  const pageSize = Math.min(1000, Math.max(1, Number(query.get('limit')) || DEFAULT_PAGE_SIZE));
  const filterKey = FILTERS.map((f) => query.get(f) ?? '').join('|');

  useEffect(() => {
    const q = new URLSearchParams({ limit: String(pageSize), order: 'desc' });
    for (const f of FILTERS) if (query.get(f)) q.set(f, query.get(f)!);
    if (cursor) q.set('cursor', cursor);
    setError(null);
    api.get<EventPage>(`/v1/events?${q}`).then(setPage, (err: unknown) => {
      setPage(null);
      setError(err instanceof Error ? err.message : String(err));
    });
  }, [api, filterKey, cursor, pageSize]); // eslint-disable-line react-hooks/exhaustive-deps

  const apply = (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const q = new URLSearchParams();
    if (query.get('limit')) q.set('limit', query.get('limit')!);
    for (const k of FILTERS) {
      const v = String(f.get(k) ?? '').trim();
      if (v) q.set(k, v);
    }
    setCursors([]);
    navigate(`/events${q.size ? `?${q}` : ''}`);
  };
  const goto = (next: number | null, stack: number[]) => {
    const q = new URLSearchParams(query);
    if (next === null) q.delete('cursor');
    else q.set('cursor', String(next));
    setCursors(stack);
    navigate(`/events?${q}`);
  };

  const workerName = new Map((workers ?? []).map((w) => [w.id, w.name]));
  const columns: Column<EventObject>[] = [
    { key: 'at', header: 'Time', cell: (e) => <time dateTime={e.at}>{time(e.at)}</time> },
    { key: 'level', header: 'Level', cell: (e) => <span className={`badge level-${e.level}`}>{e.level}</span> },
    { key: 'kind', header: 'Kind', cell: (e) => <code>{e.kind}</code> },
    { key: 'vm', header: 'VM', cell: (e) => (e.vm ? <Link to={`/vms/${e.vm}`}>{e.vm}</Link> : '') },
    { key: 'worker', header: 'Worker', cell: (e) => (e.workerId ? (workerName.get(e.workerId) ?? e.workerId) : '') },
    { key: 'actor', header: 'Actor', cell: (e) => e.actor },
    { key: 'message', header: 'Message', cell: (e) => e.message },
  ];

  return (
    <section aria-labelledby="events-title">
      <h1 id="events-title">Events and audit log</h1>
      <form className="filters" role="search" aria-label="Filter events" onSubmit={apply} key={filterKey}>
        {FILTERS.map((f) => (
          <label key={f}>
            {f === 'vm' ? 'VM' : f[0]!.toUpperCase() + f.slice(1)}
            <input name={f} defaultValue={query.get(f) ?? ''} placeholder={f === 'actor' ? 'token:admin' : f === 'kind' ? 'vm.state' : ''} />
          </label>
        ))}
        <button type="submit">Apply filters</button>
      </form>
      {error && <p role="alert" className="error">{error}</p>}
      {page && (
        <>
          <DataTable caption={`Events, newest first${cursor ? ' (older page)' : ''}`} columns={columns} rows={page.events} rowKey={(e) => String(e.id)} empty="No events match." />
          <nav className="pager" aria-label="Event pages">
            <button type="button" disabled={!cursor} onClick={() => goto(cursors[cursors.length - 1] ?? null, cursors.slice(0, -1))}>
              ← Newer
            </button>
            <button type="button" disabled={page.nextCursor === null} onClick={() => goto(page.nextCursor, cursor ? [...cursors, Number(cursor)] : cursors)}>
              Older →
            </button>
          </nav>
        </>
      )}
    </section>
  );
}
