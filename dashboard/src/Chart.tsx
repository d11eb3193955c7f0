// ECharts in a React component: one chart instance per element, resized with its box. A chart with a dataZoom keeps
// the user's zoom when new data of it arrive (a relative range read again): give it a new `key` to start anew.
import { useEffect, useRef } from "react";
import * as echarts from "echarts/core";
import { BarChart, LineChart, SankeyChart } from "echarts/charts";
import { AriaComponent, DataZoomComponent, GridComponent, LegendComponent, TooltipComponent } from "echarts/components";
import { CanvasRenderer } from "echarts/renderers";
import type { EChartsCoreOption } from "echarts/core";

echarts.use([BarChart, LineChart, SankeyChart, GridComponent, TooltipComponent, LegendComponent, DataZoomComponent,
  AriaComponent, CanvasRenderer]);

type AxisValue = number | string;
/** A zoom window as the user left it, in x axis values (a category's label, a time); a side left undefined is at
 * the data's edge and stays there with new data (zoomed to the newest buckets: the newest ones, also a minute on). */
interface Zoom { from?: AxisValue; to?: AxisValue }
interface XAxis { type?: string; data?: unknown[] }
interface DataZoom { start?: number; end?: number; startValue?: number; endValue?: number }

const firstAxis = (x: unknown): XAxis | undefined => (Array.isArray(x) ? x[0] : x) as XAxis | undefined;
const category = (d: unknown): unknown => (d !== null && typeof d === "object" && "value" in d ? d.value : d);

/** The chart's zoom window now; null when it shows all the data. */
function zoomOf(c: echarts.ECharts): Zoom | null {
  const o = c.getOption() as { dataZoom?: DataZoom[]; xAxis?: unknown } | undefined;
  const z = o?.dataZoom?.[0];
  if (!z) return null;
  const x = firstAxis(o?.xAxis);
  const value = (v: number | undefined): AxisValue | undefined =>
    v === undefined ? undefined : x?.type === "category" ? (category(x.data?.[v]) as AxisValue | undefined) : v;
  const zoom = { from: (z.start ?? 0) > 0 ? value(z.startValue) : undefined,
                 to: (z.end ?? 100) < 100 ? value(z.endValue) : undefined };
  return zoom.from === undefined && zoom.to === undefined ? null : zoom;
}

/** `option` with its dataZoom set to `zoom` (a side whose value is no longer on the axis: the data's edge). */
function withZoom(option: EChartsCoreOption, zoom: Zoom | null): EChartsCoreOption {
  if (!zoom || !Array.isArray(option.dataZoom)) return option;
  const x = firstAxis(option.xAxis);
  const at = (v: AxisValue | undefined): number | undefined => {
    if (v === undefined || x?.type !== "category") return v as number | undefined;
    const i = (x.data ?? []).findIndex((d) => category(d) === v);
    return i >= 0 ? i : undefined;
  };
  const from = at(zoom.from), to = at(zoom.to);
  return {
    ...option,
    dataZoom: option.dataZoom.map((d: object) => ({
      ...d, ...(from === undefined ? { start: 0 } : { startValue: from }), ...(to === undefined ? { end: 100 } : { endValue: to }),
    })),
  };
}

/** The window shown as the element's data-zoom: "from..to" in axis values, "" for all the data (tests read it). */
function mark(el: HTMLElement | null, z: Zoom | null) {
  if (el) el.dataset.zoom = z ? `${z.from ?? ""}..${z.to ?? ""}` : "";
}

export function Chart({ option, height = 320, testId }: { option: EChartsCoreOption; height?: number; testId?: string }) {
  const ref = useRef<HTMLDivElement>(null);
  const chart = useRef<echarts.ECharts | null>(null);
  const zoom = useRef<Zoom | null>(null);
  useEffect(() => {
    if (!ref.current) return;
    const el = ref.current;
    const c = echarts.init(el, undefined, { renderer: "canvas" });
    chart.current = c;
    c.on("datazoom", () => {
      zoom.current = zoomOf(c);
      mark(el, zoom.current);
    });
    const ro = new ResizeObserver(() => c.resize());
    ro.observe(el);
    return () => {
      ro.disconnect();
      c.dispose();
      chart.current = null;
    };
  }, []);
  useEffect(() => {
    const c = chart.current;
    if (!c) return;
    // aria: the chart's data as the container's aria-label (screen readers; the browser tests read labels there)
    c.setOption(withZoom({ animation: false, aria: { enabled: true }, ...option }, zoom.current), true);
    zoom.current = zoomOf(c);
    mark(ref.current, zoom.current);
  }, [option]);
  return <div className="chart" ref={ref} style={{ height }} data-testid={testId} />;
}

export const PALETTE = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777"];
