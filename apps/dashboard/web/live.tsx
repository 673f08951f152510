// Live data shared by all pages: the controller's /v1/live stream (overview and
// workers) and the VM watch stream, each opened once per login; and the fleet's
// controllers, polled (they are not on /v1/live).
import { createContext, useContext, useEffect, useState, type ReactNode } from 'react';
import type { ControllerObject, FleetOverview, ServingController, VmObject, WorkerObject } from './api/types.ts';
import { useSession } from './session.tsx';

/**
 * Controllers refresh their registry rows every 2 s and count as down after three periods
 * without a change; polling at the same pace shows a failover within a few seconds.
 */
const CONTROLLERS_POLL_MS = 2000;
const RESYNC_QUIET_MS = 150;
const RESYNC_MAX_MS = 1500;

type LiveLine = { type: 'overview'; overview: FleetOverview } | { type: 'workers'; workers: WorkerObject[] };
type VmLine = { type: 'ADDED' | 'MODIFIED' | 'DELETED'; vm: VmObject };

interface Live {
  overview: FleetOverview | null;
  workers: WorkerObject[] | null;
  vms: Map<string, VmObject> | null;
  connected: boolean;
  error: string | null;
  /** `/v1/controllers`: null until the first answer (and for tokens without the read role). */
  controllers: ControllerObject[] | null;
  /** Why the last `/v1/controllers` poll failed (the last good list stays shown). */
  controllersError: string | null;
  /** The controller serving this dashboard, from `/v1/health` (null: not known yet, or a controller older than issue 13). */
  servedBy: ServingController | null;
}

const LiveContext = createContext<Live>({ overview: null, workers: null, vms: null, connected: false, error: null, controllers: null, controllersError: null, servedBy: null });

export function LiveProvider({ children }: { children: ReactNode }) {
  const { api, can } = useSession();
  const canRead = can('read');
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
    // Every (re)connect replays the full list as ADDED lines (the controller sends the stream's
    // headers at once). The replay goes into a fresh map that replaces the shown one once the
    // replay is over (no line for RESYNC_QUIET_MS, at most RESYNC_MAX_MS): VMs deleted during a gap
    // disappear and an empty fleet shows as empty, yet the pages never see an empty fleet in
    // between (a VM page would unmount its open terminal or console on every stream reconnect).
    let fresh: Map<string, VmObject> | null = null;
    let quiet: ReturnType<typeof setTimeout> | undefined;
    let deadline: ReturnType<typeof setTimeout> | undefined;
    const swap = () => {
      clearTimeout(quiet);
      clearTimeout(deadline);
      if (!fresh) return;
      const next = fresh;
      fresh = null;
      setVms(next);
    };
    const apply = (map: Map<string, VmObject>, line: VmLine) => {
      if (line.type === 'DELETED') map.delete(line.vm.name);
      else map.set(line.vm.name, line.vm);
    };
    const stopVms = api.watch<VmLine>(
      '/v1/vms?watch=true',
      (line) => {
        if (fresh) {
          apply(fresh, line);
          clearTimeout(quiet);
          quiet = setTimeout(swap, RESYNC_QUIET_MS);
          return;
        }
        setVms((prev) => {
          const next = new Map(prev ?? []);
          apply(next, line);
          return next;
        });
      },
      (connected, error) => {
        if (connected) {
          fresh = new Map();
          clearTimeout(quiet);
          clearTimeout(deadline);
          quiet = setTimeout(swap, RESYNC_QUIET_MS);
          deadline = setTimeout(swap, RESYNC_MAX_MS);
        }
        setStatus((s) => ({ ...s, vms: connected, error: error ?? s.error }));
      },
    );
    return () => {
      clearTimeout(quiet);
      clearTimeout(deadline);
      stopLive();
      stopVms();
    };
  }, [api]);

  const [controllers, setControllers] = useState<{ items: ControllerObject[] | null; error: string | null; servedBy: ServingController | null }>({ items: null, error: null, servedBy: null });
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const poll = async () => {
      // Both at once: the answer to /v1/health says which controller this page talks to.
      const [health, list] = await Promise.allSettled([api.health(), canRead ? api.get<{ items: ControllerObject[] }>('/v1/controllers') : Promise.resolve(null)]);
      if (stopped) return;
      setControllers((prev) => ({
        // A failed poll keeps what was last known (a follower restarting is no reason to blank the panel).
        servedBy: health.status === 'fulfilled' ? (health.value.controller ?? null) : prev.servedBy,
        items: list.status === 'fulfilled' ? (list.value?.items ?? prev.items) : prev.items,
        error: list.status === 'rejected' ? (list.reason instanceof Error ? list.reason.message : String(list.reason)) : null,
      }));
      timer = setTimeout(() => void poll(), CONTROLLERS_POLL_MS);
    };
    void poll();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [api, canRead]);

  // "Connected" follows /v1/live, the stream every page needs.
  return (
    <LiveContext.Provider value={{ overview, workers, vms, connected: status.live, error: status.error, controllers: controllers.items, controllersError: controllers.error, servedBy: controllers.servedBy }}>
      {children}
    </LiveContext.Provider>
  );
}

export function useLive(): Live {
  return useContext(LiveContext);
}
