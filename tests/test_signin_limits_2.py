"""Sign-in limiter follow-ups, through the real app (TestClient / httpx over ASGI), real SQLite storage, the real
``limits`` limiter and redis client, and a real TCP listener standing in for a Redis that hangs:

1. a ceiling of failures per user name across clients holds an attacker with many addresses; the real admin,
   from a client it signed in from lately, still gets in; IPv6 clients count by their /64;
2. a Redis that accepts connections and never answers costs one timeout per retry period, not one per check
   (a sign-in answers in about the timeout), and an unauthenticated write waiting for it does not hold the
   event loop (``/healthz`` answers at once meanwhile).
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from storelens.api import create_app, security
from storelens.api.testing import signed_in_client
from storelens.config import parse_config
from storelens.storage import SqliteStorage

PASSWORD = "a long enough password"
SITE = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}],
        "auth": {"login_failures_per_minute": 3, "login_attempts_per_minute": 10,
                 "login_account_failures_per_minute": 6}}


def _login(app, client: str, password: str, user: str = "admin") -> httpx.Response:
    return TestClient(app, client=(client, 50000)).post(
        "/v1/auth/login", data={"username": user, "password": password})


def _app(tmp_path, site=SITE):
    app = create_app(parse_config(site), SqliteStorage(str(tmp_path / "h.db")))
    app.state.context.auth.create_user("admin", PASSWORD, "admin")
    return app


def _failed_checks(app) -> int:
    """Password checks that failed (each failed sign-in is one ``auth.login-failed`` audit row)."""
    return signed_in_client(app).get("/v1/audit", params={"action": "auth.login-failed"}).json()["total"]


# -- 1. the per-account ceiling and IPv6 /64s ------------------------------------------------------


def test_many_addresses_hit_the_accounts_ceiling_but_the_admins_known_client_gets_in(tmp_path) -> None:
    app = _app(tmp_path)
    assert _login(app, "198.51.100.2", PASSWORD).status_code == 200  # the admin's usual client
    # 20 addresses x 3 guesses each: the per-client limit alone would allow 60 password checks
    answers = [_login(app, f"203.0.113.{a}", f"guess {a}-{i}").status_code for a in range(1, 21) for i in range(3)]
    assert answers[:6] == [401] * 6 and set(answers[6:]) == {429}, answers
    assert _failed_checks(app) == 6  # the ceiling (login_account_failures_per_minute)
    # the real admin from the client it signed in from: in; from a new address: 429 with Retry-After
    assert _login(app, "198.51.100.2", PASSWORD).status_code == 200
    new = _login(app, "192.0.2.77", PASSWORD)
    assert new.status_code == 429 and new.headers["Retry-After"] == "60", new.text
    # another user is not held by the admin's ceiling
    app.state.context.auth.create_user("ana", PASSWORD, "viewer")
    assert _login(app, "203.0.113.99", PASSWORD, "ana").status_code == 200


def test_ipv6_clients_count_by_their_64(tmp_path) -> None:
    app = _app(tmp_path)
    # three addresses of one /64: three failures of the same client (login_failures_per_minute: 3)
    same_64 = [_login(app, f"2001:db8:1:2::{h:x}", "wrong guess!!").status_code for h in range(1, 5)]
    assert same_64 == [401, 401, 401, 429]
    assert _login(app, "2001:db8:1:2:ffff::1", PASSWORD).status_code == 429  # still that client
    assert _login(app, "2001:db8:1:3::1", PASSWORD).status_code == 200  # the next /64 is another client
    assert security.client_key("::ffff:203.0.113.5") == "203.0.113.5"  # IPv4-mapped: the IPv4 address
    assert security.client_key("testclient") == "testclient"


# -- 2. a Redis that hangs -------------------------------------------------------------------------


@pytest.fixture
def hanging_redis():
    """A TCP listener that accepts connections and never answers: ``redis://`` URL of it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    srv.close()


def _fallbacks(app) -> float:
    text = signed_in_client(app).get("/metrics").text
    return float(next(ln.split()[1] for ln in text.splitlines()
                      if ln.startswith("storelens_rate_limit_fallbacks_total ")))


def test_a_hanging_redis_costs_one_timeout_per_retry_period_not_one_per_check(tmp_path, hanging_redis) -> None:
    app = _app(tmp_path, {**SITE, "live": {"redis_url": hanging_redis}})
    took = []
    for password in ("wrong guess 1", "wrong guess 2", "wrong guess 3", PASSWORD):
        start = time.monotonic()
        status = _login(app, "192.0.2.1", password).status_code
        took.append((status, round(time.monotonic() - start, 2)))
    assert [s for s, _ in took] == [401, 401, 401, 429], took  # limited in memory meanwhile
    # the first waits one timeout (2 s) and then skips Redis; the next ones do not wait for it at all
    assert took[0][1] < security.LIMITER_TIMEOUT_S + 1.0, took
    assert all(t < 1.0 for _, t in took[1:]), took
    # every check made in memory is counted: per sign-in its attempt and its reserved failure (4 x 2)
    assert _fallbacks(app) >= 8


def test_the_shared_store_is_tried_again_after_the_retry_period(tmp_path, hanging_redis, monkeypatch) -> None:
    monkeypatch.setattr(security, "LIMITER_TIMEOUT_S", 0.3)
    monkeypatch.setattr(security, "LIMITER_RETRY_S", 1.0)
    auth = _app(tmp_path, {**SITE, "live": {"redis_url": hanging_redis}}).state.context.auth

    def timed() -> float:
        start = time.monotonic()
        assert auth.audit_anonymous("192.0.2.9")
        return time.monotonic() - start

    first, skipped = timed(), timed()
    time.sleep(1.1)
    again = timed()  # a ping in the background asks the store again (tests/test_live_state_probe.py): no check waits
    assert first >= 0.25 and skipped < 0.1 and again < 0.1, (first, skipped, again)


def test_healthz_is_not_delayed_by_an_unauthenticated_write_waiting_for_redis(tmp_path, hanging_redis) -> None:
    app = _app(tmp_path, {**SITE, "live": {"redis_url": hanging_redis}})

    async def run() -> tuple[int, float, int]:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.5", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            start = time.monotonic()  # timed from here: a blocked loop delays the sleep below as well
            write = asyncio.create_task(client.put("/v1/site/cameras/x", json={}))  # 401, then audit_anonymous
            await asyncio.sleep(0.3)  # the write's audit now waits for Redis (2 s)
            health = await client.get("/healthz")
            took = time.monotonic() - start
            return health.status_code, took, (await write).status_code

    health, took, write = asyncio.run(run())
    assert (health, write) == (200, 401)
    assert took < 1.0, f"/healthz answered {took:.2f} s after the anonymous write began (0.3 s expected)"
