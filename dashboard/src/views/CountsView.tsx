// People counts over time: line crossings per bucket (GET /v1/counts) with range and bucket pickers.
// A relative range ("Last hour") ends now (its last empty minutes are zero bars), all the data at the last crossing.
// A bucket that makes more buckets over the range than the API answers (its 422 says the least width that fits,
// e.g. a minute over 70 days of data) is replaced by the smallest offered one that fits, and the view says so.
import { useEffect, useMemo, useState } from "react";
import { fmtTime, qs, useApi, type ApiError, type CountsOut } from "../api";
import { Chart, PALETTE } from "../Chart";
import { Card, Empty, Loading, Problem, RangePicker, rangeEnd, useRangeStart, Select, type RangeKey } from "../ui";
import { useCameras } from "./common";
import type { ViewProps } from "../App";

/** Most bucket slots drawn one by one. */
const MAX_BARS = 1500;

const BUCKETS = [
  { value: "10", label: "10 s" },
  { value: "60", label: "1 min" },
  { value: "300", label: "5 min" },
  { value: "900", label: "15 min" },
  { value: "3600", label: "1 hour" },
  { value: "86400", label: "1 day" },
];
const bucketLabel = (v: string) => BUCKETS.find((b) => b.value === v)?.label ?? `${v} s`;

/** The smallest offered bucket at least as wide as the API asks for in its 422 of too many buckets ("... use
 * bucket_s >= N"); null for another answer, or when none is that wide. */
function fittingBucket(e: ApiError | null): string | null {
  const least = e?.status === 422 ? /bucket_s >= (\d+)/.exec(e.detail)?.[1] : undefined;
  return least === undefined ? null : BUCKETS.find((b) => Number(b.value) >= Number(least))?.value ?? null;
}

export function CountsView(_: ViewProps) {
  const { cams, cameraId, setCameraId, camera } = useCameras();
  const [range, setRange] = useState<RangeKey>("all");
  const [bucket, setBucket] = useState("60"); // as picked
  const [lineId, setLineId] = useState("");
  // the bucket used instead of the picked one for this camera, line, range and pick (too many buckets)
  const [fitted, setFitted] = useState<{ key: string; bucket: string; note: string } | null>(null);
  const pick = `${cameraId}|${lineId}|${range}|${bucket}`;
  const fit = fitted?.key === pick ? fitted : null;
  const used = fit?.bucket ?? bucket;
  // a relative range: read again once a minute, not on every live push; from the edge of a bucket (the store's)
  const start = useRangeStart(range, Number(used));
  const end = rangeEnd(range, start);
  const path = cameraId
    ? `/v1/counts${qs({ camera_id: cameraId, start_ms: start, end_ms: end, bucket_s: used, line_id: lineId || undefined })}`
    : null;
  const counts = useApi<CountsOut>(path, range);
  const wider = fittingBucket(counts.error);
  const refit = wider !== null && wider !== used;
  useEffect(() => {
    if (!refit || !wider) return;
    const limit = /limit of (\d+)/.exec(counts.error?.detail ?? "")?.[1];
    setFitted({ key: pick, bucket: wider, note: `Buckets of ${bucketLabel(wider)}: ${bucketLabel(bucket)} would make ` +
      `more than ${limit ? Number(limit).toLocaleString("en") : "the most"} buckets over this range.` });
  }, [refit, wider, pick, bucket, counts.error]);

  const option = useMemo(() => {
    const d = counts.data;
    if (!d || !d.buckets.length) return {};
    const lines = Object.keys(d.totals);
    const w = d.bucket_s * 1000;
    // The slot of the range's first bucket: a whole number of widths before the first listed one. Days are
    // the store's local days (aligned_to: 23 or 25 hours when the clocks change), so a bucket's slot is its
    // nearest whole number of widths from there, and a day is labelled by its middle.
    const b0 = d.buckets[0].start_ms;
    const first = b0 - Math.ceil((b0 - d.start_ms) / w) * w;
    const slot = (t: number) => Math.round((t - first) / w);
    const n = Math.max(Math.ceil((d.end_ms - first) / w), slot(d.buckets[d.buckets.length - 1].start_ms) + 1);
    // Up to MAX_BARS buckets: one bar slot per bucket of the range (the API lists the non-empty ones, the
    // others are 0); more: bars at their times on a time axis.
    const dense = n <= MAX_BARS;
    const mid = d.aligned_to === "store_local_day" ? w / 2 : 0;
    // A slot is labelled by its bucket's own start (the API's), an empty one by the end of the slot before: after
    // a change of the store's sub-hour offset (Lord Howe) the buckets are not whole widths from the first.
    const listed = new Map(d.buckets.map((b) => [slot(b.start_ms), b]));
    const starts: number[] = [];
    for (let i = 0, t = first; dense && i < n; i++) {
      const b = listed.get(i);
      starts.push((b?.start_ms ?? t) + mid);
      t = b ? b.end_ms : t + w;
    }
    const values = (ln: string, key: "in" | "out") => {
      const rows = d.buckets.filter((b) => b.line_id === ln);
      if (!dense) return rows.map((b) => [b.start_ms, b[key]]);
      const out = new Array<number>(n).fill(0);
      rows.forEach((b) => { out[slot(b.start_ms)] = b[key]; });
      return out;
    };
    const series = lines.flatMap((ln, i) => [
      { name: `${ln} in`, type: "bar", color: PALETTE[(2 * i) % PALETTE.length], data: values(ln, "in") },
      { name: `${ln} out`, type: "bar", color: PALETTE[(2 * i + 1) % PALETTE.length], data: values(ln, "out") },
    ]);
    const label = (t: number) => fmtTime(t).slice(d.bucket_s >= 86400 ? 0 : 5, d.bucket_s >= 86400 ? 10 : 16 + (d.bucket_s < 60 ? 3 : 0));
    return {
      tooltip: { trigger: "axis" },
      legend: { top: 0, type: "scroll" },
      grid: { left: 8, right: 16, top: 40, bottom: 56, containLabel: true },
      // times in the store's time zone (fmtTime), not the browser's
      xAxis: dense ? { type: "category", data: starts.map(label) }
        : { type: "time", axisLabel: { formatter: (t: number) => label(t) },
            axisPointer: { label: { formatter: (p: { value: number }) => fmtTime(p.value) } } },
      yAxis: { type: "value", minInterval: 1 },
      dataZoom: [{ type: "inside" }, { type: "slider", height: 18, bottom: 8 }],
      series,
    };
  }, [counts.data]);

  const d = counts.data;
  return (
    <>
      <div className="toolbar">
        <Select label="Camera" value={cameraId} testId="camera"
          options={(cams.data?.cameras ?? []).map((c) => ({ value: c.id, label: c.id }))}
          onChange={(v) => { setCameraId(v); setLineId(""); }} />
        <Select label="Line" value={lineId} testId="line"
          options={[{ value: "", label: "All lines" }, ...(camera?.lines ?? []).map((l) => ({ value: l.id, label: l.id }))]}
          onChange={setLineId} />
        <RangePicker value={range} onChange={setRange} />
        <Select label="Bucket" value={used} options={BUCKETS} onChange={setBucket} testId="bucket" />
      </div>
      {fit && <div className="muted small" data-testid="bucket-note">{fit.note}</div>}
      <Problem error={cams.error ?? (refit ? null : counts.error)} />
      <Loading on={(counts.loading || refit) && !d} />
      {d && (
        <>
          <Card title="Totals" testId="count-totals">
            <div className="table-wrap">
              <table className="table">
                <thead><tr><th>Line</th><th>In</th><th>Out</th></tr></thead>
                <tbody>
                  {Object.entries(d.totals).map(([ln, t]) => (
                    <tr key={ln} data-testid={`total-${ln}`}>
                      <td>{ln}</td><td data-testid="in">{t.in}</td><td data-testid="out">{t.out}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
            <div className="muted small" data-testid="counts-range">{fmtTime(d.start_ms)} – {fmtTime(d.end_ms)}
              {" "}({d.timezone}), buckets of {d.bucket_s} s{d.aligned_to === "store_local_day" ? " (the store's days)" : ""}</div>
          </Card>
          <Card title="Crossings per bucket">
            <Empty on={d.buckets.length === 0}>No crossings in this range.</Empty>
            {/* a zoom is kept while the data are read again (a relative range, once a minute), not when the user
                picks another camera, line, range or bucket */}
            {d.buckets.length > 0 && <Chart key={`${cameraId}|${lineId}|${range}|${used}`} option={option} testId="counts-chart" />}
          </Card>
        </>
      )}
    </>
  );
}
