// Live data shared by all pages: the controller's /v1/live stream (overview and
// workers) and the VM watch stream, each opened once per login.
import { createContext, useContext, useEffect, useState, type ReactNode } from 'react';
import type { FleetOverview, VmObject, WorkerObject } from './api/types.ts';
import { useSession } from './session.tsx';

type LiveLine = { type: 'overview'; overview: FleetOverview } | { type: 'workers'; workers: WorkerObject[] };
type VmLine = { type: 'ADDED' | 'MODIFIED' | 'DELETED'; vm: VmObject };

interface Live {
  overview: FleetOverview | null;
  workers: WorkerObject[] | null;
  vms: Map<string, VmObject> | null;
  connected: boolean;
  error: string | null;
}

const LiveContext = createContext<Live>({ overview: null, workers: null, vms: null, connected: false, error: null });

export function LiveProvider({ children }: { children: ReactNode }) {
  const { api } = useSession();
  const [overview, setOverview] = useState<FleetOverview | null>(null);
  const [workers, setWorkers] = useState<WorkerObject[] | null>(null);
  const [vms, setVms] = useState<Map<string, VmObject> | null>(null);
  const [status, setStatus] = useState<{ live: boolean; vms: boolean; error: string | null }>({ live: false, vms: false, error: null });

  useEffect(() => {
    const stopLive = api.watch<LiveLine>(
      '/v1/live',
      (line) => {
        if (line.type === 'overview') setOverview(line.overview);
        else if (line.type === 'workers') setWorkers(line.workers);
      },
      (connected, error) => setStatus((s) => ({ ...s, live: connected, error: error ?? null })),
    );
    const stopVms = api.watch<VmLine>(
      '/v1/vms?watch=true',
      (line) =>
        setVms((prev) => {
          const next = new Map(prev ?? []);
          if (line.type === 'DELETED') next.delete(line.vm.name);
          else next.set(line.vm.name, line.vm);
          return next;
        }),
      (connected, error) => {
        // Every (re)connect replays the full list as ADDED lines (the controller sends the
        // stream's headers at once): start from empty, so VMs deleted during a gap disappear
        // and an empty fleet shows as empty rather than loading.
        if (connected) setVms(new Map());
        setStatus((s) => ({ ...s, vms: connected, error: error ?? s.error }));
      },
    );
    return () => {
      stopLive();
      stopVms();
    };
  }, [api]);

  // "Connected" follows /v1/live, the stream every page needs.
  return <LiveContext.Provider value={{ overview, workers, vms, connected: status.live, error: status.error }}>{children}</LiveContext.Provider>;
}

export function useLive(): Live {
  return useContext(LiveContext);
}
