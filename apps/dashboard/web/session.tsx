// Who is logged in: the bearer token (kept in sessionStorage, so closing the tab
// logs out), the principal's roles from /v1/whoami, and a periodic check so a
// revoked or expired token ends the session in every open page.
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';
import { ApiClient, ApiError } from './api/client.ts';
import { hasRole, type Role, type WhoAmI } from './api/types.ts';

const STORAGE_KEY = 'fleet.token';
const CHECK_INTERVAL_MS = 3000;

interface Session {
  api: ApiClient;
  me: WhoAmI;
  can(role: Role): boolean;
  logout(): void;
}

interface SessionState {
  session: Session | null;
  /** Why the last session ended (shown on the login page). */
  endedReason: string | null;
  signIn(token: string): Promise<void>;
}

const SessionContext = createContext<SessionState | null>(null);

export function SessionProvider({ children }: { children: ReactNode }) {
  const [api, setApi] = useState<ApiClient | null>(null);
  const [me, setMe] = useState<WhoAmI | null>(null);
  const [endedReason, setEndedReason] = useState<string | null>(null);
  const [restoring, setRestoring] = useState(() => sessionStorage.getItem(STORAGE_KEY) !== null);

  const end = useCallback((reason: string | null) => {
    sessionStorage.removeItem(STORAGE_KEY);
    setApi(null);
    setMe(null);
    setEndedReason(reason);
  }, []);

  const signIn = useCallback(async (token: string) => {
    const client = new ApiClient(token);
    const who = await client.get<WhoAmI>('/v1/whoami');
    sessionStorage.setItem(STORAGE_KEY, token);
    setEndedReason(null);
    setApi(client);
    setMe(who);
  }, []);

  // Restore a session after a reload.
  useEffect(() => {
    const saved = sessionStorage.getItem(STORAGE_KEY);
    if (!saved) return;
    signIn(saved)
      .catch((err: unknown) => end(err instanceof ApiError && err.status === 401 ? `Session ended: ${err.message}` : null))
      .finally(() => setRestoring(false));
  }, [signIn, end]);

  // Any 401 (a request, a stream, the periodic check) ends the session.
  useEffect(() => {
    if (!api) return;
    const off = api.onUnauthorized((message) => end(`Session ended: ${message}`));
    const timer = setInterval(() => {
      api.get<WhoAmI>('/v1/whoami').catch(() => undefined); // a 401 reaches onUnauthorized
    }, CHECK_INTERVAL_MS);
    return () => {
      off();
      clearInterval(timer);
    };
  }, [api, end]);

  const value = useMemo<SessionState>(() => {
    const session: Session | null =
      api && me
        ? {
            api,
            me,
            can: (role) => hasRole(me.roles, role),
            logout: () => {
              // Revoke login-session tokens on the server; keep long-lived API tokens valid.
              if (me.name.startsWith('login-')) void api.post('/v1/logout').catch(() => undefined);
              end(null);
            },
          }
        : null;
    return { session, endedReason, signIn };
  }, [api, me, endedReason, signIn, end]);

  if (restoring) return <p className="loading">Loading…</p>;
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSessionState(): SessionState {
  const s = useContext(SessionContext);
  if (!s) throw new Error('useSessionState outside SessionProvider');
  return s;
}

/** Only for pages rendered after login. */
export function useSession(): Session {
  const s = useSessionState().session;
  if (!s) throw new Error('useSession without a session');
  return s;
}
