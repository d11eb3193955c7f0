// Live occupancy and counts, pushed by the server (GET /v1/live, server-sent events). While the feed is not open
// (reconnecting, or given up) the last numbers received stay, marked as not live; so while the server says it cannot
// read them (its `unavailable` event), also before any number came. A live camera without a frame for over 60 s, or
// without any frame yet (the server's `stale`), is marked, and so is the store's total that holds its last counts;
// its "no frame for N s" counts on by itself (the server pushes the age when something else changes only), and a
// camera fresh at the last push turns stale by itself once its age passes 60 s (the pushes stopped).
import { useEffect, useState } from "react";
import { fmtNum, fmtTime, get, toApiError, type ApiError, type OccupancyOut } from "../api";
import { useLive } from "../live";
import { Card, Problem, Stat } from "../ui";
import type { ViewProps } from "../App";

/** Seconds without a frame after which a live camera is stale (the API's STALE_AFTER_MS). */
const STALE_S = 60;

export function LiveView(_: ViewProps) {
  const live = useLive();
  const [fallback, setFallback] = useState<OccupancyOut | null>(null);
  const [error, setError] = useState<ApiError | null>(null);

  // Only when the live feed cannot be opened: one read of /v1/occupancy (no polling).
  useEffect(() => {
    if (live.status !== "error" || live.counts) return;
    get<OccupancyOut>("/v1/occupancy").then(setFallback, (e) => setError(toApiError(e)));
  }, [live.status, live.counts]);

  const c = live.counts;
  const stale = live.status !== "open" || live.serverError !== null;
  // the pushed age_s is the camera's age at the push: add the time since, on a clock ticking while a camera has
  // one (fresh ones too: when the pushes stop while the stream stays open, e.g. the server's read hangs, a camera
  // fresh at the last push turns stale here once its age passes STALE_S, as the server would have pushed)
  const [now, setNow] = useState(() => Date.now());
  const ticking = (c?.cameras ?? []).some((cam) => cam.age_s !== null && cam.age_s !== undefined);
  useEffect(() => {
    if (!ticking) return;
    const t = window.setInterval(() => setNow(Date.now()), 1_000);
    return () => window.clearInterval(t);
  }, [ticking]);
  const ageNow = (age_s: number) => age_s + Math.max(0, now - live.countsAt) / 1000;
  const camStale = (cam: { stale?: boolean; age_s?: number | null }) =>
    !!cam.stale || (cam.age_s !== null && cam.age_s !== undefined && ageNow(cam.age_s) > STALE_S);
  const staleCams = (c?.cameras ?? []).filter(camStale);
  const storeStale = stale || !!c?.stale || staleCams.length > 0;
  if (!c) {
    return (
      <>
        <Problem error={error} />
        {live.serverError !== null && (
          <div className="problem" role="status" data-testid="live-stale">
            <strong>Not live:</strong> {live.serverError}.
          </div>
        )}
        {fallback ? (
          <Card title="Occupancy (live feed unavailable: read once from /v1/occupancy)">
            <div className="stats">
              <Stat label="In the store now" value={fallback.occupancy} testId="store-occupancy" />
            </div>
            <div className="table-wrap"><table className="table">
              <thead><tr><th>Camera</th><th>Occupancy</th><th>In</th><th>Out</th><th>Updated</th></tr></thead>
              <tbody>
                {fallback.cameras.map((cam) => (
                  <tr key={cam.camera_id} data-testid={`live-camera-${cam.camera_id}`}>
                    <td>{cam.camera_id}</td><td data-testid="occupancy">{cam.occupancy}</td>
                    <td data-testid="in">{cam.total_in}</td><td data-testid="out">{cam.total_out}</td>
                    <td>{fmtTime(cam.ts_ms)}</td>
                  </tr>
                ))}
              </tbody>
            </table></div>
          </Card>
        ) : live.serverError === null && (
          <div className="muted">Waiting for the live feed…</div>
        )}
      </>
    );
  }
  return (
    <div className={stale ? "stale" : ""}>
      {stale && (
        <div className="problem" role="status" data-testid="live-stale">
          <strong>Not live:</strong> {live.serverError !== null ? `${live.serverError}.` : <>the live feed is{" "}
            {live.status === "error" ? "down" : "reconnecting"};</>} These are the numbers of {fmtTime(c.ts_ms)} and
          may be out of date.
        </div>
      )}
      {!stale && staleCams.length > 0 && (
        <div className="problem" role="status" data-testid="cameras-stale">
          <strong>Not receiving:</strong> {staleCams.map((cam) => cam.camera_id).join(", ")} (no frame for over 60 s, or none yet):
          {" "}their numbers, and the store's total, are those of their last frame.
        </div>
      )}
      <Card title={storeStale ? "Store (not live)" : "Store now"} testId="live-store">
        <div className="stats">
          <Stat label="In the store" value={c.store.occupancy} testId="store-occupancy" />
          <Stat label="Entered" value={c.store.in} testId="store-in" />
          <Stat label="Left" value={c.store.out} testId="store-out" />
        </div>
        <div className="muted small">Updated {fmtTime(c.ts_ms)} ·{" "}
          {stale ? "not live" : storeStale ? "not live: a camera is not receiving" : "pushed by the server"}</div>
      </Card>
      <Card title="Cameras">
        <div className="table-wrap">
          <table className="table" data-testid="live-cameras">
            <thead><tr><th>Camera</th><th>Occupancy</th><th>In</th><th>Out</th><th>Last frame</th></tr></thead>
            <tbody>
              {c.cameras.map((cam) => (
                <tr key={cam.camera_id} data-testid={`live-camera-${cam.camera_id}`} className={camStale(cam) ? "stale" : ""}>
                  <td>{cam.camera_id}
                    {camStale(cam) && <span className="pill health-stale" data-testid="camera-stale">
                      {" "}{cam.age_s === null || cam.age_s === undefined ? "no frame yet"
                        : `no frame for ${fmtNum(Math.floor(ageNow(cam.age_s)), 0)} s`}</span>}</td>
                  <td data-testid="occupancy">{cam.occupancy}</td>
                  <td data-testid="in">{cam.in}</td>
                  <td data-testid="out">{cam.out}</td>
                  <td>{fmtTime(cam.last_seen_ts_ms)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Card>
    </div>
  );
}
