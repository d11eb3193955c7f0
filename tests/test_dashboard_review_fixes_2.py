"""Review fixes of the dashboard (2), in a real browser (the fixtures and helpers of ``test_dashboard_browser``).

1. Counts opened on "All data" in 1 min buckets: over 70 days of data the API refuses (more than 100,000 buckets,
   "use bucket_s >= 61", a width the picker does not offer): the view showed the 422. Now it uses the smallest
   offered bucket that fits (5 min) and says so. A relative range ("Last hour") stopped at the last crossing, not
   now: it ends now (the next whole minute), the empty last minutes show.
2. After picking another camera the previous camera's answer stayed on screen, with no loading sign, until the new
   one came: an answer is shown for its own query only (``useApi``), "Loading…" meanwhile.
3. Zone statistics opened on all the data, oldest first: they open on the last 24 hours, newest first, 100 rows at a
   time. A withheld (privacy) median dwell or wait showed "-" like no data: "withheld".
4. The camera view read the whole history's heatmap even with the overlay off: it reads none (the reference frame
   gives the size), and with the overlay on the range picked (the last 24 hours first). The overlay's colours
   scaled linearly to the busiest cell (a till's clerk left every other cell barely visible): as the API's PNG,
   the square root of value / the 95th percentile.
5. Interest's "Attention" is a total over the stoppers: "Total attention (s)".
6. Customers was in a viewer's navigation though the API refuses it (403): managers and up only.

The site's rows are written straight to storage, around the wall clock's now.
"""
from __future__ import annotations

import datetime as dt
import time

import cv2
import numpy as np
import pytest
from test_dashboard_browser import (  # noqa: F401 (browser: the module's fixture)
    _text, browser, open_view, serve_site, settle, shot, sign_in,
)

from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent
from storelens.storage import SqlStorage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
BUCKET_MS = 900_000  # the site's zones.bucket_s
CLERK = (1, 1)  # the till clerk's heatmap cell: there all the time
BUSY = [(x, 5) for x in range(2, 22)]  # 20 cells a shopper crossed
OLD_CELL = (30, 20)  # a cell of 10 days ago only


def site(db) -> dict:
    return {"store": {"id": "h4", "timezone": "UTC"},
            "cameras": [
                {"id": "door", "source": "door.mp4", "lines": [{"id": "entry", "a": [0, 0], "b": [100, 100]}]},
                {"id": "floor", "source": "floor.mp4", "lines": [{"id": "aisle", "a": [0, 0], "b": [100, 100]}],
                 "zones": [{"id": "till", "kind": "queue", "service_edge": [1, 2],
                            "polygon": [[0, 0], [200, 0], [200, 200], [0, 200]]},
                           {"id": "shelf", "kind": "shelf", "product": "coffee",
                            "polygon": [[300, 0], [500, 0], [500, 200], [300, 200]]}]}],
            "zones": {"bucket_s": BUCKET_MS // 1000},
            "privacy": {"k_min": 5}, "storage": {"path": str(db)}}


def heat(start: int, span: int, cells: list[tuple[int, int]], ms: int) -> m.HeatmapWindow:
    return m.HeatmapWindow(camera_id="floor", window_start_ms=start, window_end_ms=start + span, cell_px=16,
                           width=640, height=480,
                           cells=[m.HeatmapCell(gx=x, gy=y, occupancy_ms=ms * (360 if (x, y) == CLERK else 1),
                                                dwell_ms=0) for x, y in cells])


def exits(zone: str, kind: str, n: int, ts_ms: int, how: str) -> list[m.ZoneEvent]:
    return [m.ZoneEvent(event_id=f"{zone}-{ts_ms}-{i}", camera_id="floor", zone_id=zone, zone_kind=kind,
                        track_id=1000 + i, kind=m.ZONE_EVENT_EXIT, ts_ms=ts_ms + i, seq=i, dwell_ms=10_000,
                        how=how) for i in range(n)]


def fill(storage, now: int) -> None:
    # door: one crossing 70 days ago (all the data: 100,801 one-minute buckets), six 20 to 45 minutes ago
    storage.write_crossings([CrossingEvent("door:old", "door", "entry", 1, "in", now - 70 * DAY, 1)] + [
        CrossingEvent(f"door:{k}", "door", "entry", 10 + k, "in" if k % 2 else "out", now - (20 + 5 * k) * MIN, 10 + k)
        for k in range(6)])
    storage.write_crossings([CrossingEvent(f"floor:{k}", "floor", "aisle", 100 + k, "in", now - (10 + k) * MIN, 100 + k)
                             for k in range(3)])
    last = now // BUCKET_MS * BUCKET_MS
    storage.write_records(
        # 30 hours of zone statistics, both zones, a row per stored bucket (15 min)
        [m.ZoneStats(camera_id="floor", zone_id=z, bucket_start_ms=last - k * BUCKET_MS,
                     bucket_end_ms=last - (k - 1) * BUCKET_MS, visits=1, unique_people=1, mean_occupancy=0.5,
                     max_occupancy=1) for z in ("till", "shelf") for k in range(120)]
        # the newest minutes: 2 served at the till (fewer than k_min: the wait withheld), 6 passers at the shelf
        + exits("till", "queue", 2, now - 2 * MIN, "service_edge") + exits("shelf", "shelf", 6, now - 2 * MIN, "other")
        + [m.CameraSnapshot(camera_id="floor", ts_ms=now - 30 * DAY, seq=0, width=640, height=480, blurred=1,
                            jpeg=cv2.imencode(".jpg", np.full((240, 320, 3), 90, np.uint8))[1].tobytes())])
    # heatmap: the first minute of this hour (its row and the hour's), and a minute of 10 days ago
    hour, old = now // HOUR * HOUR, now - 10 * DAY
    storage.write_records([heat(hour, MIN, [CLERK, *BUSY], 10_000), heat(hour, HOUR, [CLERK, *BUSY], 10_000),
                           heat(old // MIN * MIN, MIN, [OLD_CELL], 5_000),
                           heat(old // HOUR * HOUR, HOUR, [OLD_CELL], 5_000)])
    # the floor camera's zones now (the queues' "now"): one person at the till
    storage.write_records([m.ZoneOccupancy(camera_id="floor", ts_ms=now, seq=1, occupancy={"till": 1})])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db = tmp_path_factory.mktemp("h4") / "h4.db"
    storage = SqlStorage(str(db))
    fill(storage, int(time.time() * 1000))
    with serve_site(site(db), storage) as s:
        yield s


def _store_ms(text: str) -> int:
    """A time as the dashboard shows it (``YYYY-MM-DD HH:MM:SS``, the store's zone: UTC here) in ms."""
    return int(dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


def test_what_a_manager_reads_on_counts_zones_camera_and_interest(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    api = served.client("manager")
    asked: list[str] = []
    # the page's clock starts a second past a whole minute: no relative range moves on during the test
    page = sign_in(browser, served, "manager", clock_s=(int(time.time()) // 60 + 1) * 60 + 1)
    page.on("request", lambda r: asked.append(r.url) if "/v1/" in r.url else None)
    main = page.locator("main")

    # 1. All data of the door: 5 min buckets (1 min would be 100,801 of them), said so; no error
    open_view(page, "counts")
    expect(page.get_by_test_id("bucket")).to_have_value("300")
    expect(page.get_by_test_id("bucket-note")).to_contain_text(
        "Buckets of 5 min: 1 min would make more than 100,000 buckets over this range.")
    settle(page)
    expect(page.get_by_test_id("problem")).to_have_count(0)
    totals = api.get("/v1/counts", params={"camera_id": "door", "bucket_s": 300}).json()["totals"]["entry"]
    row = page.get_by_test_id("total-entry")
    assert (_text(row.get_by_test_id("in")), _text(row.get_by_test_id("out"))) == (
        str(totals["in"]), str(totals["out"])) == ("4", "3")
    page.get_by_test_id("counts-chart").wait_for()
    shot(page, "review2-counts-all-data-desktop")

    # 2. another camera: the door's totals go at once, "Loading…" until the floor's answer (held back here) comes
    held: list = []

    def floor_counts(url: str) -> bool:
        return "/v1/counts" in url and "camera_id=floor" in url

    page.route(floor_counts, lambda route: held.append(route))
    page.get_by_test_id("camera").select_option("floor")
    expect(page.get_by_test_id("total-entry")).to_have_count(0)
    expect(main.get_by_text("Loading…")).to_be_visible()
    assert len(held) == 1
    held[0].continue_()
    expect(page.get_by_test_id("total-aisle").get_by_test_id("in")).to_have_text("3")
    page.unroute(floor_counts)

    # 1. the last hour ends now (the next whole minute), not at the last crossing (10 minutes ago)
    page.get_by_test_id("range").select_option("1h")
    expect(page.get_by_test_id("bucket")).to_have_value("60")  # the picked bucket fits an hour
    settle(page)
    assert "end_ms=" in [u for u in asked if "/v1/counts" in u][-1]
    shown_end = _store_ms(_text(page.get_by_test_id("counts-range")).split(" – ")[1][:19])
    page_now = page.evaluate("Date.now()")
    assert page_now < shown_end <= page_now + MIN, (shown_end, page_now)
    shot(page, "review2-counts-last-hour-desktop")

    # 3. zone statistics over the last 24 hours, newest first; a withheld median says so; 100 rows at a time (they
    # open on all the data since test_dashboard_views_31: a recorded file's are not of today)
    open_view(page, "zones")
    page.get_by_test_id("camera").select_option("floor")
    settle(page)
    expect(page.get_by_test_id("range")).to_have_value("all")
    page.get_by_test_id("range").select_option("24h")
    settle(page)
    rows = page.get_by_test_id("zone-stats-row")
    expect(rows.first).to_be_visible()
    stats_url = [u for u in asked if "/v1/zones/stats" in u][-1]
    want = sorted(api.get(stats_url[stats_url.index("/v1/"):]).json()["buckets"],
                  key=lambda b: (-b["start_ms"], b["zone_id"]))
    assert 40 <= len(want) <= 52 and min(b["start_ms"] for b in want) >= time.time() * 1000 - DAY - HOUR
    expect(rows).to_have_count(len(want))
    got = [(_text(r.locator("td").nth(0)), _store_ms(_text(r.locator("td").nth(1)))) for r in rows.all()]
    assert got == [(b["zone_id"], b["start_ms"]) for b in want]  # newest first
    medians = ["withheld" if b["dwell_s"]["suppressed"] else "-" if b["dwell_s"]["median"] is None
               else f'{b["dwell_s"]["median"]:g} s' for b in want]
    assert (medians.count("10 s"), medians.count("withheld")) == (1, 1)  # the shelf's 6 exits, the till's 2
    assert [_text(r.get_by_test_id("median-dwell")) for r in rows.all()] == medians
    expect(page.get_by_test_id("queue-till").get_by_test_id("median-wait")).to_have_text("withheld")
    shot(page, "review2-zones-desktop")
    page.get_by_test_id("bucket").select_option("900")
    expect(page.get_by_test_id("zone-stats-shown")).to_contain_text("Newest first: 100 of ")
    expect(rows).to_have_count(100)
    page.get_by_test_id("zone-stats-more").click()
    quarters = [u for u in asked if "/v1/zones/stats" in u and "bucket_s=900" in u][-1]
    n = len(api.get(quarters[quarters.index("/v1/"):]).json()["buckets"])
    assert n > 100
    expect(rows).to_have_count(n)

    # 4. the camera view reads no heatmap with the overlay off; on: all the data first (test_dashboard_views_31), then
    # the last 24 hours picked, colours on the 95th percentile
    open_view(page, "camera")
    page.get_by_test_id("camera").select_option("floor")
    settle(page)
    page.wait_for_timeout(500)
    # (the door, shown first, has no reference frame: its frame size is its heatmap's, of all the data)
    assert set(u.split("/v1/")[1] for u in asked if "/heatmap" in u) <= {"cameras/door/heatmap?walking=false"}
    page.get_by_test_id("heatmap-toggle").check()
    expect(page.get_by_test_id(f"heat-{OLD_CELL[0]}-{OLD_CELL[1]}")).to_have_count(1)  # all the data: 10 days ago too
    page.get_by_test_id("range").select_option("24h")
    shopper = page.get_by_test_id("heat-2-5")
    expect(shopper).to_have_count(1)
    heat_urls = [u for u in asked if "/floor/heatmap" in u]
    assert len(heat_urls) == 2 and "start_ms=" not in heat_urls[0] and "start_ms=" in heat_urls[1], heat_urls
    expect(page.get_by_test_id(f"heat-{CLERK[0]}-{CLERK[1]}")).to_have_count(1)
    expect(page.get_by_test_id(f"heat-{OLD_CELL[0]}-{OLD_CELL[1]}")).to_have_count(0)  # 10 days ago
    # the shoppers' cells are at the 95th percentile: full colour, though the clerk's cell holds 360 times more
    assert float(shopper.get_attribute("fill-opacity")) == pytest.approx(0.7)
    settle(page)
    shot(page, "review2-camera-heatmap-desktop")
    page.get_by_test_id("range").select_option("all")
    expect(page.get_by_test_id(f"heat-{OLD_CELL[0]}-{OLD_CELL[1]}")).to_have_count(1)

    # 5. interest: the attention is a total over the stoppers
    open_view(page, "interest")
    settle(page)
    expect(page.get_by_test_id("interest").locator("th").nth(5)).to_have_text("Total attention (s)")
    shot(page, "review2-interest-desktop")
    expect(page.get_by_test_id("nav-customers")).to_have_count(1)  # 6. a manager's
    page.close()


def test_a_viewer_has_no_customers_in_the_navigation(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer")
    expect(page.get_by_test_id("nav-counts")).to_have_count(1)
    expect(page.get_by_test_id("nav-customers")).to_have_count(0)  # the API refuses a viewer the customers (403)
    assert served.client("viewer").get("/v1/customers").status_code == 403
    page.close()
