// Counting audit (managers and admins): sample clips around stored line crossings (POST /v1/audits/sample),
// watch each clip frame by frame (GET /v1/audits/clips/.../frames/{i}.jpg: heads blurred, the line drawn with its
// "in" arrow), tally the people walking in and out, submit (POST /v1/audits): the measured accuracy with its
// interval, and an alert when it is below the site's minimum. The system's counts are shown only after submitting.
import { useEffect, useRef, useState } from "react";
import { atLeast, fmtPct, fmtTime, sendJson, toApiError, useApi, type ApiError } from "../api";
import { Card, Empty, Loading, Problem } from "../ui";
import type { ViewProps } from "../App";

interface SampledClip {
  clip_id: string;
  camera_id: string;
  line_id: string;
  crossing_ts_ms: number;
  start_ms: number;
  end_ms: number;
  frames: number;
  fps: number;
}

interface SampleOut {
  clips: SampledClip[];
  confidence: number;
  min_accuracy: number;
}

interface AuditResult {
  audit_id: string;
  auditor: string;
  n_clips: number;
  n_correct: number;
  accuracy: number;
  ci_low: number;
  ci_high: number;
  confidence: number;
  count_accuracy: number;
  min_accuracy: number;
  alerted: boolean;
  clips: { clip_id: string; system_in: number; system_out: number; person_in: number; person_out: number; correct: boolean }[];
}

interface AuditsOut {
  audits: {
    audit_id: string; ts_ms: number; auditor: string; cameras: string[]; n_clips: number; n_correct: number;
    accuracy: number; ci_low: number; ci_high: number; confidence: number; count_accuracy: number;
    min_accuracy: number; alerted: boolean;
  }[];
}

type Tally = { in: number; out: number };

const frameUrl = (c: SampledClip, i: number) =>
  `/v1/audits/clips/${encodeURIComponent(c.camera_id)}/${encodeURIComponent(c.line_id)}/${c.crossing_ts_ms}/frames/${i}.jpg`;

export const fmtInterval = (lo: number, hi: number, confidence: number) =>
  `${fmtPct(lo)} – ${fmtPct(hi)} (${fmtPct(confidence)})`;

function Counter({ label, value, onChange, testId }: { label: string; value: number; onChange: (v: number) => void; testId: string }) {
  return (
    <div className="field" data-testid={testId}>
      <span>{label}</span>
      <span className="row-actions">
        <button aria-label={`${label} minus one`} onClick={() => onChange(Math.max(0, value - 1))} data-testid="minus">−</button>
        <b className="counter-value" data-testid="value" style={{ minWidth: "2ch", textAlign: "center", fontSize: "1.4rem", color: "var(--ink)" }}>{value}</b>
        <button aria-label={`${label} plus one`} onClick={() => onChange(value + 1)} data-testid="plus">+</button>
      </span>
    </div>
  );
}

function Player({ clip }: { clip: SampledClip }) {
  const [frame, setFrame] = useState(0);
  const [playing, setPlaying] = useState(false);
  const [failed, setFailed] = useState<string | null>(null);
  const timer = useRef<number | null>(null);

  useEffect(() => {
    setFrame(0);
    setPlaying(false);
    setFailed(null);
    // fetch every frame once (the browser keeps them): playback then shows them at the video's pace
    const images = Array.from({ length: clip.frames }, (_, i) => {
      const img = new Image();
      img.src = frameUrl(clip, i);
      return img;
    });
    return () => images.forEach((img) => { img.src = ""; });
  }, [clip]);

  useEffect(() => {
    if (!playing) return;
    timer.current = window.setInterval(() => {
      setFrame((f) => {
        if (f + 1 >= clip.frames) {
          setPlaying(false);
          return f;
        }
        return f + 1;
      });
    }, 1000 / (clip.fps || 25));
    return () => {
      if (timer.current !== null) window.clearInterval(timer.current);
    };
  }, [playing, clip]);

  return (
    <div data-testid="player">
      <div className="frame" style={{ aspectRatio: "4 / 3" }}>
        {!failed && (
          <img src={frameUrl(clip, frame)} alt={`Clip ${clip.clip_id}, frame ${frame + 1} (heads blurred)`}
            data-testid="clip-frame" data-frame={frame}
            onLoad={(e) => {
              const img = e.currentTarget;
              const box = img.parentElement;
              if (box && img.naturalWidth) box.style.aspectRatio = `${img.naturalWidth} / ${img.naturalHeight}`;
            }}
            onError={() => setFailed(`frame ${frame + 1} could not be loaded`)} />
        )}
        {failed && <div className="frame-missing">{failed}</div>}
      </div>
      <div className="toolbar" style={{ marginTop: "0.5rem", alignItems: "center" }}>
        <button className="primary" onClick={() => {
          if (!playing && frame + 1 >= clip.frames) setFrame(0);
          setPlaying(!playing);
        }} data-testid="play">{playing ? "Pause" : "Play"}</button>
        <input type="range" min={0} max={Math.max(0, clip.frames - 1)} value={frame} style={{ flex: "1 1 12rem" }}
          aria-label="Frame" data-testid="frame-slider"
          onChange={(e) => { setPlaying(false); setFrame(Number(e.target.value)); }} />
        <span className="muted small" data-testid="frame-pos">frame {frame + 1} / {clip.frames}</span>
      </div>
    </div>
  );
}

export function AuditView({ me }: ViewProps) {
  const canAudit = atLeast(me.role, "manager");
  const past = useApi<AuditsOut>("/v1/audits");
  const [n, setN] = useState("");
  const [sample, setSample] = useState<SampleOut | null>(null);
  const [tallies, setTallies] = useState<Record<string, Tally>>({});
  const [seen, setSeen] = useState<Set<string>>(new Set());
  const [current, setCurrent] = useState(0);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const [result, setResult] = useState<AuditResult | null>(null);

  const clips = sample?.clips ?? [];
  const clip = clips[current] ?? null;
  useEffect(() => {
    if (clip) setSeen((s) => (s.has(clip.clip_id) ? s : new Set([...s, clip.clip_id])));
  }, [clip]);

  const start = async () => {
    setBusy(true);
    setError(null);
    setResult(null);
    try {
      const body = n.trim() ? { clips: Number(n) } : {};
      const s = await sendJson<SampleOut>("POST", "/v1/audits/sample", body);
      setSample(s);
      setTallies(Object.fromEntries(s.clips.map((c) => [c.clip_id, { in: 0, out: 0 }])));
      setSeen(new Set());
      setCurrent(0);
    } catch (e) {
      setError(toApiError(e));
    } finally {
      setBusy(false);
    }
  };

  const submit = async () => {
    if (!sample) return;
    setBusy(true);
    setError(null);
    try {
      const r = await sendJson<AuditResult>("POST", "/v1/audits", {
        clips: sample.clips.map((c) => ({
          camera_id: c.camera_id, line_id: c.line_id, crossing_ts_ms: c.crossing_ts_ms,
          in: tallies[c.clip_id]?.in ?? 0, out: tallies[c.clip_id]?.out ?? 0,
        })),
      });
      setResult(r);
      setSample(null);
      past.reload();
    } catch (e) {
      setError(toApiError(e));
    } finally {
      setBusy(false);
    }
  };

  const setTally = (id: string, t: Tally) => setTallies((all) => ({ ...all, [id]: t }));
  const allSeen = clips.length > 0 && clips.every((c) => seen.has(c.clip_id));

  return (
    <>
      <Problem error={past.error ?? error} />
      {canAudit && !sample && (
        <Card title="New audit" testId="audit-start">
          <p className="muted small">
            Clips of a few seconds around line crossings picked at random from the stored history. Watch each one and
            count the people who walk across the yellow line: toward the arrow is <b>in</b>, the other way <b>out</b>.
            The system's counts are shown after you submit.
          </p>
          <div className="toolbar">
            <label className="field">
              <span>Clips (1–50)</span>
              <input type="number" min={1} max={50} value={n} placeholder="site default" onChange={(e) => setN(e.target.value)}
                data-testid="audit-clips" style={{ width: "8rem" }} />
            </label>
            <button className="primary" onClick={start} disabled={busy} data-testid="audit-start-button">
              {busy ? "Sampling…" : "Start audit"}</button>
          </div>
        </Card>
      )}
      {!canAudit && <div className="muted empty">Only managers and admins run audits.</div>}
      {sample && clip && (
        <Card title={`Clip ${current + 1} of ${clips.length}`} testId="audit-clip"
          actions={<span className="muted small">{clip.camera_id} · line {clip.line_id} · {fmtTime(clip.start_ms)}</span>}>
          <Player clip={clip} />
          <div className="toolbar" style={{ marginTop: "0.75rem" }}>
            <Counter label="In" value={tallies[clip.clip_id]?.in ?? 0} testId="tally-in"
              onChange={(v) => setTally(clip.clip_id, { ...tallies[clip.clip_id], in: v })} />
            <Counter label="Out" value={tallies[clip.clip_id]?.out ?? 0} testId="tally-out"
              onChange={(v) => setTally(clip.clip_id, { ...tallies[clip.clip_id], out: v })} />
            <span className="spacer" style={{ flex: 1 }} />
            <button onClick={() => setCurrent(current - 1)} disabled={current === 0} data-testid="prev-clip">Previous clip</button>
            <button onClick={() => setCurrent(current + 1)} disabled={current + 1 >= clips.length} data-testid="next-clip">Next clip</button>
          </div>
          <div className="table-wrap">
            <table className="table" data-testid="audit-tallies">
              <thead><tr><th>Clip</th><th>Camera</th><th>Line</th><th>In</th><th>Out</th><th>Watched</th></tr></thead>
              <tbody>
                {clips.map((c, i) => (
                  <tr key={c.clip_id} data-testid={`audit-clip-${i}`} className={i === current ? "active" : ""}
                    onClick={() => setCurrent(i)} style={{ cursor: "pointer", fontWeight: i === current ? 600 : undefined }}>
                    <td>{i + 1}</td><td>{c.camera_id}</td><td>{c.line_id}</td>
                    <td>{tallies[c.clip_id]?.in ?? 0}</td><td>{tallies[c.clip_id]?.out ?? 0}</td>
                    <td>{seen.has(c.clip_id) ? "yes" : "-"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <div className="toolbar" style={{ marginTop: "0.75rem" }}>
            <button className="primary" onClick={submit} disabled={busy || !allSeen} data-testid="audit-submit">
              {busy ? "Submitting…" : "Submit tally"}</button>
            <button onClick={() => setSample(null)} disabled={busy}>Cancel</button>
            {!allSeen && <span className="muted small">Open every clip before submitting.</span>}
          </div>
        </Card>
      )}
      {result && (
        <Card title="Audit result" testId="audit-result">
          <div className="stats">
            <div className="stat">
              <div className="stat-label">Accuracy (exact clips)</div>
              <div className="stat-value" data-testid="result-accuracy">{fmtPct(result.accuracy)}</div>
              <div className="stat-sub">{result.n_correct} of {result.n_clips} clips</div>
            </div>
            <div className="stat">
              <div className="stat-label">Interval (confidence)</div>
              <div className="stat-value" style={{ fontSize: "1.4rem" }} data-testid="result-interval">
                {fmtInterval(result.ci_low, result.ci_high, result.confidence)}</div>
              <div className="stat-sub">Wilson score interval</div>
            </div>
            <div className="stat">
              <div className="stat-label">Count accuracy</div>
              <div className="stat-value" data-testid="result-count-accuracy">{fmtPct(result.count_accuracy)}</div>
            </div>
          </div>
          <div className={result.alerted ? "problem" : "ok"} role="status" data-testid="result-alert">
            {result.alerted
              ? `Below the minimum accuracy of ${fmtPct(result.min_accuracy)}: a count_accuracy alert was raised.`
              : `At or above the minimum accuracy of ${fmtPct(result.min_accuracy)}.`}
          </div>
          <div className="table-wrap">
            <table className="table" data-testid="result-clips">
              <thead><tr><th>Clip</th><th>System in / out</th><th>You in / out</th><th></th></tr></thead>
              <tbody>
                {result.clips.map((c, i) => (
                  <tr key={c.clip_id}>
                    <td>{i + 1}</td><td>{c.system_in} / {c.system_out}</td><td>{c.person_in} / {c.person_out}</td>
                    <td>{c.correct ? "agree" : "differ"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </Card>
      )}
      <Card title="Past audits" testId="audits">
        <Loading on={past.loading && !past.data} />
        <Empty on={!!past.data && past.data.audits.length === 0}>No audits yet.</Empty>
        {past.data && past.data.audits.length > 0 && (
          <div className="table-wrap">
            <table className="table" data-testid="audits-table">
              <thead><tr><th>When</th><th>Who</th><th>Clips</th><th>Accuracy</th><th>Interval</th><th>Alert</th></tr></thead>
              <tbody>
                {past.data.audits.map((a) => (
                  <tr key={a.audit_id} data-testid={`audit-row-${a.audit_id}`}>
                    <td>{fmtTime(a.ts_ms)}</td><td>{a.auditor}</td><td>{a.n_correct} / {a.n_clips}</td>
                    <td data-testid="accuracy">{fmtPct(a.accuracy)}</td>
                    <td data-testid="interval">{fmtInterval(a.ci_low, a.ci_high, a.confidence)}</td>
                    <td>{a.alerted ? "raised" : "-"}</td>
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
