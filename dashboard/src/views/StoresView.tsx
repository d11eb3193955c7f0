// The chain's stores compared (GET /v1/stores, GET /v1/chain/kpis): by store, region or the whole chain,
// on each store's own business days; conversion and sales per visitor as an index of the selection (1.0 = equal).
// Money is never added up across currencies: with sales in several, the comparison is of the stores of one
// currency (picked) and the totals are per currency. The currencies are the ones sold in the range (the API's
// `currencies`), a store's second currency too: picked, its sales count in transactions and sales, and the
// stores selling it beside their own are no rows of the comparison. Amounts come in minor units of the currency
// (its currency_decimals: 0 for JPY, 3 for KWD) and are shown as Intl shows that currency (fmtMoney).
import { useMemo, useState } from "react";
import { fmtMoney, fmtNum, fmtPct, fmtTime, qs, useApi, useLast } from "../api";
import { Chart, PALETTE } from "../Chart";
import { Card, Empty, Loading, Problem, Select } from "../ui";
import type { ViewProps } from "../App";

interface StoreOut { store_id: string; name: string; region: string; timezone: string; currency: string | null; updated_ms: number }
interface Values {
  visitors: number; staff_in: number; transactions: number; sales_minor: number; conversion: number | null;
  atv_minor: number | null; sales_per_visitor_minor: number | null; median_dwell_s: number | null;
  queue_wait_median_s: number | null; abandonments: number; hours: number; stores: number; suppressed: boolean;
}
interface Bucket extends Values { key: string; label: string }
interface Group {
  group: string; name: string; region: string | null; store_ids: string[]; totals: Values; buckets: Bucket[];
  comparison: { conversion_index: number | null; sales_per_visitor_index: number | null; visitors_share: number | null;
                rank_conversion: number | null };
}
interface CurrencySales { currency: string; currency_decimals: number; stores: number; transactions: number; sales_minor: number }
interface ChainKpis {
  from_day: string; to_day: string; currency: string | null; currency_decimals: number | null; chain: Values; groups: Group[];
  currencies: CurrencySales[]; stores_without_hours: string[];
}

type GroupBy = "store" | "region" | "chain";
type Period = "day" | "week";
const DAYS: Record<string, number> = { "7": 7, "28": 28, "91": 91 };

function isoDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

/** The first day of the last `n` days up to `to` (YYYY-MM-DD); by week the Monday of its ISO week: the API
 *  widens a week's range to whole weeks (Monday to Sunday, as a store's own week) and answers the days covered. */
function firstDay(to: string, n: number, period: Period): string {
  const first = new Date(Date.parse(to) - (n - 1) * 86_400_000);
  if (period === "week") first.setUTCDate(first.getUTCDate() - ((first.getUTCDay() + 6) % 7));
  return isoDay(first);
}

/** A currency's sales over the range: a row of the per-currency table. */
function CurrencyTotals({ c }: { c: CurrencySales }) {
  const money = (minor: number | null) => fmtMoney(minor, c.currency, c.currency_decimals);
  return (
    <tr data-testid={`stores-currency-${c.currency}`}>
      <td>{c.currency}</td><td data-testid="stores">{c.stores}</td><td data-testid="transactions">{c.transactions}</td>
      <td data-testid="sales">{money(c.sales_minor)}</td>
      <td data-testid="atv">{money(c.transactions ? c.sales_minor / c.transactions : null)}</td>
    </tr>
  );
}

export function StoresView(_: ViewProps) {
  const [groupBy, setGroupBy] = useState<GroupBy>("store");
  const [period, setPeriod] = useState<Period>("day");
  const [days, setDays] = useState("7");
  const [picked, setPicked] = useState("");
  const stores = useApi<{ stores: StoreOut[]; regions: string[] }>("/v1/stores");
  // the API adds sales up in one currency only (several: it needs currency=): the one picked, else a store's
  // (any currency= answers with `currencies`, every currency sold in the range, from which the user picks): first
  // the currency of the most stores (30 EUR stores and 1 CHF: EUR), of equals the first alphabetically
  const own = new Map<string, number>();
  for (const s of stores.data?.stores ?? []) if (s.currency) own.set(s.currency, (own.get(s.currency) ?? 0) + 1);
  const usual = [...own].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0]?.[0];
  const currency = picked || usual || undefined;
  // the range ends on the newest business day a store (of the currency) reported (the API's default end); while
  // that is asked again (another currency picked) the last one known: the figures come in one answer, not two in a
  // row (and again if the currency's newest day differs)
  const first = useApi<ChainKpis>(stores.data && stores.data.stores.length
    ? `/v1/chain/kpis${qs({ group_by: "chain", currency })}` : null);
  const to = useLast(first.data?.to_day);
  const from = to ? firstDay(to, DAYS[days], period) : undefined;
  const k = useApi<ChainKpis>(to ? `/v1/chain/kpis${qs({ group_by: groupBy, period, from_day: from, to_day: to, currency })}` : null);
  const sold = k.data?.currencies ?? [];
  // the currencies to pick from: the last answer's while the next one loads (the picker stays)
  const known = useLast(k.data?.currencies) ?? [];
  const currencies = [...new Set([...known.map((c) => c.currency), ...(currency ? [currency] : [])])].sort();

  const option = useMemo(() => {
    const groups = k.data?.groups ?? [];
    const keys = [...new Set(groups.flatMap((g) => g.buckets.map((b) => b.key)))].sort();
    return {
      tooltip: { trigger: "axis" },
      legend: { type: "scroll", top: 0 },
      grid: { left: 40, right: 12, top: 32, bottom: 28, containLabel: true },
      xAxis: { type: "category", data: keys },
      yAxis: { type: "value", name: "conversion", axisLabel: { formatter: (v: number) => `${Math.round(v * 100)}%` } },
      series: groups.slice(0, 12).map((g, i) => ({
        type: "line", name: g.name, color: PALETTE[i % PALETTE.length], connectNulls: false,
        data: keys.map((key) => g.buckets.find((b) => b.key === key)?.conversion ?? null),
      })),
    };
  }, [k.data]);

  const money = (minor: number | null | undefined) => fmtMoney(minor, k.data?.currency, k.data?.currency_decimals);
  const rows = [...(k.data?.groups ?? [])].sort((a, b) =>
    (a.comparison.rank_conversion ?? 1e9) - (b.comparison.rank_conversion ?? 1e9));
  // the stores selected (of the currency compared) that reported nothing in the range (stores_without_hours): the
  // API leaves them out of the groups, so without this a store whose roll-up stopped vanished from the comparison
  const byId = new Map((stores.data?.stores ?? []).map((s) => [s.store_id, s]));
  const silent = (k.data?.stores_without_hours ?? []).map((id) => {
    const s = byId.get(id);
    return s ? `${s.name || id} (last roll-up ${fmtTime(s.updated_ms)})` : id;
  });
  return (
    <>
      <div className="toolbar">
        <Select label="Compare" value={groupBy} onChange={setGroupBy} testId="stores-group-by"
                options={[{ value: "store", label: "Stores" }, { value: "region", label: "Regions" },
                          { value: "chain", label: "Whole chain" }]} />
        <Select label="Per" value={period} onChange={setPeriod} options={[{ value: "day", label: "Day" }, { value: "week", label: "Week" }]} />
        <Select label="Days" value={days} onChange={setDays}
                options={[{ value: "7", label: "Last 7 days" }, { value: "28", label: "Last 28 days" },
                          { value: "91", label: "Last 91 days" }]} />
        {currencies.length > 1 && (
          <Select label="Currency" value={currency ?? ""} onChange={setPicked} testId="stores-currency"
                  options={currencies.map((c) => ({ value: c, label: `Sales in ${c}` }))} />
        )}
      </div>
      <Problem error={stores.error ?? first.error ?? k.error} />
      <Loading on={(stores.loading && !stores.data) || (!k.data && (first.loading || k.loading))} />
      <Empty on={!!stores.data && stores.data.stores.length === 0}>
        No store has rolled its KPIs up here yet (the chain's chain-rollup service, or{" "}
        <code>storelens kpis publish</code>).
      </Empty>
      {k.data && (
        <>
          <Card title={`Conversion per ${period}, ${k.data.from_day} to ${k.data.to_day}${
            period === "week" ? " (whole weeks)" : ""}`}>
            <Chart option={option} height={280} testId="stores-chart" />
          </Card>
          <Card title="Compared with the selection (index 1.00 = the selection's)" testId="stores-table">
            <div className="table-wrap">
              <table className="table">
                <thead>
                  <tr>
                    <th>#</th><th>{groupBy === "store" ? "Store" : groupBy === "region" ? "Region" : "Chain"}</th>
                    {groupBy === "store" && <th>Region</th>}
                    <th>Visitors</th><th>Transactions</th><th>Conversion</th><th>Conv. index</th>
                    <th>Avg. basket</th><th>Sales / visitor</th><th>Median dwell</th><th>Queue wait</th>
                  </tr>
                </thead>
                <tbody>
                  {rows.map((g) => (
                    <tr key={g.group} data-testid={`stores-row-${g.group}`}>
                      <td>{g.comparison.rank_conversion ?? "–"}</td>
                      <td>{g.name || "(no region)"}</td>
                      {groupBy === "store" && <td>{g.region || "–"}</td>}
                      <td data-testid={`stores-visitors-${g.group}`}>{g.totals.visitors}</td>
                      <td>{g.totals.transactions}</td>
                      <td>{fmtPct(g.totals.conversion)}</td>
                      <td>{fmtNum(g.comparison.conversion_index)}</td>
                      <td data-testid="atv">{money(g.totals.atv_minor)}</td>
                      <td>{money(g.totals.sales_per_visitor_minor)}</td>
                      <td>{g.totals.median_dwell_s === null ? (g.totals.suppressed ? "withheld" : "–") : `${Math.round(g.totals.median_dwell_s)} s`}</td>
                      <td>{g.totals.queue_wait_median_s === null ? "–" : `${Math.round(g.totals.queue_wait_median_s)} s`}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
            <div className="muted small" data-testid="stores-selection">
              {k.data.chain.stores} store(s), {k.data.chain.visitors} visitors, {k.data.chain.transactions} transactions
              ({fmtPct(k.data.chain.conversion)}) in the selection{currencies.length > 1 ? ` (sales in ${currency})` : ""};
              each store's own business days and opening hours. A store's sales in a currency beside its own count
              in transactions and sales only, not in conversion.
            </div>
            {silent.length > 0 && (
              <div className="note" role="status" data-testid="stores-without-data">
                No hours from {k.data.from_day} to {k.data.to_day}, not in the comparison (their roll-up may have
                stopped):{" "}{silent.join(", ")}.
              </div>
            )}
          </Card>
          {sold.length > 0 && (
            <Card title={`Sales per currency, ${k.data.from_day} to ${k.data.to_day} (never added up across currencies)`}
                  testId="stores-currencies">
              <div className="table-wrap">
                <table className="table">
                  <thead><tr><th>Currency</th><th>Stores selling in it</th><th>Transactions</th><th>Sales</th>
                    <th>Avg. basket</th></tr></thead>
                  <tbody>
                    {sold.map((c) => <CurrencyTotals key={c.currency} c={c} />)}
                  </tbody>
                </table>
              </div>
            </Card>
          )}
        </>
      )}
    </>
  );
}
