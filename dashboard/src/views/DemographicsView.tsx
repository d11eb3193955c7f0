// Demographics of the faces seen (GET /v1/demographics), k-anonymised by the API: a withheld band is null.
import { useMemo, useState } from "react";
import { qs, useApi, type DemographicsOut } from "../api";
import { Chart, PALETTE } from "../Chart";
import { Card, Loading, Problem, RangePicker, useRangeStart, Stat, type RangeKey } from "../ui";
import type { ViewProps } from "../App";

function bars(values: Record<string, number | null>, colour: string) {
  const keys = Object.keys(values);
  return {
    tooltip: { trigger: "axis" },
    grid: { left: 32, right: 8, top: 16, bottom: 24, containLabel: true },
    xAxis: { type: "category", data: keys, axisLabel: { interval: 0, rotate: keys.length > 6 ? 30 : 0 } },
    yAxis: { type: "value", minInterval: 1 },
    series: [{ type: "bar", color: colour, data: keys.map((k) => values[k]) }],
  };
}

function Breakdown({ title, values, colour }: { title: string; values: Record<string, number | null>; colour: string }) {
  const option = useMemo(() => bars(values, colour), [values, colour]);
  return (
    <Card title={title}>
      <Chart option={option} height={220} />
      <div className="chips">
        {Object.entries(values).map(([k, v]) => (
          <span key={k} className="chip">{k}: <b>{v === null ? "withheld" : v}</b></span>
        ))}
      </div>
    </Card>
  );
}

export function DemographicsView(_: ViewProps) {
  const [range, setRange] = useState<RangeKey>("all");
  const start = useRangeStart(range);
  const d = useApi<DemographicsOut>(`/v1/demographics${qs({ start_ms: start })}`, range);
  return (
    <>
      <div className="toolbar"><RangePicker value={range} onChange={setRange} /></div>
      <Problem error={d.error} />
      <Loading on={d.loading && !d.data} />
      {d.data && (
        <>
          <Card title="People with a face seen" testId="demographics">
            <div className="stats">
              <Stat label="Tracks" value={d.data.tracks === null ? "withheld" : d.data.tracks} testId="demo-tracks" />
            </div>
            {d.data.suppressed && (
              <div className="muted small">
                Groups of fewer than {d.data.k_min ?? "k"} people are withheld to protect privacy.
              </div>
            )}
          </Card>
          <div className="grid2">
            <Breakdown title="Age" values={d.data.age} colour={PALETTE[0]} />
            <Breakdown title="Gender" values={d.data.gender} colour={PALETTE[4]} />
            <Breakdown title="Expression" values={d.data.emotion} colour={PALETTE[2]} />
          </div>
        </>
      )}
    </>
  );
}
