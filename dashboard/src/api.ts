// The StoreLens API as the dashboard uses it: JSON over fetch with the session cookie,
// the response shapes it reads (see the OpenAPI schema at /docs), and small formatters.
import { useCallback, useEffect, useRef, useState } from "react";

export type Role = "viewer" | "manager" | "admin";
export const ROLES: Role[] = ["viewer", "manager", "admin"];
export const atLeast = (role: Role, min: Role) => ROLES.indexOf(role) >= ROLES.indexOf(min);

export interface Me {
  username: string;
  role: Role;
}

export class ApiError extends Error {
  /** `retryAfterS`: the answer's `Retry-After` in seconds (a 429's), `null` when it has none; `body`: the answer's
   * JSON (fields beside `detail`, e.g. a site edit's 503 `version`), `null` when it is not JSON. */
  constructor(public status: number, public detail: string, public retryAfterS: number | null = null,
              public body: Record<string, unknown> | null = null) {
    super(`${status}: ${detail}`);
  }
}

let onUnauthorized: () => void = () => {};
/** Called when any request answers 401 (the session ended): the app shows the sign-in page. */
export function setUnauthorizedHandler(fn: () => void) {
  onUnauthorized = fn;
}

/** fetch `path` with the session cookie; an ApiError unless it answers 2xx (a 401 shows the sign-in page). */
async function send(path: string, init: RequestInit = {}): Promise<Response> {
  const r = await fetch(path, {
    credentials: "same-origin",
    ...init,
    headers: { Accept: "application/json", ...(init.headers ?? {}) },
  });
  if (!r.ok) {
    let detail = r.statusText;
    let json: Record<string, unknown> | null = null;
    try {
      const body = await r.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
      json = body && typeof body === "object" ? body : null;
    } catch {
      /* not JSON */
    }
    if (r.status === 401 && !path.startsWith("/v1/auth/")) onUnauthorized();
    const retryAfter = Number.parseInt(r.headers.get("Retry-After") ?? "", 10);
    throw new ApiError(r.status, detail, Number.isFinite(retryAfter) ? retryAfter : null, json);
  }
  return r;
}

export async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const r = await send(path, init);
  if (r.status === 204) return undefined as T;
  const type = r.headers.get("content-type") ?? "";
  return (type.includes("json") ? r.json() : r.text()) as Promise<T>;
}

export const get = <T,>(path: string) => request<T>(path);

/** GET an image: an object URL of its bytes (revoke it when done) and the response's headers. */
export async function getImage(path: string): Promise<{ url: string; headers: Headers }> {
  const r = await send(path, { headers: { Accept: "image/*" } });
  return { url: URL.createObjectURL(await r.blob()), headers: r.headers };
}
export const sendJson = <T,>(method: string, path: string, body?: unknown) =>
  request<T>(path, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

/** `?a=1&b=2` of the defined values. */
export function qs(params: Record<string, string | number | boolean | null | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : "";
}

export interface Loaded<T> {
  data: T | null;
  error: ApiError | null;
  loading: boolean;
  reload: () => void;
  /** When the answer shown was read (ms since epoch; null before the first). */
  readAt: number | null;
}

/** What a request asks for: its path, or, for a relative range (`range`: the picker's key), its path but the range's
 * start and end (they move on by themselves, once a minute). */
function queryOf(path: string, range?: string): string {
  if (range === undefined) return path;
  const [p, q = ""] = path.split("?");
  const params = new URLSearchParams(q);
  params.delete("start_ms");
  params.delete("end_ms");
  return `${range}|${p}?${params}`;
}

/** GET `path` (none when null) and re-GET when it changes or on `reload()`: one read at a time (a new one aborts the
 * one in flight, as leaving the view does).
 *
 * An answer is shown for the query it answers only: when the path asks something else (another camera, range,
 * bucket, page ...) `data` and `error` are null and `loading` true until its own answer comes, so no view shows
 * the previous answer as this one's. `reload()` and a relative range moved on a minute (`range`: the range
 * picker's key, given by the views with one) keep the answer on screen while the new one loads (a chart keeps its
 * zoom), and when the new one fails (`error` beside the last `data`, `readAt` still that answer's: one failed
 * re-read does not blank the view). */
export function useApi<T>(path: string | null, range?: string): Loaded<T> {
  const query = path === null ? null : queryOf(path, range);
  const [state, setState] = useState<{ query: string | null; data: T | null; error: ApiError | null; loading: boolean;
    readAt: number | null }>({
    query,
    data: null,
    error: null,
    loading: path !== null,
    readAt: null,
  });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (path === null) return;
    const read = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    request<T>(path, { signal: read.signal }).then(
      (data) => !read.signal.aborted && setState({ query, data, error: null, loading: false, readAt: Date.now() }),
      (e) => !read.signal.aborted && setState((s) => s.query === query
        ? { ...s, error: toApiError(e), loading: false } // a re-read failed: the last answer stays, with the error
        : { query, data: null, error: toApiError(e), loading: false, readAt: null }),
    );
    return () => read.abort();
  }, [path, tick]); // eslint-disable-line react-hooks/exhaustive-deps -- query follows path
  const reload = useCallback(() => setTick((t) => t + 1), []);
  if (state.query !== query) return { data: null, error: null, loading: path !== null, reload, readAt: null };
  return { ...state, reload };
}

/** `value`, or while it is null or undefined the last value it had: what a view keeps on screen, or asks with,
 * while a request asks again (a control made from an answer, a day another request starts from), so it does not
 * vanish until the new answer comes. Not for figures shown as an answer (useApi shows those for their query only). */
export function useLast<T>(value: T | null | undefined): T | undefined {
  const last = useRef<T | undefined>(undefined);
  if (value !== null && value !== undefined) last.current = value;
  return last.current;
}

export function toApiError(e: unknown): ApiError {
  return e instanceof ApiError ? e : new ApiError(0, e instanceof Error ? e.message : String(e));
}

// -- formatting (display only: values are the API's) -------------------------------------

/** The browser's own IANA time zone. */
export const browserTimeZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone;

let timeFormat: Intl.DateTimeFormat | null = null;
/** Show every time in the store's IANA time zone (`store.timezone`, from GET /v1/site), not the browser's: a day
 * bucket of the store is the store's date wherever the dashboard is opened. `null` (unknown or not valid here):
 * the browser's. Answers the zone in use (`null`: the browser's). */
export function setStoreTimeZone(tz: string | null): string | null {
  try {
    timeFormat = tz ? makeFormat(tz) : null;
  } catch {
    timeFormat = null; // a zone this browser does not know
  }
  return timeFormat ? tz : null;
}

function makeFormat(timeZone?: string): Intl.DateTimeFormat {
  return new Intl.DateTimeFormat("en-CA", {
    timeZone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", hourCycle: "h23",
  });
}

/** `YYYY-MM-DD HH:MM:SS` in the store's time zone (see setStoreTimeZone); "-" for no time. */
export function fmtTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || ms === 0) return "-";
  timeFormat ??= makeFormat();
  const part: Record<string, string> = {};
  for (const p of timeFormat.formatToParts(new Date(ms))) part[p.type] = p.value;
  return `${part.year}-${part.month}-${part.day} ${part.hour}:${part.minute}:${part.second}`;
}

/** The store's wall clock at `ms` (see setStoreTimeZone) as [year, month, day, hour, minute, second]. */
function storeParts(ms: number): number[] {
  timeFormat ??= makeFormat();
  const part: Record<string, string> = {};
  for (const p of timeFormat.formatToParts(new Date(ms))) part[p.type] = p.value;
  return [part.year, part.month, part.day, part.hour, part.minute, part.second].map(Number);
}

/** The store's UTC offset at `ms` (ms; +05:30 is 19,800,000), as setStoreTimeZone's zone has it. */
export function storeOffsetMs(ms: number): number {
  const [y, mo, d, h, mi, s] = storeParts(ms);
  return Date.UTC(y, mo - 1, d, h, mi, s) - Math.floor(ms / 1000) * 1000;
}

/** The time since the store's local midnight at `ms` (its wall clock's; ms). */
export function storeTimeOfDayMs(ms: number): number {
  const [, , , h, mi, s] = storeParts(ms);
  return ((h * 60 + mi) * 60 + s) * 1000 + (((ms % 1000) + 1000) % 1000);
}

export function fmtNum(v: number | null | undefined, digits = 2): string {
  if (v === null || v === undefined) return "-";
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toFixed(digits)));
}

/** An amount of the API in minor units of `currency` as Intl shows that currency (¥50,000, KWD 12.345, €10.00).
 * `decimals`: the API's exponent of the currency (ISO 4217 minor unit, e.g. /v1/chain/kpis currency_decimals);
 * unknown: Intl's own for the currency. No currency: the plain number. "–" for no amount. */
export function fmtMoney(minor: number | null | undefined, currency: string | null | undefined,
                         decimals?: number | null): string {
  if (minor === null || minor === undefined) return "–";
  if (!currency) return fmtNum(minor);
  const f = new Intl.NumberFormat(undefined, { style: "currency", currency });
  return f.format(minor / 10 ** (decimals ?? f.resolvedOptions().maximumFractionDigits ?? 2));
}

export function fmtPct(v: number | null | undefined): string {
  return v === null || v === undefined ? "-" : `${fmtNum(v * 100, 1)} %`;
}

export function fmtDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "-";
  const s = ms / 1000;
  if (s < 120) return `${fmtNum(s, 1)} s`;
  if (s < 7200) return `${fmtNum(s / 60, 1)} min`;
  return `${fmtNum(s / 3600, 1)} h`;
}

// -- response shapes ---------------------------------------------------------------------

export type Point = [number, number];

export interface LineCfg {
  id: string;
  a: Point;
  b: Point;
  [key: string]: unknown;
}

export interface ZoneCfg {
  id: string;
  polygon: Point[];
  kind?: string;
  [key: string]: unknown;
}

export interface CamerasOut {
  store_id: string;
  cameras: { id: string; name?: string; lines: { id: string; a: Point; b: Point }[]; zones: { id: string }[] }[];
}

export interface SiteOut {
  version: number;
  cameras: { id: string; name?: string; lines: LineCfg[]; zones: ZoneCfg[] }[];
}

export interface CameraOccupancy {
  camera_id: string;
  occupancy: number;
  total_in: number;
  total_out: number;
  ts_ms: number;
  last_seen_ts_ms?: number;
  /** a live camera without a frame for over 60 s at the API's clock (never a recorded file) */
  stale?: boolean;
  age_s?: number;
}

export interface OccupancyOut {
  store_id: string;
  occupancy: number;
  stale?: boolean;
  cameras: CameraOccupancy[];
}

export interface LiveCounts {
  ts_ms: number;
  store: { occupancy: number; in: number; out: number };
  /** Some camera is stale (the store's numbers hold its last frame's counts). */
  stale?: boolean;
  /** stale: a live camera without a frame for over 60 s (age_s: its newest frame's age); never a recorded file. */
  cameras: { camera_id: string; occupancy: number; in: number; out: number; last_seen_ts_ms: number | null;
    stale?: boolean; age_s?: number | null }[];
}

export interface CountsOut {
  camera_id: string;
  start_ms: number;
  end_ms: number;
  bucket_s: number;
  /** store_local_day: whole days from the store's local midnight (23 or 25 h when the clocks change). */
  aligned_to: "epoch" | "store_local_hour" | "store_local_day";
  timezone: string;
  buckets: { line_id: string; start_ms: number; end_ms: number; in: number; out: number }[];
  totals: Record<string, { in: number; out: number }>;
}

export interface ZoneState {
  camera_id: string;
  zone_id: string;
  kind: string;
  product?: string | null;
  category?: string | null;
  polygon: Point[];
  /** null when stale */
  occupancy: number | null;
  ts_ms?: number | null;
  /** a live camera whose newest frame is older than 60 s: nobody known to be inside now */
  stale?: boolean;
  age_s?: number | null;
}

export interface Dwell {
  median: number | null;
  p90?: number | null;
  mean: number | null;
  /** null (like every figure) when `suppressed`: measured from fewer than privacy.k_min people. */
  total: number | null;
  n: number | null;
  suppressed?: boolean;
}

export interface ZoneBucket {
  camera_id: string;
  zone_id: string;
  start_ms: number;
  end_ms: number;
  visits: number;
  unique_people: number;
  mean_occupancy: number;
  max_occupancy: number;
  dwell_s: Dwell;
  stoppers: number;
  served: number;
  abandoned: number;
  lost: number;
}

export interface Queue {
  camera_id: string;
  zone_id: string;
  at_ms: number | null;
  window_s: number;
  /** null when stale */
  length: number | null;
  predicted_wait_s: number | null;
  /** a live camera whose newest frame is older than 60 s: no length now */
  stale?: boolean;
  age_s?: number | null;
  served: number;
  abandoned: number;
  lost: number;
  wait_s: Dwell;
}

export interface Interest {
  key: string;
  zones: string[];
  /** null (like every figure of the row) when `suppressed`: fewer than privacy.k_min passers. */
  passers: number | null;
  stoppers: number | null;
  interest_rate: number | null;
  dwell_s: Dwell | null;
  dwell_histogram: Record<string, number | null> | null;
  /** null without a stopper's usable face, or withheld (`attention_suppressed`): 1 to privacy.k_min-1 had one. */
  attention_s: number | null;
  attention_suppressed?: boolean;
  attending_emotions: Record<string, number | null> | null;
  suppressed?: boolean;
}

export interface FlowsOut {
  start_ms: number;
  end_ms: number;
  journeys: number;
  nodes: string[];
  links: { source: string; target: string; count: number }[];
  /** Links made by fewer than k_min journeys were left out (naming them would show a few people's route). */
  suppressed: boolean;
}

export interface TopPathsOut {
  start_ms: number;
  end_ms: number;
  journeys?: number;
  paths: { path: string[]; count: number | null; share: number | null; suppressed?: boolean }[];
}

export interface DemographicsOut {
  camera_id: string | null;
  start_ms: number | null;
  end_ms: number | null;
  tracks: number | null;
  age: Record<string, number | null>;
  gender: Record<string, number | null>;
  emotion: Record<string, number | null>;
  suppressed?: boolean;
  k_min?: number;
}

export interface CustomersOut {
  total: number;
  page: number;
  page_size: number;
  items: {
    customer_id: string;
    created_ts_ms: number;
    visits: number;
    first_seen_ts_ms: number;
    last_seen_ts_ms: number;
    returning: boolean;
    cameras: string[];
  }[];
}

export interface Alert {
  alert_id: string;
  rule_id: string;
  kind: string;
  severity: string;
  camera_id: string;
  zone_id: string | null;
  state: "firing" | "resolved";
  fired_ts_ms: number;
  ts_ms: number;
  cleared_ts_ms: number | null;
  /** The measured value that fired the alert (kept when it resolves). */
  value: number;
  threshold: number;
  message: string;
  acked_by: string | null;
  acked_ts_ms: number | null;
  resolved_by: string | null;
  resolved_ts_ms: number | null;
}

export interface AlertsOut {
  total: number;
  offset: number;
  limit: number;
  /** Open alerts (state firing) of the time range and camera asked for, whatever the state filter. */
  firing: number;
  alerts: Alert[];
}

export interface HeatmapOut {
  camera_id: string;
  kind: string;
  cell_px: number;
  width: number;
  height: number;
  cols: number;
  rows: number;
  minutes: number;
  total_ms: number;
  cells: { gx: number; gy: number; occupancy_ms: number; dwell_ms: number }[];
  snapshot_ts_ms: number | null;
}
