"""Review of the merged batch 32a, through real components (SQLite, the stack's Redis, the real app):

1. guesses from many addresses keeping every shared password check busy do not stop the real user from a client
   it signed in from lately (a check reserved for known clients); one client has at most
   ``PASSWORD_CHECK_WAITERS_PER_CLIENT`` sign-ins waiting; the dashboard (Chromium) says "busy, try again" for
   such a 429 (``Retry-After: 1``) and "wait a minute" for the failure limits';
2. a ``postgresql://`` URL with ``@`` in a query parameter's value (``?user=admin@srv``) loads, the unencoded
   passwords stay refused (tests/test_cli_review_32a.py);
3. a cached read is answered from the response cache when the user's principal cache is older than
   ``PRINCIPAL_CACHE_S`` (the principal is read in the thread pool), and a revoked key still gets 401;
4. the 404 of an unknown line or zone asks an index (``EXPLAIN QUERY PLAN``), the answers unchanged;
5. a stage service's start after a wait for the schema gets its startup probe's budget (reid: 180 s);
6. a sign-in's reserved failure is given back to the store that took it (memory while Redis failed), not to
   Redis once it answers again.
"""
from __future__ import annotations

import pathlib
import sqlite3
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
import yaml
from fastapi.testclient import TestClient

from storelens.api import create_app, security
from storelens.api.testing import api_key_for, served_app
from storelens.config import parse_config
from storelens.config.auth import AuthConfig
from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent
from storelens.runtime import service
from storelens.runtime.workers import STAGE_START_S, stage_runtime
from storelens.storage import SqliteStorage, redact_dsn
from storelens.storage.schema import crossings, zone_events, zone_stats
from storelens.storage.site import exists_query

from test_dashboard_browser import browser, need_dashboard  # noqa: F401 (browser: a fixture)
from test_live import REDIS_URL

PASSWORD = "a long enough password"
SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]
SITE = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]}
ROOT = pathlib.Path(__file__).resolve().parent.parent


def _net() -> str:
    """A /24 of client addresses of this test alone (the shared Redis keeps the limits of earlier runs)."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{n // 250 % 250}."


# -- 1. a check reserved for known clients ----------------------------------------------------------------------


def test_a_known_client_signs_in_while_every_shared_password_check_is_busy(tmp_path) -> None:
    site = {**SITE, "auth": {"max_concurrent_password_checks": 1, "password_check_wait_s": 0}}
    app = create_app(parse_config(site), SqliteStorage(str(tmp_path / "h.db")))
    auth = app.state.context.auth
    auth.create_user("admin", PASSWORD, "admin")

    def login(client: str, password: str = PASSWORD, user: str = "admin"):
        return TestClient(app, client=(client, 50000)).post("/v1/auth/login",
                                                             data={"username": user, "password": password})

    assert login("198.51.100.2").status_code == 200  # the admin's usual client
    held, release = threading.Event(), threading.Event()

    def guesses() -> None:  # another sign-in's check holds the only shared one
        with auth._password_checks:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=guesses)
    holder.start()
    try:
        assert held.wait(10)
        # a new address (a botnet's, or the admin's from elsewhere): busy, a short Retry-After
        for client, user in (("203.0.113.7", "admin"), ("203.0.113.8", "random-name")):
            busy = login(client, "some guess", user)
            assert (busy.status_code, busy.headers["Retry-After"]) == (429, "1"), busy.text
            assert "busy" in busy.json()["detail"]
        # the real admin from the usual address: the reserved check
        ok = login("198.51.100.2")
        assert ok.status_code == 200, ok.text
        # its failures are still checked there (and audited), not refused as busy
        assert login("198.51.100.2", "wrong guess!").status_code == 401
    finally:
        release.set()
        holder.join(10)
    assert login("203.0.113.7").status_code == 200  # the shared check is free again


def test_one_client_has_at_most_a_few_sign_ins_waiting_for_a_password_check(tmp_path) -> None:
    cfg = AuthConfig(max_concurrent_password_checks=1, password_check_wait_s=30, login_failures_per_minute=100)
    auth = security.Authenticator(cfg, SqliteStorage(str(tmp_path / "h.db")))
    auth.create_user("ana", PASSWORD, "viewer")
    slots = auth._password_checks
    outcomes: list[object] = []

    def attempt() -> None:
        try:
            outcomes.append(auth.login("ana", "wrong guess!", client="203.0.113.1"))
        except security.RateLimited as exc:
            outcomes.append(exc)

    with slots:  # the only shared check is taken
        waiters = [threading.Thread(target=attempt) for _ in range(security.PASSWORD_CHECK_WAITERS_PER_CLIENT)]
        for t in waiters:
            t.start()
        deadline = time.monotonic() + 30
        while slots._waiting.get("203.0.113.1", 0) < len(waiters):
            assert time.monotonic() < deadline, "the sign-ins did not wait"
            time.sleep(0.01)
        # one more of that client: busy at once (not after password_check_wait_s: 30 s)
        with pytest.raises(security.PasswordChecksBusy):
            auth.login("ana", "wrong guess!", client="203.0.113.1")
        # another client still waits its turn
        other = threading.Thread(target=lambda: outcomes.append(auth.login("ana", PASSWORD, client="203.0.113.2")))
        other.start()
        while slots._waiting.get("203.0.113.2", 0) < 1:
            assert time.monotonic() < deadline, "the other client's sign-in did not wait"
            time.sleep(0.01)
    for t in (*waiters, other):
        t.join(60)
    assert sorted(map(repr, outcomes)) == sorted(["None"] * len(waiters) + [repr(security.Principal("ana", "viewer"))])


# -- 2. '@' in a query parameter of a postgresql:// URL ---------------------------------------------------------


@pytest.mark.parametrize(("dsn", "host"), [
    ("postgresql://db:5432/x?user=admin@srv", "host=db"),
    ("postgresql://db/storelens?user=admin@srv&sslmode=require", "host=db"),  # Azure user names
    ("postgresql://db/storelens?application_name=a@b", "host=db"),
    ("postgresql://db/storelens?sslrootcert=/etc/ssl/a@b.crt", "host=db"),
    ("postgresql://u:p%40q@db1:5432,db2:5433/x?user=a@b", "host=db1,db2"),
])
def test_a_postgresql_url_with_at_in_a_query_value_loads(dsn, host) -> None:
    config = parse_config({**SITE, "storage": {"backend": "postgres", "dsn": dsn}})
    assert config.storage.dsn == dsn
    shown = redact_dsn(dsn)
    assert host in shown.split() and "p@q" not in shown and "p%40q" not in shown, shown


# -- 3. the response cache with an old principal cache ----------------------------------------------------------


def test_a_cached_read_is_answered_from_the_cache_when_the_principal_cache_is_old(tmp_path, monkeypatch) -> None:
    app = create_app(parse_config(SITE), SqliteStorage(str(tmp_path / "h.db")))
    key = api_key_for(app, "viewer")
    key_id = key[len(security.API_KEY_PREFIX):].partition(".")[0]
    monkeypatch.setattr(security, "PRINCIPAL_CACHE_S", 0.0)  # every request reads the key again
    client = TestClient(app, headers={"Authorization": f"Bearer {key}"})
    first = client.get("/v1/occupancy")
    assert first.status_code == 200, first.text
    cache = app.state.response_cache
    (entry_key, (_, _, body, raw)), = cache._entries.items()
    # fresh for the test's length, at the store's write generation (the key's first use touched it)
    cache.put(entry_key, app.state.context.storage.write_generation, body, raw, now=time.monotonic() + 600)
    second = client.get("/v1/occupancy")
    assert (second.status_code, second.content) == (200, first.content)
    assert (cache.misses, cache.hits) == (1, 1)
    # the principal is still checked on each hit: a revoked key is refused with the entry still fresh
    assert app.state.context.auth.revoke_api_key(key_id)
    assert client.get("/v1/occupancy").status_code == 401
    assert (cache.misses, cache.hits) == (1, 1)


# -- 4. the 404 of an unknown line or zone asks an index --------------------------------------------------------


@pytest.mark.parametrize(("table", "equal"), [
    (crossings, {"camera_id": "door", "line_id": "side"}),
    (zone_events, {"camera_id": "door", "zone_id": "hall"}),
    (zone_events, {"zone_id": "hall"}),  # /v1/journeys without camera_id
    (zone_stats, {"camera_id": "door", "zone_id": "hall"}),
], ids=["crossings-line", "zone_events-camera-zone", "zone_events-zone", "zone_stats"])
def test_the_existence_query_of_a_line_or_zone_uses_an_index(tmp_path, table, equal) -> None:
    path = str(tmp_path / "h.db")
    SqliteStorage(path).close()  # migrated to the head
    stmt = exists_query(table, **equal)
    sql = str(stmt.compile(dialect=sqlite3_dialect(), compile_kwargs={"literal_binds": True}))
    with sqlite3.connect(path) as c:
        plan = " | ".join(row[-1] for row in c.execute(f"EXPLAIN QUERY PLAN {sql}"))
    assert plan.startswith("SEARCH") and "INDEX" in plan and "SCAN" not in plan, plan
    assert all(f"{col}=?" in plan for col in equal), plan  # every column of the question is in the index's search


def sqlite3_dialect():
    from sqlalchemy.dialects import sqlite

    return sqlite.dialect()


REMOVED = {"store": {"id": "s"},
           "cameras": [{"id": "door", "source": "/tmp/door.mp4",
                        "lines": [{"id": "entry", "a": [0, 300], "b": [640, 300]}],
                        "zones": [{"id": "hall", "kind": "area", "polygon": SQUARE}]}],
           "privacy": {"k_min": 1}}


@pytest.mark.parametrize(("path", "params", "status"), [
    ("/v1/counts", {"camera_id": "door", "line_id": "entry"}, 200),  # configured
    ("/v1/counts", {"camera_id": "door", "line_id": "old"}, 200),  # stored only (a removed line)
    ("/v1/counts", {"camera_id": "door", "line_id": "side"}, 404),
    ("/v1/zones/stats", {"camera_id": "door", "zone_id": "gone"}, 200),  # stored zone events only
    ("/v1/zones/stats", {"camera_id": "door", "zone_id": "nope"}, 404),
    ("/v1/zones/events", {"camera_id": "door", "zone_id": "gone"}, 200),
    ("/v1/zones/events", {"camera_id": "door", "zone_id": "nope"}, 404),
    ("/v1/journeys", {"zone_id": "gone"}, 200),
    ("/v1/journeys", {"camera_id": "door", "zone_id": "gone"}, 200),
    ("/v1/journeys", {"zone_id": "nope"}, 404),
])
def test_unknown_lines_and_zones_answer_404_and_stored_ones_200(tmp_path, path, params, status) -> None:
    storage = SqliteStorage(str(tmp_path / "h.db"))
    t = 1_767_225_600_000
    storage.write_crossings([CrossingEvent("door:old:1:in", "door", "old", 1, "in", t, 1)])
    storage.write_records([m.ZoneEvent(event_id="door:gone:1:enter", camera_id="door", zone_id="gone",
                                       zone_kind="area", track_id=1, kind=m.ZONE_EVENT_ENTER, ts_ms=t, seq=2)])
    app = create_app(parse_config(REMOVED), storage)
    client = TestClient(app, headers={"Authorization": f"Bearer {api_key_for(app, 'admin')}"})
    r = client.get(path, params={"start_ms": t - 3_600_000, "end_ms": t + 3_600_000, **params})
    assert r.status_code == status, r.text


# -- 5. a stage service's start after a wait --------------------------------------------------------------------


def _startup_budget_s(service_name: str) -> float:
    for doc in yaml.safe_load_all((ROOT / "k8s" / "base" / f"{service_name}.yaml").read_text(encoding="utf-8")):
        if doc and doc.get("kind") == "Deployment":
            container = next(c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == service_name)
            probe = container["startupProbe"]
            return float(probe["periodSeconds"] * probe["failureThreshold"])
    raise AssertionError(f"no Deployment in k8s/base/{service_name}.yaml")


@pytest.mark.parametrize("name", ["reid", "detect-track", "attributes"])
def test_a_stage_service_gets_its_startup_probes_budget_after_a_wait(monkeypatch, name) -> None:
    assert stage_runtime(name, port=0).start_s == STAGE_START_S == _startup_budget_s(name)
    clock = [1000.0]
    monkeypatch.setattr(service, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(service, "WAITS", {})
    monkeypatch.setattr(service, "_wait_beat", [float("-inf")])
    rt = stage_runtime(name, port=0)
    service.waiting("schema", "history revision 0019, this release needs 0021")
    clock[0] += 600  # an operator took ten minutes (the waits beat meanwhile)
    service.waiting("schema", "history revision 0019, this release needs 0021")
    service.done_waiting("schema")
    clock[0] += 150  # loading the gallery after the wait
    assert rt.health()[0], rt.health()
    clock[0] += 40
    assert not rt.health()[0]  # past its probe's budget: stalled


# -- 6. a reservation's give-back goes to the store that took it ------------------------------------------------


def test_a_failure_reserved_in_memory_is_not_given_back_to_redis(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(security, "LIMITER_FIRST_RETRY_S", 600.0)  # no ping in the background during the test
    monkeypatch.setattr(security, "LIMITER_RETRY_S", 600.0)
    cfg = AuthConfig(login_failures_per_minute=5, login_attempts_per_minute=100)
    auth = security.Authenticator(cfg, SqliteStorage(str(tmp_path / "h.db")), redis_url=REDIS_URL)
    user = f"u-{uuid.uuid4().hex[:12]}"
    auth.create_user(user, PASSWORD, "viewer")
    client = f"{_net()}1"
    ids = ("login-user", auth.limit_name(user), security.client_key(client))

    def entries(limiter) -> int:
        return cfg.login_failures_per_minute - limiter.get_window_stats(auth._failures, *ids).remaining

    assert auth.login(user, "wrong guess!", client=client) is None  # one failure, in Redis
    assert (entries(auth._limiter), entries(auth._fallback)) == (1, 0)
    hasher = auth.hasher

    class RedisAnswersAgainDuringTheCheck:
        def verify(self, password: str, password_hash: str) -> bool:
            ok = hasher.verify(password, password_hash)
            auth._limiter_breaker.succeeded()
            return ok

    auth._limiter_breaker.failed()  # Redis failed: the sign-in's reservation goes to memory
    monkeypatch.setattr(auth, "hasher", RedisAnswersAgainDuringTheCheck())
    assert auth.login(user, PASSWORD, client=client) is not None
    assert not auth._limiter_breaker.down
    # given back in memory, where it was taken; Redis keeps the earlier failure
    assert (entries(auth._limiter), entries(auth._fallback)) == (1, 0)


# -- 1b. the dashboard tells busy from too many attempts --------------------------------------------------------


def test_the_sign_in_page_says_busy_for_a_short_retry_after(tmp_path, browser) -> None:  # noqa: F811
    """Through the built dashboard in Chromium: a 429 of busy password checks (``Retry-After: 1``) asks to try again
    in a moment, one of the failure limits (``Retry-After: 60``) to wait a minute."""
    from playwright.sync_api import expect

    need_dashboard()
    site = {**SITE, "auth": {"max_concurrent_password_checks": 1, "password_check_wait_s": 0,
                             "login_failures_per_minute": 1}}
    app = create_app(parse_config(site), SqliteStorage(str(tmp_path / "h.db")))
    auth = app.state.context.auth
    auth.create_user("ana", PASSWORD, "viewer")
    with served_app(app) as (url, _):
        page = browser.new_page()
        page.goto(url + "/")
        error = page.get_by_test_id("signin-error")

        def submit(password: str) -> None:
            page.get_by_test_id("username").fill("ana")
            page.get_by_test_id("password").fill(password)
            page.get_by_test_id("signin-submit").click()

        with auth._password_checks:  # every shared password check busy (this client is not known for the user)
            submit(PASSWORD)
            expect(error).to_contain_text("The server is busy checking other sign-ins: try again in a moment.")
        submit("wrong guess!")
        expect(error).to_contain_text("Wrong user name or password")
        submit("wrong again!")  # login_failures_per_minute: 1
        expect(error).to_contain_text("Too many attempts: wait a minute")
        page.close()
