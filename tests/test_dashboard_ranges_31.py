"""Dashboard range review fixes (31), in a real browser (the fixtures of ``test_dashboard_views_31``).

1. A relative range of a chart of buckets started at the edge of the bucket now minus (its length in buckets - 1):
   "Last 24 h" by day at 00:10 started at today's midnight (10 minutes shown), "Last hour" by hour at 10:02 at 10:00.
   It starts at the edge of the bucket holding now - the range: at least its length, in whole buckets (the store's
   local days, 23 or 25 h when the clocks change).
2. Zone statistics of a +05:30 store over stored hours are on the epoch's grid (``aligned_to: epoch``) but the range
   started on local whole hours (half a first bucket): it starts on the answer's grid.
3. The camera heatmap has no 422 of too much data: a 422 (any) is shown as the problem, not turned into "the last
   7 days" with a note.
4. Zones now and the queues said "again on each live update, at least every 10 s": they are read every 10 s.
"""
from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest
from test_dashboard_browser import browser, open_view, serve_site, settle, sign_in  # noqa: F401 (fixtures)
from test_dashboard_views_31 import HOUR, T0, served  # noqa: F401 (served: Kolkata, zones.bucket_s 3600)

from storelens.storage import SqlStorage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
RANGE_MS = {"1h": HOUR, "24h": 24 * HOUR, "7d": 7 * 24 * HOUR}


def berlin_ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).replace(tzinfo=BERLIN).timestamp() * 1000)


def start_of(url: str) -> int | None:
    found = re.search(r"[?&]start_ms=(\d+)", url)
    return int(found.group(1)) if found else None


def wait_for_start(page, asked: list[str], want: int) -> int | None:
    """The start_ms of the last request asked, once it is ``want`` (or after 15 s of waiting: the last one's)."""
    for _ in range(150):
        if asked and start_of(asked[-1]) == want:
            break
        page.wait_for_timeout(100)
    return start_of(asked[-1]) if asked else None


@pytest.fixture(scope="module")
def berlin(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("r31")
    raw = {"store": {"id": "b31", "timezone": "Europe/Berlin"},
           "cameras": [{"id": "door", "source": "door.mp4",
                        "lines": [{"id": "entry", "a": [100, 50], "b": [100, 400]}]}],
           "storage": {"path": str(tmp / "b31.db")}}
    with serve_site(raw, SqlStorage(str(tmp / "b31.db"))) as s:
        yield s


# -- 1: a relative range covers at least its length, from the edge of the bucket holding now - the range -----------


@pytest.mark.parametrize(("now", "range_key", "bucket_s", "start"), [
    ("2026-03-10T00:10", "24h", 86400, "2026-03-09T00:00"),  # was today's midnight: 10 minutes
    ("2026-03-10T10:02", "1h", 3600, "2026-03-10T09:00"),  # was 10:00: 2 minutes
    ("2026-03-10T15:00", "7d", 86400, "2026-03-03T00:00"),  # 7 days 15 h, whole local days
    ("2026-03-30T00:10", "24h", 86400, "2026-03-28T00:00"),  # a 23 h day (the 29th) within
    ("2026-10-26T00:10", "24h", 86400, "2026-10-25T00:00"),  # a 25 h day (the 25th)
])
def test_a_relative_range_starts_at_the_bucket_holding_now_minus_its_length(berlin, browser, now, range_key,  # noqa: F811
                                                                           bucket_s, start) -> None:
    now_ms = berlin_ms(now)
    page = sign_in(browser, berlin, "viewer", clock_s=now_ms / 1000, timezone_id="UTC")
    asked: list[str] = []
    wanted = re.compile(rf"/v1/counts\?.*start_ms=.*bucket_s={bucket_s}(&|$)")
    page.on("request", lambda r: asked.append(r.url) if wanted.search(r.url) else None)
    open_view(page, "counts")
    settle(page)
    page.get_by_test_id("range").select_option(range_key)
    page.get_by_test_id("bucket").select_option(str(bucket_s))
    got = wait_for_start(page, asked, berlin_ms(start))
    assert got == berlin_ms(start), (asked, now, range_key)
    assert got <= now_ms - RANGE_MS[range_key]  # the range covers at least its length
    settle(page)
    page.close()


# -- 2: zone statistics start on the API's grid (the epoch's hours and days in a +05:30 zone over stored hours) ----


@pytest.mark.parametrize(("bucket_s", "start", "rows"), [
    (3600, T0 + 3 * HOUR, 3),  # 2026-01-01 03:00Z (not 03:30Z, Kolkata's whole hour): the stored 03:00 to 06:00
    (86400, T0, 1),  # the UTC day (not Kolkata's midnight, 18:30Z: the stored hours before it left out)
])
def test_zone_statistics_start_on_the_answers_grid(served, browser, bucket_s, start, rows) -> None:  # noqa: F811
    from playwright.sync_api import expect

    now_ms = T0 + 27 * HOUR + 10 * 60_000  # 2026-01-02 03:10Z (08:40 in Kolkata)
    aligned = served.client("viewer").get("/v1/zones/stats", params={"camera_id": "door", "bucket_s": bucket_s,
                                                                             "start_ms": 0})
    assert aligned.json()["aligned_to"] == "epoch"
    page = sign_in(browser, served, "viewer", clock_s=now_ms / 1000, timezone_id="UTC")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/v1/zones/stats?" in r.url else None)
    open_view(page, "zones")
    settle(page)
    if bucket_s != 3600:
        with page.expect_response(lambda r: "/v1/zones/stats?" in r.url and f"bucket_s={bucket_s}" in r.url):
            page.get_by_test_id("bucket").select_option(str(bucket_s))
    page.get_by_test_id("range").nth(0).select_option("24h")
    assert wait_for_start(page, asked, start) == start, asked
    assert start <= now_ms - 24 * HOUR
    expect(page.get_by_test_id("zone-stats-row")).to_have_count(rows)
    answer = served.client("viewer").get(asked[-1][asked[-1].index("/v1/"):]).json()
    assert answer["aligned_to"] == "epoch" and min(b["start_ms"] for b in answer["buckets"]) == start
    page.close()


# -- 3: the camera heatmap has no fall-back: it answers any range, a 422 is a problem shown -------------------------


@pytest.mark.parametrize("params", [{}, {"start_ms": 0, "end_ms": 253_402_300_799_999}, {"start_ms": T0}])
def test_the_camera_heatmap_answers_any_range(served, params) -> None:  # noqa: F811
    r = served.client("viewer").get("/v1/cameras/door/heatmap", params=params)
    assert r.status_code == 200, r.text


def test_a_heatmap_422_is_shown_not_turned_into_the_last_7_days(served, browser) -> None:  # noqa: F811
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer")
    page.route(re.compile(r"/v1/cameras/door/heatmap\?"), lambda route: route.fulfill(
        status=422, content_type="application/json", body='{"detail": "start_ms: not a time"}'))
    open_view(page, "camera")
    settle(page)
    page.get_by_test_id("heatmap-toggle").check()
    problem = page.get_by_test_id("camera-card").get_by_test_id("problem")
    expect(problem).to_have_attribute("data-status", "422")
    expect(problem).to_contain_text("start_ms: not a time")
    expect(page.get_by_test_id("range")).to_have_value("all")
    expect(page.get_by_test_id("range-note")).to_have_count(0)
    page.close()


# -- 4: zones now and the queues say they are read every 10 s ------------------------------------------------------


def test_zones_and_queues_say_they_are_read_every_10_s(served, browser) -> None:  # noqa: F811
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer")
    open_view(page, "zones")
    for what in ("zones-read-at", "queues-read-at"):
        expect(page.get_by_test_id(what)).to_contain_text(re.compile(r"^Read .+ \(again every 10 s\)$"))
        expect(page.get_by_test_id(what)).not_to_contain_text("live update")
    page.close()
