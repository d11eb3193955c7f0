"""Follow-ups of a read-only review of the dashboard's live numbers (each test fails on the code before):

1. "Zones now", "Queues – Length now" and Camera health's "Last count update" were read once: the zones view now
   reads them again on each live ``counts`` push and every 10 s, and shows the time of the read (browser test).
2. ``/v1/live`` showed a stopped live camera's last numbers as "now": ``counts_snapshot`` and ``/v1/occupancy``
   mark a live camera ``stale`` (with ``age_s``) after 60 s without a frame, by ``/v1/zones``' rule (a recorded
   file never is), and a failed read of the stream is an ``unavailable`` event (it was only logged: the page froze).
3. An open ``/v1/live`` stream ended when the token it was opened with expired (the dashboard renews its cookie,
   not the stream's token): it is kept while the session could be renewed, and still ends at a sign-out.
"""
from __future__ import annotations

import time

import httpx
import pytest
import sqlalchemy as sa

from storelens.api import create_app
from storelens.api.routes.live import counts_snapshot
from storelens.api.testing import api_key_for, served_app, signed_in_client, sse_events
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.storage import SqliteStorage
from storelens.storage.schema import alerts as alerts_table

LIVE = "rtsp://cam.example/stream"
SITE = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]}


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The real app over SQLite on a real server; an open stream checks its credential every 0.2 s and sends a
    keepalive every 0.3 s."""
    from storelens.api.routes import live

    monkeypatch.setattr(live, "REAUTH_S", 0.2)
    monkeypatch.setattr(live, "KEEPALIVE_S", 0.3)
    storage = SqliteStorage(str(tmp_path / "h.db"))
    app = create_app(parse_config(SITE), storage)
    with served_app(app) as (base, _server):
        yield app, storage, base
    storage.close()


def _events(response: httpx.Response):
    """The stream's events, and ``{"comment": ...}`` for each keepalive."""
    return sse_events(response.iter_lines(), keepalives=True)


def _next_event(events, kind: str, keepalives: int = 100) -> dict | None:
    """The next ``kind`` event, or ``None`` when the stream ends or ``keepalives`` keepalives pass first."""
    for ev in events:
        if ev.get("event") == kind:
            return ev
        if "comment" in ev:
            keepalives -= 1
            if keepalives <= 0:
                return None
    return None


# -- 2. a live camera without a frame for 60 s is stale in /v1/occupancy and the live push ---------------------------

@pytest.mark.parametrize("source, frame_age_s, stale, age_s", [
    (LIVE, 120, True, 120.0),  # down two minutes: its numbers are not now's
    (LIVE, 5, False, 5.0),  # receiving
    ("/tmp/x.mp4", 120, False, None),  # a recorded file answers as it did: never stale
])
def test_a_live_camera_without_a_frame_for_60_s_is_stale(tmp_path, source: str, frame_age_s: int, stale: bool,
                                                         age_s: float | None) -> None:
    cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": source},
                                                            {"id": "cam-2", "source": "/tmp/y.mp4"}]})
    last = int(time.time() * 1000) - frame_age_s * 1000
    with SqliteStorage(str(tmp_path / "h.db")) as storage:
        storage.write_batch(tracked_frames=[m.TrackedFrame(camera_id="cam-1", seq=s, ts_ms=last - 40 * (2 - s))
                                            for s in range(3)])
        storage.write_occupancy(m.OccupancyUpdate(camera_id="cam-1", ts_ms=last - 80, occupancy=2, total_in=2))
        app = create_app(cfg, storage)
        client = signed_in_client(app, "viewer")
        api = client.get("/v1/occupancy").json()
        cam = api["cameras"][0]
        snap = counts_snapshot(app.state.context)  # what /v1/live pushes
        pushed = snap["cameras"][0]
        assert (cam["stale"], pushed["stale"], api["stale"], snap["stale"]) == (stale,) * 4
        for got in (cam.get("age_s"), pushed["age_s"]):  # (the age at the read: a slow machine adds seconds)
            assert got is None if age_s is None else age_s - 1 <= got <= age_s + 30
        assert cam["occupancy"] == pushed["occupancy"] == 2  # the numbers are still shown, marked
        assert client.get("/v1/occupancy/cam-1").json()["stale"] is stale
        assert {c["camera_id"]: c["stale"] for c in snap["cameras"]}["cam-2"] is False


# -- 2. a failed read of the live stream is an unavailable event ------------------------------------------------------

def test_the_live_stream_answers_an_error_event_when_a_read_fails(served) -> None:
    """The alerts table is dropped under the running app (a real fault of the storage): the stream says so with an
    ``unavailable`` event (it was only logged, and the page showed the last numbers as live); once the table is back,
    ``counts`` come again."""
    app, storage, base = served
    headers = {"Authorization": f"Bearer {api_key_for(app, 'viewer')}"}
    with httpx.stream("GET", f"{base}/v1/live", headers=headers, timeout=60) as r:
        events = _events(r)
        assert _next_event(events, "counts") is not None
        with storage.db.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE alerts"))
        error = _next_event(events, "unavailable")
        assert error is not None, "no error event: the stream froze on the last numbers"
        assert "could not read" in error["data"]["message"]
        alerts_table.create(storage.db.engine)
        again = _next_event(events, "counts")
        assert again is not None and again["data"]["stale"] is False
    metrics = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {api_key_for(app, 'admin')}"}).text
    assert 'storelens_errors_total{reason="live_read_failed"}' in metrics


def test_a_stream_opened_while_the_reads_fail_gets_the_error(served) -> None:
    app, storage, base = served
    headers = {"Authorization": f"Bearer {api_key_for(app, 'viewer')}"}
    with storage.db.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alerts"))
    with httpx.stream("GET", f"{base}/v1/live", headers=headers, timeout=60) as r:
        assert r.status_code == 200
        assert _next_event(_events(r), "unavailable") is not None


# -- 3. an open stream outlives its token's expiry while the session holds; a sign-out ends it ------------------------

def _login(base: str) -> str:
    r = httpx.post(f"{base}/v1/auth/login", data={"username": "ana", "password": "correct horse battery"})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def test_a_stream_stays_open_past_its_tokens_expiry_and_ends_at_sign_out(served) -> None:
    app, storage, base = served
    auth = app.state.context.auth
    # sessions of 5 s (the config's least is 60): enough for the sign-in and the stream's first check on a loaded
    # machine (a token expired at the connect is refused, rightly), short enough to pass during the test
    auth.cfg = auth.cfg.model_copy(update={"session_ttl_s": 5})
    assert auth.create_user("ana", "correct horse battery", "viewer")
    token = _login(base)
    with httpx.stream("GET", f"{base}/v1/live", headers={"Authorization": f"Bearer {token}"}, timeout=60) as r:
        assert r.status_code == 200
        events = _events(r)
        assert _next_event(events, "counts") is not None
        while auth.authenticate(token) is not None:  # the token's exp passes (the dashboard renews its cookie)
            assert next(events) is not None
        keepalives = 0
        for ev in events:  # several re-checks of the stream's credential (every 0.2 s) after its exp
            keepalives += "comment" in ev
            if keepalives == 5:
                break
        storage.write_occupancy(m.OccupancyUpdate(camera_id="cam-1", ts_ms=5000, occupancy=3, total_in=3))
        pushed = _next_event(events, "counts")
        assert pushed is not None, "the stream ended at its token's expiry"
        assert pushed["data"]["store"]["occupancy"] == 3

        other = _login(base)  # the same user signs out (another session): every session of the user ends
        assert httpx.post(f"{base}/v1/auth/logout", headers={"Authorization": f"Bearer {other}"}).status_code == 204
        t0 = time.monotonic()
        rest = list(events)  # the server ends the stream (no hang until the 60 s timeout)
        assert time.monotonic() - t0 < 30 and all(e.get("event") != "counts" for e in rest)


# -- 1. the zones view reads Zones now and the queues again, without a reload of the page -----------------------------

def test_the_zones_view_reads_the_queue_length_again(tmp_path) -> None:
    """A newer queue row is written while the zones view is open: its "Length now" and "People inside" change
    without a reload (they were read once), on the live push the written count causes (or the 10 s re-read)."""
    from playwright.sync_api import expect, sync_playwright
    from test_dashboard_browser import CHROMIUM, open_view, serve_site, settle, sign_in

    raw = {"store": {"id": "s1"}, "cameras": [{"id": "floor", "source": "/tmp/floor.mp4", "zones": [
        {"id": "till", "kind": "queue", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]],
         "service_edge": [1, 2]}]}]}
    t0 = int(time.time() * 1000)
    storage = SqliteStorage(str(tmp_path / "h.db"))
    storage.write_records([m.ZoneOccupancy(camera_id="floor", ts_ms=t0, seq=1, occupancy={"till": 2})])
    with serve_site(raw, storage) as served, sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = sign_in(b, served, "viewer")
            open_view(page, "zones")
            settle(page)
            length = page.get_by_test_id("queue-till").get_by_test_id("length")
            expect(length).to_have_text("2")
            storage.write_records([m.ZoneOccupancy(camera_id="floor", ts_ms=t0 + 1000, seq=2,
                                                   occupancy={"till": 9})])
            storage.write_occupancy(m.OccupancyUpdate(camera_id="floor", ts_ms=t0 + 1000, occupancy=9, total_in=9))
            expect(length).to_have_text("9", timeout=15_000)
            expect(page.get_by_test_id("zone-row-till").get_by_test_id("occupancy")).to_have_text("9")
            expect(page.get_by_test_id("queues-read-at")).to_contain_text("Read ")  # the time of the read
        finally:
            b.close()
