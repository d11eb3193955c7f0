"""Review 31d of the merged dashboard and `storelens db wait` changes (each test fails on the code before):

3. The zones view showed a live camera that never sent a frame as "stale (no frame for - s)" (the live view: "no
   frame yet"); the health view re-read /v1/occupancy as a plain function (useLiveReload's "not while a read is in
   flight" guard did not apply): a read slower than 10 s was aborted every 10 s and never finished.
4. The live view's age clock ran only for cameras stale at the last push: with the pushes stopped (the stream open,
   keepalives coming) a camera fresh at the last push never turned stale in the browser.
5. `storelens db wait` had its own wait loop and its own copy of the newer-schema message: it is open_migrated's
   (one poll helper, migrations.check's message).

Real app over SQLite on a real server, the built dashboard in Debian chromium (Playwright, its clock for the
timers), the real CLI.
"""
from __future__ import annotations

import json
import sqlite3
import time
import urllib.parse

import pytest
from test_dashboard_browser import browser, open_view, serve_site, sign_in  # noqa: F401 (browser: a fixture)
from test_db_upgrade_31 import HEAD, run_cli

from storelens.api.routes import live as live_routes
from storelens.contract import messages as m
from storelens.errors import StorageError
from storelens.storage import SqlStorage, base

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LIVE = "rtsp://127.0.0.1:9/stream"
TILL = {"id": "till", "kind": "queue", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]], "service_edge": [1, 2]}


def live_site(db) -> dict:
    return {"store": {"id": "s31d"}, "storage": {"path": str(db)},
            "cameras": [{"id": "cam-live", "source": LIVE, "zones": [TILL]}]}


# -- 3. zones: a live camera that never sent a frame reads "no frame yet" ---------------------------------------------

def test_the_zones_view_says_no_frame_yet_for_a_live_camera_that_never_sent_one(browser, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    with serve_site(live_site(tmp_path / "h.db"), SqlStorage(str(tmp_path / "h.db"))) as served:
        page = sign_in(browser, served, "viewer")
        try:
            open_view(page, "zones")
            for row, cell in (("zone-row-till", "occupancy"), ("queue-till", "length")):
                expect(page.get_by_test_id(row).get_by_test_id(cell)).to_have_text("stale (no frame yet)")
        finally:
            page.close()


# -- 3. health: a slow /v1/occupancy is read once, and finishes --------------------------------------------------------

def test_the_health_view_does_not_abort_a_slow_occupancy_read(browser, tmp_path):  # noqa: F811
    """/v1/occupancy held (the answer comes only when the test lets it) while the page's clock runs 25 s on: one
    request (it was aborted and sent again at each 10 s re-read); let through, its answer is shown."""
    from playwright.sync_api import expect

    with serve_site(live_site(tmp_path / "h.db"), SqlStorage(str(tmp_path / "h.db"))) as served:
        page = sign_in(browser, served, "viewer", clock_s=time.time())
        held: list = []
        page.route(lambda url: urllib.parse.urlparse(url).path == "/v1/occupancy", lambda route: held.append(route))
        try:
            open_view(page, "health")
            page.wait_for_function("() => document.querySelector('[data-testid=health]') !== null")
            deadline = time.monotonic() + 15
            while not held and time.monotonic() < deadline:
                page.wait_for_timeout(50)
            assert len(held) == 1
            for _ in range(25):  # the 1 s timer of useLiveReload, 25 times (renders between)
                page.clock.run_for(1_000)
                page.wait_for_timeout(20)
            assert len(held) == 1, f"{len(held)} requests of /v1/occupancy: the slow read was aborted and sent again"
            held[-1].continue_()
            expect(page.get_by_test_id("health-read-at")).to_contain_text("Count updates read")
        finally:
            page.close()


# -- 4. live: a camera fresh at the last push turns stale by itself ---------------------------------------------------

def test_a_camera_fresh_at_the_last_push_turns_stale_when_the_pushes_stop(browser, tmp_path,  # noqa: F811
                                                                          monkeypatch):
    """The hub reads only when a stream connects (its loop once an hour: no more pushes, the stream stays open); the
    camera's newest frame is 50 s old at the push (not stale). 15 s later on the page's clock it reads "no frame
    for 6x s" and the store is not live."""
    from playwright.sync_api import expect

    hub = live_routes.LiveHub
    monkeypatch.setattr(live_routes, "LiveHub", lambda ctx: hub(ctx, interval_s=3600))
    storage = SqlStorage(str(tmp_path / "h.db"))
    last = int(time.time() * 1000) - 50_000
    storage.write_batch(tracked_frames=[m.TrackedFrame(camera_id="cam-live", seq=1, ts_ms=last)])
    storage.write_occupancy(m.OccupancyUpdate(camera_id="cam-live", ts_ms=last, occupancy=1, total_in=1))
    with serve_site(live_site(tmp_path / "h.db"), storage) as served:
        page = sign_in(browser, served, "viewer", clock_s=time.time())
        try:
            open_view(page, "live")
            row = page.get_by_test_id("live-camera-cam-live")
            expect(row.get_by_test_id("occupancy")).to_have_text("1")
            expect(row.get_by_test_id("camera-stale")).to_have_count(0)  # fresh at the push
            for _ in range(15):
                page.clock.run_for(1_000)
                page.wait_for_timeout(20)
            expect(row.get_by_test_id("camera-stale")).to_contain_text("no frame for 6")
            expect(page.get_by_test_id("cameras-stale")).to_contain_text("cam-live")
        finally:
            page.close()


# -- 5. one newer-schema message: `db wait` and open_migrated(wait) -------------------------------------------------

def test_db_wait_and_open_migrated_say_the_same_of_a_newer_schema(tmp_path):
    path = tmp_path / "h.db"
    SqlStorage(str(path)).close()  # at head
    with sqlite3.connect(path) as c:
        c.execute("UPDATE schema_version SET version = ?", (HEAD["history"] + 1,))
    cfg = tmp_path / "site.yaml"
    cfg.write_text(json.dumps({"store": {"id": "s"}, "storage": {"path": str(path), "migrate": "wait"},
                               "cameras": [{"id": "c", "source": "x.mp4"}]}))
    with pytest.raises(StorageError) as opened:
        base.open_migrated(lambda upgrade: SqlStorage(str(path), upgrade=upgrade), "wait")
    res = run_cli("db", "wait", "--config", str(cfg))
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert line == f"error: {opened.value}"
    assert "newer than this StoreLens" in line
