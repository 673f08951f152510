// One worker: what the live stream says about it, the VMs on it, and its image cache.
import type { WorkerObject } from '../api/types.ts';
import { ImagesPanel } from '../components/ImagesPanel.tsx';
import { ago, labels, mib, time } from '../format.ts';
import { useLive } from '../live.tsx';
import { Link } from '../router.tsx';
import { useNow } from '../use-now.ts';

function workerState(w: WorkerObject): string {
  if (w.status !== 'online') return 'offline';
  return w.paused ? 'draining' : 'online';
}

/** Issue 18: the networks the worker offers, one line each; none reported = NAT only. */
export function workerNetworks(w: WorkerObject): [string, string][] {
  const networks = w.networks ?? [];
  if (networks.length === 0) return [['Networks', 'not reported: NAT only (an older worker, or the synthetic driver)']];
  return networks.map((n) => [
    `Network ${n.mode}`,
    `${n.subnet}, gateway ${n.gateway}${n.interface ? ` on ${n.interface}` : ''}; ${n.addresses > 0 ? `${n.used} / ${n.addresses} addresses in use` : `${n.used} addresses in use (not limited)`}`,
  ]);
}

export function WorkerDetailPage({ name }: { name: string }) {
  const { workers, vms } = useLive();
  const now = useNow(1000);
  const w = workers?.find((x) => x.name === name) ?? null;
  const onWorker = vms ? [...vms.values()].filter((v) => v.worker === name) : null;
  if (!w) {
    return (
      <section>
        <p>
          <Link to="/workers">← Workers</Link>
        </p>
        <h1>{name}</h1>
        <p>{workers === null ? 'Loading…' : 'No such worker.'}</p>
      </section>
    );
  }
  const spec: [string, string][] = [
    ['Hostname', w.hostname || '—'],
    ['OS / arch', `${w.os} / ${w.arch}`],
    ['Version', w.version || '—'],
    ['Drivers', w.drivers.join(', ') || '—'],
    ['Labels', labels(w.labels) || '—'],
    ['CPUs', `${w.used.cpus} / ${w.capacity.cpus}`],
    ['Memory', `${mib(w.used.memoryMib)} / ${mib(w.capacity.memoryMib)}`],
    ['VM slots', `${w.used.vms} / ${w.capacity.vmSlots}`],
    ['macOS slots', `${w.used.macosVms} / ${w.capacity.macosSlots}`],
    ...workerNetworks(w),
    ['Last seen', w.lastSeenAt ? `${ago(w.lastSeenAt, now)} (${time(w.lastSeenAt)})` : 'never'],
    ['Enrolled', time(w.createdAt)],
  ];
  return (
    <section aria-labelledby="worker-title">
      <p>
        <Link to="/workers">← Workers</Link>
      </p>
      <h1 id="worker-title">
        {w.name} <span className={`badge worker-${workerState(w)}`}>{workerState(w)}</span>
      </h1>
      <div className="columns">
        <div>
          <h2>Worker</h2>
          <dl className="spec">
            {spec.map(([k, v]) => (
              <div key={k}>
                <dt>{k}</dt>
                <dd data-field={k}>{v}</dd>
              </div>
            ))}
          </dl>
        </div>
        <div>
          <h2>VMs</h2>
          {onWorker === null ? (
            <p className="loading">Loading VMs…</p>
          ) : onWorker.length === 0 ? (
            <p className="muted">No VMs on this worker.</p>
          ) : (
            <ul className="vm-list">
              {onWorker
                .sort((a, b) => a.name.localeCompare(b.name))
                .map((v) => (
                  <li key={v.name}>
                    <Link to={`/vms/${encodeURIComponent(v.name)}`}>{v.name}</Link> <span className={`badge state-${v.state}`}>{v.state}</span>
                  </li>
                ))}
            </ul>
          )}
        </div>
      </div>
      <ImagesPanel worker={w.name} />
    </section>
  );
}
