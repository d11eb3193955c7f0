// Alerts (GET /v1/alerts), newest first in pages of PAGE (limit/offset: "Older" pages back to the first alert),
// refreshed when the live feed pushes one; acknowledge (POST .../ack, managers and admins).
import { useEffect, useState } from "react";
import { atLeast, fmtNum, fmtTime, qs, request, toApiError, useApi, type AlertsOut, type ApiError } from "../api";
import { useLive } from "../live";
import { Card, Empty, Loading, Problem, Select, useClampedPage } from "../ui";
import type { ViewProps } from "../App";

type Filter = "all" | "firing" | "unacked" | "acked" | "resolved";

/** Alerts per page. */
const PAGE = 50;

export function AlertsView({ me }: ViewProps) {
  const [state, setState] = useState<Filter>("all");
  const [offset, setOffset] = useState(0);
  const list = useApi<AlertsOut>(`/v1/alerts${qs({ state, limit: PAGE, offset })}`);
  const live = useLive();
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const canAck = atLeast(me.role, "manager");

  useEffect(() => {
    if (live.alerts) list.reload();
  }, [live.alerts]); // eslint-disable-line react-hooks/exhaustive-deps

  const ack = async (id: string) => {
    setBusy(id);
    setError(null);
    try {
      await request(`/v1/alerts/${encodeURIComponent(id)}/ack`, { method: "POST" });
      list.reload();
    } catch (e) {
      setError(toApiError(e));
    } finally {
      setBusy(null);
    }
  };

  const d = list.data;
  // a page emptied meanwhile (alerts resolved under the "firing" filter): the last page there is
  useClampedPage(Math.floor(offset / PAGE), d ? Math.ceil(d.total / PAGE) : undefined, (i) => setOffset(i * PAGE));
  return (
    <>
      <div className="toolbar">
        <Select label="Show" value={state} onChange={(v) => { setState(v); setOffset(0); }} testId="alert-filter"
          options={[{ value: "all", label: "All" }, { value: "firing", label: "Firing" },
            { value: "unacked", label: "Not acknowledged" }, { value: "acked", label: "Acknowledged" },
            { value: "resolved", label: "Resolved" }]} />
      </div>
      <Problem error={list.error ?? error} />
      <Loading on={list.loading && !d} />
      {d && (
        <Card title={`Alerts (${d.total}; ${d.firing} open)`} testId="alerts">
          <Empty on={d.alerts.length === 0}>No alerts.</Empty>
          <div className="alert-list">
            {d.alerts.map((a) => (
              <article key={a.alert_id} className={`alert sev-${a.severity} state-${a.state}`} data-testid={`alert-${a.alert_id}`}>
                <div className="alert-head">
                  <span className={`pill sev-${a.severity}`}>{a.severity}</span>
                  <span className={`pill state-${a.state}`} data-testid="alert-state">{a.state}</span>
                  <b>{a.rule_id}</b>
                  <span className="muted">{a.kind} · {a.camera_id}{a.zone_id ? `/${a.zone_id}` : ""}</span>
                  <span className="spacer" />
                  <span className="muted small">{fmtTime(a.fired_ts_ms)}</span>
                </div>
                <div className="alert-msg">{a.message}</div>
                <div className="alert-foot">
                  <span className="muted small" data-testid="alert-value">fired at {fmtNum(a.value)} · threshold {fmtNum(a.threshold)}
                    {a.cleared_ts_ms ? ` · cleared ${fmtTime(a.cleared_ts_ms)}` : ""}</span>
                  <span className="spacer" />
                  {a.acked_by ? (
                    <span className="ok-text" data-testid="acked">Acknowledged by {a.acked_by} at {fmtTime(a.acked_ts_ms)}</span>
                  ) : canAck ? (
                    <button className="primary" disabled={busy === a.alert_id} onClick={() => ack(a.alert_id)} data-testid="ack">
                      {busy === a.alert_id ? "Acknowledging…" : "Acknowledge"}</button>
                  ) : (
                    <span className="muted small">Not acknowledged</span>
                  )}
                </div>
              </article>
            ))}
          </div>
          {d.total > PAGE && (
            <div className="pager">
              <button disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}
                data-testid="alerts-newer">Newer</button>
              <span data-testid="alerts-page">{d.alerts.length ? `${offset + 1}–${offset + d.alerts.length}` : "none"} of {d.total}</span>
              <button disabled={offset + PAGE >= d.total} onClick={() => setOffset(offset + PAGE)}
                data-testid="alerts-older">Older</button>
            </div>
          )}
        </Card>
      )}
    </>
  );
}
