"""Review fixes of the dashboard, in a real browser over a real demo run (the fixtures and helpers of
``test_dashboard_browser``), and at the API where the fix is the server's.

The demo site here differs from that module's: the camera's frames are resized to 320 px wide on the bus
(``resize_width``: the stored reference frame is 320x240, the lines and zones stay in the 640x480 source's
pixels), the store is in Asia/Kolkata (the browser in Los Angeles), sessions last 60 s (the shortest allowed),
and k_min is 10 (the shelf's 8 passers are withheld).
"""
from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import httpx
import pytest
from fastapi.testclient import TestClient
from test_dashboard_browser import (  # noqa: F401 (browser: the module's fixture)
    _press_drag_release, _text, browser, open_view, serve_demo, settle, shot, sign_in,
)

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.storage import SqliteStorage
from storelens.storage.privacy import newest_frame_ms

TZ = "Asia/Kolkata"
BROWSER_TZ = "America/Los_Angeles"
SOURCE = (640, 480)  # the video's frame size: lines and zones are in its pixels
RESIZED = 320  # the frames' width on the bus: the stored reference frame's
CAM = "stadtmitte"


def _edit(raw: dict) -> None:
    raw["cameras"][0]["resize_width"] = RESIZED
    raw["store"]["timezone"] = TZ
    raw["auth"] = {"session_ttl_s": 60}
    raw["privacy"] = {"k_min": 10}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The demo run (see the module docstring); an open live stream checks its credential every second (not every
    30 s) and a journeys answer links at most 1 track (a real 422 for a long range)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("storelens.api.routes.live.REAUTH_S", 1.0)
        mp.setattr("storelens.api.routes.live.KEEPALIVE_S", 1.0)
        mp.setattr("storelens.api.routes.journeys.MAX_JOURNEY_TRACKS", 1)
        with serve_demo(tmp_path_factory.mktemp("review"), _edit) as s:
            yield s


def _store_time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, zoneinfo.ZoneInfo(TZ)).strftime("%Y-%m-%d %H:%M:%S")


def _site_line(api: httpx.Client, line_id: str) -> dict:
    return next(ln for c in api.get("/v1/site").json()["cameras"] if c["id"] == CAM
                for ln in c["lines"] if ln["id"] == line_id)


def _centre(box: dict) -> tuple[float, float]:
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


# -- 1 and 7: the camera view in source pixels over a smaller reference frame; line saves based on a version ---


def test_lines_are_drawn_and_dragged_in_source_pixels_over_a_resized_frame(served, browser):  # noqa: F811
    """The stored frame is 320x240, the lines are in 640x480 pixels: the overlay is in the source's pixels with
    the image stretched under it, so a line end sits where it is in the scene and a drag saves source pixels.
    A line save is based on the site version shown: a stale one is refused with the zone view's 409 message."""
    from playwright.sync_api import expect

    api = served.client("admin")
    before = _site_line(api, "x320")
    assert before["b"] == [320, 440]
    page = sign_in(browser, served, "admin")
    open_view(page, "camera")
    settle(page)
    assert page.evaluate("() => document.querySelector('[data-testid=snapshot]').naturalWidth") == RESIZED
    handle = page.get_by_test_id("handle-x320-b")
    expect(handle).to_have_class("handle editable")
    img = page.get_by_test_id("snapshot").bounding_box()
    frame = page.get_by_test_id("overlay").bounding_box()
    assert [round(frame[k]) for k in ("x", "y", "width", "height")] == [round(img[k]) for k in
                                                                         ("x", "y", "width", "height")]
    assert frame["width"] / frame["height"] == pytest.approx(SOURCE[0] / SOURCE[1], rel=0.01)
    scale = SOURCE[0] / frame["width"]  # source pixels per screen pixel
    # every line end and the till's corner where the source's pixels put them on the image
    for line_id in ("x200", "x320", "x440"):
        ln = _site_line(api, line_id)
        for end in ("a", "b"):
            x, y = _centre(page.get_by_test_id(f"handle-{line_id}-{end}").bounding_box())
            assert abs((x - img["x"]) * scale - ln[end][0]) <= 2 and abs((y - img["y"]) * scale - ln[end][1]) <= 2
    x, y = _centre(page.get_by_test_id("handle-zone-till-2").bounding_box())
    assert abs(x - (img["x"] + img["width"])) <= 2 and abs(y - (img["y"] + img["height"])) <= 2
    page.get_by_test_id("heatmap-toggle").check()
    settle(page)
    shot(page, "review-camera-resized-desktop")

    handle.scroll_into_view_if_needed()
    frame = page.get_by_test_id("overlay").bounding_box()
    x, y = _centre(handle.bounding_box())
    x1, y1 = _press_drag_release(page, x, y, -120, -40)
    want = ((x1 - frame["x"]) * scale, (y1 - frame["y"]) * scale)
    row = page.get_by_test_id("line-row-x320")
    shown = [float(v) for v in _text(row.get_by_test_id("b")).split(",")]
    assert abs(shown[0] - want[0]) <= 2 and abs(shown[1] - want[1]) <= 2, (shown, want)
    assert 320 - 120 * scale - 3 <= shown[0] <= 320 - 120 * scale + 3 and shown[1] > SOURCE[1] / 2  # not clamped
    version = api.get("/v1/site").json()["version"]
    page.get_by_test_id("save-x320").click()
    expect(page.get_by_test_id("saved")).to_contain_text("Line x320 saved")
    assert [float(v) for v in _site_line(api, "x320")["b"]] == shown
    shot(page, "review-camera-line-moved-desktop")

    # someone else changes the site meanwhile: this page's next line save is refused (409), nothing changes
    expect(page.get_by_test_id("handle-x320-b")).to_have_count(1)
    page.wait_for_timeout(300)  # the page re-read the site (version + 1)
    handle = page.get_by_test_id("handle-x320-b")
    handle.scroll_into_view_if_needed()
    x, y = _centre(handle.bounding_box())
    _press_drag_release(page, x, y, 30, 0)
    other = _site_line(api, "x440")
    r = api.put(f"/v1/site/cameras/{CAM}/lines/x440", json=other, params={"base_version": version + 1})
    assert r.status_code == 200, r.text
    page.get_by_test_id("save-x320").click()
    problem = page.get_by_test_id("problem")
    expect(problem).to_have_attribute("data-status", "409")
    expect(problem).to_contain_text("reload the page, then move the line again")
    assert [float(v) for v in _site_line(api, "x320")["b"]] == shown
    page.close()


def test_without_a_frame_size_nothing_can_be_dragged(served, browser):  # noqa: F811
    """A camera with no reference frame and no heatmap yet (added through the site): its lines are drawn, not
    editable, and the page says why (before, the overlay was taken to be 640x480)."""
    from playwright.sync_api import expect

    api = served.client("admin")
    cam = {"id": "door", "source": served.config["cameras"][0]["source"],
           "lines": [{"id": "entry", "a": [100, 900], "b": [1800, 900]}]}
    assert api.put("/v1/site/cameras/door", json=cam).status_code == 200
    page = sign_in(browser, served, "admin")
    open_view(page, "camera")
    page.get_by_test_id("camera").select_option("door")
    expect(page.get_by_text("No reference frame stored for this camera yet.")).to_be_visible()
    expect(page.get_by_test_id("handle-entry-a")).to_have_count(1)
    expect(page.locator(".handle.editable")).to_have_count(0)
    expect(page.get_by_text("frame size is not known yet")).to_be_visible()
    page.close()


# -- 2: a withheld interest row, and a view's error stays in the view ------------------------------------------


def test_a_withheld_interest_row_is_shown_as_withheld(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    items = served.client("viewer").get("/v1/interest", params={"start_ms": 0}).json()["items"]
    assert [(i["key"], i["suppressed"], i["dwell_s"]) for i in items] == [(f"{CAM}/shelf", True, None)]
    page = sign_in(browser, served, "viewer")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    open_view(page, "interest")
    settle(page)
    expect(page.get_by_test_id(f"interest-row-{CAM}/shelf").get_by_test_id("withheld")).to_contain_text(
        "withheld (fewer than k")
    shot(page, "review-interest-withheld-desktop")
    assert errors == []
    page.close()


def test_a_view_that_fails_shows_its_error_and_the_app_goes_on(served, browser):  # noqa: F811
    """A view that throws while rendering (here: an answer the view cannot read, served in place of the API's)
    shows the error in its place; the navigation and the other views go on (before: a blank page)."""
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer")
    bad = '{"items": [{"key": "x", "zones": [], "passers": 9, "stoppers": 1, "interest_rate": 0.1, ' \
          '"dwell_s": {"median": 1}, "attention_s": "not a number"}]}'
    page.route("**/v1/interest?*", lambda route: route.fulfill(status=200, content_type="application/json", body=bad))
    open_view(page, "interest")
    expect(page.get_by_test_id("view-error")).to_contain_text("This view failed to show")
    expect(page.get_by_test_id("nav-counts")).to_be_visible()
    open_view(page, "counts")
    expect(page.get_by_test_id("count-totals")).to_be_visible()
    expect(page.get_by_test_id("view-error")).to_have_count(0)
    page.close()


# -- 3: the live page renews its session, shows the sign-in page when it ends, marks stale numbers ---------------


def test_the_live_page_stays_signed_in_past_the_session_ttl_then_signs_in_again(served, browser):  # noqa: F811
    """Sessions last 60 s; the live page makes no request of its own but keeps its session (the stream alone never
    renewed the cookie: after 60 s the stream ended, the reconnect got 401 and the page showed the old numbers as
    live). When the session ends (signed out elsewhere) the numbers are marked not live, then the sign-in page
    shows."""
    from playwright.sync_api import expect

    page = sign_in(browser, served, "viewer")
    expect(page.get_by_test_id("live-status")).to_have_text("live")
    occupancy = served.client("viewer").get("/v1/occupancy").json()["occupancy"]
    expect(page.get_by_test_id("store-occupancy")).to_have_text(str(occupancy))
    page.wait_for_timeout(75_000)  # past the session's 60 s
    expect(page.get_by_test_id("live-status")).to_have_text("live")
    expect(page.get_by_test_id("live-stale")).to_have_count(0)
    expect(page.get_by_test_id("role")).to_have_text("viewer")
    assert page.request.get(f"{served.url}/v1/occupancy").status == 200  # the page's cookie is still good

    held = []  # the page's "am I still signed in?" requests wait: the numbers are shown as not live meanwhile
    page.route("**/v1/auth/me", lambda route: held.append(route))
    api = served.client("viewer")
    assert api.post("/v1/auth/logout").status_code == 204  # ends every session of the viewer
    expect(page.get_by_test_id("live-stale")).to_contain_text("Not live")
    expect(page.get_by_test_id("store-occupancy")).to_have_text(str(occupancy))
    expect(page.get_by_test_id("live-status")).not_to_have_text("live")
    shot(page, "review-live-stale-desktop")
    page.unroute("**/v1/auth/me")
    for route in held:
        route.continue_()
    expect(page.get_by_test_id("signin-submit")).to_be_visible()
    page.close()


# -- 4: camera health in the embedded mode ----------------------------------------------------------------------


def test_embedded_occupancy_gives_the_newest_stored_frame_time(tmp_path):
    """Without a live state (no Redis) a camera's newest frame is the newest stored frame (as in /v1/zones),
    not absent: the dashboard's camera health said "unknown" for every camera."""
    cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"},
                                                            {"id": "cam-2", "source": "/tmp/y.mp4"}]})
    storage = SqliteStorage(str(tmp_path / "h.db"))
    t0 = 1_767_225_600_000
    # frames as the pipeline stores them (every frame, people or not)
    storage.write_batch(tracked_frames=[m.TrackedFrame(camera_id="cam-1", seq=seq, ts_ms=t0 + 40 * seq)
                                        for seq in range(3)])
    storage.write_occupancy(m.OccupancyUpdate(camera_id="cam-1", ts_ms=t0, occupancy=1, total_in=1))
    client: TestClient = signed_in_client(create_app(cfg, storage), role="viewer")
    one = client.get("/v1/occupancy/cam-1").json()
    assert one["last_seen_ts_ms"] == t0 + 80 and one["ts_ms"] == t0
    cams = {c["camera_id"]: c for c in client.get("/v1/occupancy").json()["cameras"]}
    assert cams["cam-1"]["last_seen_ts_ms"] == t0 + 80
    assert "last_seen_ts_ms" not in cams["cam-2"]  # no frame: unknown
    storage.close()


def test_camera_health_shows_the_newest_frame_in_the_store_time_zone(served, browser):  # noqa: F811
    from playwright.sync_api import expect

    newest = newest_frame_ms(served.storage, CAM)
    assert newest is not None
    api = served.client("viewer").get("/v1/occupancy").json()
    assert api["cameras"][0]["last_seen_ts_ms"] == newest
    page = sign_in(browser, served, "viewer", timezone_id=BROWSER_TZ)
    open_view(page, "health")
    settle(page)
    row = page.get_by_test_id(f"health-{CAM}")
    # the demo's frames are from 2026-01-01 (a recorded file's times): receiving, not stale by the browser's clock
    # (the API's `stale`, test_dashboard_views_31), nor "unknown"
    expect(row.get_by_test_id("status")).to_have_text("receiving")
    expect(row).to_contain_text(_store_time(newest))
    page.close()


# -- 5: times in the store's time zone, wherever the browser is --------------------------------------------------


def test_day_buckets_and_times_are_the_stores_from_another_time_zone(served, browser):  # noqa: F811
    """The store is in Kolkata, the browser in Los Angeles (13 h 30 min behind): the demo's day (2026-01-01 from
    05:30 Kolkata) is labelled 2026-01-01, not the Los Angeles date 2025-12-31, and the zone is named."""
    from playwright.sync_api import expect

    counts = served.client("viewer").get("/v1/counts", params={"camera_id": CAM, "bucket_s": 86400}).json()
    assert counts["aligned_to"] == "store_local_day" and counts["timezone"] == TZ and counts["buckets"]
    day = _store_time(counts["buckets"][0]["start_ms"] + 43_200_000)[:10]
    la_day = dt.datetime.fromtimestamp(counts["buckets"][0]["start_ms"] / 1000 + 43_200,
                                       zoneinfo.ZoneInfo(BROWSER_TZ)).strftime("%Y-%m-%d")
    assert (day, la_day) == ("2026-01-01", "2025-12-31")
    page = sign_in(browser, served, "viewer", timezone_id=BROWSER_TZ)
    assert page.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone") == BROWSER_TZ
    expect(page.get_by_test_id("timezone")).to_contain_text(TZ)
    open_view(page, "counts")
    page.get_by_test_id("bucket").select_option("86400")
    settle(page)
    expect(page.get_by_test_id("counts-range")).to_contain_text(
        f"{_store_time(counts['start_ms'])} – {_store_time(counts['end_ms'])} ({TZ})")
    chart = page.get_by_test_id("counts-chart")
    expect(chart).to_have_attribute("aria-label", re.compile(day))
    assert la_day not in (chart.get_attribute("aria-label") or "")
    shot(page, "review-counts-days-kolkata-desktop")
    page.close()


# -- 6: journeys start with all the data, fall back to the last week past the limit; a picked range too long says so


def test_journeys_fall_back_to_a_week_past_the_limit_and_a_picked_too_long_range_says_so(served, browser):  # noqa: F811
    """This server links at most 1 track per request (the fixture): the default "All data" answers 422, so the
    view shows the last 7 days by itself with a note; picking "All data" then says the range is too long."""
    from playwright.sync_api import expect

    r = served.client("viewer").get("/v1/flows", params={"start_ms": 0})
    assert r.status_code == 422 and "at most 1 are linked" in r.json()["detail"], r.text
    page = sign_in(browser, served, "viewer")
    requested: list[str] = []
    page.on("request", lambda q: requested.append(q.url) if "/v1/flows" in q.url else None)
    open_view(page, "journeys")
    expect(page.get_by_test_id("range")).to_have_value("7d")
    expect(page.get_by_test_id("range-note")).to_have_text(
        "All data is more than 1 tracks: showing the last 7 days; pick another range above.")
    settle(page)
    expect(page.get_by_test_id("problem")).to_have_count(0)
    assert requested and requested[0].endswith("/v1/flows?start_ms=0"), requested  # all the data first
    shot(page, "review-journeys-fallback-desktop")

    page.get_by_test_id("range").select_option("all")  # picked: more tracks than this server links (1)
    problem = page.get_by_test_id("problem").first
    expect(problem).to_have_attribute("data-status", "422")
    expect(problem).to_contain_text("Range too long: pick a shorter one")
    expect(page.get_by_test_id("range")).to_have_value("all")  # no fall back of a picked range
    expect(page.get_by_test_id("range-note")).to_have_count(0)
    page.close()
