"""Dashboard follow-ups, in a real browser (the fixtures and helpers of ``test_dashboard_browser``) and at the API.

1. Alerts: the page showed the first 100 alerts only (no older ones) and the navigation's badge counted the alerts
   pushed since the page opened, not the open ones. ``GET /v1/alerts`` gives ``firing`` (open alerts, whatever the
   state filter) beside ``total``; the page goes back with "Older"; the badge is the open count.
2. A relative range ("Last hour") asked a new query on every live push (its start moved by the second), and every
   answer reset the chart's zoom. Now the start moves once a minute, and the zoom stays across a re-read.
3. Stores in several currencies: the page asked for the chain's figures without a currency (the API refuses to add
   up EUR, JPY and KWD: 422) and showed amounts as minor units / 100 (50000 JPY as 500, 12345 fils as 123.45 KWD).
   Now the totals are per currency and amounts are Intl's for the currency, from ``currency_decimals``.

The site here needs no pipeline run: its rows are written straight to storage (alerts, crossings in the last hour
of the wall clock, three stores' rolled-up KPI hours).
"""
from __future__ import annotations

import datetime as dt
import re
import time
import zoneinfo

import pytest
from test_business_review_fixes import roll_into
from test_dashboard_browser import (  # noqa: F401 (browser: the module's fixture)
    DESKTOP, USERS, browser, open_view, serve_site, settle,
)
from test_dashboard_browser import sign_in as browser_sign_in

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent
from storelens.storage import SqlStorage, SqliteStorage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CAM = "cam"
N_ALERTS = 130
PAGE = 50  # the alerts page's page size (AlertsView.tsx)
ALERT_T0 = 1_796_000_000_000
TZ = {"eur-01": "Europe/Berlin", "jpy-01": "Asia/Tokyo", "kwd-01": "Asia/Kuwait"}
#: store -> (currency, visitors, transactions, sales in minor units) of each of its two days
SALES = {"eur-01": ("EUR", 10, 2, 2500), "jpy-01": ("JPY", 8, 2, 50000), "kwd-01": ("KWD", 6, 3, 12345)}
DAYS = ("2026-12-03", "2026-12-04")


def site(db) -> dict:
    return {"store": {"id": "h3", "timezone": "UTC"},
            "cameras": [{"id": CAM, "source": "x.mp4", "lines": [{"id": "door", "a": [0, 0], "b": [100, 100]}]}],
            "privacy": {"k_min": 1}, "storage": {"path": str(db)}}


def alert(i: int) -> m.Alert:
    """Alert ``i`` (the higher the newer); every third one is still open (firing), the newest among them."""
    state = "firing" if i % 3 == 0 else "resolved"
    return m.Alert(alert_id=f"crowd:{CAM}:{i:04d}", rule_id="crowd", kind="camera_occupancy", severity="warning",
                   camera_id=CAM, state=state, ts_ms=ALERT_T0 + i * 1000, seq=i, fired_ts_ms=ALERT_T0 + i * 1000,
                   fired_seq=i, value=5, threshold=4, message=f"alert {i}")


FIRING = sum(1 for i in range(N_ALERTS) if i % 3 == 0)


def kpi_hour(store: str, day: str) -> m.StoreKpiHour:
    t = dt.datetime.fromisoformat(f"{day}T10:00").replace(tzinfo=zoneinfo.ZoneInfo(TZ[store]))
    currency, visitors, transactions, sales = SALES[store]
    return m.StoreKpiHour(store_id=store, store_name=store.upper(), timezone=TZ[store],
                          start_ms=int(t.timestamp() * 1000), end_ms=int(t.timestamp() * 1000) + 3_600_000, day=day,
                          label=t.isoformat(timespec="minutes"), hours=1.0, computed_ms=1, visitors=visitors,
                          transactions=transactions, sales_minor=sales, currency=currency, buying_units=-1)


def fill(storage) -> None:
    storage.write_records([alert(i) for i in range(N_ALERTS)])
    now = int(time.time() * 1000)
    # a crossing a minute over the last 50 minutes (the counts chart's "Last hour")
    storage.write_crossings([CrossingEvent(f"{CAM}:door:{i}:{i}", CAM, "door", i, "in" if i % 2 else "out",
                                           now - i * 60_000 - 5_000, i) for i in range(1, 50)])
    roll_into(storage, [kpi_hour(s, d) for s in SALES for d in DAYS])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db = tmp_path_factory.mktemp("h3") / "h3.db"
    storage = SqlStorage(str(db))
    fill(storage)
    with serve_site(site(db), storage) as s:
        yield s


def sign_in(browser, served, role: str, clock_s: float | None = None):  # noqa: F811
    """A page signed in as ``role`` (en-US); ``clock_s``: the page's clock installed at that time (then running)."""
    return browser_sign_in(browser, served, role, clock_s=clock_s, locale="en-US")


# -- the API --------------------------------------------------------------------------------------


def test_alerts_page_back_to_the_first_and_count_the_open_ones(tmp_path) -> None:
    storage = SqliteStorage(":memory:")
    storage.write_records([alert(i) for i in range(N_ALERTS)] + [
        m.Alert(alert_id="other:c2:1", rule_id="other", kind="camera_occupancy", severity="info", camera_id="c2",
                state="firing", ts_ms=ALERT_T0, fired_ts_ms=ALERT_T0, message="x")])
    with signed_in_client(create_app(parse_config(site(tmp_path / "x.db")), storage), "viewer") as c:
        seen, offset = [], 0
        while True:
            r = c.get("/v1/alerts", params={"limit": PAGE, "offset": offset, "camera_id": CAM}).json()
            assert (r["total"], r["firing"]) == (N_ALERTS, FIRING)
            if not r["alerts"]:
                break
            seen += [a["alert_id"] for a in r["alerts"]]
            offset += PAGE
        resolved = c.get("/v1/alerts", params={"state": "resolved", "limit": 1}).json()
        firing = c.get("/v1/alerts", params={"state": "firing", "limit": 1}).json()
        everything = c.get("/v1/alerts", params={"limit": 1}).json()
        late = c.get("/v1/alerts", params={"limit": 1, "from_ms": ALERT_T0 + 120 * 1000}).json()
    # every alert once, newest first
    assert seen == [f"crowd:{CAM}:{i:04d}" for i in reversed(range(N_ALERTS))]
    assert (resolved["total"], resolved["firing"]) == (N_ALERTS - FIRING, FIRING + 1)  # + c2's
    assert (firing["total"], firing["firing"]) == (FIRING + 1, FIRING + 1)
    assert (everything["total"], everything["firing"]) == (N_ALERTS + 1, FIRING + 1)
    assert late["firing"] == sum(1 for i in range(120, N_ALERTS) if i % 3 == 0)


def test_chain_kpis_give_the_currencys_decimals(tmp_path) -> None:
    storage = SqliteStorage(":memory:")
    roll_into(storage, [kpi_hour(s, d) for s in SALES for d in DAYS])
    with signed_in_client(create_app(parse_config(site(tmp_path / "x.db")), storage), "viewer") as c:
        got = {cur: c.get("/v1/chain/kpis", params={"currency": cur, "group_by": "chain"}).json()
               for cur in ("EUR", "JPY", "KWD")}
    assert {cur: (k["currency_decimals"], k["chain"]["sales_minor"]) for cur, k in got.items()} == {
        "EUR": (2, 5000), "JPY": (0, 100000), "KWD": (3, 24690)}


# -- the browser ----------------------------------------------------------------------------------


def test_the_alerts_page_goes_back_to_older_alerts_and_the_badge_counts_the_open_ones(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer")
    badge = page.get_by_test_id("alerts-badge")
    expect(badge).to_have_text(str(FIRING))
    open_view(page, "alerts")
    settle(page)
    expect(page.get_by_test_id("alerts").locator("h2")).to_have_text(f"Alerts ({N_ALERTS}; {FIRING} open)")
    cards = page.locator("article.alert")
    expect(cards).to_have_count(PAGE)
    expect(page.get_by_test_id("alerts-page")).to_have_text(f"1–{PAGE} of {N_ALERTS}")
    expect(page.get_by_test_id("alerts-newer")).to_be_disabled()
    expect(page.get_by_test_id(f"alert-crowd:{CAM}:{N_ALERTS - 1:04d}")).to_be_visible()
    page.get_by_test_id("alerts-older").click()
    expect(page.get_by_test_id("alerts-page")).to_have_text(f"{PAGE + 1}–{2 * PAGE} of {N_ALERTS}")
    page.get_by_test_id("alerts-older").click()
    expect(page.get_by_test_id("alerts-page")).to_have_text(f"{2 * PAGE + 1}–{N_ALERTS} of {N_ALERTS}")
    expect(cards).to_have_count(N_ALERTS - 2 * PAGE)
    expect(page.get_by_test_id(f"alert-crowd:{CAM}:0000")).to_be_visible()  # the very first alert
    expect(page.get_by_test_id("alerts-older")).to_be_disabled()
    page.evaluate("window.scrollTo(0, 0)")  # a full-page shot of a scrolled page draws the sticky bar mid-page
    page.screenshot(path="/tmp/h3-alerts.png", full_page=True)
    # a manager closes the newest open alert: the live feed pushes it, the badge counts one fewer
    newest = max(i for i in range(N_ALERTS) if i % 3 == 0)
    r = served.client("manager").post(f"/v1/alerts/crowd:{CAM}:{newest:04d}/resolve")
    assert r.status_code == 200 and r.json()["state"] == "resolved", r.text
    expect(badge).to_have_text(str(FIRING - 1))
    page.close()


def test_a_relative_range_is_read_again_once_a_minute_and_keeps_the_zoom(served, browser):  # noqa: F811
    """Live pushes (the camera's occupancy changes) draw the counts view again: no new query, the zoom stays. A
    minute on, the range is read again once, and the chart keeps the window the user zoomed to."""
    from playwright.sync_api import expect

    # the page's clock starts a second past a whole minute (no minute passes unless the test says so)
    t0 = (int(time.time()) // 60 + 1) * 60 + 1
    page = sign_in(browser, served, "viewer", clock_s=t0)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/v1/counts" in r.url else None)
    expect(page.get_by_test_id("live-status")).to_have_text("live")
    open_view(page, "counts")
    page.get_by_test_id("range").select_option("1h")
    chart = page.get_by_test_id("counts-chart")
    chart.wait_for()
    settle(page)
    n0 = len(asked)
    assert n0 >= 1 and "start_ms=" in asked[-1], asked
    # the user zooms into the middle of the hour (mouse wheel on the chart)
    page.wait_for_timeout(300)
    whole = chart.screenshot()
    box = chart.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.45)
    for _ in range(3):
        page.mouse.wheel(0, -300)
        page.wait_for_timeout(150)
    page.wait_for_timeout(300)
    zoomed = chart.screenshot()
    assert zoomed != whole
    zoom = chart.get_attribute("data-zoom")

    # live pushes: the camera's occupancy changes four times, a second or more apart
    for k in range(1, 5):
        served.storage.write_occupancy(m.OccupancyUpdate(camera_id=CAM, ts_ms=int(time.time() * 1000), occupancy=k,
                                                         total_in=k, total_out=0))
        page.wait_for_timeout(1_300)
    page.wait_for_timeout(1_000)
    assert len(asked) == n0, asked[n0:]  # not one new query
    assert chart.screenshot() == zoomed  # drawn as zoomed, not reset to the whole hour
    # the window shown, in the axis' labels (data-zoom "from..to": a minute's bucket each)
    assert re.fullmatch(r"\d\d-\d\d \d\d:\d\d\.\.\d\d-\d\d \d\d:\d\d", zoom or ""), zoom
    assert chart.get_attribute("data-zoom") == zoom

    # a minute on: the range is read once more, the window stays on the same times
    page.clock.fast_forward("01:00")
    deadline = time.monotonic() + 10
    while len(asked) == n0 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    page.wait_for_timeout(1_500)
    assert len(asked) == n0 + 1, asked[n0:]
    assert asked[-1] != asked[n0 - 1]  # the start moved on a minute
    assert chart.get_attribute("data-zoom") == zoom
    page.close()


def test_the_stores_page_gives_totals_per_currency_in_each_currencys_decimals(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer")
    open_view(page, "stores")
    settle(page)
    expect(page.get_by_test_id("problem")).to_have_count(0)
    per = page.get_by_test_id("stores-currencies")
    want = {"EUR": ("€50.00", "€12.50"), "JPY": ("¥100,000", "¥25,000"), "KWD": ("KWD 24.690", "KWD 4.115")}
    for cur, (sales, atv) in want.items():
        row = per.get_by_test_id(f"stores-currency-{cur}")
        expect(row.get_by_test_id("sales")).to_have_text(sales.replace(" ", "\xa0"))
        expect(row.get_by_test_id("atv")).to_have_text(atv.replace(" ", "\xa0"))
    # the comparison: the stores of one currency at a time (EUR first), in that currency
    expect(page.get_by_test_id("stores-row-eur-01").get_by_test_id("atv")).to_have_text("€12.50")
    expect(page.get_by_test_id("stores-row-jpy-01")).to_have_count(0)
    page.get_by_test_id("stores-currency").select_option("JPY")
    expect(page.get_by_test_id("stores-row-jpy-01").get_by_test_id("atv")).to_have_text("¥25,000")
    expect(page.get_by_test_id("stores-row-eur-01")).to_have_count(0)
    page.get_by_test_id("stores-currency").select_option("KWD")
    expect(page.get_by_test_id("stores-row-kwd-01").get_by_test_id("atv")).to_have_text("KWD\xa04.115")
    settle(page)
    page.evaluate("window.scrollTo(0, 0)")  # a full-page shot of a scrolled page draws the sticky bar mid-page
    page.screenshot(path="/tmp/h3-stores.png", full_page=True)
    page.close()
