import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { ROLES, type AccountObject, type Role, type TokenCreated, type TokenObject } from '../api/types.ts';
import { useSession } from '../session.tsx';
import { DataTable } from '../components/DataTable.tsx';
import { ConfirmButton } from '../components/ConfirmButton.tsx';
import { CopyButton } from '../components/CopyButton.tsx';
import { ago } from '../format.ts';

function RolesFieldset({ legend }: { legend: string }) {
  return (
    <fieldset className="roles">
      <legend>{legend}</legend>
      {ROLES.map((r) => (
        <label key={r} className="inline">
          <input type="checkbox" name="roles" value={r} defaultChecked={r === 'read'} /> {r}
        </label>
      ))}
    </fieldset>
  );
}

const rolesOf = (f: FormData) => f.getAll('roles').map(String) as Role[];

export function AccessPage() {
  const { api, can, me } = useSession();
  const [tokens, setTokens] = useState<TokenObject[] | null>(null);
  const [accounts, setAccounts] = useState<AccountObject[] | null>(null);
  const [created, setCreated] = useState<TokenCreated | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [showRevoked, setShowRevoked] = useState(false);

  const reload = useCallback(async () => {
    const [t, a] = await Promise.all([api.get<{ tokens: TokenObject[] }>('/v1/tokens'), api.get<{ accounts: AccountObject[] }>('/v1/accounts')]);
    setTokens(t.tokens);
    setAccounts(a.accounts);
  }, [api]);
  useEffect(() => {
    if (can('admin')) void reload().catch((err: unknown) => setError(String(err)));
  }, [reload, can]);

  if (!can('admin')) {
    return (
      <section>
        <h1>Tokens and accounts</h1>
        <p role="alert">Managing tokens and accounts needs the admin role. You are signed in as {me.name} ({me.roles.join(', ')}).</p>
      </section>
    );
  }

  const act = async (fn: () => Promise<void>) => {
    setError(null);
    try {
      await fn();
      await reload();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  const createToken = (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    const hours = String(f.get('hours') ?? '').trim();
    void act(async () => {
      setCreated(await api.post<TokenCreated>('/v1/tokens', { name: String(f.get('name') ?? '').trim(), roles: rolesOf(f), ...(hours ? { expiresInHours: Number(hours) } : {}) }));
      form.reset();
    });
  };
  const createAccount = (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = e.currentTarget;
    const f = new FormData(form);
    void act(async () => {
      await api.post('/v1/accounts', { username: String(f.get('username') ?? '').trim(), password: String(f.get('password') ?? ''), roles: rolesOf(f) });
      form.reset();
    });
  };
  const visible = (tokens ?? []).filter((t) => showRevoked || !t.revokedAt);

  return (
    <section aria-labelledby="access-title">
      <h1 id="access-title">Tokens and accounts</h1>
      {error && <p role="alert" className="error">{error}</p>}

      <h2>API tokens</h2>
      <form onSubmit={createToken} className="form-inline" aria-label="Create an API token">
        <label>
          Token name
          <input name="name" required pattern="[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?" title="lower-case letters, digits and dashes" />
        </label>
        <RolesFieldset legend="Token roles" />
        <label>
          Expires in (hours, empty = never)
          <input name="hours" type="number" min={1} />
        </label>
        <button type="submit" className="primary">
          Create token
        </button>
      </form>
      {created && (
        <div className="result" aria-live="polite">
          <p>
            Token <strong>{created.info.name}</strong> created. It is shown once:
          </p>
          <pre aria-label="New token">
            <code>{created.token}</code>
          </pre>
          <CopyButton text={created.token} label="Copy token" />
        </div>
      )}
      <label className="inline">
        <input type="checkbox" checked={showRevoked} onChange={(e) => setShowRevoked(e.target.checked)} /> Show revoked tokens
      </label>
      {tokens && (
        <DataTable
          caption="API tokens (login sessions are named login-<user>-…)"
          rows={visible}
          rowKey={(t) => t.name}
          empty="No tokens."
          initialSort={{ key: 'name', dir: 'asc' }}
          columns={[
            { key: 'name', header: 'Name', cell: (t) => <strong>{t.name}</strong>, sortValue: (t) => t.name },
            { key: 'roles', header: 'Roles', cell: (t) => t.roles.join(', ') },
            { key: 'by', header: 'Created by', cell: (t) => t.createdBy, sortValue: (t) => t.createdBy },
            { key: 'used', header: 'Last used', cell: (t) => ago(t.lastUsedAt) },
            { key: 'expires', header: 'Expires', cell: (t) => (t.expiresAt ? new Date(t.expiresAt).toLocaleString() : 'never') },
            {
              key: 'actions',
              header: 'Actions',
              cell: (t) =>
                t.revokedAt ? (
                  <span className="muted">revoked {ago(t.revokedAt)}</span>
                ) : (
                  <ConfirmButton label="Revoke" accessibleLabel={`Revoke ${t.name}`} title={`Revoke token ${t.name}?`} confirmLabel="Revoke token" onConfirm={() => act(() => api.del(`/v1/tokens/${t.name}`))}>
                    Every client using {t.name} loses access at once{t.name === me.name ? ' — including this dashboard session' : ''}.
                  </ConfirmButton>
                ),
            },
          ]}
        />
      )}

      <h2>Accounts</h2>
      <p className="muted">Accounts sign in to the dashboard with a username and password and get a 12-hour session token with the account's roles.</p>
      <form onSubmit={createAccount} className="form-inline" aria-label="Create an account">
        <label>
          Username
          <input name="username" required autoComplete="off" pattern="[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?" title="lower-case letters, digits and dashes" />
        </label>
        <label>
          Password
          <input name="password" type="password" required minLength={8} autoComplete="new-password" />
        </label>
        <RolesFieldset legend="Account roles" />
        <button type="submit" className="primary">
          Create account
        </button>
      </form>
      {accounts && (
        <DataTable
          caption="Accounts"
          rows={accounts}
          rowKey={(a) => a.username}
          empty="No accounts."
          columns={[
            { key: 'username', header: 'Username', cell: (a) => <strong>{a.username}</strong>, sortValue: (a) => a.username },
            { key: 'roles', header: 'Roles', cell: (a) => a.roles.join(', ') },
            { key: 'login', header: 'Last login', cell: (a) => ago(a.lastLoginAt) },
            { key: 'status', header: 'Status', cell: (a) => (a.disabledAt ? <span className="badge worker-offline">disabled</span> : <span className="badge worker-online">active</span>) },
            {
              key: 'actions',
              header: 'Actions',
              cell: (a) => (
                <span className="actions">
                  {a.disabledAt ? (
                    <button type="button" aria-label={`Enable account ${a.username}`} onClick={() => void act(() => api.post(`/v1/accounts/${a.username}/enable`))}>
                      Enable
                    </button>
                  ) : (
                    <ConfirmButton label="Disable" accessibleLabel={`Disable account ${a.username}`} title={`Disable account ${a.username}?`} confirmLabel="Disable account" onConfirm={() => act(() => api.post(`/v1/accounts/${a.username}/disable`))}>
                      {a.username} can no longer sign in, and the open sessions are revoked at once.
                    </ConfirmButton>
                  )}
                  <ConfirmButton label="Delete" accessibleLabel={`Delete account ${a.username}`} title={`Delete account ${a.username}?`} confirmLabel="Delete account" onConfirm={() => act(() => api.del(`/v1/accounts/${a.username}`))}>
                    The account is removed and its open sessions are revoked.
                  </ConfirmButton>
                </span>
              ),
            },
          ]}
        />
      )}
    </section>
  );
}
