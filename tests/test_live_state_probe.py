"""How the API looks at Redis (the live state and the sign-in limiter) through an outage, with a redis-server of the
test's own (``SIGSTOP``: a hung Redis; ``SIGKILL``: a Redis that is gone), real SQLite storage and the API as
:func:`storelens.api.server.build_app` wires it:

1. one bound for every ping of the live state (``/readyz``'s ``live_state`` and ``/metrics``'
   ``storelens_live_state_up``: :meth:`~storelens.api.metrics.Metrics.live_state_up`), the typed setting
   ``live.timeout_s``; no request waits on a dead Redis beyond it;
2. after an outage, live figures, ``live_state`` and the shared sign-in limits are back within seconds of Redis'
   recovery (before: 30 s after the last failure), found by a ping in the background
   (:class:`~storelens.runtime.policy.Breaker`'s ``probe``, one at a time, a cool-down growing with the failed
   pings), never by a request waiting on a Redis that may still hang.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import redis
from fastapi.testclient import TestClient

from storelens.api import create_app
from storelens.api.server import build_app
from storelens.api.testing import api_key_for, signed_in_client
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.errors import ConfigError
from storelens.runtime.localdeploy import free_port
from storelens.runtime.policy import Breaker
from storelens.storage import SqliteStorage
from storelens.storage.live import RedisLiveState

T0 = 1_700_000_000_000
#: Each request of an outage answers within this (the live state's bound, ``live.timeout_s`` = 0.5 s, with room
#: for a slow shared machine; a request waiting on the dead Redis would take its client's timeout or forever).
BOUND_S = 2.5
#: The figures are live again within this of Redis' recovery (generous: the pings are at most 5 s apart).
RECOVERY_DEADLINE_S = 15.0
STORED, LIVE = 1, 7  # cam-1's occupancy in the history and in Redis: which one answered

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


class PrivateRedis:
    """A redis-server of the test's own on a :func:`free_port` port, which the test hangs, kills and restarts."""

    def __init__(self, workdir) -> None:
        self.port, self.workdir, self.proc = free_port(), workdir, None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)
        client.close()

    def hang(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.kill()


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    yield server
    server.close()


def _seed_live(url: str) -> None:
    """What the analytics service writes: cam-1's live occupancy."""
    with RedisLiveState(url) as live:
        live.set_occupancy(m.OccupancyUpdate(camera_id="cam-1", ts_ms=T0 + 1_000, occupancy=LIVE, total_in=LIVE))


def _site(tmp_path, url: str, **live) -> dict:
    return {"store": {"id": "s1"}, "api": {"cache_ttl_s": 0},
            "cameras": [{"id": "cam-1", "source": "/tmp/cam-1.mp4"}, {"id": "cam-2", "source": "/tmp/cam-2.mp4"}],
            "storage": {"path": str(tmp_path / "h.db")}, "live": {"redis_url": url, **live}}


def _app(tmp_path, url: str):
    seed = SqliteStorage(str(tmp_path / "h.db"))
    seed.write_batch(occupancy_updates=[m.OccupancyUpdate(camera_id=f"cam-{i}", ts_ms=T0, occupancy=STORED,
                                                          total_in=STORED) for i in (1, 2)])
    seed.close()
    app = build_app(parse_config(_site(tmp_path, url)))
    app.state.context.auth.create_user("admin", "a long enough password", "admin")
    return app


class View:
    """The API's answers about Redis: ``/readyz``'s ``live_state``, ``storelens_live_state_up``, cam-1's
    occupancy, and the sign-in limiter's fallbacks; each request timed (the longest in :attr:`longest_s`)."""

    def __init__(self, app) -> None:
        self.app = app
        self.client = TestClient(app, headers={"Authorization": f"Bearer {api_key_for(app)}"})
        self.longest_s = 0.0
        self.logins = 0

    def _get(self, path: str):
        t0 = time.monotonic()
        r = self.client.get(path)
        self.longest_s = max(self.longest_s, time.monotonic() - t0)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r

    def readyz(self) -> str:
        return self._get("/readyz").json()["live_state"]

    def metrics(self) -> dict[str, float]:
        lines = self._get("/metrics").text.splitlines()
        return {name: float(ln.split()[1]) for ln in lines for name in
                ("storelens_live_state_up", "storelens_rate_limit_fallbacks_total") if ln.startswith(name + " ")}

    def occupancy(self) -> int:
        return self._get("/v1/occupancy/cam-1").json()["occupancy"]

    def sign_in_is_limited_in_memory(self) -> bool:
        """A failed sign-in (a new client and user name each time: never limited) made in memory, not in Redis."""
        before = self.metrics()["storelens_rate_limit_fallbacks_total"]
        self.logins += 1
        r = TestClient(self.app, client=(f"198.51.100.{self.logins % 250 + 1}", 50000)).post(
            "/v1/auth/login", data={"username": f"nobody-{self.logins}", "password": "not the password"})
        assert r.status_code == 401, r.text  # never a 500, whatever Redis does
        return self.metrics()["storelens_rate_limit_fallbacks_total"] > before

    def everything(self) -> tuple:
        return self.readyz(), self.metrics()["storelens_live_state_up"], self.occupancy()


UP = ("ok", 1.0, LIVE)
DOWN = ("unavailable", 0.0, STORED)


def _until(what, want, deadline_s: float = RECOVERY_DEADLINE_S):
    """Poll ``what()`` until it returns ``want`` (``deadline_s`` at most); the last answer."""
    deadline = time.monotonic() + deadline_s
    while (got := what()) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


@pytest.mark.parametrize("outage", ["hung", "down"])
def test_live_figures_and_shared_limits_are_back_within_seconds_of_redis_recovery(tmp_path, private_redis,
                                                                                 outage) -> None:
    _seed_live(private_redis.url)
    app = _app(tmp_path, private_redis.url)
    with TestClient(app):  # startup and shutdown (the stores close)
        view = View(app)
        assert view.everything() == UP
        assert not view.sign_in_is_limited_in_memory()  # the limits are shared through Redis

        private_redis.hang() if outage == "hung" else private_redis.kill()
        view.longest_s = 0.0
        # the outage is reported, each request bounded: none waits on the dead Redis (a few rounds: the pings in
        # the background fail meanwhile, their cool-down grows)
        assert view.everything() == DOWN
        assert view.sign_in_is_limited_in_memory()
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            assert view.everything() == DOWN
            time.sleep(0.2)
        assert view.longest_s < BOUND_S, f"a request waited {view.longest_s:.2f} s on the {outage} Redis"
        assert view.sign_in_is_limited_in_memory()

        if outage == "hung":
            private_redis.resume()
        else:
            private_redis.start()  # an empty Redis on the same port; the analytics service writes again
            _seed_live(private_redis.url)
        # back within seconds (before: 30 s after the last failure)
        assert _until(view.everything, UP) == UP
        assert _until(view.sign_in_is_limited_in_memory, False) is False


def test_the_live_state_ping_of_readyz_and_metrics_waits_live_timeout_s_at_most(tmp_path, private_redis) -> None:
    """One bound for both, the typed setting ``live.timeout_s``, whatever the live state client's own timeout (5 s
    here, and no breaker: each ping asks the hung Redis)."""
    site = _site(tmp_path, private_redis.url, timeout_s=0.3)
    site["live"].pop("redis_url")  # the live state is create_app's argument; no limiter in Redis
    storage = SqliteStorage(str(tmp_path / "h.db"))
    with RedisLiveState(private_redis.url, timeout_s=5.0) as live:
        admin = signed_in_client(create_app(parse_config(site), storage, live))
        assert admin.get("/readyz").json()["live_state"] == "ok"
        private_redis.hang()
        for path, want in [("/readyz", '"live_state":"unavailable"'), ("/metrics", "storelens_live_state_up 0.0"),
                           ("/readyz", '"live_state":"unavailable"')]:
            t0 = time.monotonic()
            r = admin.get(path)
            took = time.monotonic() - t0
            assert r.status_code == 200 and want in r.text, (path, r.text[:300])
            assert took < BOUND_S, f"{path} waited {took:.2f} s on the hung Redis (live.timeout_s: 0.3 s)"
        private_redis.resume()
        assert _until(lambda: admin.get("/readyz").json()["live_state"], "ok") == "ok"
    storage.close()


@pytest.mark.parametrize("value", [0, -1, "soon", 60])
def test_live_timeout_s_is_checked_when_the_site_is_read(value) -> None:
    site = {"store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/cam-1.mp4"}]}
    with pytest.raises(ConfigError, match=r"live\.timeout_s"):
        parse_config({**site, "live": {"timeout_s": value}})
    assert parse_config(site).live.timeout_s == 0.5


# -- the breaker itself ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("first_s, max_s, want", [
    (1.0, 5.0, [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]),
    (0.5, 30.0, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]),
    (None, 30.0, [30.0] * 6),  # without a first cool-down: retry_s each time, as before
])
def test_the_cooldown_grows_with_the_failures_in_a_row_and_starts_again_after_a_success(first_s, max_s, want):
    now = [0.0]
    b = Breaker(max_s, first_retry_s=first_s, clock=lambda: now[0])
    got = []
    for _ in want:
        now[0] += 100.0
        assert b.allow()  # no probe: the call after the cool-down tries the backend itself
        b.failed()
        got.append(b.cooldown_s)
        assert not b.allow()
    assert got == want
    assert b.succeeded() and b.allow()
    b.failed()
    assert b.cooldown_s == want[0]


def _wait(cond, deadline_s: float = 10.0) -> bool:
    deadline = time.monotonic() + deadline_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return cond()


def test_with_a_probe_no_caller_tries_a_failed_backend_and_one_probe_at_a_time_finds_it_back() -> None:
    now = [0.0]
    release, answer = threading.Event(), [False]
    calls: list[float] = []

    def probe() -> bool:
        calls.append(now[0])
        release.wait(10)
        if isinstance(answer[0], Exception):
            raise answer[0]
        return answer[0]

    b = Breaker(5.0, first_retry_s=1.0, probe=probe, clock=lambda: now[0])
    assert b.allow() and b.failed() and not b.allow()
    now[0] = 1.0  # the cool-down is over: the probe starts, the callers keep skipping the backend
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(b.allow())) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [False] * 16 and _wait(lambda: len(calls) == 1) and calls == [1.0]
    now[0] = 10.0
    assert not b.allow() and len(calls) == 1  # one probe at a time, however long it hangs
    release.set()  # the probe fails: the next one after a longer cool-down
    assert _wait(lambda: b.cooldown_s == 2.0) and b.down
    answer[0] = ConnectionError("refused")  # a probe that raises fails as well
    now[0] = 20.0
    assert not b.allow() and _wait(lambda: b.cooldown_s == 4.0) and len(calls) == 2
    answer[0] = True  # Redis is back: the probe closes the breaker, the callers use the backend again
    now[0] = 30.0
    assert not b.allow() and _wait(lambda: not b.down) and len(calls) == 3
    assert b.allow() and b.cooldown_s == 4.0  # the failures in a row count until a real call works
    assert b.succeeded() and b.cooldown_s == 1.0
