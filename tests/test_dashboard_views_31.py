"""Dashboard review fixes (31), in a real browser (the fixtures and helpers of ``test_dashboard_browser``).

A demo-like site: the recorded file camera ``door`` (its frames carry the file's times, 2026-01-01 on, as
``make demo``'s) and a live camera ``cam-live`` whose last frame is as old; the store in Kolkata (+05:30), the
browser in UTC. Rows are written straight to storage (no detector run).

1. Health called every recorded-file camera down (the browser's clock against the file's frame times): it reads the
   API's ``stale`` (/v1/zones' rule: live cameras only). Zone statistics and the heatmap opened on the last 24 hours
   of the browser's clock (empty over a recorded file): they open on all the data, as Journeys.
2. A failed heatmap request showed an empty overlay, any failed snapshot "no reference frame yet": both show the
   problem; "no reference frame yet" is a 404's.
3. "Last 7 days" by day at 15:00 drew 8 bars, the first 15:00 to midnight labelled as a whole day: the range starts
   on the store's local midnight, whole days (since test_dashboard_ranges_31: the day holding now - 7 days, 8 bars).
4. After erasing the only customer of the last page the list stayed on a page past the end ("Page 3 of 2").
5. The Stores view opened on the alphabetically first currency (CHF for 30 EUR stores and 1 CHF): the most stores'.
6. The handles of line ends and zone corners could not be reached with the keyboard: focusable, arrow keys move.
"""
from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import cv2
import numpy as np
import pytest
from test_business_review_fixes import roll_into
from test_dashboard_browser import (  # noqa: F401 (browser: the module's fixture)
    _text, browser, open_view, serve_site, settle, shot, sign_in,
)

from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent
from storelens.storage import SqlStorage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TZ = "Asia/Kolkata"
KOLKATA = zoneinfo.ZoneInfo(TZ)
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z: the file camera's default start_ts_ms
HOUR, DAY = 3_600_000, 86_400_000
N_CUSTOMERS = 101  # pages of 50: 3, the last with one customer
POLY = [[300, 100], [500, 100], [500, 300], [300, 300]]


def local_ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).replace(tzinfo=KOLKATA).timestamp() * 1000)


#: The browser's clock in the counts test: 2026-01-07 15:00 in Kolkata.
NOW_MS = local_ms("2026-01-07T15:00")


def site(db) -> dict:
    return {"store": {"id": "d31", "timezone": TZ},
            "cameras": [{"id": "door", "source": "door.mp4",
                         "lines": [{"id": "entry", "a": [100, 50], "b": [100, 400]}],
                         "zones": [{"id": "shelf", "kind": "shelf", "product": "tea", "polygon": POLY}]},
                        {"id": "cam-live", "source": "rtsp://127.0.0.1:9/stream"}],
            "zones": {"bucket_s": 3600}, "privacy": {"k_min": 1}, "storage": {"path": str(db)}}


def kpi_hour(store: str, currency: str) -> m.StoreKpiHour:
    start = local_ms("2026-01-05T10:00")
    return m.StoreKpiHour(store_id=store, store_name=store.upper(), timezone=TZ, start_ms=start, end_ms=start + HOUR,
                          day="2026-01-05", label="2026-01-05T10:00+05:30", hours=1.0, computed_ms=1, visitors=10,
                          transactions=2, sales_minor=2500, currency=currency, buying_units=-1)


def fill(storage) -> None:
    # frames: the file camera's newest at T0 + 2 days (the file's time), the live camera's as old (down)
    storage.write_batch(tracked_frames=[m.TrackedFrame(camera_id=cam, seq=1, ts_ms=T0 + 2 * DAY,
                                                       tracks=[m.Track(track_id=1)]) for cam in ("door", "cam-live")])
    # a crossing at noon of each local day from 2025-12-31 to 2026-01-07 (the last 7 days by day at NOW_MS: from Dec 31)
    storage.write_crossings([CrossingEvent(f"door:{d}", "door", "entry", d, "in",
                                           local_ms("2026-01-01T12:00") + (d - 1) * DAY, d) for d in range(0, 8)])
    # zone statistics of the file's first day (hourly buckets), a reference frame of 640 x 480, a heatmap minute
    storage.write_records(
        [m.ZoneStats(camera_id="door", zone_id="shelf", bucket_start_ms=T0 + k * HOUR,
                     bucket_end_ms=T0 + (k + 1) * HOUR, visits=2, unique_people=2, mean_occupancy=0.5,
                     max_occupancy=1) for k in range(6)]
        + [m.CameraSnapshot(camera_id="door", ts_ms=T0, seq=0, width=640, height=480, blurred=1,
                            jpeg=cv2.imencode(".jpg", np.full((240, 320, 3), 90, np.uint8))[1].tobytes()),
           # the heatmap's first minute: its row and its hour's
           *[m.HeatmapWindow(camera_id="door", window_start_ms=T0, window_end_ms=T0 + span, cell_px=16, width=640,
                             height=480, cells=[m.HeatmapCell(gx=x, gy=5, occupancy_ms=10_000, dwell_ms=0)
                                                for x in range(4, 12)]) for span in (60_000, HOUR)]])
    # the chain: 30 stores selling in EUR, one in CHF
    roll_into(storage, [kpi_hour(f"eur-{i:02d}", "EUR") for i in range(30)] + [kpi_hour("chf-00", "CHF")])


def gallery(path):
    from storelens.backends.face_index import Visit
    from storelens.storage.gallery import SqliteGalleryStore

    g = SqliteGalleryStore(path, dim=4)
    for i in range(N_CUSTOMERS):  # cust-000 seen first: the only one of page 3 (most recently seen first)
        cid, ts = f"cust-{i:03d}", T0 + (i + 1) * 60_000
        g.add_customer(cid, ts)
        g.save_visit(Visit(cid, 1, ts, ts + 30_000, ("door",)))
    return g


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("d31")
    storage = SqlStorage(str(tmp / "d31.db"))
    fill(storage)
    with serve_site(site(tmp / "d31.db"), storage, gallery_store=gallery(tmp / "gallery.db")) as s:
        yield s


# -- 1: health of a recorded file, zone statistics and the heatmap at first open ----------------------------------


@pytest.mark.parametrize(("source", "age_ms", "stale"), [
    ("door.mp4", 2 * DAY, False),  # a recorded file: its frames carry the file's times, never stale
    ("rtsp://127.0.0.1:9/s", 2 * DAY, True),  # a live camera down two days
    ("rtsp://127.0.0.1:9/s", 5_000, False),  # a live camera 5 s behind the wall clock
    ("rtsp://127.0.0.1:9/s", None, True),  # no frame yet: stale (a wrong URL or password; the rule of /v1/zones)
])
def test_occupancy_says_which_camera_is_stale_by_the_zones_rule(tmp_path, source, age_ms, stale) -> None:
    import time

    from storelens.api import create_app
    from storelens.api.routes.zones import STALE_AFTER_MS
    from storelens.api.testing import signed_in_client
    from storelens.config import parse_config

    assert age_ms is None or source == "door.mp4" or (age_ms > STALE_AFTER_MS) == stale  # the table's premise
    storage = SqlStorage(str(tmp_path / "s.db"))
    if age_ms is not None:
        storage.write_batch(tracked_frames=[m.TrackedFrame(camera_id="c", seq=1, ts_ms=int(time.time() * 1000) - age_ms,
                                                           tracks=[])])
    with storage, signed_in_client(create_app(parse_config(
            {"store": {"id": "s"}, "cameras": [{"id": "c", "source": source}]}), storage)) as client:
        (cam,) = client.get("/v1/occupancy").json()["cameras"]
        assert (cam["stale"], "last_seen_ts_ms" in cam) == (stale, age_ms is not None)
        assert client.get("/v1/occupancy/c").json()["stale"] == stale


def test_health_reads_the_apis_stale_flag_a_file_camera_is_receiving(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    occ = {c["camera_id"]: c for c in served.client("viewer").get("/v1/occupancy").json()["cameras"]}
    assert (occ["door"]["stale"], occ["cam-live"]["stale"]) == (False, True), occ
    assert occ["door"]["last_seen_ts_ms"] == occ["cam-live"]["last_seen_ts_ms"] == T0 + 2 * DAY
    page = sign_in(browser, served, "viewer")
    open_view(page, "health")
    expect(page.get_by_test_id("health-door").get_by_test_id("status")).to_have_text("receiving")
    expect(page.get_by_test_id("health-cam-live").get_by_test_id("status")).to_have_text("no frame for > 60 s")
    shot(page, "d31-health-desktop")
    page.close()


def test_zone_statistics_and_the_heatmap_open_on_the_files_data(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer")
    open_view(page, "zones")
    stats = page.get_by_test_id("zone-stats")
    expect(stats.locator("tbody tr")).to_have_count(6)
    expect(stats).not_to_contain_text("No zone statistics in this range")
    assert page.get_by_test_id("range").nth(0).input_value() == "all"
    open_view(page, "camera")
    settle(page)
    page.get_by_test_id("heatmap-toggle").check()
    expect(page.get_by_test_id("heat-4-5")).to_have_count(1)
    expect(page.get_by_test_id("camera-card")).to_contain_text("Heatmap: 1 min of data")
    page.close()


# -- 2: a failed heatmap or snapshot request is said --------------------------------------------------------------


def test_a_failed_heatmap_or_snapshot_shows_its_problem_a_404_says_no_frame_yet(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer")
    failing = {"on": False}

    def fail(route) -> None:  # the API's answer, unless the test makes the heatmap fail
        if failing["on"]:
            route.fulfill(status=500, content_type="application/json", body='{"detail": "heatmap store down"}')
        else:
            route.continue_()

    page.route(re.compile(r"/v1/cameras/door/heatmap\?"), fail)
    open_view(page, "camera")
    settle(page)
    card = page.get_by_test_id("camera-card")
    expect(page.get_by_test_id("snapshot")).to_have_count(1)
    expect(card.get_by_test_id("problem")).to_have_count(0)
    failing["on"] = True
    page.get_by_test_id("heatmap-toggle").check()
    problem = card.get_by_test_id("problem")
    expect(problem).to_have_attribute("data-status", "500")
    expect(problem).to_contain_text("heatmap store down")
    shot(page, "d31-heatmap-failed-desktop")
    page.close()

    # a snapshot that fails (500) is a problem, not "no reference frame yet"; the live camera has none stored (404)
    page = sign_in(browser, served, "viewer")
    page.route(re.compile(r"/v1/cameras/door/snapshot"), lambda route: route.fulfill(
        status=500, content_type="application/json", body='{"detail": "snapshot store down"}'))
    open_view(page, "camera")
    card = page.get_by_test_id("camera-card")
    expect(card.get_by_test_id("problem")).to_contain_text("snapshot store down")
    expect(card.get_by_text("No reference frame stored")).to_have_count(0)
    page.get_by_test_id("camera").select_option("cam-live")
    expect(card.get_by_text("No reference frame stored for this camera yet.")).to_be_visible()
    expect(card.get_by_test_id("problem")).to_have_count(0)
    page.close()


# -- 3: a relative range of day buckets starts on the store's local midnight ---------------------------------------


def test_last_7_days_by_day_are_whole_days_of_the_store(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer", clock_s=NOW_MS / 1000, timezone_id="UTC")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/v1/counts?" in r.url else None)
    open_view(page, "counts")
    settle(page)
    page.get_by_test_id("range").select_option("7d")
    page.get_by_test_id("bucket").select_option("86400")
    chart = page.get_by_test_id("counts-chart")
    days = ["2025-12-31"] + [f"2026-01-0{d}" for d in range(1, 8)]
    expect(chart).to_have_attribute("aria-label", re.compile(days[-1]))
    label = chart.get_attribute("aria-label") or ""
    # 8 bars (of each series: in, out): 2025-12-31 (the day holding now - 7 days, whole from Kolkata's midnight) to
    # today: at least 7 days, no partial first bar
    assert re.findall(r"20\d\d-\d\d-\d\d", label) == days * 2, label
    week = [u for u in asked if "bucket_s=86400" in u and "start_ms=" in u]
    assert week and f"start_ms={local_ms('2025-12-31T00:00')}&" in week[-1], week
    counts = served.client("viewer").get("/v1/counts", params={"camera_id": "door", "bucket_s": 86400,
                                                               "start_ms": local_ms("2025-12-31T00:00")}).json()
    assert [b["start_ms"] for b in counts["buckets"]] == [local_ms(f"{d}T00:00") for d in days]
    shot(page, "d31-counts-7-days-desktop")
    page.close()


# -- 4: the customer list goes back to its last page after an erasure -----------------------------------------------


def test_the_customer_list_clamps_its_page_after_the_last_customer_is_erased(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    page = sign_in(browser, served, "admin")
    open_view(page, "customers")
    pager = page.locator(".pager span")
    expect(pager).to_have_text("Page 1 of 3")
    for n in (2, 3):
        page.get_by_role("button", name="Next").click()
        expect(pager).to_have_text(f"Page {n} of 3")
    row = page.get_by_test_id("customer-cust-000")
    row.get_by_test_id("erase").click()
    row.get_by_test_id("erase-confirm").click()
    expect(page.get_by_role("status")).to_contain_text("Customer cust-000 erased.")
    expect(pager).to_have_text("Page 2 of 2")
    expect(page.get_by_test_id("customers").locator("tbody tr")).to_have_count(50)
    expect(page.get_by_text("No customers.")).to_have_count(0)
    assert served.client("admin").get("/v1/customers").json()["total"] == N_CUSTOMERS - 1
    page.close()


# -- 5: the stores view opens on the currency of the most stores ----------------------------------------------------


def test_the_stores_view_opens_on_the_currency_of_the_most_stores(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer", locale="en-US")
    open_view(page, "stores")
    settle(page)
    expect(page.get_by_test_id("stores-currency")).to_have_value("EUR")
    expect(page.get_by_test_id("stores-visitors-eur-00")).to_have_text("10")
    expect(page.get_by_test_id("stores-visitors-chf-00")).to_have_count(0)
    page.close()


# -- 6: handles move with the keyboard, and are saved as a drag is -------------------------------------------------


def test_a_focused_handle_moves_with_the_arrow_keys_and_is_saved(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    api = served.client("admin")
    page = sign_in(browser, served, "admin")
    open_view(page, "camera")
    settle(page)
    handle = page.get_by_test_id("handle-entry-b")
    expect(handle).to_have_class("handle editable")
    expect(handle).to_have_attribute("aria-label", re.compile(r"Line entry, end B"))
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("ArrowUp")
    row = page.get_by_test_id("line-row-entry")
    expect(row.get_by_test_id("b")).to_have_text("111, 399")
    page.get_by_test_id("save-entry").click()
    expect(page.get_by_test_id("saved")).to_contain_text("Line entry saved")

    corner = page.get_by_test_id("handle-zone-shelf-0")
    expect(corner).to_have_attribute("aria-label", re.compile(r"Zone shelf, corner 1"))
    corner.focus()
    page.keyboard.press("ArrowDown")
    expect(page.get_by_test_id("zonecfg-row-shelf").get_by_test_id("vertex-0")).to_have_text("300, 101")
    page.get_by_test_id("save-zone-shelf").click()
    expect(page.get_by_test_id("saved")).to_contain_text("Zone shelf saved")

    (door,) = [c for c in api.get("/v1/site").json()["cameras"] if c["id"] == "door"]
    assert [float(v) for v in door["lines"][0]["b"]] == [111, 399]
    assert [float(v) for v in door["lines"][0]["a"]] == [100, 50]
    assert [[float(v) for v in p] for p in door["zones"][0]["polygon"]] == [[300, 101], *POLY[1:]]
    page.close()
