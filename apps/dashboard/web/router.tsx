// A minimal history-API router: the controller answers every page path with
// index.html, so deep links and reloads work. (The app has a handful of flat
// routes; a routing library would be more code to configure than this.)
import { createContext, useContext, useEffect, useState, type AnchorHTMLAttributes, type MouseEvent, type ReactNode } from 'react';

type Navigate = (to: string, opts?: { replace?: boolean }) => void;
const RouterContext = createContext<{ path: string; navigate: Navigate }>({ path: '/', navigate: () => {} });

export function Router({ children }: { children: ReactNode }) {
  const [path, setPath] = useState(() => window.location.pathname + window.location.search);
  useEffect(() => {
    const onPop = () => setPath(window.location.pathname + window.location.search);
    window.addEventListener('popstate', onPop);
    return () => window.removeEventListener('popstate', onPop);
  }, []);
  const navigate: Navigate = (to, opts) => {
    if (to === path) return;
    if (opts?.replace) window.history.replaceState(null, '', to);
    else {
      window.history.pushState(null, '', to);
      window.scrollTo(0, 0);
    }
    setPath(to);
  };
  return <RouterContext.Provider value={{ path, navigate }}>{children}</RouterContext.Provider>;
}

export function useRouter() {
  return useContext(RouterContext);
}

/** Splits "/vms/web-1?x=1" into ["vms", "web-1"] and the query. */
export function useRoute(): { segments: string[]; query: URLSearchParams } {
  const { path } = useRouter();
  const [pathname, search = ''] = path.split('?');
  return { segments: (pathname ?? '/').split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(search) };
}

export function Link({ to, children, ...rest }: { to: string; children: ReactNode } & Omit<AnchorHTMLAttributes<HTMLAnchorElement>, 'href'>) {
  const { navigate } = useRouter();
  const onClick = (e: MouseEvent<HTMLAnchorElement>) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return; // let the browser open new tabs
    e.preventDefault();
    navigate(to);
  };
  return (
    <a href={to} onClick={onClick} {...rest}>
      {children}
    </a>
  );
}
