// Live occupancy and counts, pushed by the server (GET /v1/live, server-sent events). While the feed is not open
// (reconnecting, or given up) the last numbers received stay, marked as not live.
import { useEffect, useState } from "react";
import { fmtTime, get, toApiError, type ApiError, type OccupancyOut } from "../api";
import { useLive } from "../live";
import { Card, Problem, Stat } from "../ui";
import type { ViewProps } from "../App";

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
  const stale = live.status !== "open";
  if (!c) {
    return (
      <>
        <Problem error={error} />
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
        ) : (
          <div className="muted">Waiting for the live feed…</div>
        )}
      </>
    );
  }
  return (
    <div className={stale ? "stale" : ""}>
      {stale && (
        <div className="problem" role="status" data-testid="live-stale">
          <strong>Not live:</strong> the live feed is {live.status === "error" ? "down" : "reconnecting"}; these are the
          numbers of {fmtTime(c.ts_ms)} and may be out of date.
        </div>
      )}
      <Card title={stale ? "Store (not live)" : "Store now"} testId="live-store">
        <div className="stats">
          <Stat label="In the store" value={c.store.occupancy} testId="store-occupancy" />
          <Stat label="Entered" value={c.store.in} testId="store-in" />
          <Stat label="Left" value={c.store.out} testId="store-out" />
        </div>
        <div className="muted small">Updated {fmtTime(c.ts_ms)} · {stale ? "not live" : "pushed by the server"}</div>
      </Card>
      <Card title="Cameras">
        <div className="table-wrap">
          <table className="table" data-testid="live-cameras">
            <thead><tr><th>Camera</th><th>Occupancy</th><th>In</th><th>Out</th><th>Last frame</th></tr></thead>
            <tbody>
              {c.cameras.map((cam) => (
                <tr key={cam.camera_id} data-testid={`live-camera-${cam.camera_id}`}>
                  <td>{cam.camera_id}</td>
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
