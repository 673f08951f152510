import { lazy, Suspense, useCallback, useEffect, useState, type KeyboardEvent } from 'react';
import type { EventObject, EventPage, VmObject } from '../api/types.ts';
import { ApiError } from '../api/client.ts';
import { useLive } from '../live.tsx';
import { useSession } from '../session.tsx';
import { Link, useRoute, useRouter } from '../router.tsx';
import { StateBadge } from '../components/Badge.tsx';
import { ConfirmButton } from '../components/ConfirmButton.tsx';
import { CopyButton } from '../components/CopyButton.tsx';
import { ProgressBar } from '../components/ProgressBar.tsx';
import { labels, mib, shortDigest, time } from '../format.ts';

// xterm.js loads only when a VM page with a terminal is opened.
const Terminal = lazy(() => import('../components/Terminal.tsx').then((m) => ({ default: m.Terminal })));
// noVNC loads only when the Console tab is opened.
const Console = lazy(() => import('../console/Console.tsx').then((m) => ({ default: m.Console })));

const COUNTERS_REFRESH_MS = 5000;

/** The packet filter's verdict counters of the running instance, both directions in one table. */
function counterRows(c: NonNullable<VmObject['networkCounters']>): { verdict: string; fromVm: number; fromHost: number }[] {
  const verdicts = [...new Set([...Object.keys(c.fromVm), ...Object.keys(c.fromHost)])].sort((a, b) => (a === 'pass' ? -1 : b === 'pass' ? 1 : a.localeCompare(b)));
  return verdicts.map((verdict) => ({ verdict, fromVm: c.fromVm[verdict] ?? 0, fromHost: c.fromHost[verdict] ?? 0 }));
}

/** Issue 18: the network the NIC joins (a controller from before sends no mode: NAT). */
export function networkMode(vm: VmObject): string {
  const mode = vm.network?.mode ?? 'nat';
  if (mode === 'none') return 'none (no NIC)';
  return mode === 'host-only' ? "host-only (the worker's host-only network, never beyond)" : "nat (the worker's NAT network)";
}

/** The MAC and where it comes from. */
export function macText(vm: VmObject): string {
  if (!vm.mac) return vm.network?.mode === 'none' ? '— (no NIC)' : '—';
  return `${vm.mac}${vm.macSource === 'custom' ? ' (custom)' : vm.macSource === 'worker' ? ' (from the worker)' : ''}`;
}

function networkPolicy(vm: VmObject): string {
  const n = vm.network;
  if (!n) return 'default';
  const parts = [...(n.allow.length ? [`allow ${n.allow.join(', ')}`] : []), ...(n.block.length ? [`block ${n.block.join(', ')}`] : []), ...(n.blockLocal ? ['block-local (restricted ingress)'] : [])];
  return parts.join('; ') || 'public destinations only (default)';
}

export function VmDetailPage({ name }: { name: string }) {
  const { vms } = useLive();
  const { api, can } = useSession();
  const { navigate } = useRouter();
  const vm = vms?.get(name) ?? null;
  const [events, setEvents] = useState<EventObject[] | null>(null);
  const [gone, setGone] = useState(false);

  const loadEvents = useCallback(async () => {
    try {
      const page = await api.get<EventPage>(`/v1/vms/${encodeURIComponent(name)}/events?order=desc&limit=100`);
      setEvents(page.events);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) setGone(true);
    }
  }, [api, name]);
  // Reload the timeline whenever the VM changes (the live VM stream tells us).
  useEffect(() => {
    void loadEvents();
  }, [loadEvents, vm?.updatedAt, vm?.state]);

  // Filter counters change every few seconds without a VM change: poll the VM itself while it runs.
  const [counters, setCounters] = useState<VmObject['networkCounters'] | null>(null);
  const running = vm?.state === 'running';
  useEffect(() => {
    if (!running) {
      setCounters(null);
      return;
    }
    const load = () => api.get<VmObject>(`/v1/vms/${encodeURIComponent(name)}`).then((v) => setCounters(v.networkCounters ?? null), () => undefined);
    void load();
    const t = setInterval(load, COUNTERS_REFRESH_MS);
    return () => clearInterval(t);
  }, [api, name, running]);

  if (!vm) {
    return (
      <section>
        <p>
          <Link to="/vms">← VMs</Link>
        </p>
        <h1>{name}</h1>
        <p>{vms === null ? 'Loading…' : gone ? 'No such VM.' : 'This VM does not exist (any more).'}</p>
        {events && events.length > 0 && <Timeline events={events} />}
      </section>
    );
  }
  const spec: [string, string][] = [
    ['Image', vm.image],
    ['OS / driver', `${vm.os} / ${vm.driver || 'any'}`],
    ['CPUs', String(vm.cpus)],
    ['Memory', mib(vm.memoryMib)],
    ['Disk', `${vm.diskGib} GiB`],
    ['Worker', vm.worker ?? '—'],
    ['IP', vm.ip ?? '—'],
    ['MAC', macText(vm)],
    ['Power', vm.powerState],
    ['Restart policy', `${vm.restartPolicy} (${vm.restartCount} restarts)`],
    ['On disconnect', vm.disconnectPolicy === 'wait' ? 'wait (keeps running while its worker is unreachable)' : 'reschedule (stopped by its worker, re-placed after the offline timeout)'],
    ['Priority', String(vm.priority)],
    ['Network mode', networkMode(vm)],
    ['Network policy', networkPolicy(vm)],
    ['Labels', labels(vm.labels) || '—'],
    ['Selector', labels(vm.selector) || '—'],
    ['SSH user', vm.username || 'default'],
    ['SSH password', vm.passwordSet ? 'set (tried after the fleet key)' : 'none'],
    ['Created', `${time(vm.createdAt)} by ${vm.createdBy}`],
    ['Running since', vm.runningAt ? time(vm.runningAt) : '—'],
  ];
  return (
    <section aria-labelledby="vm-title">
      <p>
        <Link to="/vms">← VMs</Link>
      </p>
      <div className="page-head">
        <h1 id="vm-title">
          {vm.name} <StateBadge state={vm.state} />
        </h1>
        {can('write') && (
          <span className="actions">
            {vm.powerState === 'running' ? (
              <ConfirmButton label="Stop" title={`Stop ${vm.name}?`} confirmLabel="Stop VM" onConfirm={() => api.request('PATCH', `/v1/vms/${vm.name}`, { powerState: 'stopped' })}>
                The VM is shut down; its disk is kept.
              </ConfirmButton>
            ) : (
              <button type="button" onClick={() => void api.request('PATCH', `/v1/vms/${vm.name}`, { powerState: 'running' })}>
                Start
              </button>
            )}
            <ConfirmButton label="Delete" title={`Delete ${vm.name}?`} confirmLabel="Delete VM" onConfirm={async () => { await api.del(`/v1/vms/${vm.name}`); navigate('/vms'); }}>
              The VM and its disk are removed. This cannot be undone.
            </ConfirmButton>
          </span>
        )}
      </div>
      <p className={vm.state === 'failed' ? 'error' : 'reason'} aria-label="State reason">
        {vm.state === 'pending' ? 'Pending because: ' : ''}
        {vm.reason || vm.state}
      </p>
      {vm.pull && (
        <p className="pull">
          <ProgressBar progress={vm.pull} label={`Pulling image ${vm.image}`} detail={vm.worker ? `on ${vm.worker}` : undefined} />
        </p>
      )}
      <div className="columns">
        <div>
          <h2>Spec</h2>
          <dl className="spec">
            {spec.map(([k, v]) => (
              <div key={k}>
                <dt>{k}</dt>
                <dd data-field={k}>{v}</dd>
                {k === 'Image' && (
                  <>
                    <dt>Image digest</dt>
                    <dd data-field="Image digest">
                      {vm.imageDigest ? (
                        <span className="copy">
                          <code className="digest" title={`${vm.imageDigest}: the digest the reference resolved to when the VM was created; every attempt runs it`}>
                            {vm.imageDigest}
                          </code>
                          <CopyButton text={vm.imageDigest} accessibleLabel={`Copy digest ${shortDigest(vm.imageDigest)}`} />
                        </span>
                      ) : (
                        <span className="muted">— (a local image)</span>
                      )}
                    </dd>
                  </>
                )}
              </div>
            ))}
          </dl>
          {counters && (
            <>
              <h2>Network filter</h2>
              <table className="counters">
                <caption>
                  Frames by packet-filter verdict (attempt {counters.attempt}, sampled <time dateTime={counters.sampledAt}>{time(counters.sampledAt)}</time>)
                </caption>
                <thead>
                  <tr>
                    <th scope="col">Verdict</th>
                    <th scope="col" className="num">From the VM</th>
                    <th scope="col" className="num">To the VM</th>
                  </tr>
                </thead>
                <tbody>
                  {counterRows(counters).map((r) => (
                    <tr key={r.verdict} className={r.verdict === 'pass' ? '' : 'dropped'} data-verdict={r.verdict}>
                      <th scope="row">{r.verdict === 'pass' ? 'passed' : `dropped: ${r.verdict}`}</th>
                      <td className="num">{r.fromVm}</td>
                      <td className="num">{r.fromHost}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          )}
        </div>
        <div>
          <h2>Events</h2>
          {events ? <Timeline events={events} /> : <p className="loading">Loading events…</p>}
        </div>
      </div>
      <AccessTabs vm={vm} />
    </section>
  );
}

type AccessTab = 'terminal' | 'console';

/** Terminal (SSH) and Console (the screen, VNC): both need the `connect` role. */
function AccessTabs({ vm }: { vm: VmObject }) {
  const { api, can } = useSession();
  const { navigate } = useRouter();
  // The tab lives in the URL (?tab=console): a link or a reload opens the console directly.
  const tab: AccessTab = useRoute().query.get('tab') === 'console' ? 'console' : 'terminal';
  const [terminalOpened, setTerminalOpened] = useState(tab === 'terminal');
  const running = vm.state === 'running';
  const select = (t: AccessTab) => {
    navigate(`/vms/${encodeURIComponent(vm.name)}${t === 'console' ? '?tab=console' : ''}`, { replace: true });
    if (t === 'terminal') setTerminalOpened(true);
  };
  // Arrow keys move between tabs (the WAI-ARIA tabs pattern).
  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight') return;
    const next: AccessTab = tab === 'terminal' ? 'console' : 'terminal';
    select(next);
    document.getElementById(`tab-${next}`)?.focus();
  };
  const tabButton = (t: AccessTab, label: string) => (
    <button type="button" role="tab" id={`tab-${t}`} aria-selected={tab === t} aria-controls={`panel-${t}`} tabIndex={tab === t ? 0 : -1} className={tab === t ? 'tab selected' : 'tab'} onClick={() => select(t)}>
      {label}
    </button>
  );
  const noConnect = (what: string) => <p className="muted">{what} needs the <code>connect</code> role, which this session does not have.</p>;
  return (
    <>
      <div role="tablist" aria-label="VM access" className="tabs" onKeyDown={onKeyDown}>
        {tabButton('terminal', 'Terminal')}
        {tabButton('console', 'Console')}
      </div>
      {/* The terminal stays mounted once opened, so switching tabs keeps its session. */}
      <div role="tabpanel" id="panel-terminal" aria-labelledby="tab-terminal" hidden={tab !== 'terminal'}>
        {!can('connect') ? (
          noConnect('The terminal')
        ) : (
          terminalOpened && (
            <Suspense fallback={<p className="loading">Loading the terminal…</p>}>
              <Terminal api={api} vm={vm.name} running={running} />
            </Suspense>
          )
        )}
      </div>
      {/* The console is mounted only while its tab shows: leaving the tab ends the VNC session. */}
      <div role="tabpanel" id="panel-console" aria-labelledby="tab-console" hidden={tab !== 'console'}>
        {tab === 'console' &&
          (!can('connect') ? (
            <p className="muted" data-console-status="forbidden">
              The console needs the <code>connect</code> role. There is no read-only view: the screen shows whatever the guest displays, secrets
              included, so seeing it is as sensitive as a shell.
            </p>
          ) : (
            <Suspense fallback={<p className="loading">Loading the console…</p>}>
              <Console api={api} vm={vm.name} running={running} vmState={vm.state} />
            </Suspense>
          ))}
      </div>
    </>
  );
}

function Timeline({ events }: { events: EventObject[] }) {
  if (events.length === 0) return <p className="muted">No events.</p>;
  return (
    <ol className="timeline" aria-label="Event timeline, newest first">
      {events.map((e) => (
        <li key={e.id} className={`level-${e.level}`}>
          <time dateTime={e.at}>{time(e.at)}</time> <span className="kind">{e.kind}</span> {e.message} <span className="muted">— {e.actor}</span>
        </li>
      ))}
    </ol>
  );
}
