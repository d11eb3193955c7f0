// Zones (people inside now, GET /v1/zones), their statistics per bucket (GET /v1/zones/stats) and the
// queues (GET /v1/queues: length now, predicted and measured wait). The statistics open on all the data (the last
// 7 days when that is more buckets than the API answers), newest bucket first, ROWS rows at a time ("Show more").
// A dwell or wait measured from fewer than privacy.k_min people comes withheld (suppressed) and is shown as such,
// not as "-" (no one). A live camera without a frame for over 60 s (stale) shows its people inside and queue length
// as stale, not its last frame's numbers ("no frame yet" when it never sent one). Zones now and the queues are read
// again at most every 10 s, one read of each at a time (useLiveReload: a slow read is not started again while in
// flight; the time of the read is shown): left open at the till, the view does not keep an old length.
// A relative range starts on a bucket's edge as the API lays them out: its answer's `aligned_to` (the epoch's
// hours in a +05:30 zone over stored hours), so the first row is a whole bucket. The bucket widths offered are
// multiples of the stored width (GET /v1/site's zones_bucket_s: the API refuses others).
import { useEffect, useMemo, useState } from "react";
import { fmtDuration, fmtNum, fmtTime, qs, useApi, type Dwell, type Queue, type ZoneBucket, type ZoneState } from "../api";
import {
  Card, Empty, Loading, Num, Problem, RangePicker, useDefaultRange, useRangeFallBack, useRangeStart, Select,
  type AlignedTo,
} from "../ui";
import { useLiveReload } from "../live";
import { useCameras } from "./common";
import type { ViewProps } from "../App";

/** Zone statistics rows shown at first, and added by each "Show more". */
const ROWS = 100;

/** A median dwell or wait: "withheld" when measured from fewer than privacy.k_min people, "-" for none. */
function median(d: Dwell) {
  if (d.suppressed) return <span className="muted" data-testid="withheld" title="fewer than k people: privacy.k_min">withheld</span>;
  return d.median === null ? "-" : `${fmtNum(d.median, 1)} s`;
}

/** A stale live camera's figure: its age, or "no frame yet" when it never sent one (age_s null, as LiveView). */
function staleText(age_s: number | null | undefined) {
  return age_s === null || age_s === undefined ? "stale (no frame yet)" : `stale (no frame for ${fmtNum(age_s, 0)} s)`;
}

/** The bucket widths offered (s): those that are multiples of the stored width (the site's zones.bucket_s, which the
 * API's buckets must be multiples of), and the stored width itself from 15 min up (or when none is). */
const WIDTHS: [number, string][] = [[900, "15 min"], [3600, "1 hour"], [86_400, "1 day"]];
function bucketChoices(stored_s: number): { value: string; label: string }[] {
  const kept = WIDTHS.filter(([w]) => w % stored_s === 0);
  const own = (stored_s >= 900 && !kept.some(([w]) => w === stored_s)) || kept.length === 0
    ? [[stored_s, stored_s % 3600 === 0 ? `${stored_s / 3600} hours` : fmtDuration(stored_s * 1000)] as [number, string]]
    : [];
  return [...own, ...kept].sort((a, b) => a[0] - b[0]).map(([w, label]) => ({ value: `${w}`, label }));
}

export function ZonesView(_: ViewProps) {
  const { cams, cameraId, setCameraId } = useCameras();
  const def = useDefaultRange(); // all the data first (the last 7 days past the API's limit of buckets)
  const { range, pick: setRange } = def;
  const site = useApi<{ zones_bucket_s?: number }>("/v1/site");
  const choices = useMemo(() => bucketChoices(site.data?.zones_bucket_s ?? 60), [site.data?.zones_bucket_s]);
  const [picked, setBucket] = useState("3600");
  // the width picked if offered, else the nearest one offered at or above 1 hour (the largest below it without one)
  const bucket = choices.some((c) => c.value === picked) ? picked
    : (choices.find((c) => Number(c.value) >= 3600) ?? choices[choices.length - 1]).value;
  // each bucket width's alignment as the API last answered it (it depends on the zone and width, not the range)
  const [aligned, setAligned] = useState<Record<string, AlignedTo>>({});
  const start = useRangeStart(range, Number(bucket), aligned[bucket]) ?? 0;
  const zones = useApi<{ zones: ZoneState[] }>("/v1/zones");
  const queues = useApi<{ queues: Queue[] }>("/v1/queues");
  useLiveReload(zones, queues);
  // (after /v1/site answers: the widths offered are known)
  const statsPath = cameraId && (site.data || site.error)
    ? `/v1/zones/stats${qs({ camera_id: cameraId, start_ms: start, bucket_s: bucket })}` : null;
  const stats = useApi<{ buckets: ZoneBucket[]; bucket_s: number; aligned_to: AlignedTo }>(statsPath, range);
  const answered = stats.data ? `${stats.data.bucket_s}` : null;
  const alignedTo = stats.data?.aligned_to;
  useEffect(() => {
    if (answered !== null && alignedTo && aligned[answered] !== alignedTo)
      setAligned((a) => ({ ...a, [answered]: alignedTo }));
  }, [answered, alignedTo]); // eslint-disable-line react-hooks/exhaustive-deps -- set from the answer only
  const fallBack = useRangeFallBack(def, stats.error, (e) => /limit/.test(e.detail)
    ? "All data makes too many buckets: showing the last 7 days; pick another range above." : null);
  // newest first (then by zone); ROWS more at each "Show more", from ROWS again for another camera, range or bucket
  const rows = useMemo(() => [...(stats.data?.buckets ?? [])].sort(
    (a, b) => b.start_ms - a.start_ms || a.zone_id.localeCompare(b.zone_id)), [stats.data]);
  const [more, setMore] = useState<{ key: string; n: number }>({ key: "", n: ROWS });
  const statsKey = `${cameraId}|${range}|${bucket}`;
  const shown = more.key === statsKey ? more.n : ROWS;

  return (
    <>
      <Problem error={zones.error ?? queues.error ?? cams.error} />
      <Card title="Queues" testId="queues">
        <Loading on={queues.loading && !queues.data} />
        <Empty on={!!queues.data && queues.data.queues.length === 0}>No queue zones configured.</Empty>
        {queues.data && queues.data.queues.length > 0 && (
          <div className="table-wrap">
            <table className="table">
              <thead><tr><th>Queue</th><th>Length now</th><th>Predicted wait</th><th>Median wait</th>
                <th>Served</th><th>Abandoned</th><th>Window</th><th>At</th></tr></thead>
              <tbody>
                {queues.data.queues.map((q) => (
                  <tr key={`${q.camera_id}/${q.zone_id}`} data-testid={`queue-${q.zone_id}`}>
                    <td>{q.camera_id}/{q.zone_id}</td>
                    <td className="big" data-testid="length">
                      {q.stale ? staleText(q.age_s) : q.length}</td>
                    <td>{q.predicted_wait_s === null ? "-" : `${fmtNum(q.predicted_wait_s, 1)} s`}</td>
                    <td data-testid="median-wait">{median(q.wait_s)}</td>
                    <td>{q.served}</td><td>{q.abandoned}</td><td>{fmtNum(q.window_s)} s</td><td>{fmtTime(q.at_ms)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {queues.readAt && <div className="muted small" data-testid="queues-read-at">
          Read {fmtTime(queues.readAt)} (again every 10 s)</div>}
      </Card>
      <Card title="Zones now" testId="zones-now">
        <Loading on={zones.loading && !zones.data} />
        {zones.data && (
          <div className="table-wrap">
            <table className="table">
              <thead><tr><th>Camera</th><th>Zone</th><th>Kind</th><th>Product</th><th>People inside</th><th>At</th></tr></thead>
              <tbody>
                {zones.data.zones.map((z) => (
                  <tr key={`${z.camera_id}/${z.zone_id}`} data-testid={`zone-row-${z.zone_id}`}>
                    <td>{z.camera_id}</td><td>{z.zone_id}</td><td>{z.kind}</td><td>{z.product ?? "-"}</td>
                    <td data-testid="occupancy">
                      {z.stale ? staleText(z.age_s) : z.occupancy}</td><td>{fmtTime(z.ts_ms)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {zones.readAt && <div className="muted small" data-testid="zones-read-at">
          Read {fmtTime(zones.readAt)} (again every 10 s)</div>}
      </Card>
      <div className="toolbar">
        <Select label="Camera" value={cameraId} testId="camera"
          options={(cams.data?.cameras ?? []).map((c) => ({ value: c.id, label: c.id }))} onChange={setCameraId} />
        <RangePicker value={range} onChange={setRange} />
        <Select label="Bucket" value={bucket} onChange={setBucket} testId="bucket" options={choices} />
      </div>
      <Card title="Zone statistics" testId="zone-stats">
        {def.note && <div className="note" role="status" data-testid="range-note">{def.note}</div>}
        <Problem error={fallBack ? null : stats.error} />
        <Loading on={stats.loading && !stats.data} />
        <Empty on={!!stats.data && stats.data.buckets.length === 0}>No zone statistics in this range.</Empty>
        {rows.length > 0 && (
          <div className="table-wrap">
            <table className="table">
              <thead><tr><th>Zone</th><th>From</th><th>Visits</th><th>People</th><th>Mean inside</th><th>Max inside</th>
                <th>Median dwell</th><th>Stoppers</th><th>Served</th><th>Abandoned</th></tr></thead>
              <tbody>
                {rows.slice(0, shown).map((b) => (
                  <tr key={`${b.zone_id}@${b.start_ms}`} data-testid="zone-stats-row">
                    <td>{b.zone_id}</td><td>{fmtTime(b.start_ms)}</td><td>{b.visits}</td><td>{b.unique_people}</td>
                    <td><Num v={b.mean_occupancy} /></td><td>{b.max_occupancy}</td>
                    <td data-testid="median-dwell">{median(b.dwell_s)}</td>
                    <td>{b.stoppers}</td><td>{b.served}</td><td>{b.abandoned}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {rows.length > 0 && (
          <div className="muted small" data-testid="zone-stats-shown">
            Newest first: {Math.min(shown, rows.length)} of {rows.length} rows.{" "}
            {shown < rows.length && (
              <button className="link" data-testid="zone-stats-more"
                onClick={() => setMore({ key: statsKey, n: shown + ROWS })}>Show more</button>)}
          </div>
        )}
      </Card>
    </>
  );
}
