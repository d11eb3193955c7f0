"""``/v1/live``: Server-Sent Events pushed by the server when counts or alerts change (no client polling)."""
from __future__ import annotations

import time

import httpx
import pytest

from storelens.api import create_app
from storelens.api.testing import api_key_for, served_app, sse_events
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.storage import SqlStorage

SITE = {"store": {"id": "s1"},
        "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}, {"id": "cam-2", "source": "/tmp/y.mp4"}]}


@pytest.fixture
def served(tmp_path):
    storage = SqlStorage(str(tmp_path / "h.db"))
    app = create_app(parse_config(SITE), storage)
    with served_app(app) as (base, _server):
        yield app, storage, base
    storage.close()


def _events(response: httpx.Response):
    return sse_events(response.iter_lines())


def test_live_pushes_counts_and_alerts_as_they_change(served) -> None:
    app, storage, base = served
    headers = {"Authorization": f"Bearer {api_key_for(app, 'viewer')}"}
    assert httpx.get(f"{base}/v1/live", timeout=5).status_code == 401
    with httpx.stream("GET", f"{base}/v1/live", headers=headers, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _events(r)
        first = next(events)
        assert first["event"] == "counts" and first["data"]["store"] == {"occupancy": 0, "in": 0, "out": 0}

        storage.write_occupancy(m.OccupancyUpdate(camera_id="cam-2", ts_ms=5000, occupancy=3, total_in=4, total_out=1))
        pushed = next(events)
        api = httpx.get(f"{base}/v1/occupancy", headers=headers).json()
        assert pushed["event"] == "counts"
        assert pushed["data"]["store"] == {"occupancy": api["occupancy"], "in": 4, "out": 1} == {
            "occupancy": 3, "in": 4, "out": 1}
        assert [c["occupancy"] for c in pushed["data"]["cameras"]] == [c["occupancy"] for c in api["cameras"]]

        storage.write_records([m.Alert(alert_id="r:cam-2:1", rule_id="r", kind="camera_occupancy",
                                       severity="warning", camera_id="cam-2", state="firing", ts_ms=6000, seq=1,
                                       fired_ts_ms=6000, fired_seq=1, value=3, threshold=2, message="crowd")])
        alert = next(events)
        assert alert["event"] == "alert" and alert["data"]["alert_id"] == "r:cam-2:1"
        assert alert["data"] == httpx.get(f"{base}/v1/alerts", headers=headers).json()["alerts"][0]


def test_a_listener_after_a_quiet_spell_gets_no_old_alerts_as_new(served) -> None:
    """When the last dashboard closes, the hub forgets what it had read: the next one starts from the state at
    its connection, and only what changes after it comes as events (not the alerts of the quiet spell)."""
    app, storage, base = served
    headers = {"Authorization": f"Bearer {api_key_for(app, 'viewer')}"}

    def alert(n: int) -> m.Alert:
        return m.Alert(alert_id=f"r:cam-1:{n}", rule_id="r", kind="camera_occupancy", severity="warning",
                       camera_id="cam-1", state="firing", ts_ms=6000 + n, seq=n, fired_ts_ms=6000 + n, fired_seq=n,
                       value=3, threshold=2, message="crowd")

    with httpx.stream("GET", f"{base}/v1/live", headers=headers, timeout=30) as r:
        assert next(_events(r))["event"] == "counts"
    time.sleep(2.5)  # the server sees the disconnection; the hub's loop ends
    storage.write_records([alert(1)])  # while nobody listens
    with httpx.stream("GET", f"{base}/v1/live", headers=headers, timeout=30) as r:
        events = _events(r)
        assert next(events)["event"] == "counts"
        time.sleep(1.5)  # a read of the hub after the connection
        storage.write_records([alert(2)])
        assert next(events)["data"]["alert_id"] == "r:cam-1:2", "the quiet spell's alert is not pushed as new"


def test_an_open_stream_ends_when_its_key_is_revoked(served, monkeypatch) -> None:
    from storelens.api.routes import live

    monkeypatch.setattr(live, "REAUTH_S", 0.2)
    monkeypatch.setattr(live, "KEEPALIVE_S", 0.3)
    app, _, base = served
    auth = app.state.context.auth
    key_id, key = auth.create_api_key("wall display", "viewer", "test")
    with httpx.stream("GET", f"{base}/v1/live", headers={"Authorization": f"Bearer {key}"}, timeout=30) as r:
        events = _events(r)
        assert next(events)["event"] == "counts"
        t0 = time.monotonic()
        assert auth.revoke_api_key(key_id)
        rest = list(events)  # the server ends the stream (no hang until the 30 s timeout)
        assert time.monotonic() - t0 < 10 and all(e.get("event") != "counts" for e in rest)
