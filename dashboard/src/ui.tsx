// Small shared pieces: cards, error and loading states, the time-range picker.
import { Component, useEffect, useState, type ErrorInfo, type ReactNode } from "react";
import { ApiError, fmtNum, fmtPct } from "./api";

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
        ? "Not available on this installation."
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

/** The start of range `key` now, on a whole RANGE_STEP_MS (a minute): the same all through the minute, so a view
 * drawn again (a live push) asks the same query; undefined for all the data. */
export function rangeStart(key: RangeKey): number | undefined {
  const r = RANGES.find((x) => x.key === key);
  return r && r.ms !== null ? Math.floor((Date.now() - r.ms) / RANGE_STEP_MS) * RANGE_STEP_MS : undefined;
}

/** The end of relative range `key` starting at `start` (useRangeStart): the whole minute after now, so that the
 * range reaches now (its empty last minutes too) and is the same all through the minute; undefined for all the
 * data (the API's default end). */
export function rangeEnd(key: RangeKey, start: number | undefined): number | undefined {
  const r = RANGES.find((x) => x.key === key);
  return r && r.ms !== null && start !== undefined ? start + r.ms + RANGE_STEP_MS : undefined;
}

/** rangeStart of `key`, moved on at each whole minute while the view is open: a relative range ("last hour") is
 * read again once a minute, never on a live push (the view drawn again asks the same query). */
export function useRangeStart(key: RangeKey): number | undefined {
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
  return rangeStart(key);
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
