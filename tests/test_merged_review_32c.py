"""Review of the merged hour grid of zones whose offset changes its sub-hour part (batch 32c), each fix with a test
that fails on the code before.

1. The grid was built over the whole requested range, its offset changes found by sampling every week: one viewer
   request (``/v1/counts`` of a Lord Howe store from 0 over ~96,000 weeks) built 10,951 runs and a SQL ``CASE`` over
   them (seconds to minutes holding the GIL: the whole API stalled). Now the grid is laid out over the data, as whole
   days are, changes are sampled every 91 days, and past ``MAX_GRID_RUNS`` runs the grid is the epoch's.
2. The bucket of an instant right after a change depended on the range: from a range starting after the change (but
   within a width of it) the change went unseen. Changes are looked for from a width before the range (and to a
   width after it, for the last bucket's end).
3. The dashboard's counts chart labelled its bars at whole widths from the first one: after a Lord Howe change the
   hours were labelled 30 minutes off. A bar is labelled by its bucket's own start.
"""
from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest
from test_calendar_review_32 import LORD_HOWE, lord_howe_site, ms
from test_dashboard_browser import browser, open_view, serve_site, settle, sign_in  # noqa: F401 (browser: a fixture)

from storelens.api import create_app
from storelens.api.routes.counts import bucket_grid
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.domain.calendar import MAX_GRID_RUNS, BucketGrid, StoreCalendar, from_ms
from storelens.domain.counting import CrossingEvent, crossing_event_id
from storelens.storage import SqlStorage

YEAR_MS = 365 * 86_400_000
WEEKISH_S = 604_799  # not whole days: the hour grid
#: crossings over a few days around Lord Howe's spring change (2026-10-04 02:00 +10:30 -> 02:30 +11:00)
CROSSINGS = ["2026-10-02T10:15+10:30", "2026-10-04T01:59+10:30", "2026-10-04T02:30+11:00", "2026-10-04T03:10+11:00",
             "2026-10-06T18:00+11:00"]


def crossing_events(times: list[str]) -> list[CrossingEvent]:
    return [CrossingEvent(crossing_event_id("door", "entry", k, k), "door", "entry", k, "in", ms(t), k)
            for k, t in enumerate(times)]


# -- 1. a request over thousands of years: the grid of the data, a capped number of runs ------------------------------


@pytest.mark.parametrize(("tz", "expected_runs"), [
    # the run before, the bucket cut at the change, the one from it to the new offset's first edge, the run after
    (LORD_HOWE, 4),  # (before: 10,951 runs)
    ("Asia/Kathmandu", 1),  # +05:45 since 1986 (before: 3 runs, from the +05:30 of 1970)
    ("Asia/Colombo", 1),  # +05:30 since 2006
])
def test_the_grid_of_a_range_of_millennia_is_laid_out_over_the_data(tz, expected_runs) -> None:
    site = {**lord_howe_site(), "store": {"id": "s", "timezone": tz}}
    end = 96_000 * WEEKISH_S * 1000  # ~1,840 years: within the 100,001 buckets
    data = (ms(CROSSINGS[0]), ms(CROSSINGS[-1]))
    grid = bucket_grid(parse_config(site), 0, end, WEEKISH_S, data=data)
    assert len(grid.runs) == expected_runs, grid.runs
    # exact over the data: the same buckets as a grid made for the days of data alone
    alone = StoreCalendar(tz).grid(WEEKISH_S, data[0], data[1] + 1)
    assert [(grid.start_of(t), grid.end_of(grid.start_of(t))) for t in map(ms, CROSSINGS)] == [
        (alone.start_of(t), alone.end_of(alone.start_of(t))) for t in map(ms, CROSSINGS)]


def test_a_grid_of_centuries_of_lord_howe_changes_is_the_epochs_past_the_cap() -> None:
    cal = StoreCalendar(LORD_HOWE)
    # 600 years of changes, 4 runs a year: past the cap, the epoch's (before: 2,400 runs)
    grid = cal.grid(3 * 3600, 0, 600 * YEAR_MS)
    assert grid == BucketGrid.epoch(3 * 3600 * 1000)
    assert grid.aligned_to == "epoch"
    # 7,000 years without data: the changes are looked at lazily, up to the cap (the enumeration stops there)
    width = 2_678_399 * 1000
    grid = cal.grid(2_678_399, 0, 7_000 * YEAR_MS)
    assert len(grid.runs) <= MAX_GRID_RUNS and grid.aligned_to == "epoch"
    assert cal.bucket_count(2_678_399, 0, 7_000 * YEAR_MS) == (7_000 * YEAR_MS - 1) // width + 1
    tz = zoneinfo.ZoneInfo(LORD_HOWE)

    def sub_hour(t: int) -> dt.timedelta:
        return (from_ms(t, tz).utcoffset() or dt.timedelta()) % dt.timedelta(hours=1)

    changes = cal._residue_changes(sub_hour, 0, 7_000 * YEAR_MS)  # lazy: the first few only
    for t in [next(changes) for _ in range(3)]:
        assert sub_hour(t - 1) != sub_hour(t)
    # a few centuries less: the grid keeps its runs (Lord Howe's +10:30 / +11:00 since 1985)
    grid = cal.grid(3600, ms("2026-01-01T00:00+00:00"), ms("2126-01-01T00:00+00:00"))
    assert 2 * 2 * 100 <= len(grid.runs) <= MAX_GRID_RUNS and grid.aligned_to == "store_local_hour"


def test_a_viewers_request_over_millennia_answers_with_the_buckets_of_the_data(history_store) -> None:
    history_store.write_crossings(crossing_events(CROSSINGS))
    end = 96_000 * WEEKISH_S * 1000
    with signed_in_client(create_app(parse_config(lord_howe_site()), history_store), role="viewer") as c:
        r = c.get("/v1/counts", params={"camera_id": "door", "start_ms": 0, "end_ms": end, "bucket_s": WEEKISH_S})
        zones = c.get("/v1/zones/stats", params={"camera_id": "door", "start_ms": 0, "end_ms": end,
                                                 "bucket_s": 60 * 10_081})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["aligned_to"] == "store_local_hour"
    assert sum(b["in"] for b in body["buckets"]) == len(CROSSINGS)
    for t in map(ms, CROSSINGS):  # each crossing in a listed bucket
        assert any(b["start_ms"] <= t < b["end_ms"] and b["in"] for b in body["buckets"])
    assert zones.status_code == 200, zones.text


# -- 2. the bucket of an instant does not depend on where the range starts or ends -----------------------------------

SPRING = "2025-10-04T15:30+00:00"  # Lord Howe: 02:00 +10:30 -> 02:30 +11:00


@pytest.mark.parametrize(("bucket_s", "at", "ranges", "bucket"), [
    # a range from 12:00 UTC and one from 15:45 (after the change, within an hour of it): [15:30, 16:00) in both
    # (before: [15:00, 16:00) from 15:45, aligned on the epoch)
    (3600, "2025-10-04T15:50+00:00", [("2025-10-04T12:00+00:00", "2025-10-04T20:00+00:00"),
                                      ("2025-10-04T15:45+00:00", "2025-10-04T20:00+00:00")],
     ("2025-10-04T15:30+00:00", "2025-10-04T16:00+00:00")),
    # 2 h buckets from :30 UTC: the one holding 15:00 ends at the change whether the range ends before it or not
    (7200, "2025-10-04T15:00+00:00", [("2025-10-04T12:00+00:00", "2025-10-04T15:10+00:00"),
                                      ("2025-10-04T12:00+00:00", "2025-10-04T20:00+00:00")],
     ("2025-10-04T14:30+00:00", SPRING)),
])
def test_the_bucket_of_an_instant_near_a_change_is_the_same_whichever_range_holds_it(bucket_s, at, ranges,
                                                                                      bucket) -> None:
    cal = StoreCalendar(LORD_HOWE)
    for a, e in ranges:
        grid = cal.grid(bucket_s, ms(a), ms(e))
        start = grid.start_of(ms(at))
        assert (start, grid.end_of(start)) == (ms(bucket[0]), ms(bucket[1])), (a, e)


def test_counts_by_hour_from_just_after_a_change_put_a_crossing_in_the_half_hour(history_store) -> None:
    history_store.write_crossings(crossing_events(["2025-10-04T15:50+00:00"]))
    with signed_in_client(create_app(parse_config(lord_howe_site()), history_store), role="viewer") as c:
        got = [c.get("/v1/counts", params={"camera_id": "door", "start_ms": ms(a), "end_ms": ms(
            "2025-10-04T20:00+00:00"), "bucket_s": 3600}).json() for a in ("2025-10-04T12:00+00:00",
                                                                           "2025-10-04T15:45+00:00")]
    for body in got:
        assert [(b["start_ms"], b["end_ms"], b["in"]) for b in body["buckets"]] == [
            (ms(SPRING), ms("2025-10-04T16:00+00:00"), 1)]
        assert body["aligned_to"] == "store_local_hour"  # before: epoch from 15:45


# -- 3. the dashboard labels each bar by its bucket's own start -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_counts_chart_labels_hours_after_a_lord_howe_change_on_the_hour(tmp_path, browser) -> None:  # noqa: F811
    from playwright.sync_api import expect

    storage = SqlStorage(str(tmp_path / "lh.db"))
    times = ["2026-10-04T00:10+10:30", "2026-10-04T01:10+10:30", "2026-10-04T02:40+11:00", "2026-10-04T03:10+11:00",
             "2026-10-04T05:10+11:00"]  # no crossing in the 04:00 hour: an empty bar
    storage.write_crossings(crossing_events(times))
    tz = zoneinfo.ZoneInfo(LORD_HOWE)
    with serve_site(lord_howe_site(), storage) as served:
        body = served.client("viewer").get("/v1/counts", params={"camera_id": "door", "bucket_s": 3600}).json()
        starts = [from_ms(b["start_ms"], tz).strftime("%m-%d %H:%M") for b in body["buckets"]]
        assert starts == ["10-04 00:00", "10-04 01:00", "10-04 02:30", "10-04 03:00", "10-04 05:00"]
        page = sign_in(browser, served, "viewer", timezone_id="UTC")
        open_view(page, "counts")
        settle(page)
        page.get_by_test_id("bucket").select_option("3600")
        chart = page.get_by_test_id("counts-chart")
        expect(chart).to_have_attribute("aria-label", re.compile("10-04 05:00"))  # before: 05:30
        labels = re.findall(r"10-04 \d\d:\d\d", chart.get_attribute("aria-label") or "")
        assert labels[:6] == ["10-04 00:00", "10-04 01:00", "10-04 02:30", "10-04 03:00", "10-04 04:00",
                              "10-04 05:00"], labels
        page.close()
    storage.close()


def test_lord_howe_offsets_are_as_the_tests_assume() -> None:
    tz = zoneinfo.ZoneInfo(LORD_HOWE)
    assert dt.datetime.fromisoformat(SPRING).astimezone(tz).isoformat(timespec="minutes") == "2025-10-05T02:30+11:00"
