"""The aggregate reads' response cache (storelens.api.cache) and serving with uvicorn workers (api.workers).

The cache must never change an answer: the same bytes as without it, a write through the app's
store seen at once, credentials checked on every hit, one entry per path (not per route template).
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
from typing import Iterator

import httpx
import pytest
import yaml

from storelens.api import create_app
from storelens.api.cache import CACHED_ROUTES
from storelens.api.routes import ROUTERS
from storelens.api.server import serve_site
from storelens.api.testing import api_key_for, signed_in_client
from storelens.errors import ConfigError
from storelens.storage import SqliteStorage

from storelens.runtime.localdeploy import free_port
from test_api import T0, ev, make_config  # the API tests' site and crossings

DAY = f"start_ms={T0}&end_ms={T0 + 86_400_000}"
#: The dashboard's aggregate reads (bench/load_api.py's mix) and a few variants.
READS = [
    "/v1/occupancy", "/v1/occupancy/cam-1", "/v1/occupancy/cam-2",
    f"/v1/counts?camera_id=cam-1&{DAY}&bucket_s=300", f"/v1/counts?bucket_s=300&{DAY}&camera_id=cam-1",
    f"/v1/counts?camera_id=cam-1&{DAY}&bucket_s=60&groups=true", f"/v1/counts?camera_id=cam-2&{DAY}",
    f"/v1/zones/stats?camera_id=cam-1&{DAY}&bucket_s=3600", "/v1/zones", "/v1/queues", "/v1/alerts?limit=50",
    f"/v1/kpis?{DAY}&period=hour", f"/v1/cameras/cam-1/heatmap?{DAY}&format=json", f"/v1/flows?{DAY}",
    f"/v1/demographics?{DAY}", f"/v1/paths/top?{DAY}", f"/v1/interest?{DAY}",
]


@pytest.fixture
def storage(tmp_path: pathlib.Path) -> Iterator[SqliteStorage]:
    s = SqliteStorage(str(tmp_path / "cache.db"))
    s.write_crossings([ev("door", 1, "in", T0 + 1_000, 25), ev("door", 2, "in", T0 + 30_000, 750),
                       ev("door", 1, "out", T0 + 61_000, 1525), ev("back", 9, "in", T0 + 5_000, 125, cam="cam-2")])
    yield s
    s.close()


def _config(ttl_s: float):
    return make_config().model_copy(update={"api": make_config().api.model_copy(update={"cache_ttl_s": ttl_s})})


def test_every_cached_route_is_a_get_route_of_the_app() -> None:
    gets = {r.path for router in ROUTERS for r in router.routes if "GET" in getattr(r, "methods", ())}
    assert CACHED_ROUTES <= gets, CACHED_ROUTES - gets


@pytest.mark.parametrize("path", READS)
def test_a_cached_answer_is_the_uncached_answer(storage: SqliteStorage, path: str) -> None:
    plain = signed_in_client(create_app(_config(0), storage), role="viewer")
    cached_app = create_app(_config(1.0), storage)
    cached = signed_in_client(cached_app, role="viewer")
    want = plain.get(path)
    assert want.status_code == 200, want.text
    # (the key's first use records its last use: a write, so the second answer is computed again)
    for got in (cached.get(path), cached.get(path), cached.get(path)):
        assert (got.status_code, got.content, got.headers["content-type"]) == \
            (want.status_code, want.content, want.headers["content-type"])
    assert cached_app.state.response_cache.hits >= 1  # the last answer came from the cache


def test_a_write_through_the_store_is_seen_at_once(storage: SqliteStorage) -> None:
    client = signed_in_client(create_app(_config(1.0), storage), role="viewer")
    path = f"/v1/counts?camera_id=cam-1&{DAY}&bucket_s=3600"
    assert client.get(path).json()["totals"]["door"] == {"in": 2, "out": 1}
    assert client.get(path).json()["totals"]["door"] == {"in": 2, "out": 1}
    storage.write_crossings([ev("door", 5, "in", T0 + 90_000, 2250)])
    assert client.get(path).json()["totals"]["door"] == {"in": 3, "out": 1}


def test_fresh_hits_are_answered_before_routing_and_counted_under_their_route(
        storage: SqliteStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path (CachedReadsMiddleware) answers a fresh hit without the app's route: same bytes, the
    route's metrics; what it cannot answer (a miss) goes through the route."""
    import storelens.api.cache as cache_mod

    app = create_app(_config(1.0), storage)
    assert {r.path for _, r, _ in app.state.cached_reads} == CACHED_ROUTES
    client = signed_in_client(app, role="viewer")
    path = "/v1/occupancy/cam-2"
    client.get(path)  # (the key's first use is a write: the next answer is computed again)
    first = client.get(path)
    routed = []  # hits answered by the route's handler (cached_handler), not before routing
    real = cache_mod._respond
    monkeypatch.setattr(cache_mod, "_respond", lambda *a: routed.append(1) or real(*a))
    hits, misses = app.state.response_cache.hits, app.state.response_cache.misses
    again = [client.get(path) for _ in range(3)]
    assert [(r.status_code, r.content) for r in again] == [(200, first.content)] * 3
    assert routed == [] and app.state.response_cache.hits == hits + 3
    assert app.state.response_cache.misses == misses
    metrics = signed_in_client(app, role="admin").get("/metrics").text
    assert 'storelens_http_requests_total{method="GET",route="/v1/occupancy/{camera_id}",status="200"} 5.0' in metrics
    assert client.get("/v1/occupancy/cam-1").status_code == 200  # another key: a miss, computed by the route
    assert app.state.response_cache.misses == misses + 1


def test_an_entry_expires_after_the_ttl(storage: SqliteStorage) -> None:
    app = create_app(_config(0.2), storage)
    client = signed_in_client(app, role="viewer")
    client.get("/v1/occupancy")
    client.get("/v1/occupancy")
    hits = app.state.response_cache.hits
    time.sleep(0.25)
    client.get("/v1/occupancy")
    assert app.state.response_cache.hits == hits  # expired: computed again


@pytest.mark.parametrize("headers,status", [
    ({}, 401),
    ({"Authorization": "Bearer nonsense"}, 401),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
])
def test_a_hit_still_needs_credentials(storage: SqliteStorage, headers: dict, status: int) -> None:
    app = create_app(_config(1.0), storage)
    client = signed_in_client(app, role="viewer")
    assert client.get("/v1/occupancy").status_code == 200
    assert client.get("/v1/occupancy").status_code == 200
    anonymous = signed_in_client(app, role="viewer")
    anonymous.headers.pop("Authorization")
    assert anonymous.get("/v1/occupancy", headers=headers).status_code == status


def test_a_revoked_key_is_refused_on_a_hit(storage: SqliteStorage) -> None:
    app = create_app(_config(1.0), storage)
    key = api_key_for(app, "viewer")
    client = signed_in_client(app)
    client.headers["Authorization"] = f"Bearer {key}"
    assert client.get("/v1/occupancy").status_code == 200
    app.state.context.auth.revoke_api_key(key[len("slk_"):].split(".")[0])
    assert client.get("/v1/occupancy").status_code == 401


def test_zero_ttl_keeps_no_cache(storage: SqliteStorage) -> None:
    app = create_app(_config(0), storage)
    client = signed_in_client(app, role="viewer")
    client.get("/v1/occupancy")
    assert app.state.response_cache is False


# -- api.workers ------------------------------------------------------------------------------------

def test_workers_need_a_shared_signing_key(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORELENS_JWT_SECRET", raising=False)
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"store": {"id": "s"}, "cameras": [{"id": "c", "source": "/tmp/x.mp4"}],
                                    "storage": {"path": str(tmp_path / "h.db")}, "api": {"workers": 2}}))
    with pytest.raises(ConfigError, match="STORELENS_JWT_SECRET"):
        serve_site(str(site), port=free_port())


def test_two_workers_serve_the_same_answers(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "h.db"
    with SqliteStorage(str(db)) as s:
        s.write_crossings([ev("door", 1, "in", T0 + 1_000, 25), ev("door", 2, "in", T0 + 30_000, 750)])
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({**make_config().model_dump(mode="json", include={"store", "cameras"}),
                                    "storage": {"path": str(db)}, "api": {"workers": 2}}))
    port = free_port()
    env = {**os.environ, "STORELENS_JWT_SECRET": "w" * 40, "STORELENS_ADMIN_PASSWORD": "workers test password"}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from storelens.api.server import serve_site; "
                             f"sys.exit(serve_site({str(site)!r}, port={port}))"], env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        token = httpx.post(f"{base}/v1/auth/login", data={"username": "admin", "password": "workers test password"},
                           timeout=30).json()["access_token"]
        answers = set()
        for _ in range(20):  # new connections: the kernel spreads them over both workers
            r = httpx.get(f"{base}/v1/counts", params={"camera_id": "cam-1", "start_ms": T0,
                                                       "end_ms": T0 + 86_400_000, "bucket_s": 3600},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert r.status_code == 200, r.text
            answers.add(r.content)
        assert len(answers) == 1 and b'"door":{"in":2,"out":0}' in answers.pop()
        assert len({p for p in pathlib.Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()}) >= 2
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
