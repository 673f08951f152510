import { useState, type FormEvent } from 'react';
import { login } from '../api/client.ts';
import { useSessionState } from '../session.tsx';

export function LoginPage() {
  const { signIn, endedReason } = useSessionState();
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const run = async (get: () => Promise<string>) => {
    setBusy(true);
    setError(null);
    try {
      await signIn(await get());
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  const onAccount = (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget);
    void run(async () => (await login(String(f.get('username') ?? ''), String(f.get('password') ?? ''))).token);
  };
  const onToken = (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const token = String(new FormData(e.currentTarget).get('token') ?? '').trim();
    void run(async () => token);
  };

  return (
    <main className="login" id="main">
      <h1>Fleet</h1>
      {endedReason && (
        <p role="alert" className="notice">
          {endedReason}
        </p>
      )}
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      <form onSubmit={onAccount} aria-labelledby="login-account">
        <h2 id="login-account">Sign in with an account</h2>
        <label>
          Username
          <input name="username" autoComplete="username" required autoFocus />
        </label>
        <label>
          Password
          <input name="password" type="password" autoComplete="current-password" required />
        </label>
        <button type="submit" className="primary" disabled={busy}>
          Sign in
        </button>
      </form>
      <form onSubmit={onToken} aria-labelledby="login-token">
        <h2 id="login-token">…or with an API token</h2>
        <label>
          API token
          <input name="token" type="password" autoComplete="off" required placeholder="fleet_…" />
        </label>
        <button type="submit" disabled={busy}>
          Use token
        </button>
      </form>
    </main>
  );
}
