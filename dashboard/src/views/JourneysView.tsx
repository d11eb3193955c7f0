// Journeys: zone-to-zone flows as a Sankey (GET /v1/flows) and the most common paths (GET /v1/paths/top).
// Groups of fewer than k_min journeys come withheld (count null) and are drawn as such.
import { useMemo } from "react";
import { ApiError, fmtPct, qs, useApi, type FlowsOut, type TopPathsOut } from "../api";
import { Chart } from "../Chart";
import { Card, Empty, Loading, Problem, RangePicker, useDefaultRange, useRangeFallBack, useRangeStart } from "../ui";
import type { ViewProps } from "../App";

/** Whether the links form a cycle (a Sankey needs a DAG). */
function cyclic(links: { source: string; target: string }[]): boolean {
  const out = new Map<string, string[]>();
  for (const l of links) out.set(l.source, [...(out.get(l.source) ?? []), l.target]);
  const state = new Map<string, number>(); // 1 visiting, 2 done
  const visit = (n: string): boolean => {
    if (state.get(n) === 1) return true;
    if (state.get(n) === 2) return false;
    state.set(n, 1);
    for (const m of out.get(n) ?? []) if (m === n || visit(m)) return true;
    state.set(n, 2);
    return false;
  };
  return [...out.keys()].some(visit);
}

/** A 422 of the range: more stored tracks than one request links; say to pick a shorter range. */
function tooLong(e: ApiError | null): ApiError | null {
  return e && e.status === 422 ? new ApiError(422, `Range too long: pick a shorter one. (${e.detail})`) : e;
}

/** The note shown when the default "All data" answered 422 and the view fell back to the last 7 days. */
function fallbackNote(e: ApiError): string {
  const most = /at most (\d+)/.exec(e.detail)?.[1]; // the API's limit, from its 422 detail
  const what = most ? `more than ${Number(most).toLocaleString("en")} tracks` : "too many tracks";
  return `All data is ${what}: showing the last 7 days; pick another range above.`;
}

export function JourneysView(_: ViewProps) {
  const def = useDefaultRange();
  const { range, note, pick } = def;
  const start = useRangeStart(range) ?? 0;
  const flows = useApi<FlowsOut>(`/v1/flows${qs({ start_ms: start })}`, range);
  const paths = useApi<TopPathsOut>(`/v1/paths/top${qs({ start_ms: start, n: 10 })}`, range);
  const error = flows.error ?? paths.error;
  const loading = flows.loading || paths.loading;
  // The default "All data" holds more tracks than one request links (422, a long history): show the last 7 days
  // instead, and say so. A range the user picked that is too long says "Range too long" (tooLong).
  const fallBack = useRangeFallBack(def, error, fallbackNote);

  const option = useMemo(() => {
    const f = flows.data;
    if (!f || !f.links.length) return null;
    // With a cycle (A -> B and B -> A), nodes are split into "from" and "to" columns.
    const split = cyclic(f.links);
    const src = (n: string) => (split ? `${n} ▸` : n);
    const dst = (n: string) => (split ? `▸ ${n}` : n);
    const names = new Set<string>();
    f.links.forEach((l) => { names.add(src(l.source)); names.add(dst(l.target)); });
    return {
      tooltip: {
        trigger: "item",
        formatter: (p: { dataType: string; data: { source?: string; target?: string; count: number }; name: string }) =>
          p.dataType === "edge" ? `${p.data.source} → ${p.data.target}: ${p.data.count}` : p.name,
      },
      series: [{
        type: "sankey", left: 8, right: 120, top: 8, bottom: 8, nodeGap: 12, emphasis: { focus: "adjacency" },
        lineStyle: { color: "gradient", curveness: 0.5 },
        label: { fontSize: 12 },
        data: [...names].map((name) => ({ name })),
        links: f.links.map((l) => ({ source: src(l.source), target: dst(l.target), count: l.count, value: l.count })),
      }],
    };
  }, [flows.data]);

  return (
    <>
      <div className="toolbar"><RangePicker value={range} onChange={pick} /></div>
      {note && <div className="note" role="status" data-testid="range-note">{note}</div>}
      {/* an error of the previous range is not shown while the new one loads */}
      <Problem error={fallBack || loading ? null : tooLong(error)} />
      <Card title={flows.data ? `Zone-to-zone flows (${flows.data.journeys} journeys)` : "Zone-to-zone flows"} testId="flows">
        <Loading on={flows.loading && !flows.data} />
        <Empty on={!!flows.data && !option && !flows.data.suppressed}>No journeys in this range.</Empty>
        {option && <Chart option={option} height={380} testId="sankey" />}
        {flows.data?.suppressed && (
          <div className="muted small" data-testid="flows-withheld">
            {option
              ? "Steps made by fewer journeys than the privacy threshold are left out."
              : "Every zone-to-zone step in this range was made by fewer journeys than the privacy threshold: withheld."}
          </div>
        )}
      </Card>
      <Card title="Top paths" testId="top-paths">
        <Loading on={paths.loading && !paths.data} />
        <Empty on={!!paths.data && paths.data.paths.length === 0}>No paths in this range.</Empty>
        {paths.data && paths.data.paths.length > 0 && (
          <div className="table-wrap">
            <table className="table">
              <thead><tr><th>Path</th><th>Journeys</th><th>Share</th></tr></thead>
              <tbody>
                {paths.data.paths.map((p, i) => (
                  <tr key={i}>
                    <td className="wrap">{p.suppressed ? <span className="muted">a rare path (withheld)</span>
                      : p.path.join(" → ")}</td>
                    <td>{p.count === null ? <span className="muted">withheld</span> : p.count}</td>
                    <td>{p.share === null ? "-" : fmtPct(p.share)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Card>
    </>
  );
}
