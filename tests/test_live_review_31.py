"""Follow-ups of the review of the live staleness change (each test fails on the code before):

1. The zones view read /v1/zones and /v1/queues on every live ``counts`` push (every second while a camera receives:
   its newest frame's time changes), with no guard: answers slower than the pushes were never shown, and a failed
   re-read blanked the view. Now: every 10 s, never while a read is in flight, the last answer kept beside an error.
2. "no frame for N s" froze (``age_s`` alone never pushes): the dashboard adds the time since the push, ticking.
3. The stream's "could not read" event was named ``error``, EventSource's own connection error (clients reconnect on
   it): it is ``unavailable``.
4. A stream opened while the reads failed stayed on the error when another stream's connection made the first good
   read (its ``counts`` went to nobody); the live view showed nothing of the error before any number came.
5. A live camera that never sent a frame counted as live (zeros, "receiving"): it is ``stale`` with no age in
   ``/v1/zones``, ``/v1/queues``, ``/v1/occupancy`` and the live push; a recorded file is unchanged.
"""
from __future__ import annotations

import threading
import time

import httpx
import pytest
import sqlalchemy as sa

from storelens.api import create_app
from storelens.api.routes import live as live_routes
from storelens.api.routes.live import LiveHub, counts_snapshot
from storelens.api.testing import api_key_for, served_app, signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.storage import SqliteStorage
from storelens.storage.schema import alerts as alerts_table
from test_dashboard_live_31 import _events, _next_event

LIVE = "rtsp://cam.example/stream"
SITE = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]}
TILL = {"id": "till", "kind": "queue", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]], "service_edge": [1, 2]}


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The real app over SQLite on a real server; keepalives every 0.2 s; the hub's own loop reads once an hour (so
    the only reads are the ones a connecting stream makes)."""
    monkeypatch.setattr(live_routes, "KEEPALIVE_S", 0.2)
    storage = SqliteStorage(str(tmp_path / "h.db"))
    app = create_app(parse_config(SITE), storage)
    app.state.live_hub = LiveHub(app.state.context, interval_s=3600)
    with served_app(app) as (base, _server):
        yield app, storage, base
    storage.close()


def _drop_alerts(storage) -> None:  # a real fault of the storage under the running app: every live read fails
    with storage.db.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alerts"))


# -- 3. the "could not read" event is `unavailable`, never `error` -------------------------------------------------

def test_the_could_not_read_event_is_named_unavailable_not_error(served) -> None:
    app, storage, base = served
    _drop_alerts(storage)
    headers = {"Authorization": f"Bearer {api_key_for(app, 'viewer')}"}
    with httpx.stream("GET", f"{base}/v1/live", headers=headers, timeout=60) as r:
        events = [ev for ev, _ in zip(_events(r), range(5))]  # the connect's events, then keepalives
    names = [ev.get("event") for ev in events if "event" in ev]
    assert "error" not in names, "an `error` event: EventSource clients take it for the connection's and reconnect"
    assert names == ["unavailable"]
    assert "could not read" in events[0]["data"]["message"]


# -- 4. the first good read after failed ones reaches every open stream -----------------------------------------------

def test_a_stream_opened_during_an_outage_gets_counts_when_another_connection_reads(served) -> None:
    app, storage, base = served
    headers = {"Authorization": f"Bearer {api_key_for(app, 'viewer')}"}
    _drop_alerts(storage)
    with httpx.stream("GET", f"{base}/v1/live", headers=headers, timeout=60) as a:
        events_a = _events(a)
        assert _next_event(events_a, "unavailable") is not None
        alerts_table.create(storage.db.engine)  # the storage recovers
        storage.write_occupancy(m.OccupancyUpdate(camera_id="cam-1", ts_ms=5000, occupancy=4, total_in=4))
        with httpx.stream("GET", f"{base}/v1/live", headers=headers, timeout=60) as b:  # B's connect reads
            first_b = next(_events(b))
            assert first_b["event"] == "counts" and first_b["data"]["store"]["occupancy"] == 4
            got = _next_event(events_a, "counts", keepalives=10)
            assert got is not None, "A stayed on the error: B's good read pushed nothing to it"
            assert got["data"]["store"]["occupancy"] == 4


# -- 5. a live camera that never sent a frame is stale, everywhere the rule applies -----------------------------------

@pytest.mark.parametrize("source, stale", [
    (LIVE, True),  # a new RTSP camera with a wrong URL: not "live with zeros"
    ("/tmp/never.mp4", False),  # a recorded file not yet run: as before
])
def test_a_live_camera_without_any_frame_is_stale(tmp_path, source: str, stale: bool) -> None:
    raw = {"store": {"id": "s1"}, "cameras": [{"id": "new", "source": source, "zones": [TILL]},
                                             {"id": "file", "source": "/tmp/f.mp4"}]}
    with SqliteStorage(str(tmp_path / "h.db")) as storage:
        app = create_app(parse_config(raw), storage)
        client = signed_in_client(app, "viewer")
        zone = client.get("/v1/zones").json()["zones"][0]
        queue = client.get("/v1/queues").json()["queues"][0]
        occ = client.get("/v1/occupancy").json()
        cam = occ["cameras"][0]
        pushed = counts_snapshot(app.state.context)
        seen = {
            "/v1/zones": (zone["stale"], zone["age_s"], zone["occupancy"]),
            "/v1/queues": (queue["stale"], queue["age_s"], queue["length"]),
            "/v1/occupancy": (cam["stale"], cam.get("age_s"), occ["stale"]),
            "/v1/occupancy/new": (client.get("/v1/occupancy/new").json()["stale"], None, stale),
            "/v1/live counts": (pushed["cameras"][0]["stale"], pushed["cameras"][0]["age_s"], pushed["stale"]),
        }
        want = {
            "/v1/zones": (stale, None, None if stale else 0),
            "/v1/queues": (stale, None, None if stale else 0),
            "/v1/occupancy": (stale, None, stale),
            "/v1/occupancy/new": (stale, None, stale),
            "/v1/live counts": (stale, None, stale),
        }
        assert seen == want
        assert occ["cameras"][1]["stale"] is False  # the recorded file beside it


# -- 1, 2 and 4 in the browser ----------------------------------------------------------------------------------------

def test_the_zones_view_reads_every_10_s_one_at_a_time_and_keeps_its_answer_on_an_error(tmp_path,
                                                                                         monkeypatch) -> None:
    """Frames arrive every 0.5 s (a push a second); /v1/queues answers in 1.5 s. Over the first 9 s the view reads
    it once (it read it on each push: ~9, none of them shown); a newer length shows at the 10 s re-read; a re-read
    answered 503 leaves that length on screen beside the error."""
    from playwright.sync_api import expect, sync_playwright
    from storelens.api.routes import zones as zones_routes
    from test_dashboard_browser import CHROMIUM, open_view, serve_site, sign_in

    covered = zones_routes._covered_ms

    def slow_covered(*args, **kwargs):  # /v1/queues answers in 1.5 s (a busy database)
        time.sleep(1.5)
        return covered(*args, **kwargs)

    monkeypatch.setattr(zones_routes, "_covered_ms", slow_covered)
    raw = {"store": {"id": "s1"}, "cameras": [{"id": "floor", "source": "/tmp/floor.mp4", "zones": [TILL]}]}
    t0 = int(time.time() * 1000)
    storage = SqliteStorage(str(tmp_path / "h.db"))
    storage.write_records([m.ZoneOccupancy(camera_id="floor", ts_ms=t0, seq=1, occupancy={"till": 2})])
    stop = threading.Event()

    def frames() -> None:  # the camera receives: its newest frame's time changes, so the hub pushes every second
        seq = 0
        while not stop.wait(0.5):
            seq += 1
            storage.write_batch(tracked_frames=[m.TrackedFrame(camera_id="floor", seq=seq, ts_ms=t0 + seq * 500)])

    with serve_site(raw, storage) as served, sync_playwright() as p:
        writer = threading.Thread(target=frames, daemon=True)
        writer.start()
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = sign_in(b, served, "viewer")
            reads: list[float] = []
            page.on("request", lambda r: "/v1/queues" in r.url and reads.append(time.monotonic()))
            open_view(page, "zones")
            opened = time.monotonic()
            length = page.get_by_test_id("queue-till").get_by_test_id("length")
            expect(length).to_have_text("2", timeout=8_000)  # the slow answer is shown
            storage.write_records([m.ZoneOccupancy(camera_id="floor", ts_ms=t0 + 1000, seq=2, occupancy={"till": 9})])
            page.wait_for_timeout(max(0, 9_000 - (time.monotonic() - opened) * 1000))
            early = [t for t in reads if t - opened < 9]
            assert len(early) <= 2, f"{len(early)} reads of /v1/queues in 9 s (one per live push)"
            expect(length).to_have_text("9", timeout=15_000)  # the 10 s re-read, shown although slow

            page.route("**/v1/queues*", lambda route: route.fulfill(
                status=503, content_type="application/json", body='{"detail": "storage unavailable"}'))
            expect(page.get_by_test_id("problem")).to_contain_text("storage unavailable", timeout=15_000)
            expect(length).to_have_text("9")  # the last answer stays beside the error
        finally:
            stop.set()
            writer.join(timeout=5)
            b.close()


def test_the_live_view_ages_a_stale_camera_and_shows_an_outage_before_any_number(tmp_path) -> None:
    """2: a live camera's "no frame for N s" counts on between pushes (it froze at the pushed age). 4: opened while
    the server cannot read the numbers, the live view says so (it showed "Waiting for the live feed…")."""
    from playwright.sync_api import expect, sync_playwright
    from test_dashboard_browser import CHROMIUM, open_view, serve_site, sign_in

    raw = {"store": {"id": "s1"}, "cameras": [{"id": "door", "source": LIVE}]}
    down = SqliteStorage(str(tmp_path / "down.db"))
    stale = SqliteStorage(str(tmp_path / "stale.db"))
    last = int(time.time() * 1000) - 120_000  # its newest frame: two minutes ago
    stale.write_batch(tracked_frames=[m.TrackedFrame(camera_id="door", seq=1, ts_ms=last)])
    stale.write_occupancy(m.OccupancyUpdate(camera_id="door", ts_ms=last, occupancy=1, total_in=1))
    with serve_site(raw, stale) as aged, serve_site(raw, down) as failing, sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = sign_in(b, aged, "viewer")
            open_view(page, "live")
            pill = page.get_by_test_id("camera-stale")
            expect(pill).to_contain_text("no frame for 1")
            first = int(pill.inner_text().split("for ")[1].split(" s")[0])
            assert 119 <= first < 150
            expect(pill).not_to_contain_text(f"for {first} s", timeout=5_000)  # it counts on, with no push

            _drop_alerts(down)  # before the sign-in: the feed opens with it, and its first read fails
            page = sign_in(b, failing, "viewer")
            open_view(page, "live")
            expect(page.get_by_test_id("live-stale")).to_contain_text("could not read")
        finally:
            b.close()
