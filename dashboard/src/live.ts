// The live feed: one EventSource on GET /v1/live (server-sent events) for the whole app, and the session's
// renewal while the page is open (the stream alone never renews the sign-in cookie), and the number of open alerts
// (the navigation's badge).
import { createContext, useContext, useEffect, useRef, useState } from "react";
import { get, toApiError, type Alert, type AlertsOut, type Loaded, type LiveCounts } from "./api";

export interface Live {
  /** Latest `counts` event (null before the first). */
  counts: LiveCounts | null;
  /** When `counts` came (Date.now()): a camera's `age_s` is its age then (the server does not push it as it grows). */
  countsAt: number;
  /** Latest `alert` event. */
  alert: Alert | null;
  /** Alerts pushed since the page was opened. */
  alerts: number;
  /** Open (firing) alerts: GET /v1/alerts `firing`, read when the feed opens and after alerts are pushed
   * (null before the first answer). */
  firing: number | null;
  /** open: the numbers are live; connecting / error: they are the last ones received (stale). */
  status: "connecting" | "open" | "error";
  /** The server's `unavailable` event (it could not read the numbers) until the next `counts`: the numbers shown are
   * the last ones read, not live, while the stream stays open. */
  serverError: string | null;
}

const INITIAL: Live = { counts: null, countsAt: 0, alert: null, alerts: 0, firing: null, status: "connecting", serverError: null };
export const LiveContext = createContext<Live>(INITIAL);
export const useLive = () => useContext(LiveContext);

/** Between two renewals of the session cookie: a third of the shortest auth.session_ttl_s (60 s). The API renews
 * a cookie past half its lifetime on any request, so one of these falls in every cookie's second half. */
export const RENEW_MS = 20_000;
/** Before opening the feed again once the browser gave it up (an answer other than the stream). */
const REOPEN_MS = 5_000;
/** After an alert push, before the open alerts are counted again: a burst of pushes costs one read. */
const FIRING_READ_MS = 300;

/** The feed while `enabled` (signed in); `onSignedOut` when the session turns out to have ended (401). */
export function useLiveFeed(enabled: boolean, onSignedOut: () => void): Live {
  const [live, setLive] = useState<Live>(INITIAL);
  const signedOut = useRef(onSignedOut);
  signedOut.current = onSignedOut;
  useEffect(() => {
    if (!enabled) return;
    // a new session (signed in again) starts from nothing: the last one's numbers are not shown as live meanwhile
    setLive(INITIAL);
    let stopped = false;
    let es: EventSource | null = null;
    let reopen: number | undefined;
    let firingRead: number | undefined;
    // the open alerts' number (limit=1: the count, not the list); a failure keeps the last one
    const readFiring = () => {
      window.clearTimeout(firingRead);
      firingRead = window.setTimeout(() => get<AlertsOut>("/v1/alerts?state=firing&limit=1").then(
        (r) => !stopped && setLive((l) => ({ ...l, firing: r.firing })), () => {}), FIRING_READ_MS);
    };
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
      source.onopen = () => {
        setLive((l) => ({ ...l, status: "open" }));
        readFiring(); // (again) connected: alerts may have changed meanwhile
      };
      // the server could not read the numbers (not `error`: that name is the connection's own, below)
      source.addEventListener("unavailable", (ev) => {
        const message = (JSON.parse((ev as MessageEvent).data) as { message?: string }).message
          ?? "the server could not read the numbers";
        setLive((l) => ({ ...l, serverError: message }));
      });
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
        setLive((l) => ({ ...l, counts, countsAt: Date.now(), status: "open", serverError: null }));
      });
      source.addEventListener("alert", (ev) => {
        const alert = JSON.parse((ev as MessageEvent).data) as Alert;
        setLive((l) => ({ ...l, alert, alerts: l.alerts + 1 }));
        readFiring();
      });
    };
    open();
    readFiring(); // also when the feed cannot be opened
    const renew = window.setInterval(() => check(), RENEW_MS);
    return () => {
      stopped = true;
      es?.close();
      window.clearTimeout(reopen);
      window.clearTimeout(firingRead);
      window.clearInterval(renew);
    };
  }, [enabled]);
  return live;
}

/** How often a view's "now" figures that the live feed does not carry (zones, queues) are read again while it is
 * open. */
export const RELOAD_MS = 10_000;

/** Call each reload every RELOAD_MS while the view is open (a `counts` push reads at once when that much has passed
 * since the last read: a timer held back in a background tab), never more often: the live pushes come every second
 * while a camera receives (its newest frame's time changes), and each read of /v1/queues is a window's query per
 * camera. A `Loaded` (useApi's answer) is not read again while a read of it is in flight. Figures read once would
 * stay on screen as "now" while the store changes (or its camera stops). */
export function useLiveReload(...reloads: (Pick<Loaded<unknown>, "reload" | "loading"> | (() => void))[]): void {
  const { counts } = useLive();
  const current = useRef(reloads);
  current.current = reloads;
  const last = useRef(Date.now()); // the views read on mount
  const readIfDue = useRef(() => {
    if (Date.now() - last.current < RELOAD_MS) return;
    last.current = Date.now();
    for (const r of current.current) {
      if (typeof r === "function") r();
      else if (!r.loading) r.reload();
    }
  });
  useEffect(() => readIfDue.current(), [counts]);
  useEffect(() => {
    const t = window.setInterval(() => readIfDue.current(), 1_000);
    return () => window.clearInterval(t);
  }, []);
}
