// One camera: its reference frame (GET /v1/cameras/{id}/snapshot, heads blurred) with its counting lines
// and zones drawn over it, an optional heatmap overlay (GET /v1/cameras/{id}/heatmap), and, for admins,
// lines whose endpoints can be dragged and saved (PUT /v1/site/cameras/{id}/lines/{line_id}) and zones whose
// polygon vertices can be dragged and saved (PUT /v1/site/cameras/{id}/zones/{zone_id}: the zone as GET /v1/site
// returns it, only the polygon changed, based on the site version shown, or the one this page's last save made if
// newer (the page re-reads the site after a save; until the re-read answers that version, the saved camera is drawn
// from the save's answer and a second save is based on the first one's version): 409 when someone changed it
// meanwhile; lines likewise).
// Lines, zones and heatmap cells are in the source's pixels; the stored JPEG may be smaller (the camera's
// resize_width): the overlay is in source pixels (the snapshot's X-Frame-Width/Height, else the heatmap's
// width/height) and the image is stretched under it. Without either, nothing can be dragged.
// The heatmap is read only while the overlay is on, over its range (all the data first: the route sums stored minutes
// and hours over any range, it has no 422 of too much data), or, whatever the overlay, over all the data when the
// snapshot gives no frame size (the heatmap's is the size then). Its colours
// scale as the API's PNG does (storelens.domain.heatmap_draw): the square root of value / peak, the peak being the
// 95th percentile of the non-empty cells (one busy cell, a till, would leave the others blank otherwise).
// A failed heatmap or snapshot request shows its problem (not an empty overlay, nor "no frame yet": that is a 404's).
// Admins move a line's end or a zone's corner with the keyboard too: a focused handle (Tab) moves 1 px per arrow
// key (10 px with Shift), an edit saved as a drag's is.
import { useEffect, useMemo, useRef, useState, type KeyboardEvent as RKeyboardEvent, type PointerEvent as RPointerEvent,
} from "react";
import {
  ApiError, atLeast, fmtDuration, fmtTime, getImage, qs, sendJson, toApiError, useApi,
  type HeatmapOut, type LineCfg, type Point, type SiteOut, type ZoneCfg, type ZoneState,
} from "../api";
import { Card, Problem, RangePicker, Select, useDefaultRange, useRangeStart } from "../ui";
import { useCameras } from "./common";
import type { ViewProps } from "../App";

type SiteCam = SiteOut["cameras"][number];

const ZONE_COLOURS: Record<string, string> = { queue: "#f97316", shelf: "#16a34a", staff_only: "#dc2626" };

type Drag = { line: string; end: "a" | "b" } | { zone: string; vertex: number } | null;

const fmtPoint = (p: Point) => `${p[0]}, ${p[1]}`;

/** The move of an arrow key in frame pixels (1, 10 with Shift); null for another key. */
function arrowStep(ev: RKeyboardEvent): Point | null {
  const d = ev.shiftKey ? 10 : 1;
  const steps: Record<string, Point> = { ArrowLeft: [-d, 0], ArrowRight: [d, 0], ArrowUp: [0, -d], ArrowDown: [0, d] };
  return steps[ev.key] ?? null;
}

/** The heatmap colour scale tops out at this percentile of the non-empty cells (heatmap_draw.PEAK_PERCENTILE). */
const PEAK_PERCENTILE = 95;

/** The `p`th percentile of `values` (not empty), interpolated linearly between the closest ranks as numpy's
 * percentile. */
function percentile(values: number[], p: number): number {
  const v = [...values].sort((a, b) => a - b);
  const at = (p / 100) * (v.length - 1);
  const lo = Math.floor(at);
  return lo + 1 < v.length ? v[lo] + (v[lo + 1] - v[lo]) * (at - lo) : v[lo];
}

/** A refused site save: a 409 says how to go on (someone changed the site since this page loaded it). */
/** The change a 503 "site version N saved, not yet delivered to the pipeline" carries: saved (do not send it again,
 * its base version is gone), the pipeline gets it within 30 s; `null` for any other error. */
function savedUndelivered(e: unknown): { version: number; camera: SiteCam | null } | null {
  const err = toApiError(e);
  const version = err.body?.version;
  if (err.status !== 503 || typeof version !== "number") return null;
  return { version, camera: (err.body?.camera as SiteCam | null | undefined) ?? null };
}

const UNDELIVERED_NOTE = "not yet delivered to the pipeline: it gets it within 30 s, do not save it again";

function saveProblem(e: unknown, what: "line" | "zone"): ApiError {
  const err = toApiError(e);
  return err.status === 409
    ? new ApiError(409, `${err.detail} (someone changed the site since it was loaded: reload the page, then move the ${what} again)`)
    : err;
}

/** The camera's reference frame (an object URL) and its source size, from the snapshot's headers; `failed`: it has
 * none, `error` why (a 404: none is stored yet). Both are of `cameraId` only (not the camera shown before, while its
 * frame loads). */
function useSnapshot(cameraId: string) {
  const [snap, setSnap] = useState<{ cameraId: string; url: string; w: number; h: number } | null>(null);
  const [failed, setFailedAs] = useState<{ cameraId: string; error: ApiError } | null>(null);
  useEffect(() => {
    setSnap(null);
    setFailedAs(null);
    if (!cameraId) return;
    let live = true;
    let url: string | null = null;
    getImage(`/v1/cameras/${encodeURIComponent(cameraId)}/snapshot`).then(
      (r) => {
        url = r.url;
        if (!live) return URL.revokeObjectURL(r.url);
        setSnap({ cameraId, url: r.url, w: Number(r.headers.get("X-Frame-Width")) || 0,
                  h: Number(r.headers.get("X-Frame-Height")) || 0 });
      },
      (e) => live && setFailedAs({ cameraId, error: toApiError(e) }),
    );
    return () => {
      live = false;
      if (url) URL.revokeObjectURL(url);
    };
  }, [cameraId]);
  // the image came but the browser cannot show it
  const setFailed = () => setFailedAs({ cameraId, error: new ApiError(0, "the stored reference frame cannot be shown") });
  const error = failed?.cameraId === cameraId ? failed.error : null;
  return { snap: snap?.cameraId === cameraId ? snap : null, failed: error !== null, error, setFailed };
}

export function CameraView({ me }: ViewProps) {
  const { cams, cameraId, setCameraId, camera } = useCameras();
  const isAdmin = atLeast(me.role, "admin");
  const site = useApi<SiteOut>("/v1/site"); // the lines in force (every role reads it; admins change it)
  const zones = useApi<{ zones: ZoneState[] }>(cameraId ? `/v1/zones?camera_id=${encodeURIComponent(cameraId)}` : null);
  const [showHeat, setShowHeat] = useState(false);
  const [heatKind, setHeatKind] = useState<"occupancy" | "dwell">("occupancy");
  const heatDef = useDefaultRange(); // all the data first
  const { range: heatRange, pick: setHeatRange } = heatDef;
  const heatStart = useRangeStart(heatRange);
  const { snap, failed: imgError, error: snapError, setFailed: setImgError } = useSnapshot(cameraId);
  const noSize = imgError || (snap !== null && !(snap.w > 0 && snap.h > 0)); // the snapshot gives no frame size
  const heatUrl = `/v1/cameras/${encodeURIComponent(cameraId)}/heatmap`;
  // walking=false: the grid alone (the walking statistics, not shown here, read the range's track points: seconds)
  const heat = useApi<HeatmapOut>(cameraId && showHeat
    ? `${heatUrl}${qs({ kind: heatKind, start_ms: heatStart, walking: false })}` : null, heatRange);
  // the frame size of all the data's heatmap
  const sized = useApi<HeatmapOut>(cameraId && noSize ? `${heatUrl}${qs({ walking: false })}` : null);
  const [edits, setEdits] = useState<Record<string, { a: Point; b: Point }>>({});
  const [zoneEdits, setZoneEdits] = useState<Record<string, Point[]>>({});
  const [drag, setDrag] = useState<Drag>(null);
  const [saving, setSaving] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const [saveError, setSaveError] = useState<ApiError | null>(null);
  // What this page's saves made: the newest version, and each saved camera as its save answered. Until the re-read
  // site (/v1/site) is at least that version, a saved camera is drawn from its save's answer and the next save is
  // based on that version (a /v1/site answer older than a save, a replica behind, is not shown for it).
  const [savedCams, setSavedCams] = useState<Record<string, { version: number; camera: SiteCam }>>({});
  const savedVersion = useRef(0);
  const baseVersion = () => Math.max(site.data?.version ?? 0, savedVersion.current);
  const keepSaved = (r2: { version: number; camera: SiteCam | null }) => {
    savedVersion.current = Math.max(savedVersion.current, r2.version);
    const camera = r2.camera;
    if (camera) setSavedCams((s) => ({ ...s, [cameraId]: { version: r2.version, camera } }));
  };
  const svg = useRef<SVGSVGElement>(null);

  useEffect(() => {
    setEdits({});
    setZoneEdits({});
    setSaved(null);
  }, [cameraId]);

  const savedCam = savedCams[cameraId];
  const siteCam = savedCam && (site.data?.version ?? 0) < savedCam.version ? savedCam.camera
    : site.data?.cameras.find((c) => c.id === cameraId) ?? null;
  // Lines in force (/v1/site), else as configured at start (/v1/cameras).
  const lines: LineCfg[] = useMemo(
    () => (siteCam ? siteCam.lines : (camera?.lines ?? []).map((l) => ({ ...l }))),
    [siteCam, camera],
  );
  const shown = lines.map((l) => ({ ...l, ...(edits[l.id] ?? {}) }));
  const heatValue = (c: HeatmapOut["cells"][number]) => (heatKind === "dwell" ? c.dwell_ms : c.occupancy_ms);
  const heatPeak = useMemo(() => {
    const v = (heat.data?.cells ?? []).map(heatValue).filter((x) => x > 0);
    return v.length ? percentile(v, PEAK_PERCENTILE) : 1;
  }, [heat.data, heatKind]); // eslint-disable-line react-hooks/exhaustive-deps -- heatValue follows heatKind
  const camZones = (zones.data?.zones ?? []).filter((z) => z.camera_id === cameraId);
  // Zones in force (/v1/site; editable), else as the zone state reports them (/v1/zones).
  const zoneList: ZoneCfg[] = siteCam
    ? siteCam.zones
    : camZones.map((z) => ({ id: z.zone_id, kind: z.kind, polygon: z.polygon }));
  const shownZones = zoneList.map((z) => ({ ...z, polygon: zoneEdits[z.id] ?? z.polygon }));
  // Frame size in source pixels (lines, zones and cells are in them): the snapshot's, else the heatmap's of all the
  // data; unknown without either (then the drawing spans the lines and zones, and nothing can be dragged).
  const source = snap && snap.w > 0 && snap.h > 0 ? { w: snap.w, h: snap.h }
    : sized.data && sized.data.width > 0 && sized.data.height > 0 ? { w: sized.data.width, h: sized.data.height } : null;
  const points = [...lines.flatMap((l) => [l.a, l.b]), ...zoneList.flatMap((z) => z.polygon)];
  const w = source?.w ?? Math.max(1, ...points.map((p) => p[0]));
  const h = source?.h ?? Math.max(1, ...points.map((p) => p[1]));
  const r = Math.max(w, h) / 90; // handle radius in frame pixels
  const editable = isAdmin && siteCam !== null && source !== null;

  const toFrame = (ev: { clientX: number; clientY: number }): Point => {
    const m = svg.current?.getScreenCTM();
    if (!svg.current || !m) return [0, 0];
    const p = svg.current.createSVGPoint();
    p.x = ev.clientX;
    p.y = ev.clientY;
    const q = p.matrixTransform(m.inverse());
    return [Math.round(Math.min(w, Math.max(0, q.x))), Math.round(Math.min(h, Math.max(0, q.y)))];
  };

  const onMove = (ev: RPointerEvent<SVGSVGElement>) => {
    if (!drag) return;
    const p = toFrame(ev);
    if ("zone" in drag) {
      const zone = shownZones.find((z) => z.id === drag.zone);
      if (!zone) return;
      setZoneEdits((e) => ({ ...e, [drag.zone]: zone.polygon.map((q, i) => (i === drag.vertex ? p : q)) }));
      setSaved(null);
      return;
    }
    const line = shown.find((l) => l.id === drag.line);
    if (!line) return;
    setEdits((e) => ({ ...e, [drag.line]: { a: drag.end === "a" ? p : line.a, b: drag.end === "b" ? p : line.b } }));
    setSaved(null);
  };

  // an arrow key on a focused handle: the point moves (within the frame), an edit as a drag makes
  const clampPoint = (p: Point): Point => [Math.min(w, Math.max(0, p[0])), Math.min(h, Math.max(0, p[1]))];
  const onZoneKey = (ev: RKeyboardEvent, zone: ZoneCfg, vertex: number) => {
    const d = arrowStep(ev);
    if (!d) return;
    ev.preventDefault();
    setZoneEdits((e) => ({ ...e, [zone.id]: (e[zone.id] ?? zone.polygon).map(
      (q, i) => (i === vertex ? clampPoint([q[0] + d[0], q[1] + d[1]]) : q)) }));
    setSaved(null);
  };
  const onLineKey = (ev: RKeyboardEvent, line: LineCfg, end: "a" | "b") => {
    const d = arrowStep(ev);
    if (!d) return;
    ev.preventDefault();
    setEdits((e) => {
      const cur = e[line.id] ?? { a: line.a, b: line.b };
      return { ...e, [line.id]: { ...cur, [end]: clampPoint([cur[end][0] + d[0], cur[end][1] + d[1]]) } };
    });
    setSaved(null);
  };

  const dropLineEdit = (id: string) => setEdits((e) => { const { [id]: _, ...rest } = e; return rest; });
  const dropZoneEdit = (id: string) => setZoneEdits((e) => { const { [id]: _, ...rest } = e; return rest; });

  const saveZone = async (zone: ZoneCfg) => {
    const polygon = zoneEdits[zone.id];
    const cfg = siteCam?.zones.find((z) => z.id === zone.id);
    if (!polygon || !cfg || !site.data) return;
    setSaving(`zone:${zone.id}`);
    setSaveError(null);
    try {
      // the zone as the site has it (kind, service edge, product ...), only the polygon moved
      const r2 = await sendJson<{ version: number; camera: SiteCam | null }>(
        "PUT", `/v1/site/cameras/${encodeURIComponent(cameraId)}/zones/${encodeURIComponent(zone.id)}` +
        `?base_version=${baseVersion()}`, { ...cfg, polygon });
      keepSaved(r2);
      setSaved(`Zone ${zone.id} saved (site version ${r2.version}).`);
      dropZoneEdit(zone.id);
      site.reload();
      zones.reload();
    } catch (e) {
      const r2 = savedUndelivered(e);
      if (r2) {
        keepSaved(r2);
        setSaved(`Zone ${zone.id} saved (site version ${r2.version}), ${UNDELIVERED_NOTE}.`);
        dropZoneEdit(zone.id);
        site.reload();
        zones.reload();
      } else setSaveError(saveProblem(e, "zone"));
    } finally {
      setSaving(null);
    }
  };

  const save = async (line: LineCfg) => {
    const edit = edits[line.id];
    if (!edit || !siteCam || !site.data) return;
    setSaving(line.id);
    setSaveError(null);
    try {
      const body = { ...line, a: edit.a, b: edit.b };
      const r2 = await sendJson<{ version: number; camera: SiteCam | null }>(
        "PUT", `/v1/site/cameras/${encodeURIComponent(cameraId)}/lines/${encodeURIComponent(line.id)}` +
        `?base_version=${baseVersion()}`, body);
      keepSaved(r2);
      setSaved(`Line ${line.id} saved (site version ${r2.version}).`);
      dropLineEdit(line.id);
      site.reload();
    } catch (e) {
      const r2 = savedUndelivered(e);
      if (r2) {
        keepSaved(r2);
        setSaved(`Line ${line.id} saved (site version ${r2.version}), ${UNDELIVERED_NOTE}.`);
        dropLineEdit(line.id);
        site.reload();
      } else setSaveError(saveProblem(e, "line"));
    } finally {
      setSaving(null);
    }
  };

  return (
    <>
      <div className="toolbar">
        <Select label="Camera" value={cameraId} testId="camera"
          options={(cams.data?.cameras ?? []).map((c) => ({ value: c.id, label: c.id }))} onChange={setCameraId} />
        <label className="field check">
          <input type="checkbox" checked={showHeat} onChange={(e) => setShowHeat(e.target.checked)} data-testid="heatmap-toggle" />
          <span>Heatmap</span>
        </label>
        {showHeat && (
          <>
            <Select label="Heat" value={heatKind} onChange={setHeatKind}
              options={[{ value: "occupancy", label: "Time present" }, { value: "dwell", label: "Lingering" }]} />
            <RangePicker value={heatRange} onChange={setHeatRange} />
          </>
        )}
      </div>
      <Problem error={cams.error ?? zones.error ?? saveError} />
      {site.error && site.error.status !== 404 && <Problem error={site.error} />}
      <Card title={`Camera ${cameraId}`} testId="camera-card">
        {/* a failed request is said, not drawn as nobody there (an empty overlay) or as no frame stored (a 404) */}
        {snapError && snapError.status !== 404 && <Problem error={snapError} />}
        {showHeat && <Problem error={heat.error} />}
        <Problem error={sized.error} />
        <div className="frame" style={{ aspectRatio: `${w} / ${h}` }}>
          {snap && !imgError && (
            <img
              key={snap.url}
              src={snap.url}
              alt={`Reference frame of ${cameraId} (heads blurred)`}
              data-testid="snapshot"
              onError={setImgError}
            />
          )}
          {snapError?.status === 404 && (
            <div className="frame-missing muted" data-testid="no-frame">No reference frame stored for this camera yet.</div>)}
          <svg
            ref={svg}
            className={`overlay ${drag ? "dragging" : ""}`}
            viewBox={`0 0 ${w} ${h}`}
            preserveAspectRatio="none"
            onPointerMove={onMove}
            onPointerUp={() => setDrag(null)}
            onPointerLeave={() => setDrag(null)}
            data-testid="overlay"
          >
            {showHeat && heat.data && heat.data.cells.map((c) => {
              const v = heatValue(c);
              if (!v) return null;
              const t = Math.sqrt(Math.min(1, v / heatPeak));
              return (
                <rect key={`${c.gx},${c.gy}`} data-testid={`heat-${c.gx}-${c.gy}`} x={c.gx * heat.data!.cell_px} y={c.gy * heat.data!.cell_px}
                  width={heat.data!.cell_px} height={heat.data!.cell_px}
                  fill={`hsl(${Math.round(60 - 60 * t)}, 100%, 50%)`} fillOpacity={0.15 + 0.55 * t} />
              );
            })}
            {shownZones.map((z) => {
              // label in the top-left corner of the zone's bounding box (the middle is where lines usually are)
              const lx = Math.min(...z.polygon.map((p) => p[0])) + w / 80;
              const ly = Math.min(...z.polygon.map((p) => p[1])) + w / 30;
              const kind = z.kind ?? "area";
              const colour = ZONE_COLOURS[kind] ?? "#2563eb";
              return (
                <g key={z.id} data-testid={`zone-${z.id}`}>
                  <polygon points={z.polygon.map((p) => p.join(",")).join(" ")} fill={colour} fillOpacity={0.12}
                    stroke={colour} strokeWidth={Math.max(1, w / 400)} strokeDasharray={`${w / 80} ${w / 160}`} />
                  <text x={lx} y={ly} className="zone-label" fontSize={w / 40}>
                    {z.id} ({kind})
                  </text>
                </g>
              );
            })}
            {editable && shownZones.map((z) => z.polygon.map((p, i) => (
              <rect key={`${z.id}-${i}`} x={p[0] - r * 0.8} y={p[1] - r * 0.8} width={r * 1.6} height={r * 1.6}
                className="handle editable zone-handle" data-testid={`handle-zone-${z.id}-${i}`}
                tabIndex={0} role="button" aria-label={`Zone ${z.id}, corner ${i + 1} (${fmtPoint(p)}): arrow keys move it`}
                onKeyDown={(ev) => onZoneKey(ev, zoneList.find((c) => c.id === z.id) ?? z, i)}
                onPointerDown={(ev) => {
                  ev.preventDefault();
                  (ev.currentTarget.ownerSVGElement as SVGSVGElement).setPointerCapture(ev.pointerId);
                  setDrag({ zone: z.id, vertex: i });
                }} />
            )))}
            {shown.map((l) => {
              const [ax, ay] = l.a;
              const [bx, by] = l.b;
              const len = Math.hypot(bx - ax, by - ay) || 1;
              const nx = -(by - ay) / len;
              const ny = (bx - ax) / len;
              const mx = (ax + bx) / 2;
              const my = (ay + by) / 2;
              const arrow = w / 25;
              return (
                <g key={l.id} data-testid={`line-${l.id}`}>
                  <line x1={ax} y1={ay} x2={bx} y2={by} className="count-line" strokeWidth={Math.max(2, w / 200)} />
                  <line x1={mx} y1={my} x2={mx + nx * arrow} y2={my + ny * arrow} className="in-arrow"
                    strokeWidth={Math.max(1.5, w / 300)} markerEnd="url(#arrowhead)" />
                  <text x={mx + nx * arrow * 1.4} y={my + ny * arrow * 1.4} className="line-label" fontSize={w / 45}
                    textAnchor="middle">in</text>
                  <text x={mx - nx * arrow * 1.2} y={my - ny * arrow * 1.2} className="line-label" fontSize={w / 40}
                    textAnchor="middle" dominantBaseline="middle">{l.id}</text>
                  {(["a", "b"] as const).map((end) => (
                    <circle key={end} cx={l[end][0]} cy={l[end][1]} r={editable ? r : r / 2}
                      className={`handle ${editable ? "editable" : ""}`} data-testid={`handle-${l.id}-${end}`}
                      tabIndex={editable ? 0 : undefined} role={editable ? "button" : undefined}
                      aria-label={editable ? `Line ${l.id}, end ${end.toUpperCase()} (${fmtPoint(l[end])}): arrow keys move it`
                        : undefined}
                      onKeyDown={editable ? (ev) => onLineKey(ev, lines.find((c) => c.id === l.id) ?? l, end) : undefined}
                      onPointerDown={(ev) => {
                        if (!editable) return;
                        ev.preventDefault();
                        (ev.currentTarget.ownerSVGElement as SVGSVGElement).setPointerCapture(ev.pointerId);
                        setDrag({ line: l.id, end });
                      }} />
                  ))}
                </g>
              );
            })}
            <defs>
              <marker id="arrowhead" markerWidth="6" markerHeight="6" refX="3" refY="3" orient="auto">
                <path d="M0,0 L6,3 L0,6 z" className="arrowhead" />
              </marker>
            </defs>
          </svg>
        </div>
        <div className="muted small">
          {editable
            ? "Drag a line's end points or a zone's corners (squares), or focus one (Tab) and use the arrow keys (Shift: " +
              "10 px), then save. Crossing toward the arrow counts as in."
            : !isAdmin
              ? "Only admins can move lines."
              : siteCam === null
                ? "Site editing is not available on this API."
                : source === null
                  ? "The camera's frame size is not known yet (no reference frame or heatmap stored): lines and zones can be moved once it is."
                  : ""}
          {showHeat && heat.data && (
            <> · Heatmap: {heat.data.minutes} min of data, {fmtDuration(heat.data.total_ms)} person-time in total
              (reference frame {fmtTime(heat.data.snapshot_ts_ms)})</>
          )}
        </div>
        {saved && <div className="ok" role="status" data-testid="saved">{saved}</div>}
      </Card>
      <Card title="Lines">
        <div className="table-wrap">
          <table className="table" data-testid="lines-table">
            <thead><tr><th>Line</th><th>A (x, y)</th><th>B (x, y)</th><th></th></tr></thead>
            <tbody>
              {shown.map((l) => (
                <tr key={l.id} data-testid={`line-row-${l.id}`}>
                  <td>{l.id}</td>
                  <td data-testid="a">{l.a[0]}, {l.a[1]}</td>
                  <td data-testid="b">{l.b[0]}, {l.b[1]}</td>
                  <td>
                    {editable && edits[l.id] && (
                      <span className="row-actions">
                        <button className="primary" disabled={saving === l.id} onClick={() => save(l)}
                          data-testid={`save-${l.id}`}>{saving === l.id ? "Saving…" : "Save"}</button>
                        <button onClick={() => setEdits((e) => { const { [l.id]: _, ...rest } = e; return rest; })}>
                          Undo</button>
                      </span>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        {site.data && <div className="muted small">Site configuration version {site.data.version}</div>}
      </Card>
      <Card title="Zones">
        <div className="table-wrap">
          <table className="table" data-testid="zones-table">
            <thead><tr><th>Zone</th><th>Kind</th><th>Polygon (x, y)</th><th></th></tr></thead>
            <tbody>
              {shownZones.map((z) => (
                <tr key={z.id} data-testid={`zonecfg-row-${z.id}`}>
                  <td>{z.id}</td>
                  <td>{z.kind ?? "area"}</td>
                  <td className="small">
                    {z.polygon.map((p, i) => (
                      <span key={i}>
                        <span className="vertex" data-testid={`vertex-${i}`}>{fmtPoint(p)}</span>
                        {i < z.polygon.length - 1 ? " · " : ""}
                      </span>
                    ))}
                  </td>
                  <td>
                    {editable && zoneEdits[z.id] && (
                      <span className="row-actions">
                        <button className="primary" disabled={saving === `zone:${z.id}`} onClick={() => saveZone(z)}
                          data-testid={`save-zone-${z.id}`}>{saving === `zone:${z.id}` ? "Saving…" : "Save"}</button>
                        <button onClick={() => dropZoneEdit(z.id)}>Undo</button>
                      </span>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Card>
    </>
  );
}
