// The dashboard's shell: sign-in, navigation between the views, the live feed for all of them, the store's time
// zone (GET /v1/site: every time is shown in it, wherever the browser is).
import { useCallback, useEffect, useState } from "react";
import {
  ApiError, atLeast, browserTimeZone, get, request, setStoreTimeZone, setUnauthorizedHandler, toApiError, type Me,
  type Role,
} from "./api";
import { ErrorBoundary } from "./ui";
import { LiveContext, useLiveFeed } from "./live";
import { SignIn } from "./views/SignIn";
import { LiveView } from "./views/LiveView";
import { CountsView } from "./views/CountsView";
import { CameraView } from "./views/CameraView";
import { ZonesView } from "./views/ZonesView";
import { JourneysView } from "./views/JourneysView";
import { InterestView } from "./views/InterestView";
import { DemographicsView } from "./views/DemographicsView";
import { CustomersView } from "./views/CustomersView";
import { AlertsView } from "./views/AlertsView";
import { HealthView } from "./views/HealthView";
import { AuditView } from "./views/AuditView";
import { StoresView } from "./views/StoresView";

export interface ViewProps {
  me: Me;
}

/** The views; `min`: the least role that sees one in the navigation (default: every role). */
const VIEWS: { path: string; label: string; View: (p: ViewProps) => React.JSX.Element; min?: Role }[] = [
  { path: "/", label: "Live", View: LiveView },
  { path: "/counts", label: "Counts", View: CountsView },
  { path: "/camera", label: "Camera", View: CameraView },
  { path: "/zones", label: "Zones & queues", View: ZonesView },
  { path: "/journeys", label: "Journeys", View: JourneysView },
  { path: "/interest", label: "Interest", View: InterestView },
  { path: "/demographics", label: "Demographics", View: DemographicsView },
  { path: "/customers", label: "Customers", View: CustomersView, min: "manager" }, // the API's customers need a manager
  { path: "/alerts", label: "Alerts", View: AlertsView },
  { path: "/health", label: "Camera health", View: HealthView },
  { path: "/audit", label: "Counting audit", View: AuditView, min: "manager" },
  { path: "/stores", label: "Stores", View: StoresView },
];

/** Before the session is checked again when the API did not answer at the page's start. */
const BOOT_RETRY_MS = 5_000;

function usePath(): [string, (p: string) => void] {
  const [path, setPath] = useState(window.location.pathname);
  useEffect(() => {
    const on = () => setPath(window.location.pathname);
    window.addEventListener("popstate", on);
    return () => window.removeEventListener("popstate", on);
  }, []);
  const go = useCallback((p: string) => {
    if (p !== window.location.pathname) window.history.pushState(null, "", p);
    setPath(p);
    window.scrollTo(0, 0);
  }, []);
  return [path, go];
}

export function App() {
  const [me, setMe] = useState<Me | null | undefined>(undefined); // undefined: checking the session
  const [path, go] = usePath();
  const [menu, setMenu] = useState(false);
  const [timeZone, setTimeZone] = useState<string | null | undefined>(undefined); // null: unknown (the browser's)

  // the API not answering (down, a 5xx of a proxy) is said and asked again, not shown as signed out: the sign-in
  // form would ask for a password the session does not need and could not take
  const [bootError, setBootError] = useState<ApiError | null>(null);
  useEffect(() => {
    setUnauthorizedHandler(() => setMe(null));
    let retry: number | undefined;
    const check = () => get<Me>("/v1/auth/me").then(
      (m) => { setBootError(null); setMe(m); },
      (e) => {
        const err = toApiError(e);
        if (err.status === 401 || err.status === 404) {
          setBootError(null);
          setMe(err.status === 404 ? { username: "(no sign-in)", role: "admin" } : null);
        } else {
          setBootError(err);
          retry = window.setTimeout(check, BOOT_RETRY_MS);
        }
      });
    check();
    return () => window.clearTimeout(retry);
  }, []);

  useEffect(() => {
    if (!me) return;
    get<{ timezone?: string }>("/v1/site").then(
      (s) => setTimeZone(setStoreTimeZone(s.timezone ?? null)),
      () => setTimeZone(setStoreTimeZone(null)),
    );
  }, [me]);

  const live = useLiveFeed(!!me, () => setMe(null));

  // a sign-out that failed (no answer, or 503: the API could not end the sessions) leaves the page signed in and
  // says so: the sessions are still valid
  const [signOutError, setSignOutError] = useState<string | null>(null);
  const signOut = async () => {
    setSignOutError(null);
    try {
      await request("/v1/auth/logout", { method: "POST" });
      setMe(null);
    } catch (e) {
      setSignOutError(toApiError(e).detail);
    }
  };

  if (me === null) return <SignIn onSignedIn={setMe} />;
  if (me === undefined && bootError) {
    return (
      <div className="signin">
        <div className="card signin-card problem" role="alert" data-testid="api-unreachable">
          <strong>The dashboard cannot reach the StoreLens API</strong>{" "}
          ({bootError.status ? `${bootError.status} ${bootError.detail}` : bootError.detail}).{" "}
          It tries again every {BOOT_RETRY_MS / 1000} s.
        </div>
      </div>
    );
  }
  if (me === undefined || timeZone === undefined) return <div className="boot muted">Loading…</div>;

  const views = VIEWS.filter((v) => !v.min || atLeast(me.role, v.min));
  const current = views.find((v) => v.path === path) ?? views[0];
  const View = current.View;
  return (
    <LiveContext.Provider value={live}>
      <div className="layout">
        <header className="topbar">
          <button className="menu-button" aria-label="Menu" onClick={() => setMenu(!menu)}>☰</button>
          <span className="brand">StoreLens</span>
          {/* open but the server cannot read the numbers, or a camera is not receiving: not the green "live" */}
          {(() => {
            const notNow = live.status === "open" && (live.serverError !== null || !!live.counts?.stale);
            return (
              <span className={`live-dot ${notNow ? "stale" : live.status}`} data-testid="live-status"
                title={notNow ? (live.serverError ?? "a camera is not receiving") : `live feed: ${live.status}`}>
                {notNow ? "stale" : live.status === "open" ? "live" : live.status}
              </span>
            );
          })()}
          <span className="spacer" />
          <span className="who" data-testid="who">
            {me.username} <span className={`role role-${me.role}`} data-testid="role">{me.role}</span>
          </span>
          <button className="link" onClick={signOut} data-testid="sign-out">Sign out</button>
        </header>
        <nav className={`sidebar ${menu ? "open" : ""}`}>
          {views.map((v) => (
            <a
              key={v.path}
              href={v.path}
              className={v === current ? "active" : ""}
              data-testid={`nav-${v.path === "/" ? "live" : v.path.slice(1)}`}
              onClick={(e) => {
                e.preventDefault();
                setMenu(false);
                go(v.path);
              }}
            >
              {v.label}
              {v.path === "/alerts" && !!live.firing && (
                <span className="badge" title="Open (firing) alerts" data-testid="alerts-badge">{live.firing}</span>)}
            </a>
          ))}
          <div className="tz muted" data-testid="timezone" title="Every time is shown in this time zone">
            Times: {timeZone ?? `${browserTimeZone()} (this browser's)`}
          </div>
        </nav>
        <main className="content" data-testid={`view-${current.path === "/" ? "live" : current.path.slice(1)}`}>
          {signOutError !== null && (
            <div className="problem" role="alert" data-testid="sign-out-error">
              <strong>Sign-out failed: you are still signed in.</strong> <span>{signOutError}</span>
            </div>
          )}
          <h1>{current.label}</h1>
          <ErrorBoundary key={current.path}>
            <View me={me} />
          </ErrorBoundary>
        </main>
      </div>
    </LiveContext.Provider>
  );
}
