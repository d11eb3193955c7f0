// Small shared pieces: cards, error and loading states, the time-range picker.
import { Component, useEffect, useState, type ErrorInfo, type ReactNode } from "react";
import { ApiError, fmtNum, fmtPct, storeOffsetMs, storeTimeOfDayMs } from "./api";

export function Card({ title, children, actions, testId }: { title: string; children: ReactNode; actions?: ReactNode; testId?: string }) {
  return (
    <section className="card" data-testid={testId}>
      <header className="card-head">
        <h2>{title}</h2>
        {actions && <div className="card-actions">{actions}</div>}
      </header>
      {children}
    </section>
  );
}

export function Problem({ error }: { error: ApiError | null }) {
  if (!error) return null;
  const what =
    error.status === 403
      ? "Refused: your role may not see or do this."
      : error.status === 503
        // a feature this installation has off (the API's "face recognition is disabled: ..."), else a part that
        // did not answer (a notification, the database, a proxy with the API down): a retry may work
        ? (/\bis disabled\b/.test(error.detail) ? "Not available on this installation." : "Temporarily unavailable.")
        : error.status === 404
          ? "Not found."
          : "The request failed.";
  return (
    <div className="problem" role="alert" data-testid="problem" data-status={error.status}>
      <strong>{error.status ? `${error.status} ` : ""}{what}</strong> <span>{error.detail}</span>
    </div>
  );
}

/** Catches a view's rendering error: the view shows it, the rest of the app (navigation, other views) goes on.
 * Give it a `key` per view so that leaving the view clears the error. */
export class ErrorBoundary extends Component<{ children: ReactNode }, { error: Error | null }> {
  state: { error: Error | null } = { error: null };

  static getDerivedStateFromError(error: Error) {
    return { error };
  }

  componentDidCatch(error: Error, info: ErrorInfo) {
    console.error("view failed", error, info.componentStack);
  }

  render() {
    if (!this.state.error) return this.props.children;
    return (
      <div className="problem" role="alert" data-testid="view-error">
        <strong>This view failed to show.</strong> <span>{this.state.error.message}</span>{" "}
        <button className="link" onClick={() => this.setState({ error: null })}>Try again</button>
      </div>
    );
  }
}

export function Loading({ on }: { on: boolean }) {
  return on ? <div className="muted">Loading…</div> : null;
}

export function Empty({ on, children }: { on: boolean; children: ReactNode }) {
  return on ? <div className="muted empty">{children}</div> : null;
}

export function Stat({ label, value, testId, sub }: { label: string; value: ReactNode; testId?: string; sub?: ReactNode }) {
  return (
    <div className="stat">
      <div className="stat-label">{label}</div>
      <div className="stat-value" data-testid={testId}>{value}</div>
      {sub && <div className="stat-sub">{sub}</div>}
    </div>
  );
}

/** Time ranges: all the data, or the last hour / day / week, as [start_ms, end_ms) query values. */
export type RangeKey = "all" | "1h" | "24h" | "7d" | "30d";
export const RANGES: { key: RangeKey; label: string; ms: number | null }[] = [
  { key: "all", label: "All data", ms: null },
  { key: "1h", label: "Last hour", ms: 3_600_000 },
  { key: "24h", label: "Last 24 h", ms: 86_400_000 },
  { key: "7d", label: "Last 7 days", ms: 7 * 86_400_000 },
  { key: "30d", label: "Last 30 days", ms: 30 * 86_400_000 },
];

/** A relative range's start moves on in steps of this: its data are read again at most once a step. */
export const RANGE_STEP_MS = 60_000;

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

/** The store's local midnight starting the day that holds `t` (setStoreTimeZone; 23 or 25 h days when the clocks
 * change). */
function storeMidnight(t: number): number {
  const m = t - storeTimeOfDayMs(t);
  const off = storeTimeOfDayMs(m); // the offset changed since midnight (a DST night): the midnight is that much off
  return off === 0 ? m : m - (off > DAY_MS / 2 ? off - DAY_MS : off);
}

/** How the API laid a chart's buckets out (its answer's `aligned_to`): the store's calendar, or the epoch's grid
 * (zone statistics whose stored buckets the store's grid would cut: hours of a +05:30 zone over stored hours). */
export type AlignedTo = "store_local_day" | "store_local_hour" | "epoch";

/** The edge of the API's bucket of `bucketS` seconds that holds `t`, in the store's calendar as the API lays buckets
 * out (storelens.domain.calendar.StoreCalendar.grid): a whole day from the store's local midnight; shorter ones on
 * multiples of the width since the epoch, moved by the sub-hour part of the store's UTC offset (+05:30: local whole
 * hours are edges). `alignedTo` "epoch" (the API said so): multiples of the width since the epoch, whole days too. */
function bucketEdge(t: number, bucketS: number, alignedTo?: AlignedTo): number {
  const w = bucketS * 1000;
  if (alignedTo === "epoch") return Math.floor(t / w) * w;
  if (bucketS % 86_400 === 0) return storeMidnight(t);
  const origin = ((((-storeOffsetMs(t)) % HOUR_MS) + HOUR_MS) % HOUR_MS) % w;
  return Math.floor((t - origin) / w) * w + origin;
}

/** The start of range `key` now (undefined for all the data). Without `bucketS`: on a whole RANGE_STEP_MS (a
 * minute), the same all through the minute, so a view drawn again (a live push) asks the same query. With the
 * chart's bucket width `bucketS`: the edge of the bucket that holds now - the range, as the API lays buckets out in
 * the store's time zone (`alignedTo`: the API's answer's, when it said; zone statistics may be on the epoch's grid),
 * so the range covers at least its length in whole buckets: "Last 24 h" by day at 00:10 is yesterday and today from
 * local midnight (not 10 minutes), "Last hour" by hour at 10:02 is from 09:00; days of 23 or 25 h when the clocks
 * change are the store's local days. */
export function rangeStart(key: RangeKey, bucketS?: number, alignedTo?: AlignedTo): number | undefined {
  const r = RANGES.find((x) => x.key === key);
  if (!r || r.ms === null) return undefined;
  const now = Math.floor(Date.now() / RANGE_STEP_MS) * RANGE_STEP_MS;
  if (!bucketS || bucketS <= 0) return now - r.ms;
  return bucketEdge(now - r.ms, bucketS, alignedTo);
}

/** The end of relative range `key` (`start`: useRangeStart's): the whole minute after now, so that the range
 * reaches now (its empty last minutes too) and is the same all through the minute; undefined for all the data (the
 * API's default end). */
export function rangeEnd(key: RangeKey, start: number | undefined): number | undefined {
  const r = RANGES.find((x) => x.key === key);
  return r && r.ms !== null && start !== undefined
    ? Math.floor(Date.now() / RANGE_STEP_MS) * RANGE_STEP_MS + RANGE_STEP_MS : undefined;
}

/** rangeStart of `key` (and `bucketS`, `alignedTo`), moved on at each whole minute while the view is open: a relative
 * range ("last hour") is read again once a minute, never on a live push (the view drawn again asks the same query). */
export function useRangeStart(key: RangeKey, bucketS?: number, alignedTo?: AlignedTo): number | undefined {
  const relative = (RANGES.find((x) => x.key === key)?.ms ?? null) !== null;
  const [, setStep] = useState(0);
  useEffect(() => {
    if (!relative) return;
    let timer = 0;
    const wait = () => {
      timer = window.setTimeout(() => {
        setStep((n) => n + 1);
        wait();
      }, RANGE_STEP_MS - (Date.now() % RANGE_STEP_MS));
    };
    wait();
    return () => window.clearTimeout(timer);
  }, [relative]);
  return rangeStart(key, bucketS, alignedTo);
}

/** The range of a view that opens on all the data (useRangeFallBack: the last 7 days when that is too much). */
export function useDefaultRange() {
  const [range, setRange] = useState<RangeKey>("all");
  const [picked, setPicked] = useState(false); // the user chose the range (else it is the default)
  const [note, setNote] = useState<string | null>(null);
  const pick = (v: RangeKey) => {
    setPicked(true);
    setNote(null);
    setRange(v);
  };
  return { range, picked, note, pick, setRange, setNote };
}

/** The default "All data" of `def` (useDefaultRange) answered `error`, a 422 for which `noteOf` gives a note (too
 * much data for one request; null: another 422): show the last 7 days instead and say so (the note). Answers that
 * error (the view shows no problem for it), else null. A range the user picked stays as picked, its 422 shown. */
export function useRangeFallBack(def: ReturnType<typeof useDefaultRange>, error: ApiError | null,
                                 noteOf: (e: ApiError) => string | null): ApiError | null {
  const note = !def.picked && def.range === "all" && error?.status === 422 ? noteOf(error) : null;
  const fallBack = note !== null ? error : null;
  useEffect(() => {
    if (note === null) return;
    def.setNote(note);
    def.setRange("7d");
  }, [note]); // eslint-disable-line react-hooks/exhaustive-deps -- the setters do not change
  return fallBack;
}

/** A page past the last one (its rows erased or resolved meanwhile): go to the last page there is. `index`: the page
 * shown (from 0), `count`: the pages there are now (undefined while unknown), `setIndex`: the view's page setter. */
export function useClampedPage(index: number, count: number | undefined, setIndex: (i: number) => void) {
  useEffect(() => {
    if (count !== undefined && index > 0 && index >= count) setIndex(Math.max(0, count - 1));
  }, [index, count]); // eslint-disable-line react-hooks/exhaustive-deps -- a new setter each render
}

export function RangePicker({ value, onChange }: { value: RangeKey; onChange: (v: RangeKey) => void }) {
  return (
    <label className="field">
      <span>Range</span>
      <select value={value} onChange={(e) => onChange(e.target.value as RangeKey)} data-testid="range">
        {RANGES.map((r) => (
          <option key={r.key} value={r.key}>{r.label}</option>
        ))}
      </select>
    </label>
  );
}

export function Select<T extends string>({ label, value, options, onChange, testId }: {
  label: string; value: T; options: { value: T; label: string }[]; onChange: (v: T) => void; testId?: string;
}) {
  return (
    <label className="field">
      <span>{label}</span>
      <select value={value} onChange={(e) => onChange(e.target.value as T)} data-testid={testId}>
        {options.map((o) => (
          <option key={o.value} value={o.value}>{o.label}</option>
        ))}
      </select>
    </label>
  );
}

/** A number of the API, rounded for display; the exact value is the tooltip (and data-value). */
export function Num({ v, pct = false, digits = 2 }: { v: number | null | undefined; pct?: boolean; digits?: number }) {
  const text = pct ? fmtPct(v) : fmtNum(v, digits);
  return v === null || v === undefined ? <>{text}</> : <span title={String(v)} data-value={v}>{text}</span>;
}
