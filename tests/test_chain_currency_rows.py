"""The chain's rows per currency (review of the batch that gave a store-hour one row per currency).

1. ``currency=`` kept every row of that currency, so a EUR store's CHF sales (a sales-only row: no visitors,
   no open hours) entered the CHF stores' ratios without their visitors: store A (100 visitors, 10 EUR sales
   and 5 CHF sales) and the CHF store B (100 visitors, 10 sales) made CHF's conversion 15 % instead of 10 %,
   and A counted as a CHF store with 0 visitors. Now such rows add to their currency's transactions and sales
   only: never to conversion or sales per visitor, never a store, never a group of their own.
2. The Stores page built its currency picker from ``/v1/stores`` (one currency per store), so a store's second
   currency appeared nowhere. ``/v1/chain/kpis`` gives ``currencies`` (every currency sold in the range, with
   its sales) and the page builds its picker and its per-currency card from them.

The hours are written straight to the chain's storage (SQLite and PostgreSQL); the page is the built dashboard
in a real browser (the helpers of ``test_dashboard_browser``).
"""
from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from test_chain_rollup import CHAIN, roll_into
from test_dashboard_browser import browser, open_view, serve_site, settle  # noqa: F401 (browser: a fixture)
from test_dashboard_browser import sign_in as browser_sign_in

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.storage import SqlStorage

DAYS = ("2026-12-03", "2026-12-04")
TZ = {"eur-a": "Europe/Berlin", "chf-b": "Europe/Zurich"}
REGION = {"eur-a": "de", "chf-b": "ch"}


def kpi_hour(store: str, day: str, hhmm: str, currency: str, visitors: int, transactions: int, sales_minor: int,
             other: dict[str, tuple[int, int]] | None = None) -> m.StoreKpiHour:
    t = dt.datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=zoneinfo.ZoneInfo(TZ[store]))
    start = int(t.timestamp() * 1000)
    return m.StoreKpiHour(
        store_id=store, store_name=store.upper(), region=REGION[store], timezone=TZ[store], start_ms=start,
        end_ms=start + 3_600_000, day=day, label=t.isoformat(timespec="minutes"), hours=1.0, computed_ms=1,
        visitors=visitors, transactions=transactions, sales_minor=sales_minor, currency=currency, buying_units=-1,
        other_sales=[m.CurrencySales(currency=c, transactions=n, sales_minor=s) for c, (n, s) in (other or {}).items()])


def review_hours() -> list[m.StoreKpiHour]:
    """The review's case on the first day (A: 100 visitors, 10 EUR + 5 CHF sales; B: 100 visitors, 10 CHF sales),
    A's yen on the second (A sells in EUR, CHF and JPY; no store sells mainly in JPY)."""
    return [kpi_hour("eur-a", DAYS[0], "10:00", "EUR", 100, 10, 10_000, {"CHF": (5, 4_000)}),
            kpi_hour("chf-b", DAYS[0], "10:00", "CHF", 100, 10, 9_000),
            kpi_hour("eur-a", DAYS[1], "11:00", "EUR", 50, 4, 6_000, {"JPY": (3, 4_500)})]


@pytest.mark.parametrize("period", ["day", "week", "hour"])
def test_sales_of_a_stores_other_currency_count_in_sales_only(history_store, tmp_path, period) -> None:
    roll_into(history_store, review_hours())
    app = create_app(parse_config(CHAIN), history_store)
    q = {"from_day": DAYS[0], "to_day": DAYS[1], "period": period}
    with signed_in_client(app, role="viewer") as c:
        chf = c.get("/v1/chain/kpis", params={**q, "currency": "CHF"}).json()
        chf_chain = c.get("/v1/chain/kpis", params={**q, "currency": "CHF", "group_by": "chain"}).json()
        chf_region = c.get("/v1/chain/kpis", params={**q, "currency": "CHF", "group_by": "region"}).json()
        eur = c.get("/v1/chain/kpis", params={**q, "currency": "EUR"}).json()
        jpy = c.get("/v1/chain/kpis", params={**q, "currency": "JPY"}).json()
        several = c.get("/v1/chain/kpis", params=q)
    # CHF: B's conversion and sales per visitor; A's francs in the transactions and sales, A no CHF store
    ch = chf["chain"]
    assert (ch["stores"], ch["visitors"], ch["transactions"], ch["sales_minor"]) == (1, 100, 15, 13_000)
    assert (ch["conversion"], ch["sales_per_visitor_minor"]) == (0.10, 90.0)  # before: 0.15, 130.0
    assert ch["atv_minor"] == pytest.approx(13_000 / 15)  # the average basket of every franc sale
    assert [g["group"] for g in chf["groups"]] == ["chf-b"]  # before: eur-a too, with 0 visitors
    b = chf["groups"][0]
    assert (b["totals"]["transactions"], b["totals"]["conversion"], b["comparison"]["conversion_index"]) == (
        10, 0.10, 1.0)
    assert [g["group"] for g in chf_region["groups"]] == ["ch"]  # A's region "de" sells no francs of its own
    (whole,) = chf_chain["groups"]
    assert {k: whole["totals"][k] for k in ("stores", "visitors", "transactions", "sales_minor", "conversion")} == {
        "stores": 1, "visitors": 100, "transactions": 15, "sales_minor": 13_000, "conversion": 0.10}
    assert sum(bk["transactions"] for bk in whole["buckets"]) == 15
    # EUR: A alone, its own figures (the other currencies' rows add nothing)
    ea = eur["chain"]
    assert (ea["stores"], ea["visitors"], ea["transactions"], ea["sales_minor"], ea["conversion"]) == (
        1, 150, 14, 16_000, 14 / 150)
    assert [g["group"] for g in eur["groups"]] == ["eur-a"]
    # JPY: sold by no store of its own: its sales, no store, no ratio over visitors
    jp = jpy["chain"]
    assert (jp["stores"], jp["visitors"], jp["transactions"], jp["sales_minor"], jp["conversion"],
            jp["sales_per_visitor_minor"], jp["atv_minor"]) == (0, 0, 3, 4_500, None, None, 1_500.0)
    assert jpy["groups"] == [] and jpy["currency_decimals"] == 0
    # every answer lists every currency sold in the range with its sales, whatever currency= picked
    want = [{"currency": "CHF", "currency_decimals": 2, "stores": 2, "transactions": 15, "sales_minor": 13_000},
            {"currency": "EUR", "currency_decimals": 2, "stores": 1, "transactions": 14, "sales_minor": 16_000},
            {"currency": "JPY", "currency_decimals": 0, "stores": 1, "transactions": 3, "sales_minor": 4_500}]
    assert chf["currencies"] == eur["currencies"] == jpy["currencies"] == want
    assert several.status_code == 422 and "CHF, EUR, JPY" in several.json()["detail"]


def test_currencies_follow_the_range_and_the_stores(history_store) -> None:
    roll_into(history_store, review_hours())
    with signed_in_client(create_app(parse_config(CHAIN), history_store), role="viewer") as c:
        first = c.get("/v1/chain/kpis", params={"from_day": DAYS[0], "to_day": DAYS[0], "currency": "EUR"}).json()
        second = c.get("/v1/chain/kpis", params={"from_day": DAYS[1], "to_day": DAYS[1], "currency": "JPY"}).json()
        only_b = c.get("/v1/chain/kpis", params={"from_day": DAYS[0], "to_day": DAYS[1], "store": "chf-b"}).json()
    assert [(x["currency"], x["transactions"]) for x in first["currencies"]] == [("CHF", 15), ("EUR", 10)]
    # the second day: A alone, in EUR and JPY (A's EUR hour keeps its visitors, the yen are sales only)
    assert [(x["currency"], x["sales_minor"]) for x in second["currencies"]] == [("EUR", 6_000), ("JPY", 4_500)]
    assert (second["chain"]["stores"], second["chain"]["transactions"], second["groups"]) == (0, 3, [])
    assert only_b["currency"] == "CHF" and only_b["currencies"] == [
        {"currency": "CHF", "currency_decimals": 2, "stores": 1, "transactions": 10, "sales_minor": 9_000}]


# -- the Stores page --------------------------------------------------------------------------------------

PAGE_TZ = {"eur-01": "Europe/Berlin", "jpy-01": "Asia/Tokyo"}


def page_hours() -> list[m.StoreKpiHour]:
    """Two days of an hour each: eur-01 sells in EUR and in USD, jpy-01 in JPY (``/v1/stores``: EUR and JPY)."""
    out = []
    for day in DAYS:
        for store, cur, vis, tx, sales, other in (("eur-01", "EUR", 10, 2, 2_500, [("USD", 1, 4_000)]),
                                                  ("jpy-01", "JPY", 8, 2, 50_000, [])):
            t = dt.datetime.fromisoformat(f"{day}T10:00").replace(tzinfo=zoneinfo.ZoneInfo(PAGE_TZ[store]))
            start = int(t.timestamp() * 1000)
            out.append(m.StoreKpiHour(
                store_id=store, store_name=store.upper(), timezone=PAGE_TZ[store], start_ms=start,
                end_ms=start + 3_600_000, day=day, label=t.isoformat(timespec="minutes"), hours=1.0, computed_ms=1,
                visitors=vis, transactions=tx, sales_minor=sales, currency=cur, buying_units=-1,
                other_sales=[m.CurrencySales(currency=c, transactions=n, sales_minor=s) for c, n, s in other]))
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db = tmp_path_factory.mktemp("h13") / "h13.db"
    storage = SqlStorage(str(db))
    roll_into(storage, page_hours())
    with serve_site({**CHAIN, "storage": {"path": str(db)}}, storage) as s:
        yield s


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_stores_page_shows_a_stores_second_currency(served, browser) -> None:  # noqa: F811
    from playwright.sync_api import expect

    page = browser_sign_in(browser, served, "viewer", locale="en-US")
    open_view(page, "stores")
    settle(page)
    expect(page.get_by_test_id("problem")).to_have_count(0)
    # the card: every currency sold, the dollars too (before: EUR and JPY only, /v1/stores' currencies)
    per = page.get_by_test_id("stores-currencies")
    expect(per.get_by_test_id("stores-currency-USD").get_by_test_id("sales")).to_have_text("$80.00")
    picker = page.get_by_test_id("stores-currency")
    assert picker.locator("option").evaluate_all("os => os.map(o => o.value)") == ["EUR", "JPY", "USD"]
    want = {"EUR": ("1", "4", "€50.00", "€12.50"), "JPY": ("1", "4", "¥100,000", "¥25,000"),
            "USD": ("1", "2", "$80.00", "$40.00")}
    for cur, (stores, tx, sales, atv) in want.items():
        row = per.get_by_test_id(f"stores-currency-{cur}")
        expect(row.get_by_test_id("sales")).to_have_text(sales)
        expect(row.get_by_test_id("atv")).to_have_text(atv)
        expect(row.get_by_test_id("stores")).to_have_text(stores)
        expect(row.get_by_test_id("transactions")).to_have_text(tx)
    expect(page.get_by_test_id("stores-row-eur-01").get_by_test_id("atv")).to_have_text("€12.50")
    # the dollars: no store sells mainly in them, so no store row and no conversion; their sales are there
    picker.select_option("USD")
    expect(page.get_by_test_id("stores-selection")).to_contain_text("0 store(s), 0 visitors, 2 transactions")
    expect(page.get_by_test_id("stores-row-eur-01")).to_have_count(0)
    picker.select_option("EUR")
    expect(page.get_by_test_id("stores-selection")).to_contain_text("1 store(s), 20 visitors, 4 transactions")
    settle(page)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path="/tmp/h13-stores.png", full_page=True)
    page.close()
