"""Review of what a chain's analyst uses (batch 34), each fix with a test that fails on the code before.

1. ``GET /v1/chain/kpis`` refused more than 2000 buckets over all the groups together: a 30-store chain by store
   over the Stores page's "Last 91 days" (2730 day buckets), or a 72-store one over 28 days, was a 422 and the
   page an error, while the storage was built for a quarter of a 200-store chain. The limit is now 2000 buckets
   in a group (its time axis, as a store's own ``/v1/kpis``) and 20,000 in all.
2. The limit was checked after every store-hour of the range was read into memory: ``period=hour`` over 400 days
   of 10 stores (96,000 rows) took 9 s and 200 MB to answer 422; a 200-store chain's 1.9 million rows would take
   the API process down (any viewer). The buckets are now counted in SQL first (a lower bound: each group's
   distinct local hours or business days).
3. A store of the selection without an hour in the range (its roll-up stopped) was in no group and nowhere else:
   the comparison lost it silently. ``stores_without_hours`` names it, and so does the Stores page.
"""
from __future__ import annotations

import datetime as dt
import re

import pytest
import sqlalchemy as sa
from test_chain_rollup import CHAIN
from test_dashboard_browser import browser, open_view, serve_site, settle  # noqa: F401 (browser: a fixture)
from test_dashboard_browser import sign_in as browser_sign_in

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.stages.rollup import ChainRollupStage
from storelens.storage import SqlStorage

HOUR = 3_600_000
D0 = dt.date(2026, 1, 5)  # a Monday


def day_hours(store: str, day: dt.date, currency: str = "EUR", visitors: int = 10, region: str = "north",
              other: dict[str, tuple[int, int]] | None = None) -> list[m.StoreKpiHour]:
    """The 24 hours (UTC) of ``store``'s ``day``: ``visitors`` and one sale of 10.00 each."""
    start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
    return [m.StoreKpiHour(
        store_id=store, store_name=store.upper(), region=region, timezone="UTC", start_ms=start + i * HOUR,
        end_ms=start + (i + 1) * HOUR, day=day.isoformat(), label=f"{day.isoformat()}T{i:02d}:00+00:00", hours=1.0,
        visitors=visitors, transactions=1, sales_minor=1000, currency=currency, computed_ms=1, buying_units=-1,
        other_sales=[m.CurrencySales(currency=c, transactions=n, sales_minor=s) for c, (n, s) in (other or {}).items()])
        for i in range(24)]


def write_hours(storage, hours: list[m.StoreKpiHour]) -> None:
    """The hours as the chain's stage makes them records (the hour and its store), written in batches."""
    stage = ChainRollupStage(parse_config(CHAIN))
    records = [r for h in hours for r in stage.handle("store-kpis", h).records]
    for k in range(0, len(records), 4000):
        storage.write_records(records[k:k + 4000])


def hour_row_reads(storage) -> tuple[list[str], object]:
    """The SQL statements that read the store-hours themselves (their histogram bins), as they run."""
    seen: list[str] = []

    def listen(conn, cursor, statement, params, context, executemany) -> None:
        if "dwell_h00" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    sa.event.listen(storage.db.engine, "before_cursor_execute", listen)
    return seen, listen


# -- 1. and 2. the bucket limits: per group and in all, checked before the rows are read ----------------------


LAST_42 = (D0 + dt.timedelta(days=41)).isoformat()
LAST_84 = (D0 + dt.timedelta(days=83)).isoformat()
#: (query, status, buckets answered) over store a's 84 days (2016 hours) and store b's first 42 (1008 hours)
HOUR_CASES = [
    ({"group_by": "chain", "store": ["a"], "to_day": LAST_84}, 422, None),  # 2016 local hours
    ({"group_by": "store", "to_day": LAST_84}, 422, None),  # a: 2016 hours
    ({"group_by": "region", "to_day": LAST_84}, 422, None),  # one region: 2016 hours
    ({"group_by": "store", "to_day": LAST_42}, 200, 2016),  # a and b: 1008 hours each (before: 422)
    ({"group_by": "region", "to_day": LAST_42}, 200, 1008),
    ({"group_by": "chain", "to_day": LAST_42, "currency": "EUR"}, 200, 1008),
    ({"group_by": "store", "store": ["b"], "to_day": LAST_84}, 200, 1008),  # b has no hour after its 42 days
]


def get_reading(client, storage, params: dict) -> tuple[object, list[str]]:
    """``GET /v1/chain/kpis`` and the statements that read store-hours while it ran."""
    seen, listen = hour_row_reads(storage)
    try:
        return client.get("/v1/chain/kpis", params=params), seen
    finally:
        sa.event.remove(storage.db.engine, "before_cursor_execute", listen)


def test_too_many_hour_buckets_in_a_group_are_refused_before_the_hours_are_read(history_store) -> None:
    hours = [h for d in range(84) for h in day_hours("a", D0 + dt.timedelta(days=d))]
    hours += [h for d in range(42) for h in day_hours("b", D0 + dt.timedelta(days=d))]
    write_hours(history_store, hours)
    app = create_app(parse_config(CHAIN), history_store)
    with signed_in_client(app, role="viewer") as c:
        for params, status, buckets in HOUR_CASES:
            r, seen = get_reading(c, history_store, {"period": "hour", "from_day": D0.isoformat(), **params})
            assert r.status_code == status, (params, r.text)
            if status == 422:
                assert r.json()["detail"] == "more than 2000 hour buckets in a group: narrow the range"
                assert seen == [], params  # before: every store-hour of the range read, then refused
            else:
                assert sum(len(g["buckets"]) for g in r.json()["groups"]) == buckets, params


def test_a_chain_of_30_stores_is_compared_by_day_over_91_days(history_store, monkeypatch) -> None:
    """The Stores page's longest range by store and day; over the limit in all, refused before the rows are read."""
    from storelens.api.routes import chain

    days = [D0 + dt.timedelta(days=d) for d in range(91)]
    write_hours(history_store, [day_hours(f"s{i:02d}", d)[12] for i in range(30) for d in days])  # noon only
    app = create_app(parse_config(CHAIN), history_store)
    q = {"period": "day", "group_by": "store", "from_day": days[0].isoformat(), "to_day": days[-1].isoformat()}
    with signed_in_client(app, role="viewer") as c:
        r = c.get("/v1/chain/kpis", params=q)
        assert r.status_code == 200, r.text  # before: 422, more than 2000 day buckets
        assert [len(g["buckets"]) for g in r.json()["groups"]] == [91] * 30
        assert r.json()["chain"]["visitors"] == 30 * 91 * 10
        week = c.get("/v1/chain/kpis", params={**q, "period": "week"}).json()
        assert [len(g["buckets"]) for g in week["groups"]] == [13] * 30
        monkeypatch.setattr(chain, "MAX_ANSWER_BUCKETS", 2729)  # one bucket less than the answer's
        r, seen = get_reading(c, history_store, q)
        assert r.status_code == 422 and "more than 2729 day buckets in all the groups" in r.json()["detail"]
        assert seen == []
        r, seen = get_reading(c, history_store, {**q, "period": "week"})  # 390 weeks in all: answered
        assert r.status_code == 200 and seen


def test_sales_only_rows_do_not_make_a_request_that_fits_refused(history_store) -> None:
    """Rows that make no group of their own (a store's sales in a second currency) are not counted as buckets:
    2000 buckets exactly are answered."""
    hours = [h for d in range(84) for h in day_hours("a", D0 + dt.timedelta(days=d))][:2000]
    hours += [h for d in range(2) for h in day_hours("c", D0 + dt.timedelta(days=d), currency="CHF",
                                                         other={"EUR": (2, 500)})]
    write_hours(history_store, hours)
    app = create_app(parse_config(CHAIN), history_store)
    with signed_in_client(app, role="viewer") as c:
        r = c.get("/v1/chain/kpis", params={"period": "hour", "group_by": "store", "currency": "EUR",
                                            "from_day": D0.isoformat(), "to_day": LAST_84})
    assert r.status_code == 200, r.text
    (a,) = r.json()["groups"]
    assert len(a["buckets"]) == 2000 and a["totals"]["visitors"] == 20_000
    assert r.json()["chain"]["transactions"] == 2000 + 48 * 2  # c's euro sales counted, in no group


# -- 3. a selected store without hours in the range is named -----------------------------------------------------


def stale_store_hours() -> list[m.StoreKpiHour]:
    """a and b: a week from D0; z: one day a month before (its roll-up stopped)."""
    week = [D0 + dt.timedelta(days=d) for d in range(7)]
    return ([h for d in week for h in day_hours("a", d)] + [h for d in week for h in day_hours("b", d)]
            + day_hours("z", D0 - dt.timedelta(days=30), region="south"))


@pytest.mark.parametrize("params, absent, groups", [
    ({}, ["z"], ["a", "b"]),
    ({"store": ["a", "z"]}, ["z"], ["a"]),
    ({"region": "south"}, ["z"], []),
    ({"group_by": "region"}, ["z"], ["north"]),
    ({"currency": "EUR"}, ["z"], ["a", "b"]),
    ({"currency": "CHF"}, [], []),  # z sells in EUR: not of the CHF selection
    ({"store": ["a"]}, [], ["a"]),
])
def test_a_selected_store_without_hours_in_the_range_is_named(history_store, params, absent, groups) -> None:
    write_hours(history_store, stale_store_hours())
    app = create_app(parse_config(CHAIN), history_store)
    with signed_in_client(app, role="viewer") as c:
        r = c.get("/v1/chain/kpis", params={"from_day": D0.isoformat(),
                                            "to_day": (D0 + dt.timedelta(days=6)).isoformat(), **params})
    assert r.status_code == 200, r.text
    assert [g["group"] for g in r.json()["groups"]] == groups
    assert r.json()["stores_without_hours"] == absent  # before: no field, z nowhere


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db = tmp_path_factory.mktemp("c34") / "c34.db"
    storage = SqlStorage(str(db))
    write_hours(storage, stale_store_hours())
    with serve_site({**CHAIN, "storage": {"path": str(db)}}, storage) as s:
        yield s


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_stores_page_names_a_store_without_hours(served, browser) -> None:  # noqa: F811
    from playwright.sync_api import expect

    page = browser_sign_in(browser, served, "viewer", locale="en-US")
    open_view(page, "stores")
    settle(page)
    expect(page.get_by_test_id("problem")).to_have_count(0)
    expect(page.get_by_test_id("stores-row-a")).to_have_count(1)
    expect(page.get_by_test_id("stores-row-z")).to_have_count(0)
    silent = page.get_by_test_id("stores-without-data")
    expect(silent).to_contain_text("No hours from")
    expect(silent).to_contain_text(re.compile(r"stopped\): Z \(last roll-up "))
    page.close()
