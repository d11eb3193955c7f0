"""API security review findings (second batch), each through the real app (TestClient), real storage (SQLite),
real limiter, real Redis client:

1. a site edit through the API may name only allowed environment variables (``api.site_env_allowlist`` and
   the ones the site already names), in camera sources only; answers show templates, never their values;
2. ``/v1/zones/stats`` and ``/v1/queues`` withhold dwell and queue waits of fewer than ``privacy.k_min`` people;
3. wrong passwords from one client do not lock the user out of another client;
4. the sign-in rate limit falls back to memory when Redis is down (never a 500);
5. a deleted user's session does not come back when the name is created again;
6. ``/v1/chain/kpis`` with a ``to_day`` in the first days of year 1 is a 422, not a 500.
"""
from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.storage import SqliteStorage
from storelens.storage import site as sq

PASSWORD = "a long enough password"
DB_SECRET = "db-S3cret-never-shown"
CAM_SECRET = "cam-S3cret-never-shown"
FEED_SECRET = "own-feed-path-S3cret"
SITE = {"store": {"id": "s1"},
        "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"},
                    # the operator's file may name any variable
                    {"id": "own", "source": "rtsp://u:${CAM_PASSWORD}@10.0.0.7/${OWN_FEED:-fallback-S3cret}"}]}


@pytest.fixture
def secrets_env(monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", DB_SECRET)
    monkeypatch.setenv("CAM_PASSWORD", CAM_SECRET)
    monkeypatch.setenv("OWN_FEED", FEED_SECRET)


def _no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (DB_SECRET, CAM_SECRET, FEED_SECRET, "fallback-S3cret"):
            assert secret not in text, (secret, text)


# -- 1. site edits and environment variables ---------------------------------------------------


def test_a_site_edit_cannot_name_a_variable_outside_the_allowlist(tmp_path, secrets_env) -> None:
    storage = SqliteStorage(str(tmp_path / "h.db"))
    app = create_app(parse_config(SITE), storage)
    admin, viewer = signed_in_client(app), signed_in_client(app, role="viewer")
    put = admin.put("/v1/site/cameras/cam-2", json={"id": "cam-2", "source": "rtsp://attacker.example/${DB_PASSWORD}"})
    unset = admin.put("/v1/site/cameras/cam-2", json={"id": "cam-2", "source": "rtsp://attacker.example/${NO_SUCH_VAR}"})
    assert (put.status_code, unset.status_code) == (422, 422), (put.text, unset.text)
    assert "cameras.2.source" in put.text and "api.site_env_allowlist" in put.text
    # the answer does not tell whether the variable exists: the same words for a set and an unset one
    assert put.json()["detail"].replace("DB_PASSWORD", "X") == unset.json()["detail"].replace("NO_SUCH_VAR", "X")
    # nor can a template hide in another field (a zone's product is shown to viewers by /v1/zones)
    zone = admin.put("/v1/site/cameras/cam-1/zones/z", json={"id": "z", "polygon": [[0, 0], [9, 0], [9, 9]],
                                                             "kind": "shelf", "product": "${CAM_PASSWORD}"})
    assert zone.status_code == 422 and "cameras.0.zones.0.product" in zone.text, zone.text
    assert sq.latest_version(storage) == 0  # nothing saved, nothing published
    _no_secret(put.text, unset.text, zone.text, viewer.get("/v1/site").text)
    storage.close()


def test_allowed_variables_work_and_answers_show_templates_never_values(tmp_path, secrets_env) -> None:
    storage = SqliteStorage(str(tmp_path / "h.db"))
    app = create_app(parse_config(SITE), storage)
    admin, viewer = signed_in_client(app), signed_in_client(app, role="viewer")
    answers = [
        # CAM_* is in the default allowlist; OWN_FEED is not, but the site file's camera names it
        admin.put("/v1/site/cameras/cam-2", json={"id": "cam-2", "source": "rtsp://cam.example/${CAM_PASSWORD:-x}"}),
        admin.put("/v1/site/cameras/cam-3", json={"id": "cam-3", "source": "rtsp://cam.example/${OWN_FEED}"}),
        # an edit of the file's camera keeps its templates (merged as written)
        admin.put("/v1/site/cameras/own/lines/door", json={"id": "door", "a": [0, 5], "b": [9, 5]})]
    assert [r.status_code for r in answers] == [200] * 3, [r.text for r in answers]
    in_force = app.state.context.config
    assert in_force.camera("cam-2").source == f"rtsp://cam.example/{CAM_SECRET}"  # expanded where it is used
    assert in_force.camera("own").source == f"rtsp://u:{CAM_SECRET}@10.0.0.7/{FEED_SECRET}"
    site = viewer.get("/v1/site").json()
    sources = {c["id"]: c["source"] for c in site["cameras"]}
    assert sources == {"cam-1": "/tmp/x.mp4", "cam-2": "rtsp://cam.example/${CAM_PASSWORD}",
                       "cam-3": "rtsp://cam.example/${OWN_FEED}", "own": "rtsp://10.0.0.7/${OWN_FEED}"}
    assert answers[2].json()["camera"]["source"] == "rtsp://10.0.0.7/${OWN_FEED}"
    _no_secret(*(r.text for r in answers), viewer.get("/v1/site").text)
    storage.close()


def test_the_allowlist_is_configurable(tmp_path, secrets_env) -> None:
    storage = SqliteStorage(str(tmp_path / "h.db"))
    cfg = parse_config({**SITE, "cameras": SITE["cameras"][:1], "api": {"site_env_allowlist": ["SHOP_CAM_*"]}})
    admin = signed_in_client(create_app(cfg, storage))
    refused = admin.put("/v1/site/cameras/c2", json={"id": "c2", "source": "rtsp://h/${CAM_PASSWORD}"})
    assert refused.status_code == 422 and "SHOP_CAM_*" in refused.text, refused.text
    _no_secret(refused.text)
    storage.close()


# -- 2. k-anonymity of dwell and queue waits ---------------------------------------------------

MIN = 60_000
K_SITE = {"store": {"id": "s1"},
          "cameras": [{"id": "door", "source": "/tmp/x.mp4",
                       "zones": [{"id": "till", "polygon": [[0, 0], [100, 0], [100, 100]]},
                                 {"id": "q", "kind": "queue", "polygon": [[200, 0], [300, 0], [300, 100]],
                                  "service_edge": [1, 2]}]}]}


def _exits(zone_id: str, zone_kind: str, n: int, start_ms: int, how: str) -> list:
    return [m.ZoneEvent(event_id=f"{zone_id}-{start_ms}-{i}", camera_id="door", zone_id=zone_id, zone_kind=zone_kind,
                        track_id=start_ms // MIN + i, kind=m.ZONE_EVENT_EXIT, ts_ms=start_ms + 1000 * (i + 1),
                        seq=i, dwell_ms=30_000 + 1000 * i, how=how) for i in range(n)]


@pytest.mark.parametrize("role", ["viewer", "manager", "admin"])
def test_zone_dwell_and_queue_waits_of_fewer_than_k_people_are_withheld(tmp_path, role: str) -> None:
    storage = SqliteStorage(str(tmp_path / "h.db"))
    # minute 0: two visits end (one person's dwell could be read off); minute 10: six
    storage.write_records(
        [m.ZoneStats(camera_id="door", zone_id="till", bucket_start_ms=t, bucket_end_ms=t + MIN, visits=n,
                     unique_people=n, mean_occupancy=1.0, max_occupancy=n) for t, n in ((0, 2), (10 * MIN, 6))]
        + _exits("till", "area", 2, 0, "other") + _exits("till", "area", 6, 10 * MIN, "other")
        # the queue: two served in the first window, six more in the next
        + _exits("q", "queue", 2, 0, "service_edge") + _exits("q", "queue", 6, 10 * MIN, "service_edge"))
    client = signed_in_client(create_app(parse_config(K_SITE), storage), role=role)
    stats = client.get("/v1/zones/stats", params={"camera_id": "door", "zone_id": "till", "start_ms": 0,
                                                  "end_ms": 20 * MIN})
    assert stats.status_code == 200, stats.text
    small, big = [b["dwell_s"] for b in stats.json()["buckets"]]
    assert small == {"median": None, "p90": None, "mean": None, "total": None, "n": None, "suppressed": True}
    assert big["n"] == 6 and big["median"] == pytest.approx(32.5) and big["suppressed"] is False
    few = client.get("/v1/queues", params={"at_ms": 5 * MIN, "window_s": 300}).json()["queues"]
    many = client.get("/v1/queues", params={"at_ms": 15 * MIN, "window_s": 300}).json()["queues"]
    assert [q["served"] for q in few] == [2]  # counts stay
    assert few[0]["wait_s"] == {"median": None, "p90": None, "mean": None, "total": None, "n": None,
                                "suppressed": True}
    assert many[0]["wait_s"]["n"] == 6 and many[0]["wait_s"]["median"] == pytest.approx(32.5)
    storage.close()


# -- 3./4. the sign-in rate limit ----------------------------------------------------------------

AUTH_SITE = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}],
             "auth": {"login_failures_per_minute": 3, "login_attempts_per_minute": 10}}


def _login(app, client: str, password: str, user: str = "admin") -> int:
    return TestClient(app, client=(client, 50000)).post(
        "/v1/auth/login", data={"username": user, "password": password}).status_code


@pytest.mark.parametrize("redis_url", [None, "redis://127.0.0.1:1"])  # in memory; Redis down: in memory too
def test_wrong_passwords_from_one_client_do_not_lock_the_user_out_of_another(tmp_path, redis_url) -> None:
    site = {**AUTH_SITE, **({"live": {"redis_url": redis_url}} if redis_url else {})}
    app = create_app(parse_config(site), SqliteStorage(str(tmp_path / "h.db")))
    app.state.context.auth.create_user("admin", PASSWORD, "admin")
    attacker = [_login(app, "203.0.113.66", f"guess number {i}") for i in range(5)]
    assert attacker == [401, 401, 401, 429, 429]
    assert _login(app, "203.0.113.66", PASSWORD) == 429  # the guessing client waits, even with the password
    assert _login(app, "198.51.100.2", PASSWORD) == 200  # the real admin elsewhere gets in
    # one client's attempts stay limited across user names (login_attempts_per_minute: 10, 6 made)
    assert [_login(app, "203.0.113.66", "x" * 12, f"user{i}") for i in range(5)] == [401] * 4 + [429]


def test_sign_in_with_redis_down_falls_back_to_memory_logs_and_counts(tmp_path, caplog) -> None:
    site = {**AUTH_SITE, "live": {"redis_url": "redis://127.0.0.1:1"}}  # nothing listens on port 1
    app = create_app(parse_config(site), SqliteStorage(str(tmp_path / "h.db")))
    app.state.context.auth.create_user("admin", PASSWORD, "admin")
    with caplog.at_level(logging.WARNING, logger="storelens.api.security"):
        assert _login(app, "192.0.2.1", PASSWORD) == 200
        # an anonymous write (audit_anonymous asks the limiter too): 401, not 500
        r = TestClient(app, raise_server_exceptions=False).put("/v1/site/cameras/x", json={})
        assert r.status_code == 401, r.text
    assert any("rate-limit store unreachable" in rec.getMessage() for rec in caplog.records)
    metrics = signed_in_client(app).get("/metrics").text
    counted = [ln for ln in metrics.splitlines() if ln.startswith("storelens_rate_limit_fallbacks_total ")]
    assert counted and float(counted[0].split()[1]) >= 3, counted  # attempts, failures test, anonymous audit


# -- 5. a user created again ---------------------------------------------------------------------


def test_a_deleted_users_session_does_not_work_for_a_new_user_of_the_same_name(tmp_path) -> None:
    app = create_app(parse_config(AUTH_SITE), SqliteStorage(str(tmp_path / "h.db")))
    auth = app.state.context.auth
    auth.create_user("ana", PASSWORD, "admin")
    old = TestClient(app).post("/v1/auth/login", data={"username": "ana", "password": PASSWORD}).json()["access_token"]
    as_old = TestClient(app, headers={"Authorization": f"Bearer {old}"})
    assert as_old.get("/v1/auth/me").json()["role"] == "admin"
    assert auth.delete_user("ana")
    assert as_old.get("/v1/auth/me").status_code == 401
    auth.create_user("ana", "another long password", "viewer")  # the name again, another person
    assert as_old.get("/v1/auth/me").status_code == 401, "the deleted user's token works again"
    new = TestClient(app).post("/v1/auth/login", data={"username": "ana", "password": "another long password"})
    me = TestClient(app, headers={"Authorization": f"Bearer {new.json()['access_token']}"}).get("/v1/auth/me")
    assert me.json() == {"username": "ana", "role": "viewer", "kind": "user"}


# -- 6. chain KPIs at the start of the calendar ----------------------------------------------------


def test_chain_kpis_at_the_start_of_the_calendar_are_a_422(tmp_path) -> None:
    app = create_app(parse_config(AUTH_SITE), SqliteStorage(str(tmp_path / "h.db")))
    client = signed_in_client(app, role="viewer", raise_server_exceptions=False)
    r = client.get("/v1/chain/kpis", params={"to_day": "0001-01-03"})
    assert r.status_code == 422 and "from_day" in r.json()["detail"], r.text
    assert client.get("/v1/chain/kpis", params={"from_day": "0001-01-01", "to_day": "0001-01-03"}).status_code == 200
