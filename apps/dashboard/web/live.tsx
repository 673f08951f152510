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
    // The watch stream's headers arrive with its first line, which for an empty
    // fleet is the first change: load the list at once so pages don't wait for it.
    let watching = false;
    api.get<{ vms: VmObject[] }>('/v1/vms').then(
      ({ vms: list }) => !watching && setVms(new Map(list.map((vm) => [vm.name, vm]))),
      () => undefined,
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
        // Every (re)connect replays the full list as ADDED lines. After a drop, start
        // from empty so VMs deleted during the gap disappear; the first time, keep the
        // prefetched list so pages don't flash empty.
        if (connected) {
          if (watching) setVms(new Map());
          watching = true;
        }
        setStatus((s) => ({ ...s, vms: connected, error: error ?? s.error }));
      },
    );
    return () => {
      stopLive();
      stopVms();
    };
  }, [api]);

  // "Connected" follows /v1/live, which always answers at once (see above for the VM stream).
  return <LiveContext.Provider value={{ overview, workers, vms, connected: status.live, error: status.error }}>{children}</LiveContext.Provider>;
}

export function useLive(): Live {
  return useContext(LiveContext);
}
