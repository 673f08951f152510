import { lazy, Suspense, useEffect, useRef } from 'react';
import { Link, Router, useRoute } from './router.tsx';
import { SessionProvider, useSession, useSessionState } from './session.tsx';
import { LiveProvider, useLive } from './live.tsx';
import { displayName } from './format.ts';
import type { ServingController } from './api/types.ts';
import { LoginPage } from './pages/LoginPage.tsx';
import { OverviewPage } from './pages/OverviewPage.tsx';
import { WorkersPage } from './pages/WorkersPage.tsx';
import { WorkerDetailPage } from './pages/WorkerDetailPage.tsx';
import { EnrollPage } from './pages/EnrollPage.tsx';
import { VmsPage } from './pages/VmsPage.tsx';
import { VmCreatePage } from './pages/VmCreatePage.tsx';
import { VmDetailPage } from './pages/VmDetailPage.tsx';
import { EventsPage } from './pages/EventsPage.tsx';
import { AccessPage } from './pages/AccessPage.tsx';

// The plotting library loads only when the Plots page is opened.
const PlotsPage = lazy(() => import('./pages/PlotsPage.tsx').then((m) => ({ default: m.PlotsPage })));

export function App() {
  return (
    <Router>
      <SessionProvider>
        <Gate />
      </SessionProvider>
    </Router>
  );
}

function Gate() {
  const { session } = useSessionState();
  if (!session) return <LoginPage />;
  return (
    <LiveProvider>
      <Shell />
    </LiveProvider>
  );
}

const NAV: { to: string; label: string; match: string }[] = [
  { to: '/', label: 'Overview', match: '' },
  { to: '/workers', label: 'Workers', match: 'workers' },
  { to: '/vms', label: 'VMs', match: 'vms' },
  { to: '/events', label: 'Events', match: 'events' },
  { to: '/plots', label: 'Plots', match: 'plots' },
  { to: '/access', label: 'Tokens & accounts', match: 'access' },
];

function Shell() {
  const { me, logout } = useSession();
  const { connected, error, servedBy } = useLive();
  const { segments } = useRoute();
  const section = segments[0] ?? '';
  const main = useRef<HTMLElement>(null);
  // Move focus to the new page's content so keyboard and screen-reader users land on it.
  useEffect(() => {
    main.current?.focus({ preventScroll: true });
  }, [segments.join('/')]);
  return (
    <div className="shell">
      <a className="skip" href="#main">Skip to content</a>
      <header className="topbar">
        <span className="brand">Fleet</span>
        <nav aria-label="Main">
          <ul>
            {NAV.map((n) => (
              <li key={n.to}>
                <Link to={n.to} aria-current={section === n.match ? 'page' : undefined}>
                  {n.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        {servedBy && <ServedBy controller={servedBy} />}
        <span className="who">
          <span className={connected ? 'dot ok' : 'dot bad'} role="status" aria-label={connected ? 'live updates connected' : `live updates disconnected${error ? `: ${error}` : ''}`} title={connected ? 'live' : (error ?? 'connecting')} />
          <span>
            <span title={`token ${me.name}`}>{displayName(me.name)}</span> <span className="muted">({me.roles.join(', ')})</span>
          </span>
          <button type="button" onClick={logout}>
            Log out
          </button>
        </span>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        <Suspense
          fallback={
            <p className="loading" role="status" aria-busy="true">
              <span className="spinner" aria-hidden="true" /> Loading…
            </p>
          }
        >
          <Page segments={segments} />
        </Suspense>
      </main>
    </div>
  );
}

/**
 * Which controller answers this page (every controller serves the dashboard; a load balancer may
 * pick any) and whether it is the leader, so an operator reading odd numbers knows whom to ask.
 */
function ServedBy({ controller: c }: { controller: ServingController }) {
  // Plain text, no aria-label: a label holding the host name would match pages' own labels
  // (a controller called "vm" and the Events page's "VM" filter).
  const detail = c.role === 'leader' ? 'the leader: runs the scheduler and worker liveness' : c.leader ? `a follower; the leader is ${c.leader}` : 'a follower; no leader right now';
  return (
    <span className="served" title={`This page is served by controller ${c.name} (${c.id}), ${detail}`}>
      <span className="muted">controller</span> {c.name} <span className={`badge role-${c.role}`}>{c.role}</span>
      {c.role === 'follower' && <span className="muted"> leader: {c.leader ?? 'none'}</span>}
    </span>
  );
}

function Page({ segments }: { segments: string[] }) {
  const [a, b] = segments;
  if (!a) return <OverviewPage />;
  if (a === 'workers' && b === 'enroll') return <EnrollPage />;
  if (a === 'workers' && b) return <WorkerDetailPage name={b} />;
  if (a === 'workers') return <WorkersPage />;
  if (a === 'vms' && b === 'new') return <VmCreatePage />;
  if (a === 'vms' && b) return <VmDetailPage name={b} />;
  if (a === 'vms') return <VmsPage />;
  if (a === 'events') return <EventsPage />;
  if (a === 'plots') return <PlotsPage />;
  if (a === 'access') return <AccessPage />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        There is no page here. <Link to="/">Go to the overview</Link>.
      </p>
    </section>
  );
}
