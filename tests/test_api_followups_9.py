"""API follow-ups (ninth batch), with real components: a hung Redis (a listening socket that never answers), a real
Redis, real SQLite storage, the API as :func:`storelens.api.server.build_app` wires it:

1. a hung Redis costs the API one short wait, then ``/v1/occupancy``, ``/v1/zones`` and ``/v1/live``'s reads answer
   from storage at once (a circuit breaker in :class:`~storelens.storage.live.RedisLiveState`, shared with the
   sign-in limiter: :class:`~storelens.runtime.policy.Breaker`), and a ping in the background tries Redis again
   after the period (``tests/test_live_state_probe.py``); a ``/metrics`` scrape waits at most ``live.timeout_s``
   (0.5 s, as ``/readyz``) for the live state's ping, whatever its client's timeout;
2. ``anyio>=4.1`` (``abandon_on_cancel`` of ``/readyz``) is pinned and installed;
3. a site edit sending ``${VAR}`` where the site holds ``${VAR:-default}`` keeps the default, logged at info with
   the field, never the value.
"""
from __future__ import annotations

import logging
import pathlib
import socket
import time
import uuid
from importlib.metadata import version

import pytest
from fastapi.testclient import TestClient

from storelens.api import create_app
from storelens.api.server import build_app
from storelens.api.testing import api_key_for, signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.storage import SqliteStorage
from storelens.storage import live as live_state
from storelens.storage.live import RedisLiveState
from test_live import REDIS_URL

ROOT = pathlib.Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000
N_CAMERAS = 4
#: At most how long a ``/metrics`` scrape (as ``/readyz``) waits for the live state's ping (``live.timeout_s``).
PING_WAIT_S = 1.0
ZONE = {"id": "shelf", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]], "kind": "shelf"}


@pytest.fixture
def hung_redis():
    """A TCP listener whose kernel completes the handshakes while nothing ever reads or answers: a hung Redis."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(128)
        yield f"redis://127.0.0.1:{srv.getsockname()[1]}/0"


def _live_up(client: TestClient) -> tuple[str, float]:
    t0 = time.monotonic()
    text = client.get("/metrics").text
    return next(ln for ln in text.splitlines() if ln.startswith("storelens_live_state_up ")), time.monotonic() - t0


def _timed(client: TestClient, path: str):
    t0 = time.monotonic()
    r = client.get(path)
    assert r.status_code == 200, r.text
    return r.json(), time.monotonic() - t0


def test_a_hung_redis_costs_one_short_wait_then_the_api_answers_from_storage(tmp_path, hung_redis) -> None:
    cams = [{"id": f"cam-{i}", "source": f"/tmp/cam-{i}.mp4", "zones": [ZONE]} for i in range(N_CAMERAS)]
    cfg = parse_config({"store": {"id": "s1"}, "cameras": cams, "storage": {"path": str(tmp_path / "h.db")},
                        "live": {"redis_url": hung_redis}})
    seed = SqliteStorage(str(tmp_path / "h.db"))
    seed.write_batch(occupancy_updates=[m.OccupancyUpdate(camera_id=f"cam-{i}", ts_ms=T0, occupancy=i + 1,
                                                          total_in=i + 3, total_out=2) for i in range(N_CAMERAS)])
    seed.close()
    app = build_app(cfg)
    with TestClient(app, headers={"Authorization": f"Bearer {api_key_for(app)}"}) as client:
        # the first read waits one short timeout (before: 5 s per camera), then every camera from storage
        body, took = _timed(client, "/v1/occupancy")
        assert took < 2.5, f"/v1/occupancy took {took:.1f} s with a hung Redis"
        assert [(c["camera_id"], c["occupancy"], c["total_in"]) for c in body["cameras"]] == \
            [(f"cam-{i}", i + 1, i + 3) for i in range(N_CAMERAS)]
        assert body["occupancy"] == sum(range(1, N_CAMERAS + 1))
        # Redis is left alone meanwhile: the next reads do not wait for it at all
        for path in ("/v1/occupancy", "/v1/zones", "/v1/occupancy/cam-2"):
            body, took = _timed(client, path)
            assert took < 0.5, f"{path} took {took:.2f} s"
        assert body["occupancy"] == 3
        line, took = _live_up(client)
        assert line == "storelens_live_state_up 0.0" and took < PING_WAIT_S + 0.5, (line, took)
        r = client.get("/readyz")
        assert (r.status_code, r.json()) == (200, {"status": "ready", "live_state": "unavailable"})


def test_the_metrics_scrape_waits_at_most_a_second_for_the_live_state(tmp_path, hung_redis) -> None:
    """Whatever the live state client's own timeout (5 s here, no breaker), a scrape is not held past the bound."""
    storage = SqliteStorage(str(tmp_path / "h.db"))
    cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]})
    with RedisLiveState(hung_redis, timeout_s=5.0) as live:
        admin = signed_in_client(create_app(cfg, storage, live))
        for _ in range(2):
            line, took = _live_up(admin)
            assert line == "storelens_live_state_up 0.0" and took < PING_WAIT_S + 0.5, (line, took)
    storage.close()


def test_the_breaker_skips_redis_for_its_period_then_tries_it_again(hung_redis) -> None:
    with RedisLiveState(hung_redis, timeout_s=0.3, retry_s=1.0) as live:
        def timed(call) -> tuple[type, float]:
            t0 = time.monotonic()
            with pytest.raises(Exception) as err:
                call()
            return err.type, time.monotonic() - t0

        first, skipped = timed(lambda: live.occupancy("c")), timed(lambda: live.last_seen("c"))
        t0 = time.monotonic()
        ping = (live.ping(), time.monotonic() - t0)
        assert first[1] >= 0.25 and skipped == (live_state.LiveStateUnavailable, skipped[1]) and skipped[1] < 0.05, \
            (first, skipped)
        assert ping[0] is False and ping[1] < 0.05, ping
        time.sleep(1.1)
        again = timed(lambda: live.cameras())  # a ping in the background asks Redis again, no read waits for it
        assert again[0] is live_state.LiveStateUnavailable and again[1] < 0.05, again
    # a Redis that answers is used as before through the breaker
    with RedisLiveState(REDIS_URL, prefix=f"storelens-test:{uuid.uuid4().hex[:16]}", timeout_s=0.5,
                        retry_s=30.0) as live:
        try:
            assert live.ping() and live.set_occupancy(m.OccupancyUpdate(camera_id="c", ts_ms=T0, occupancy=2))
            assert live.occupancy("c").occupancy == 2 and list(live.cameras()) == ["c"]
        finally:
            live.clear()


# -- 2. anyio pinned ------------------------------------------------------------------------------------------

def test_anyio_is_pinned_to_a_version_with_abandon_on_cancel() -> None:
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    assert "anyio>=4.1" in lines
    assert tuple(int(x) for x in version("anyio").split(".")[:2]) >= (4, 1)


# -- 3. a template's default is kept, and the admin is told in the log ------------------------------------------

def test_a_masked_source_keeps_its_default_and_says_so_in_the_log(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.delenv("SLTEST_CAM_PW", raising=False)
    source = "rtsp://u:${SLTEST_CAM_PW:-s3cret}@cam.local/x"
    storage = SqliteStorage(str(tmp_path / "h.db"))
    app = create_app(parse_config({"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": source}]}), storage)
    admin = signed_in_client(app)
    with caplog.at_level(logging.INFO, logger="storelens.config.site"):
        r = admin.put("/v1/site/cameras/cam-1", json={"id": "cam-1", "source": "rtsp://u:${SLTEST_CAM_PW}@cam.local/x"})
    assert r.status_code == 200, r.text
    assert app.state.context.config.cameras[0].source == "rtsp://u:s3cret@cam.local/x"  # the default kept
    kept = [rec.getMessage() for rec in caplog.records if rec.name == "storelens.config.site"]
    assert len(kept) == 1 and "cameras.0.source" in kept[0] and "storelens site import" in kept[0], kept
    assert "s3cret" not in caplog.text
    storage.close()
