// Returning customers (GET /v1/customers; pseudonymous ids, no images) with erasure (DELETE, admins only).
import { useState } from "react";
import { atLeast, fmtTime, qs, request, toApiError, useApi, type ApiError, type CustomersOut } from "../api";
import { Card, Empty, Loading, Problem, Select, useClampedPage } from "../ui";
import type { ViewProps } from "../App";

export function CustomersView({ me }: ViewProps) {
  const [page, setPage] = useState(1);
  const [returning, setReturning] = useState<"" | "true" | "false">("");
  const list = useApi<CustomersOut>(`/v1/customers${qs({ page, page_size: 50, returning: returning || undefined })}`);
  const [confirm, setConfirm] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const isAdmin = atLeast(me.role, "admin");

  // An erasure answered 503 erased the stores but could not tell the recognition service: the customer leaves the
  // list (re-read after any failure), and the retry the API asks for is offered (it answers 204 once sent).
  const [retry, setRetry] = useState<string | null>(null);
  const erase = async (id: string) => {
    setError(null);
    setRetry(null);
    try {
      await request(`/v1/customers/${encodeURIComponent(id)}`, { method: "DELETE" });
      setDone(`Customer ${id} erased.`);
      setConfirm(null);
      list.reload();
    } catch (e) {
      const err = toApiError(e);
      setError(err);
      setDone(null);
      if (err.status === 503) setRetry(id);
      list.reload();
    }
  };

  const d = list.data;
  const pages = d ? Math.max(1, Math.ceil(d.total / d.page_size)) : 1;
  // a page emptied meanwhile (its last customer erased): the last page there is
  useClampedPage(page - 1, d ? pages : undefined, (i) => setPage(i + 1));
  return (
    <>
      <div className="toolbar">
        <Select label="Customers" value={returning} onChange={(v) => { setReturning(v); setPage(1); }}
          options={[{ value: "", label: "All" }, { value: "true", label: "Returning" }, { value: "false", label: "First visit" }]} />
      </div>
      <Problem error={list.error ?? error} />
      {retry && (
        <button className="danger" onClick={() => erase(retry)} data-testid="erase-retry">
          Retry the erasure of {retry}
        </button>
      )}
      {done && <div className="ok" role="status">{done}</div>}
      <Loading on={list.loading && !d} />
      {d && (
        <Card title={`Customers (${d.total})`} testId="customers">
          <Empty on={d.items.length === 0}>No customers.</Empty>
          {d.items.length > 0 && (
            <div className="table-wrap">
              <table className="table">
                <thead><tr><th>Customer</th><th>Visits</th><th>Returning</th><th>First seen</th><th>Last seen</th>
                  <th>Cameras</th>{isAdmin && <th></th>}</tr></thead>
                <tbody>
                  {d.items.map((c) => (
                    <tr key={c.customer_id} data-testid={`customer-${c.customer_id}`}>
                      <td className="mono">{c.customer_id}</td><td>{c.visits}</td><td>{c.returning ? "yes" : "no"}</td>
                      <td>{fmtTime(c.first_seen_ts_ms)}</td><td>{fmtTime(c.last_seen_ts_ms)}</td><td>{c.cameras.join(", ")}</td>
                      {isAdmin && (
                        <td>
                          {confirm === c.customer_id ? (
                            <span className="row-actions">
                              <button className="danger" onClick={() => erase(c.customer_id)} data-testid="erase-confirm">
                                Erase for good</button>
                              <button onClick={() => setConfirm(null)}>Cancel</button>
                            </span>
                          ) : (
                            <button className="danger" onClick={() => setConfirm(c.customer_id)} data-testid="erase">Erase</button>
                          )}
                        </td>
                      )}
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          {pages > 1 && (
            <div className="pager">
              <button disabled={page <= 1} onClick={() => setPage(page - 1)}>Previous</button>
              <span>Page {page} of {pages}</span>
              <button disabled={page >= pages} onClick={() => setPage(page + 1)}>Next</button>
            </div>
          )}
          {!isAdmin && <div className="muted small">Erasing a customer is for admins only.</div>}
        </Card>
      )}
    </>
  );
}
