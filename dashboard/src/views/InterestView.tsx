// Product interest: passers and stoppers per zone, product or category (GET /v1/interest). A row of fewer than
// privacy.k_min passers comes withheld (suppressed, every figure null) and is shown as such. The attention is the
// total over the stoppers (seconds of dwell weighted by the face's attention share), not per person: "-" when no
// stopper had a usable face, "withheld" when 1 to k_min-1 had one (attention_suppressed).
import { useMemo, useState } from "react";
import { fmtNum, qs, useApi, type Interest } from "../api";
import { Chart, PALETTE } from "../Chart";
import { Card, Empty, Loading, Num, Problem, RangePicker, useRangeStart, Select, type RangeKey } from "../ui";
import type { ViewProps } from "../App";

type GroupBy = "zone" | "product" | "category";

export function InterestView(_: ViewProps) {
  const [range, setRange] = useState<RangeKey>("all");
  const [groupBy, setGroupBy] = useState<GroupBy>("zone");
  const start = useRangeStart(range) ?? 0;
  const data = useApi<{ items: Interest[] }>(`/v1/interest${qs({ start_ms: start, group_by: groupBy })}`, range);
  const items = data.data?.items ?? [];
  const option = useMemo(() => ({
    tooltip: { trigger: "axis" },
    legend: { top: 0 },
    grid: { left: 40, right: 16, top: 36, bottom: 40, containLabel: true },
    xAxis: { type: "category", data: items.map((i) => i.key), axisLabel: { interval: 0, rotate: items.length > 4 ? 30 : 0 } },
    yAxis: { type: "value", minInterval: 1 },
    series: [
      { name: "Passers", type: "bar", color: PALETTE[0], data: items.map((i) => i.passers) },
      { name: "Stoppers", type: "bar", color: PALETTE[1], data: items.map((i) => i.stoppers) },
    ],
  }), [items]);
  return (
    <>
      <div className="toolbar">
        <RangePicker value={range} onChange={setRange} />
        <Select label="Group by" value={groupBy} onChange={setGroupBy}
          options={[{ value: "zone", label: "Zone" }, { value: "product", label: "Product" }, { value: "category", label: "Category" }]} />
      </div>
      <Problem error={data.error} />
      <Loading on={data.loading && !data.data} />
      <Empty on={!!data.data && items.length === 0}>No visits in this range.</Empty>
      {items.length > 0 && (
        <>
          <Card title="Passers and stoppers"><Chart option={option} height={280} testId="interest-chart" /></Card>
          <Card title="Interest" testId="interest">
            <div className="table-wrap">
              <table className="table">
                <thead><tr><th>{groupBy}</th><th>Passers</th><th>Stoppers</th><th>Interest rate</th>
                  <th>Median dwell</th><th title="Summed over the stoppers">Total attention (s)</th></tr></thead>
                <tbody>
                  {items.map((i) => i.suppressed || i.dwell_s === null ? (
                    <tr key={i.key} data-testid={`interest-row-${i.key}`}>
                      <td>{i.key}</td>
                      <td colSpan={5} className="muted" data-testid="withheld">withheld (fewer than k people: privacy.k_min)</td>
                    </tr>
                  ) : (
                    <tr key={i.key} data-testid={`interest-row-${i.key}`}>
                      <td>{i.key}</td><td data-testid="passers">{i.passers}</td><td>{i.stoppers}</td><td><Num v={i.interest_rate} pct /></td>
                      <td>{i.dwell_s.median === null ? "-" : `${fmtNum(i.dwell_s.median, 1)} s`}</td>
                      <td data-testid="attention">{i.attention_suppressed
                        ? <span className="muted" data-testid="withheld" title="fewer than k people: privacy.k_min">withheld</span>
                        : fmtNum(i.attention_s, 1)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </Card>
        </>
      )}
    </>
  );
}
