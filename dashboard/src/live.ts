// The live feed: one EventSource on GET /v1/live (server-sent events) for the whole app.
import { createContext, useContext, useEffect, useState } from "react";
import type { Alert, LiveCounts } from "./api";

export interface Live {
  /** Latest `counts` event (null before the first). */
  counts: LiveCounts | null;
  /** Latest `alert` event. */
  alert: Alert | null;
  /** Alerts pushed since the page was opened. */
  alerts: number;
  status: "connecting" | "open" | "error";
}

export const LiveContext = createContext<Live>({ counts: null, alert: null, alerts: 0, status: "connecting" });
export const useLive = () => useContext(LiveContext);

export function useLiveFeed(enabled: boolean): Live {
  const [live, setLive] = useState<Live>({ counts: null, alert: null, alerts: 0, status: "connecting" });
  useEffect(() => {
    if (!enabled) return;
    const es = new EventSource("/v1/live", { withCredentials: true });
    es.onopen = () => setLive((l) => ({ ...l, status: "open" }));
    es.onerror = () => setLive((l) => ({ ...l, status: es.readyState === EventSource.CLOSED ? "error" : "connecting" }));
    es.addEventListener("counts", (ev) => {
      const counts = JSON.parse((ev as MessageEvent).data) as LiveCounts;
      setLive((l) => ({ ...l, counts, status: "open" }));
    });
    es.addEventListener("alert", (ev) => {
      const alert = JSON.parse((ev as MessageEvent).data) as Alert;
      setLive((l) => ({ ...l, alert, alerts: l.alerts + 1 }));
    });
    return () => es.close();
  }, [enabled]);
  return live;
}
