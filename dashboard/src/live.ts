// The live feed: one EventSource on GET /v1/live (server-sent events) for the whole app, and the session's
// renewal while the page is open (the stream alone never renews the sign-in cookie).
import { createContext, useContext, useEffect, useRef, useState } from "react";
import { get, toApiError, type Alert, type LiveCounts } from "./api";

export interface Live {
  /** Latest `counts` event (null before the first). */
  counts: LiveCounts | null;
  /** Latest `alert` event. */
  alert: Alert | null;
  /** Alerts pushed since the page was opened. */
  alerts: number;
  /** open: the numbers are live; connecting / error: they are the last ones received (stale). */
  status: "connecting" | "open" | "error";
}

export const LiveContext = createContext<Live>({ counts: null, alert: null, alerts: 0, status: "connecting" });
export const useLive = () => useContext(LiveContext);

/** Between two renewals of the session cookie: a third of the shortest auth.session_ttl_s (60 s). The API renews
 * a cookie past half its lifetime on any request, so one of these falls in every cookie's second half. */
export const RENEW_MS = 20_000;
/** Before opening the feed again once the browser gave it up (an answer other than the stream). */
const REOPEN_MS = 5_000;

/** The feed while `enabled` (signed in); `onSignedOut` when the session turns out to have ended (401). */
export function useLiveFeed(enabled: boolean, onSignedOut: () => void): Live {
  const [live, setLive] = useState<Live>({ counts: null, alert: null, alerts: 0, status: "connecting" });
  const signedOut = useRef(onSignedOut);
  signedOut.current = onSignedOut;
  useEffect(() => {
    if (!enabled) return;
    let stopped = false;
    let es: EventSource | null = null;
    let reopen: number | undefined;
    // Whether the session still holds: a 401 shows the sign-in page; anything else (404: no sign-in on this
    // API, a network error) leaves the page as it is.
    const check = (then?: () => void) =>
      get("/v1/auth/me").then(
        () => !stopped && then?.(),
        (e) => {
          if (stopped) return;
          if (toApiError(e).status === 401) signedOut.current();
          else then?.();
        },
      );
    const open = () => {
      const source = new EventSource("/v1/live", { withCredentials: true });
      es = source;
      source.onopen = () => setLive((l) => ({ ...l, status: "open" }));
      source.onerror = () => {
        if (source.readyState !== EventSource.CLOSED) {
          setLive((l) => ({ ...l, status: "connecting" })); // the browser reconnects by itself
          return;
        }
        // given up: the answer was not the stream (401 when the session ended, a 5xx): sign in again, or retry
        setLive((l) => ({ ...l, status: "error" }));
        check(() => { reopen = window.setTimeout(open, REOPEN_MS); });
      };
      source.addEventListener("counts", (ev) => {
        const counts = JSON.parse((ev as MessageEvent).data) as LiveCounts;
        setLive((l) => ({ ...l, counts, status: "open" }));
      });
      source.addEventListener("alert", (ev) => {
        const alert = JSON.parse((ev as MessageEvent).data) as Alert;
        setLive((l) => ({ ...l, alert, alerts: l.alerts + 1 }));
      });
    };
    open();
    const renew = window.setInterval(() => check(), RENEW_MS);
    return () => {
      stopped = true;
      es?.close();
      window.clearTimeout(reopen);
      window.clearInterval(renew);
    };
  }, [enabled]);
  return live;
}
