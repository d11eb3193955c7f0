// Camera health: each camera's newest frame (live feed, else GET /v1/occupancy last_seen_ts_ms: the live state's,
// or in the embedded mode the newest stored frame's) and configuration. Stale or receiving is the API's `stale`
// (the rule of /v1/zones: a live camera without a frame for over 60 s at the API's clock; a recorded file, whose
// frames carry the file's times, never is; "stale (no frame yet)" when it never sent one), not the browser's clock
// against frame times. /v1/occupancy (the stale
// flags, the last count update) is read again at most every 10 s, one read at a time (useLiveReload on useApi's
// answer: a read slower than 10 s is not aborted and started again, it finishes).
import { fmtTime, useApi, type OccupancyOut } from "../api";
import { useLive, useLiveReload } from "../live";
import { Card, Loading, Problem } from "../ui";
import type { ViewProps } from "../App";

/** Seconds without a frame after which a live camera is stale (the API's STALE_AFTER_MS). */
const STALE_S = 60;

export function HealthView(_: ViewProps) {
  const cams = useApi<{ cameras: { id: string; lines: unknown[]; zones: unknown[] }[] }>("/v1/cameras");
  const occ = useApi<OccupancyOut>("/v1/occupancy");
  const live = useLive();
  useLiveReload(occ);

  return (
    <>
      <Problem error={cams.error ?? occ.error} />
      <Loading on={!cams.data} />
      {cams.data && (
        <Card title="Cameras" testId="health">
          <div className="table-wrap">
            <table className="table">
              <thead><tr><th>Camera</th><th>Status</th><th>Newest frame</th><th>Last count update</th><th>Lines</th><th>Zones</th></tr></thead>
              <tbody>
                {cams.data.cameras.map((c) => {
                  const o = occ.data?.cameras.find((x) => x.camera_id === c.id);
                  const l = live.counts?.cameras.find((x) => x.camera_id === c.id);
                  const seen = l?.last_seen_ts_ms ?? o?.last_seen_ts_ms ?? null;
                  // the API's stale first: a live camera that never sent a frame is stale (ts_ms 0, no frame time)
                  const status = !o ? "unknown" : o.stale ? "stale" : seen === null ? "unknown" : "ok";
                  return (
                    <tr key={c.id} data-testid={`health-${c.id}`}>
                      <td>{c.id}</td>
                      <td><span className={`pill health-${status}`} data-testid="status">
                        {status === "ok" ? "receiving" : status === "unknown" ? "unknown"
                          : seen === null ? "stale (no frame yet)" : `no frame for > ${STALE_S} s`}</span></td>
                      <td>{fmtTime(seen)}</td><td>{fmtTime(o?.ts_ms)}</td>
                      <td>{c.lines.length}</td><td>{c.zones.length}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
          <div className="muted small">A live camera is stale when its newest frame is older than {STALE_S} s
            (a recorded file never is).
            {occ.readAt && <span data-testid="health-read-at"> Count updates read {fmtTime(occ.readAt)}.</span>}</div>
        </Card>
      )}
    </>
  );
}
