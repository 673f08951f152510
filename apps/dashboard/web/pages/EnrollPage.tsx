import { useState, type FormEvent } from 'react';
import type { BootstrapTokenCreated } from '../api/types.ts';
import { useSession } from '../session.tsx';
import { CopyButton } from '../components/CopyButton.tsx';
import { Link } from '../router.tsx';

export function EnrollPage() {
  const { api, can } = useSession();
  const [created, setCreated] = useState<BootstrapTokenCreated | null>(null);
  const [error, setError] = useState<string | null>(null);
  if (!can('admin')) return <p role="alert">Enrolling workers needs the admin role.</p>;

  const submit = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    const name = String(f.get('name') ?? '').trim();
    const uses = String(f.get('uses') ?? '').trim();
    const hours = Number(f.get('hours'));
    setError(null);
    try {
      setCreated(await api.post<BootstrapTokenCreated>('/v1/bootstrap-tokens', { ...(name ? { name } : {}), ...(uses ? { uses: Number(uses) } : {}), expiresInHours: hours }));
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  return (
    <section aria-labelledby="enroll-title">
      <p>
        <Link to="/workers">← Workers</Link>
      </p>
      <h1 id="enroll-title">Enroll a worker</h1>
      <p>Create a bootstrap token, then run the command it gives on the new Mac (or Linux host). The token is shown once.</p>
      <form onSubmit={(e) => void submit(e)} className="form-grid">
        <label>
          Token name (optional)
          <input name="name" pattern="[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?" title="lower-case letters, digits and dashes" />
        </label>
        <label>
          Enrollments allowed (empty = unlimited until expiry)
          <input name="uses" type="number" min={1} max={10000} />
        </label>
        <label>
          Valid for (hours)
          <input name="hours" type="number" min={1} max={8760} defaultValue={24} required />
        </label>
        <div>
          <button type="submit" className="primary">
            Create bootstrap token
          </button>
        </div>
      </form>
      {error && <p role="alert" className="error">{error}</p>}
      {created && (
        <div className="result" aria-live="polite">
          <h2>Run this on the new host</h2>
          <pre aria-label="Enroll command">
            <code>{created.enrollCommand}</code>
          </pre>
          <CopyButton text={created.enrollCommand} label="Copy command" />
          <p className="muted">
            Token {created.info.name} expires {created.info.expiresAt ? new Date(created.info.expiresAt).toLocaleString() : 'never'}
            {created.info.usesLeft !== null ? `, ${created.info.usesLeft} enrollments` : ''}.
          </p>
        </div>
      )}
    </section>
  );
}
