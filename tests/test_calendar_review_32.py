"""Review of the calendar (batch 32), each fix with a test that fails on the code before.

1. ``/v1/chain/kpis?period=week`` cut its first and last weeks at ``from_day``/``to_day`` while labelling them with
   the whole ISO week (a Wednesday ``from_day``: ``2026-W10`` held Wednesday to Sunday), so a store's week differed
   from ``/v1/kpis?store=...&period=week``'s. The range is widened to whole ISO weeks and the answer's
   ``from_day``/``to_day`` are the days covered.
2. Hourly buckets of a zone whose UTC offset changes its sub-hour part (Australia/Lord_Howe: +10:30, +11:00 in
   summer) were aligned on the offset at the range's start only: after the change they started at :30 local. The
   grid has a run per such change.
"""
from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest
from test_chain_rollup import CHAIN, roll_into
from test_dashboard_browser import browser, open_view, serve_site, settle, sign_in  # noqa: F401 (browser: a fixture)

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.domain.calendar import StoreCalendar, from_ms
from storelens.storage import SqlStorage

HOUR = 3_600_000
DAY_MS = 86_400_000
MONDAY = dt.date(2026, 3, 2)  # ISO week 2026-W10; the hours run two weeks, to Sunday 2026-03-15


def day_hour(store: str, day: dt.date, visitors: int, sales_minor: int) -> m.StoreKpiHour:
    """A store's 10:00 UTC hour on ``day``."""
    start = int(dt.datetime.combine(day, dt.time(10), tzinfo=dt.timezone.utc).timestamp() * 1000)
    return m.StoreKpiHour(store_id=store, store_name=store.upper(), region="north", timezone="UTC",
                          start_ms=start, end_ms=start + HOUR, day=day.isoformat(),
                          label=f"{day.isoformat()}T10:00+00:00", hours=1.0, computed_ms=1, visitors=visitors,
                          transactions=visitors // 10, sales_minor=sales_minor, currency="EUR", buying_units=-1)


def two_weeks() -> list[m.StoreKpiHour]:
    hours = []
    for i in range(14):
        day = MONDAY + dt.timedelta(days=i)
        hours += [day_hour("a", day, 100 + i, 1_000 * (i + 1)), day_hour("b", day, 50 + 3 * i, 700 * (i + 1))]
    return hours


@pytest.mark.parametrize(("from_day", "to_day"), [
    ("2026-03-04", "2026-03-10"),  # Wednesday to the next Tuesday: both weeks cut (the dashboard's last 7 days)
    ("2026-03-02", "2026-03-12"),  # a whole first week, a cut last one
    ("2026-03-06", "2026-03-15"),  # a cut first week, a whole last one
])
def test_chain_weeks_are_whole_iso_weeks_as_the_stores_own(history_store, from_day, to_day) -> None:
    roll_into(history_store, two_weeks())
    app = create_app(parse_config(CHAIN), history_store)
    with signed_in_client(app, role="viewer") as c:
        r = c.get("/v1/chain/kpis", params={"period": "week", "group_by": "store", "from_day": from_day,
                                            "to_day": to_day})
        assert r.status_code == 200, r.text
        chain = r.json()
        own = {}
        for store in ("a", "b"):
            week = c.get("/v1/kpis", params={"store": store, "period": "week",
                                             "start_ms": int(dt.datetime.fromisoformat(f"{from_day}T00:00+00:00")
                                                             .timestamp() * 1000),
                                             "end_ms": int(dt.datetime.fromisoformat(f"{to_day}T00:00+00:00")
                                                           .timestamp() * 1000) + DAY_MS})
            assert week.status_code == 200, week.text
            own[store] = {b["label"]: b for b in week.json()["buckets"]}
        days = c.get("/v1/chain/kpis", params={"period": "day", "from_day": from_day, "to_day": to_day}).json()
    # the days covered: whole ISO weeks, said in the answer
    assert (chain["from_day"], chain["to_day"]) == ("2026-03-02", "2026-03-15")
    for g in chain["groups"]:
        assert [b["label"] for b in g["buckets"]] == ["2026-W10", "2026-W11"]
        for b in g["buckets"]:
            mine = own[g["group"]][b["label"]]
            figures = ("visitors", "transactions", "sales_minor", "conversion", "sales_per_visitor_minor")
            assert {f: b[f] for f in figures} == {f: mine[f] for f in figures}  # before: part of the week
            assert b["hours"] == mine["hours"] == 7.0  # a 10:00 hour each day of the week
        total = sum(b["sales_minor"] for b in g["buckets"])
        assert g["totals"]["sales_minor"] == total
    # period=day keeps the days asked for
    assert (days["from_day"], days["to_day"]) == (from_day, to_day)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_stores_view_by_week_shows_whole_weeks(tmp_path, browser) -> None:  # noqa: F811
    from playwright.sync_api import expect

    storage = SqlStorage(str(tmp_path / "chain.db"))
    # the hours up to Wednesday 2026-03-11: the last 7 days are Thursday 03-05 to 03-11, in weeks W10 and W11
    hours = [h for h in two_weeks() if h.day <= "2026-03-11"]
    roll_into(storage, hours)
    site = {"store": {"id": "hq"}, "cameras": [{"id": "door", "source": "/tmp/x.mp4"}], "privacy": {"k_min": 1}}
    with serve_site(site, storage) as served:
        page = sign_in(browser, served, "viewer", locale="en-US")
        open_view(page, "stores")
        settle(page)
        per = page.locator("label.field").filter(has=page.locator("span", has_text=re.compile(r"^Per$")))
        per.locator("select").select_option("week")
        # before: "2026-03-05 to 2026-03-11", a Thursday-to-Sunday week and a Monday-to-Wednesday one
        expect(page.locator("main .card h2").first).to_have_text(
            "Conversion per week, 2026-03-02 to 2026-03-15 (whole weeks)")
        visitors = sum(h.visitors for h in hours if h.store_id == "a")  # every day of the two weeks
        expect(page.get_by_test_id("stores-visitors-a")).to_have_text(str(visitors))
        page.close()


# -- 2. hourly buckets of a zone whose offset changes its sub-hour part ------------------------------------------------

LORD_HOWE = "Australia/Lord_Howe"  # +10:30; +11:00 from 2026-10-04 02:00 (to 02:30) to 2027-04-04 02:00 (to 01:30)


def ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).timestamp() * 1000)


def local_starts(tz: str, bucket_s: int, start: str, end: str) -> tuple[str, list[tuple[str, int]]]:
    """``aligned_to`` and every bucket of ``grid(bucket_s)`` over the range: (local start, minutes), checked to be
    adjacent and numbered one after the other."""
    grid = StoreCalendar(tz).grid(bucket_s, ms(start), ms(end))
    t, i, out = grid.start_of(ms(start)), grid.index(ms(start)), []
    while t < ms(end):
        assert grid.start_of(t) == t and grid.index(t) == i
        out.append((from_ms(t, zoneinfo.ZoneInfo(tz)).isoformat(timespec="minutes"), (grid.end_of(t) - t) // 60_000))
        t, i = grid.end_of(t), i + 1
    assert grid.count(ms(start), ms(end)) == len(out)
    return grid.aligned_to, out


@pytest.mark.parametrize(("tz", "start", "end", "aligned_to", "buckets"), [
    pytest.param(LORD_HOWE, "2026-10-04T00:00+10:30", "2026-10-04T05:00+11:00", "store_local_hour", [
        ("2026-10-04T00:00+10:30", 60), ("2026-10-04T01:00+10:30", 60),
        ("2026-10-04T02:30+11:00", 30),  # 02:00 to 02:30 skipped: the rest of the local hour 2
        ("2026-10-04T03:00+11:00", 60), ("2026-10-04T04:00+11:00", 60)], id="lord-howe-spring"),  # before: at :30
    pytest.param(LORD_HOWE, "2027-04-04T00:00+11:00", "2027-04-04T04:00+10:30", "store_local_hour", [
        ("2027-04-04T00:00+11:00", 60), ("2027-04-04T01:00+11:00", 60),
        ("2027-04-04T01:30+10:30", 30),  # the half hour repeated
        ("2027-04-04T02:00+10:30", 60), ("2027-04-04T03:00+10:30", 60)], id="lord-howe-autumn"),
    pytest.param(LORD_HOWE, "2026-06-01T00:00+10:30", "2026-06-01T02:00+10:30", "store_local_hour", [
        ("2026-06-01T00:00+10:30", 60), ("2026-06-01T01:00+10:30", 60)], id="lord-howe-winter"),
    pytest.param(LORD_HOWE, "2026-12-01T00:00+11:00", "2026-12-01T02:00+11:00", "epoch", [
        ("2026-12-01T00:00+11:00", 60), ("2026-12-01T01:00+11:00", 60)], id="lord-howe-summer"),
    pytest.param("Asia/Kolkata", "2026-10-04T00:00+05:30", "2026-10-04T03:00+05:30", "store_local_hour", [
        ("2026-10-04T00:00+05:30", 60), ("2026-10-04T01:00+05:30", 60), ("2026-10-04T02:00+05:30", 60)],
        id="kolkata"),
    pytest.param("Europe/Berlin", "2026-10-25T01:00+02:00", "2026-10-25T04:00+01:00", "epoch", [
        ("2026-10-25T01:00+02:00", 60), ("2026-10-25T02:00+02:00", 60), ("2026-10-25T02:00+01:00", 60),
        ("2026-10-25T03:00+01:00", 60)], id="berlin-fall-back"),
])
def test_hour_buckets_start_on_local_whole_hours_across_a_change(tz, start, end, aligned_to, buckets) -> None:
    assert local_starts(tz, 3600, start, end) == (aligned_to, buckets)


def test_the_grid_of_a_whole_year_keeps_local_hours_and_one_run_elsewhere() -> None:
    cal = StoreCalendar(LORD_HOWE)
    lo, hi = ms("2026-06-01T00:00+10:30"), ms("2027-06-01T00:00+10:30")
    grid = cal.grid(3600, lo, hi)
    tz = zoneinfo.ZoneInfo(LORD_HOWE)
    for t in range(lo, hi, 7 * 3_600_000 + 60_000):  # an instant every 7 h 1 min over the year
        assert from_ms(grid.start_of(t), tz).minute == 0 or from_ms(grid.start_of(t), tz).minute == 30 and (
            grid.end_of(grid.start_of(t)) - grid.start_of(t) == 1_800_000)  # the half hours at the changes only
    assert grid.count(lo, hi) == (hi - lo) // 3_600_000 + 1  # two half-hour buckets in one hour
    assert len(grid.runs) == 1 + 2 * 2
    for tz_name, runs in (("Asia/Kolkata", ((1_800_000, 3_600_000),)), ("Europe/Berlin", ((0, 3_600_000),))):
        assert StoreCalendar(tz_name).grid(3600, lo, hi).runs == runs  # one run, as before


def lord_howe_site() -> dict:
    return {"store": {"id": "lh", "timezone": LORD_HOWE},
            "cameras": [{"id": "door", "source": "/tmp/x.mp4",
                         "lines": [{"id": "entry", "a": [0, 300], "b": [640, 300]}],
                         "zones": [{"id": "till", "polygon": [[0, 0], [100, 0], [100, 100]]}]}],
            "zones": {"bucket_s": 60}, "privacy": {"k_min": 1}}


# local minutes around the spring change: 01:59 (+10:30), 02:30 and 02:59 (+11:00, the half hour), 03:00, 03:59
MINUTES = ["2026-10-04T01:59+10:30", "2026-10-04T02:30+11:00", "2026-10-04T02:59+11:00", "2026-10-04T03:00+11:00",
           "2026-10-04T03:59+11:00"]
HOURS = [("2026-10-04T01:00+10:30", 1), ("2026-10-04T02:30+11:00", 2), ("2026-10-04T03:00+11:00", 2)]


def test_counts_and_zone_stats_by_hour_in_lord_howe(history_store) -> None:
    from storelens.domain.counting import CrossingEvent, crossing_event_id

    history_store.write_crossings([CrossingEvent(crossing_event_id("door", "entry", k, k), "door", "entry", k, "in",
                                                 ms(t), k) for k, t in enumerate(MINUTES)])
    history_store.write_records([m.ZoneStats(camera_id="door", zone_id="till", bucket_start_ms=ms(t),
                                             bucket_end_ms=ms(t) + 60_000, visits=1, unique_people=1,
                                             mean_occupancy=1.0, max_occupancy=1) for t in MINUTES])
    # a stored minute 12 years later (over 100,000 hours): without end_ms the zone statistics count the buckets in
    # the database
    later = ms("2038-12-13T12:00+11:00")
    history_store.write_records([m.ZoneStats(camera_id="door", zone_id="till", bucket_start_ms=later,
                                             bucket_end_ms=later + 60_000, visits=1, unique_people=1,
                                             mean_occupancy=1.0, max_occupancy=1)])
    tz = zoneinfo.ZoneInfo(LORD_HOWE)
    with signed_in_client(create_app(parse_config(lord_howe_site()), history_store)) as c:
        counts = c.get("/v1/counts", params={"camera_id": "door", "start_ms": ms("2026-10-04T01:00+10:30"),
                                             "end_ms": ms("2026-10-04T04:00+11:00"), "bucket_s": 3600})
        assert counts.status_code == 200, counts.text
        zones = [c.get("/v1/zones/stats", params={"camera_id": "door", "start_ms": ms("2026-10-04T01:00+10:30"),
                                                  "bucket_s": 3600, **end}) for end in
                 ({"end_ms": ms("2026-10-04T04:00+11:00")}, {})]
    body = counts.json()
    assert body["aligned_to"] == "store_local_hour"
    assert [(from_ms(b["start_ms"], tz).isoformat(timespec="minutes"), b["in"]) for b in body["buckets"]
            if b["in"]] == HOURS  # before: 02:30-03:30 and 03:30-04:30 (+11:00)
    for r in zones:
        assert r.status_code == 200, r.text  # without end_ms: a grid of several runs counted in the database
        got = [(from_ms(b["start_ms"], tz).isoformat(timespec="minutes"), b["visits"]) for b in r.json()["buckets"]]
        assert got[:3] == HOURS
        assert r.json()["aligned_to"] == "store_local_hour"
