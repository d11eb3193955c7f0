"""API review findings (eighth batch), through the real app, real SQLite storage, a real Redis and a real server:

1. a zone whose product holds ``${VAR:-default}`` can be moved: the dashboard sends back the zone as ``GET
   /v1/site`` showed it (``${VAR}``, default dropped), which is the value the site holds there; a new template
   (another place, another variable) is still refused;
2. the audit draws one clip per ``(camera, line, ts)``: two people crossing in one frame are one clip whose
   system count holds both, and ``POST /v1/audits`` takes the tally of every sampled clip;
3. ``/readyz`` follows the storage only: Redis down (refused, or not answering) leaves the API ready, reported
   as ``live_state`` and ``storelens_live_state_up``;
4. ``/healthz`` answers at once while the thread pool is full of requests waiting for a locked database.
"""
from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
import uuid

import httpx
import pytest

from storelens.api import create_app
from storelens.api.testing import api_key_for, served_app, signed_in_client
from storelens.config import parse_config
from storelens.config.site import site_version_document
from storelens.domain.counting import CrossingEvent
from storelens.paths import asset
from storelens.runtime.localdeploy import free_port
from storelens.storage import SqliteStorage
from storelens.storage import site as sq
from storelens.storage.audit import make_clip, pick_crossings
from storelens.storage.live import RedisLiveState
from test_live import REDIS_URL

# -- 1. a zone with a templated product moves ----------------------------------------------------------------

ZONE = {"id": "shelf-1", "polygon": [[10, 10], [100, 10], [100, 100], [10, 100]], "kind": "shelf",
        "product": "${SLTEST_PRODUCT:-Shampoo}", "category": "${SLTEST_CATEGORY:-Hair care}"}
SITE = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4", "zones": [ZONE]}]}


def test_a_zone_with_a_templated_product_moves_as_the_dashboard_sends_it(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SLTEST_PRODUCT", raising=False)
    monkeypatch.delenv("SLTEST_CATEGORY", raising=False)
    monkeypatch.setenv("DB_PASSWORD", "db-S3cret")
    storage = SqliteStorage(str(tmp_path / "h.db"))
    app = create_app(parse_config(SITE), storage)
    admin = signed_in_client(app)
    shown = admin.get("/v1/site").json()["cameras"][0]["zones"][0]
    assert (shown["product"], shown["category"]) == ("${SLTEST_PRODUCT}", "${SLTEST_CATEGORY}")
    # the dashboard's saveZone: the zone as shown, only the polygon moved
    moved = {**shown, "polygon": [[20, 20], [120, 20], [120, 120], [20, 120]]}
    r = admin.put("/v1/site/cameras/cam-1/zones/shelf-1", json=moved, params={"base_version": 0})
    assert r.status_code == 200, r.text
    assert r.json()["camera"]["zones"][0]["product"] == "${SLTEST_PRODUCT}"
    ctx = app.state.context
    zone = ctx.config.cameras[0].zones[0]
    assert (zone.polygon[0], zone.product, zone.category) == ((20, 20), "Shampoo", "Hair care")
    # the version keeps the template with its default, as the site held it
    held = site_version_document(ctx.config)["cameras"][0]["zones"][0]
    assert (held["product"], held["category"]) == (ZONE["product"], ZONE["category"])
    saved = sq.site_update(storage, "s1", 0)
    assert saved is not None and "${SLTEST_PRODUCT:-Shampoo}" in saved.cameras_json
    # a template the site does not hold at that place is still refused: another zone, another variable
    other = {**moved, "id": "shelf-2"}
    assert admin.put("/v1/site/cameras/cam-1/zones/shelf-2", json=other).status_code == 422
    for product in ("${DB_PASSWORD}", "${DB_PASSWORD:-x}", "${SLTEST_PRODUCT:-other}"):
        r = admin.put("/v1/site/cameras/cam-1/zones/shelf-1", json={**moved, "product": product})
        assert r.status_code == 422 and "may only be in a camera's source" in r.text, (product, r.text)
    assert "db-S3cret" not in admin.get("/v1/site").text
    assert ctx.site_version == 1
    storage.close()


# -- 2. one audit clip per (camera, line, ts) ----------------------------------------------------------------

T0 = 1_700_000_000_000


def test_two_crossings_in_one_frame_are_one_clip_counting_both(tmp_path) -> None:
    video = asset("video", "caviar", "OneLeaveShop1front", "OneLeaveShop1front.mp4")
    cfg = parse_config({"store": {"id": "s1"}, "cameras": [{"id": "door", "source": str(video), "lines": [
        {"id": "entry", "a": [0, 100], "b": [300, 100]}]}]})
    # two people cross the line in the same frame, a third one 10 s later
    events = [CrossingEvent("e-1", "door", "entry", 1, "in", T0, 10),
              CrossingEvent("e-2", "door", "entry", 2, "in", T0, 10),
              CrossingEvent("e-3", "door", "entry", 3, "out", T0 + 10_000, 260)]
    storage = SqliteStorage(str(tmp_path / "h.db"))
    storage.write_batch(crossings=events)
    for seed in range(20):
        picks = pick_crossings(cfg, storage, n=3, seed=seed)
        assert sorted((e.line_id, e.ts_ms) for e in picks) == [("entry", T0), ("entry", T0 + 10_000)], seed
        assert len(pick_crossings(cfg, storage, n=1, seed=seed)) == 1
    clip = make_clip(cfg, storage, "door", "entry", T0)
    assert clip is not None and (clip.system_in, clip.system_out) == (2, 0)
    # through the API: the sample names each clip once, and the tally of all of them is taken
    manager = signed_in_client(create_app(cfg, storage), role="manager")
    r = manager.post("/v1/audits/sample", json={"clips": 3, "seed": 1})
    assert r.status_code == 200, r.text
    clips = r.json()["clips"]
    assert sorted(c["clip_id"] for c in clips) == [f"door/entry/{T0}", f"door/entry/{T0 + 10_000}"]
    tally = [{"camera_id": c["camera_id"], "line_id": c["line_id"], "crossing_ts_ms": c["crossing_ts_ms"],
              "in": 2 if c["crossing_ts_ms"] == T0 else 0, "out": 0 if c["crossing_ts_ms"] == T0 else 1}
             for c in clips]
    r = manager.post("/v1/audits", json={"clips": tally})
    assert r.status_code == 200, r.text
    assert (r.json()["n_clips"], r.json()["n_correct"]) == (2, 2)
    storage.close()


# -- 3. readiness follows the storage, Redis is reported ------------------------------------------------------

CAMS = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]}


def _live_up(admin) -> str:
    return next(line for line in admin.get("/metrics").text.splitlines()
                if line.startswith("storelens_live_state_up "))


def test_readyz_stays_ready_without_redis_and_reports_it(tmp_path) -> None:
    storage = SqliteStorage(str(tmp_path / "h.db"))
    with RedisLiveState(REDIS_URL, prefix=f"storelens-test:{uuid.uuid4().hex[:16]}") as up:
        admin = signed_in_client(create_app(parse_config(CAMS), storage, up))
        r = admin.get("/readyz")
        assert (r.status_code, r.json()) == (200, {"status": "ready", "live_state": "ok"})
        assert _live_up(admin) == "storelens_live_state_up 1.0"
    # Redis refuses (its pod is gone): ready, the live state reported unavailable
    with RedisLiveState(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5) as down:
        admin = signed_in_client(create_app(parse_config(CAMS), storage, down))
        r = admin.get("/readyz")
        assert (r.status_code, r.json()) == (200, {"status": "ready", "live_state": "unavailable"})
        assert _live_up(admin) == "storelens_live_state_up 0.0"
        storage.close()  # the storage, not Redis, decides
        assert admin.get("/readyz").status_code == 503


def test_readyz_does_not_wait_for_a_redis_that_does_not_answer(tmp_path) -> None:
    """A Redis that accepts connections but never answers (a hung node): its client waits its 5 s timeout; the
    readiness probe (3 s timeout) gets its answer well before."""
    storage = SqliteStorage(str(tmp_path / "h.db"))
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # the kernel completes the handshakes; nothing ever reads or answers
        with RedisLiveState(f"redis://127.0.0.1:{hung.getsockname()[1]}/0", timeout_s=5.0) as live:
            client = signed_in_client(create_app(parse_config(CAMS), storage, live))
            t0 = time.monotonic()
            r = client.get("/readyz")
            took = time.monotonic() - t0
            assert (r.status_code, r.json()) == (200, {"status": "ready", "live_state": "unavailable"})
            assert took < 2.5, took
    storage.close()


# -- 4. liveness while the thread pool waits for a locked database --------------------------------------------

SLOW_REQUESTS = 48  # more than the thread pool's 40 threads


def test_healthz_answers_while_the_thread_pool_waits_for_the_database(tmp_path) -> None:
    path = str(tmp_path / "h.db")
    storage = SqliteStorage(path, connect_timeout_s=6)  # a write waits up to 6 s for the lock
    app = create_app(parse_config(CAMS), storage)
    headers = {"Authorization": f"Bearer {api_key_for(app, 'manager')}"}
    serving = contextlib.ExitStack()
    base, _server = serving.enter_context(served_app(app, log_level="critical"))
    # another connection holds the database's write lock (a long transaction, a migration ...)
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    locker.execute("CREATE TABLE lock_holder (x INTEGER)")

    def post(i: int) -> None:
        sale = {"transaction_id": f"r-{i}", "register_id": "till-1", "amount_minor": 100,
                "ts_ms": int(time.time() * 1000) - 60_000}
        try:
            httpx.post(f"{base}/v1/transactions", json={"transactions": [sale]}, headers=headers, timeout=60)
        except httpx.HTTPError:
            pass

    posts = [threading.Thread(target=post, args=(i,), daemon=True) for i in range(SLOW_REQUESTS)]
    try:
        for t in posts:
            t.start()
        time.sleep(1.5)  # every thread of the pool now waits for the lock
        # the pool is full: a route that needs a thread (even the storage's ping) waits
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{base}/readyz", timeout=1.0)
        t0 = time.monotonic()
        r = httpx.get(f"{base}/healthz", timeout=3.0)  # the liveness probe's timeout
        took = time.monotonic() - t0
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        assert took < 1.0, took
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        for t in posts:
            t.join(timeout=60)
        serving.close()
        storage.close()
