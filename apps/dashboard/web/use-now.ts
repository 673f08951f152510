import { useEffect, useState } from 'react';

/** The current time, re-rendering every `intervalMs` (ages and "last seen" keep counting between updates). */
export function useNow(intervalMs = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(t);
  }, [intervalMs]);
  return now;
}
