import { useEffect, useRef, useState } from "preact/hooks";
import { ApiProblem } from "./api.ts";

/** How often open views refresh (SPEC §2: at least every 2 seconds). */
export const POLL_MS = 1500;

export interface Polled<T> {
  data: T | null;
  problem: ApiProblem | null;
  /** Fetch again now (after an action), without waiting for the next tick. */
  refresh: () => void;
}

/**
 * Loads `load()` now and every {@link POLL_MS} while the view is open; new `deps` start
 * afresh, and an answer to an outdated call is dropped. A hidden tab skips ticks.
 */
export function usePoll<T>(load: () => Promise<T>, deps: readonly unknown[]): Polled<T> {
  const [data, setData] = useState<T | null>(null);
  const [problem, setProblem] = useState<ApiProblem | null>(null);
  const generation = useRef(0);
  const loaded = useRef(false);
  const [kick, setKick] = useState(0);
  const key = JSON.stringify(deps);

  useEffect(() => {
    loaded.current = false;
    setData(null);
    setProblem(null);
  }, [key]);

  useEffect(() => {
    const mine = ++generation.current;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      if (document.visibilityState !== "hidden" || !loaded.current) {
        try {
          const value = await load();
          if (generation.current !== mine) return;
          loaded.current = true;
          setData(value);
          setProblem(null);
        } catch (error) {
          if (generation.current !== mine) return;
          setProblem(
            error instanceof ApiProblem ? error : new ApiProblem(0, "client", String(error)),
          );
        }
      }
      if (generation.current === mine) timer = setTimeout(tick, POLL_MS);
    };
    void tick();
    return () => {
      generation.current++;
      if (timer) clearTimeout(timer);
    };
  }, [key, kick]);

  return { data, problem, refresh: () => setKick((k) => k + 1) };
}
