import { useLive } from '../live.tsx';
import { useSession } from '../session.tsx';
import { Link } from '../router.tsx';
import { duration, time } from '../format.ts';
import { StateBadge } from '../components/Badge.tsx';
import { useNow } from '../use-now.ts';
import { ControllersPanel } from '../components/ControllersPanel.tsx';

// "pending" has its own card (queue length and oldest wait).
const STATES = ['scheduled', 'starting', 'running', 'stopping', 'stopped', 'unknown', 'failed', 'deleting'];

function Stat({ label, value, detail, tone }: { label: string; value: string | number; detail?: string; tone?: 'ok' | 'warn' | 'bad' }) {
  return (
    <div className={`stat ${tone ?? ''}`} role="group" aria-label={label}>
      <div className="stat-label">{label}</div>
      <div className="stat-value">{value}</div>
      {detail && <div className="stat-detail">{detail}</div>}
    </div>
  );
}

export function OverviewPage() {
  const { overview } = useLive();
  const { can } = useSession();
  // The oldest pending VM's wait keeps growing between updates: tick locally.
  const now = useNow(1000);
  if (!overview) return <p className="loading">Connecting to the controller…</p>;
  const { workers, slots, pending, vmsByState, recentFailures } = overview;
  const wait = pending.oldestWaitSeconds === null ? null : pending.oldestWaitSeconds + (now - new Date(overview.at).getTime()) / 1000;
  return (
    <section aria-labelledby="overview-title">
      <h1 id="overview-title">Overview</h1>
      <h2>Workers</h2>
      <div className="stats">
        <Stat label="Workers online" value={workers.online} detail={`of ${workers.total}`} tone={workers.online > 0 ? 'ok' : 'bad'} />
        <Stat label="Workers offline" value={workers.offline} tone={workers.offline > 0 ? 'bad' : undefined} />
        <Stat label="Workers draining" value={workers.draining} tone={workers.draining > 0 ? 'warn' : undefined} />
        <Stat label="VM slots used" value={`${slots.vm.used} / ${slots.vm.total}`} detail={`${slots.vm.schedulable} free for new VMs`} />
        <Stat label="macOS slots used" value={`${slots.macos.used} / ${slots.macos.total}`} detail={`${slots.macos.schedulable} free for new macOS VMs`} />
      </div>
      <h2>VMs</h2>
      <div className="stats">
        <Stat label="Pending VMs" value={pending.count} tone={pending.count > 0 ? 'warn' : undefined} detail={wait === null ? 'queue empty' : `oldest waits ${duration(wait)}`} />
        {STATES.map((s) => (
          <Stat key={s} label={`VMs ${s}`} value={vmsByState[s] ?? 0} tone={s === 'failed' && (vmsByState[s] ?? 0) > 0 ? 'bad' : undefined} />
        ))}
      </div>
      {pending.oldestName && (
        <p>
          Oldest pending VM: <Link to={`/vms/${pending.oldestName}`}>{pending.oldestName}</Link> — {pending.oldestReason || 'waiting for the scheduler'}
        </p>
      )}
      <h2>Recent failures</h2>
      {recentFailures.length === 0 ? (
        <p className="muted">No failures recorded.</p>
      ) : (
        <ul className="failures">
          {recentFailures.map((e) => (
            <li key={e.id}>
              <time dateTime={e.at}>{time(e.at)}</time> <StateBadge state="failed" /> {e.vm ? <Link to={`/vms/${e.vm}`}>{e.vm}</Link> : null} <code>{e.kind}</code> {e.message}
            </li>
          ))}
        </ul>
      )}
      {/* /v1/controllers needs the read role (a connect-only token has none). */}
      {can('read') && <ControllersPanel />}
    </section>
  );
}
