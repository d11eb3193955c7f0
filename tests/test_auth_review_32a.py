"""Sign-in review findings (32a), through real components (SQLite, the stack's Redis, a real uvicorn server):

1. a burst of sign-ins cannot run the process out of memory: at most ``auth.max_concurrent_password_checks``
   Argon2 checks (64 MiB each) run at once; the others wait up to ``auth.password_check_wait_s``, then 429 with
   ``Retry-After``, counted in ``storelens_errors_total{reason="password_checks_busy"}``;
2. the sign-in failure limits cannot be raced: an attempt reserves its failure before the password check (the
   per-(user, client) limit and the per-name ceiling), a success gives it back;
3. a cached read never reads the database on the event loop to check credentials (an expired principal cache
   takes the normal, threaded path): ``/healthz`` answers while SQLite's write lock is held;
4. a too short ``$STORELENS_ADMIN_PASSWORD`` is a ConfigError naming the variable.
"""
from __future__ import annotations

import sqlite3
import threading
import time
import uuid

import httpx
import pytest

from storelens.api import create_app, security
from storelens.api.testing import api_key_for, served_app
from storelens.config import parse_config
from storelens.config.auth import AuthConfig
from storelens.errors import ConfigError
from storelens.storage import SqliteStorage
from storelens.storage import auth as store

from test_live import REDIS_URL

PASSWORD = "a long enough password"
SITE = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/x.mp4"}]}
BURST = 20
MIB = 1 << 20


def _net() -> str:
    """A /24 of client addresses of this test alone (the shared Redis keeps the limits of earlier runs)."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{n // 250 % 250}."


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak_rss() -> int:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux); that RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as exc:  # pragma: no cover - a kernel without clear_refs
        pytest.skip(f"cannot reset the peak RSS: {exc}")
    return _status_kib("VmRSS") * 1024


# -- 1. a burst of sign-ins and memory ----------------------------------------------------------


def test_a_burst_of_wrong_sign_ins_stays_within_the_memory_of_a_few_password_checks(tmp_path) -> None:
    site = {**SITE, "auth": {"login_attempts_per_minute": 1000, "login_failures_per_minute": 1000,
                             "max_concurrent_password_checks": 2}}
    app = create_app(parse_config(site), SqliteStorage(str(tmp_path / "h.db")))
    app.state.context.auth.create_user("admin", PASSWORD, "admin")
    with served_app(app) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/auth/login", data={"username": "admin", "password": "warm-up guess"}).status_code == 401
        start = threading.Barrier(BURST + 1)
        answers: list[httpx.Response] = []

        def sign_in(i: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as own:
                start.wait()
                # unknown names (checked against the dummy hash) and the real admin's, all wrong
                answers.append(own.post("/v1/auth/login",
                                        data={"username": f"nobody-{i}" if i % 2 else "admin", "password": f"x{i}"}))

        threads = [threading.Thread(target=sign_in, args=(i,)) for i in range(BURST)]
        for t in threads:
            t.start()
        before = _reset_peak_rss()
        start.wait()
        health = client.get("/healthz")
        for t in threads:
            t.join(120)
        growth = _status_kib("VmHWM") * 1024 - before
        assert health.status_code == 200
        assert client.get("/healthz").status_code == 200
    statuses = sorted(a.status_code for a in answers)
    assert len(statuses) == BURST and set(statuses) <= {401, 429}, statuses
    assert all(a.headers["Retry-After"] == "1" for a in answers if a.status_code == 429)
    busy = app.state.context.metrics.registry.get_sample_value("storelens_errors_total",
                                                               {"reason": "password_checks_busy"}) or 0
    assert busy == statuses.count(429)
    # 20 Argon2id checks at once took ~20 x 64 MiB; two at a time take ~2 x 64 MiB
    assert growth < 4 * 64 * MIB, f"peak RSS grew by {growth / MIB:.0f} MiB"


def test_a_sign_in_that_finds_no_free_password_check_answers_busy_and_costs_no_failure(tmp_path) -> None:
    cfg = AuthConfig(max_concurrent_password_checks=1, password_check_wait_s=0, login_failures_per_minute=1)
    storage = SqliteStorage(str(tmp_path / "h.db"))
    auth = security.Authenticator(cfg, storage)
    auth.create_user("ana", PASSWORD, "viewer")
    with auth._password_checks:  # another sign-in is being checked
        for _ in range(3):
            with pytest.raises(security.RateLimited) as busy:
                auth.login("ana", "wrong guess!", client="203.0.113.1")
            assert busy.value.retry_after_s == 1 and "busy" in str(busy.value)
    assert store.list_audit(storage, action="auth.login-failed")[1] == 0
    # no failure was counted: the one allowed failure, then the limit
    assert auth.login("ana", "wrong guess!", client="203.0.113.1") is None
    with pytest.raises(security.RateLimited) as limited:
        auth.login("ana", PASSWORD, client="203.0.113.1")
    assert limited.value.retry_after_s == 60


# -- 2. the failure limits under a concurrent burst ---------------------------------------------


@pytest.mark.parametrize("redis_url", [None, REDIS_URL], ids=["memory", "redis"])
@pytest.mark.parametrize(("limits", "hosts"), [
    ({"login_failures_per_minute": 5}, [9] * BURST),  # one address: 5 failures per (user, client)
    ({"login_account_failures_per_minute": 5}, range(1, BURST + 1)),  # many addresses: the name's ceiling
], ids=["per-client", "per-account"])
def test_concurrent_wrong_passwords_get_no_more_checks_than_the_limit(tmp_path, redis_url, limits, hosts) -> None:
    net = _net()
    clients = [f"{net}{h}" for h in hosts]
    cfg = AuthConfig(max_concurrent_password_checks=BURST, password_check_wait_s=30, **limits)
    storage = SqliteStorage(str(tmp_path / "h.db"))
    auth = security.Authenticator(cfg, storage, redis_url=redis_url)
    user = f"u-{uuid.uuid4().hex[:12]}"
    auth.create_user(user, PASSWORD, "viewer")
    start = threading.Barrier(BURST)
    outcomes: list[str] = []

    def attempt(client: str) -> None:
        start.wait()
        try:
            outcomes.append("401" if auth.login(user, "wrong guess!", client=client) is None else "200")
        except security.RateLimited:
            outcomes.append("429")

    threads = [threading.Thread(target=attempt, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    checked = store.list_audit(storage, action="auth.login-failed")[1]
    assert len(outcomes) == BURST and set(outcomes) <= {"401", "429"}, outcomes
    assert outcomes.count("401") == checked == 5, outcomes


@pytest.mark.parametrize("redis_url", [None, REDIS_URL], ids=["memory", "redis"])
def test_a_successful_sign_in_gives_its_reserved_failure_back(tmp_path, redis_url) -> None:
    cfg = AuthConfig(login_failures_per_minute=2, login_account_failures_per_minute=2, login_attempts_per_minute=100)
    auth = security.Authenticator(cfg, SqliteStorage(str(tmp_path / "h.db")), redis_url=redis_url)
    user = f"u-{uuid.uuid4().hex[:12]}"
    auth.create_user(user, PASSWORD, "viewer")
    net = _net()
    known = f"{net}200"
    # successes from one client and from new clients count against neither limit
    assert all(auth.login(user, PASSWORD, client=known) for _ in range(3))
    assert all(auth.login(user, PASSWORD, client=f"{net}{i}") for i in range(100, 103))
    # so the next failures are the first: 2 from new clients (the name's ceiling), then 429 for a new client ...
    assert [auth.login(user, "wrong guess!", client=f"{net}{i}") for i in range(1, 3)] == [None] * 2
    with pytest.raises(security.RateLimited):
        auth.login(user, "wrong guess!", client=f"{net}3")
    # ... and 2 from the known client (exempt from the ceiling, held by its own limit)
    assert [auth.login(user, "wrong guess!", client=known) for _ in range(2)] == [None, None]
    with pytest.raises(security.RateLimited):
        auth.login(user, PASSWORD, client=known)


# -- 3. credentials of a cached read and the event loop -----------------------------------------


def test_a_cached_read_with_an_expired_principal_never_waits_for_the_database_on_the_event_loop(
        tmp_path, monkeypatch) -> None:
    db = str(tmp_path / "h.db")
    app = create_app(parse_config(SITE), SqliteStorage(db))
    key = api_key_for(app, "viewer")
    headers = {"Authorization": f"Bearer {key}"}
    touched = threading.Event()
    touch = store.touch_api_key

    def observed_touch(*args):  # the real write, after telling the test it started
        touched.set()
        return touch(*args)

    with served_app(app) as (url, _), httpx.Client(base_url=url, timeout=30, headers=headers) as client:
        assert client.get("/v1/occupancy").status_code == 200  # the answer is now in the response cache
        cache = app.state.response_cache
        (entry_key, (_, _, body, raw)), = cache._entries.items()
        # fresh for the test's length, at the store's write generation (the key's first use touched it)
        cache.put(entry_key, app.state.context.storage.write_generation, body, raw, now=time.monotonic() + 600)
        monkeypatch.setattr(security, "PRINCIPAL_CACHE_S", 0.0)  # the key's principal must be read again
        monkeypatch.setattr(security.store, "touch_api_key", observed_touch)
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("UPDATE api_keys SET last_used_ts_ms = 0")  # due for its once-a-minute touch (a write)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        result: list[int] = []
        reader = threading.Thread(target=lambda: result.append(client.get("/v1/occupancy").status_code))
        try:
            reader.start()
            assert touched.wait(10), "the key was not touched"
            # the touch waits for the lock (up to 10 s); the event loop does not
            assert httpx.get(f"{url}/healthz", timeout=3).status_code == 200
        finally:
            other.execute("ROLLBACK")
            other.close()
            reader.join(30)
        assert result == [200]


# -- 4. a too short admin password from the environment -----------------------------------------


@pytest.mark.parametrize(("env", "named"), [
    ({"STORELENS_ADMIN_PASSWORD": "short"}, "$STORELENS_ADMIN_PASSWORD"),
    ({"STORELENS_ADMIN_PASSWORD": PASSWORD, "STORELENS_ADMIN_USERNAME": "bad name"}, "$STORELENS_ADMIN_USERNAME"),
])
def test_a_bad_first_admin_from_the_environment_is_a_config_error_naming_the_variable(
        tmp_path, monkeypatch, env, named) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        create_app(parse_config(SITE), SqliteStorage(str(tmp_path / "h.db")))
    assert named in str(err.value), str(err.value)
