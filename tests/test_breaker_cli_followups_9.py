"""Follow-ups of the Redis breaker, the live state's pings, ``storelens users`` / ``demo --db`` and the reid
decisions kept across an embedded run (real Redis servers of the test's own, real SQLite/PostgreSQL, the CLI as a
user runs it, the real face models on the labelled photos):

1. a backend that answers its probe (a ping) but fails its real calls (a slow or partitioned Redis) is tried ever
   less often: the failures in a row count until a real call succeeds, not a probe (before: reset by each probe,
   the breaker flapped every ~2 s, half the calls waiting a timeout, a warning pair each time);
2. a probe thread that cannot start is a failed probe: ``allow()`` never raises (a 500 on sign-in) and the breaker
   probes again after the next cool-down (before: stuck, Redis never asked again); the live state's probe never
   leaves a connection open once the live state is closed, even one ``close()`` raced with;
3. ``/readyz`` and ``/metrics`` wait twice ``live.timeout_s`` (the live state client's socket timeout) for its
   ping: a ping that must connect again takes up to one timeout for that and one for the answer;
4. ``users create|create-admin`` with an empty or closed stdin (``kubectl exec`` without ``-i``, ``<&-``) is an
   error saying how to give the password (exit 2; before: "at least 10 characters", or an unexpected
   ``AttributeError``, exit 1); ``create-admin``'s default name is ``$STORELENS_ADMIN_USERNAME``
   (``auth.admin_username_env``), as the API's first admin;
5. ``demo --db FILE`` leaves the site's Redis out (before: the demo showed its live occupancy, shared its limiter);
6. an embedded run's fresh tracker session forgets the decisions a killed run left, but the ``erased`` ones: a rerun
   of the file gives an erased person the same track id, and the gallery holds no vector of theirs any more
   (before: enrolled again). The trade-off: another person with that track id (the tracker's settings changed)
   is left undecided; an erased person's privacy wins.
"""
from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys
import threading
import time

import pytest
import redis
import yaml
from fastapi.testclient import TestClient

from storelens.api.server import build_app
from storelens.api.testing import api_key_for
from storelens.backends.face_index import FaceGallery, TrackDecision
from storelens.cli import _demo_config, build_parser, main
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.runtime.policy import Breaker
from storelens.stages.faces import ReidStage
from storelens.storage import SqliteStorage, SqlStorage
from storelens.storage.auth import list_users
from storelens.storage.gallery import SqlGalleryStore
from storelens.storage.live import RedisLiveState
from test_faces_review_fixes_3 import BIDEN, OBAMA, OBAMA2, image, models, published, site, stores  # noqa: F401
from test_live_state_probe import PrivateRedis
from test_staff_faces import photo_crop

WORKTREE = pathlib.Path(__file__).resolve().parents[1]
T0 = 1_767_225_600_000
PASSWORD = "a long enough password"


def _wait(cond, deadline_s: float = 10.0) -> bool:
    """Poll ``cond()`` until it holds (``deadline_s`` at most): the breaker's probe runs in a thread."""
    deadline = time.monotonic() + deadline_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(cond())


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    yield server
    server.close()


# -- 1 -----------------------------------------------------------------------------------------------------------


def test_a_backend_answering_its_probe_but_failing_its_calls_is_tried_ever_less_often():
    now = [0.0]
    b = Breaker(5.0, first_retry_s=1.0, probe=lambda: True, clock=lambda: now[0])
    cooldowns_s, outages = [], 0
    for _ in range(5):
        assert b.allow()  # the backend is believed up: the call asks it ... and fails (a read timing out)
        outages += b.failed()
        cooldowns_s.append(b.cooldown_s)
        assert not b.allow()  # skipped during the cool-down
        now[0] += b.cooldown_s  # its end: the probe (a ping) answers, the backend is used again
        assert not b.allow() and _wait(lambda: not b.down)
    assert cooldowns_s == [1.0, 2.0, 4.0, 5.0, 5.0]  # was [1.0, 1.0, 1.0, 1.0, 1.0]: a probe reset the count
    assert outages == 1  # one outage, reported once (was: a warning pair at each probe)
    assert b.allow() and b.succeeded()  # a real call works: the outage is over (to log), the count starts again
    assert not b.succeeded() and b.failed() and b.cooldown_s == 1.0


# -- 2 -----------------------------------------------------------------------------------------------------------


def test_a_probe_that_cannot_start_is_a_failed_probe_and_the_breaker_probes_again(monkeypatch):
    now = [0.0]
    b = Breaker(5.0, first_retry_s=1.0, probe=lambda: True, clock=lambda: now[0], name="rate-limit store (Redis)")
    assert b.allow() and b.failed()
    now[0] = 1.0

    def no_thread(self):
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as mp:  # the process has no thread left (its limit reached)
        mp.setattr(threading.Thread, "start", no_thread)
        assert b.allow() is False  # was: the RuntimeError (a 500 on sign-in through Authenticator._limit)
    assert b.down and b.cooldown_s == 2.0  # a failed probe: the next one after a longer cool-down
    assert not b.allow()
    now[0] = 3.0  # threads again: the next probe starts and finds the backend (was: never asked again)
    assert not b.allow() and _wait(lambda: not b.down)
    assert b.allow()


def _clients(checker: redis.Redis) -> int:
    """Connections to the private Redis but ``checker``'s own."""
    me = checker.client_id()
    return sum(1 for c in checker.client_list() if int(c["id"]) != me)


@pytest.mark.parametrize("race", [False, True])
def test_the_live_states_probe_leaves_no_connection_open_once_it_is_closed(private_redis, race):
    checker = redis.Redis.from_url(private_redis.url, socket_timeout=5)
    live = RedisLiveState(private_redis.url, retry_s=5.0, first_retry_s=1.0)
    assert live.ping() and _wait(lambda: _clients(checker) == 1)
    pool = live._redis.connection_pool
    if race:  # close() comes while the probe (in its own thread) is under way, just before it takes a connection
        get_connection = pool.get_connection

        def closing_first(*args, **kwargs):
            pool.get_connection = get_connection
            live.close()
            return get_connection(*args, **kwargs)

        pool.get_connection = closing_first
    else:
        live.close()
    live._probe()
    # was (race): the probe's ping opened a pooled connection again, left open after close()
    assert _wait(lambda: _clients(checker) == 0, 5.0), checker.client_list()
    checker.close()


# -- 3 -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout_s", [0.3, 0.5, 2.0])
def test_readyz_and_metrics_wait_twice_live_timeout_s_for_the_live_states_ping(tmp_path, timeout_s):
    app = build_app(parse_config({
        "store": {"id": "s1"}, "cameras": [{"id": "cam-1", "source": "/tmp/cam-1.mp4"}],
        "storage": {"path": str(tmp_path / "h.db")},
        "live": {"redis_url": "redis://127.0.0.1:9/0", "timeout_s": timeout_s}}))
    with TestClient(app):
        assert app.state.context.metrics.live_wait_s == 2 * timeout_s  # was live.timeout_s


# -- 4 -----------------------------------------------------------------------------------------------------------


def _site(tmp_path, **auth) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "x.mp4"}],
                                    "storage": {"path": str(tmp_path / "h.db")}, **({"auth": auth} if auth else {})}))
    return str(path)


@pytest.mark.parametrize("command", [["create-admin"], ["create", "ana", "--role", "viewer"]])
def test_an_empty_stdin_is_an_error_saying_how_to_give_the_password(tmp_path, monkeypatch, capsys, command):
    monkeypatch.delenv("STORELENS_ADMIN_PASSWORD", raising=False)
    site = _site(tmp_path)
    if command[0] == "create":  # `users create` needs an existing history
        monkeypatch.setenv("STORELENS_ADMIN_PASSWORD", PASSWORD)
        assert main(["users", "create-admin", "--config", site]) == 0
        monkeypatch.delenv("STORELENS_ADMIN_PASSWORD")
        capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # `kubectl exec` without -i
    assert main(["users", *command, "--config", site]) == 2
    err = capsys.readouterr().err
    assert "password: none on stdin (empty)" in err and "kubectl exec -i" in err, err  # was: at least 10 characters
    assert ("$STORELENS_ADMIN_PASSWORD" in err) == (command[0] == "create-admin"), err


def test_a_closed_stdin_is_an_error_saying_how_to_give_the_password(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "STORELENS_ADMIN_PASSWORD"},
           "PYTHONPATH": str(WORKTREE)}
    res = subprocess.run(["sh", "-c", 'exec "$0" -m storelens.cli "$@" <&-', sys.executable,
                          "users", "create-admin", "--config", _site(tmp_path)],
                         capture_output=True, text=True, timeout=120, env=env)
    # was: "error: unexpected AttributeError: 'NoneType' object has no attribute 'isatty'", exit 1
    assert res.returncode == 2, res.stderr
    assert "password: none on stdin (closed)" in res.stderr and "kubectl exec -i" in res.stderr, res.stderr


@pytest.mark.parametrize("variable, given, want", [
    ("STORELENS_ADMIN_USERNAME", None, "boss"),  # the API's first admin's name
    ("SHOP_ADMIN", None, "boss"),  # auth.admin_username_env names another variable
    ("STORELENS_ADMIN_USERNAME", "ana", "ana"),  # a name given wins
    (None, None, "admin"),
])
def test_create_admin_takes_its_default_name_from_auth_admin_username_env(tmp_path, monkeypatch, capsys, variable,
                                                                           given, want):
    monkeypatch.setenv("STORELENS_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.delenv("STORELENS_ADMIN_USERNAME", raising=False)
    if variable is not None:
        monkeypatch.setenv(variable, "boss")
    site = _site(tmp_path, **({"admin_username_env": variable} if variable not in (None, "STORELENS_ADMIN_USERNAME")
                              else {}))
    assert main(["users", "create-admin", *([given] if given else []), "--config", site]) == 0
    assert capsys.readouterr().out == f"created admin {want!r}\n"  # was 'admin' whatever the variable
    with SqlStorage(str(tmp_path / "h.db")) as storage:
        assert [(u["username"], u["role"]) for u in list_users(storage)] == [(want, "admin")]


# -- 5 -----------------------------------------------------------------------------------------------------------


STORED, LIVE = 1, 7  # cam-1's occupancy in the history and in the site's Redis: which one answered


@pytest.mark.parametrize("db, want", [(True, STORED), (False, LIVE)])
def test_demo_db_leaves_the_sites_redis_out(tmp_path, private_redis, db, want):
    with RedisLiveState(private_redis.url) as live:  # the production site's live occupancy
        live.set_occupancy(m.OccupancyUpdate(camera_id="cam-1", ts_ms=T0 + 1_000, occupancy=LIVE, total_in=LIVE))
    history = tmp_path / "h.db"
    with SqliteStorage(str(history)) as seed:
        seed.write_batch(occupancy_updates=[m.OccupancyUpdate(camera_id="cam-1", ts_ms=T0, occupancy=STORED,
                                                              total_in=STORED)])
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({
        "store": {"id": "s1"}, "api": {"cache_ttl_s": 0}, "cameras": [{"id": "cam-1", "source": "/tmp/cam-1.mp4"}],
        "storage": {"path": str(history)}, "live": {"redis_url": private_redis.url}}))
    args = build_parser().parse_args(["demo", "--config", str(site), *(["--db", str(history)] if db else [])])
    config = _demo_config(args)
    assert (config.live.redis_url is None) == db
    app = build_app(config)  # what demo serves
    with TestClient(app, headers={"Authorization": f"Bearer {api_key_for(app)}"}) as client:
        assert client.get("/v1/occupancy/cam-1").json()["occupancy"] == want  # was LIVE with --db too
        assert ("live_state" in client.get("/readyz").json()) is not db
    assert "live.redis_url" in build_parser()._subparsers._group_actions[0].choices["demo"].format_help()


# -- 6 -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_the_gallery_store_forgets_a_cameras_decisions_but_the_erased_ones_when_asked(tmp_path, kind):
    with stores(kind, tmp_path) as (_, g):
        for cam, track, decision in [("door", 1, TrackDecision("abstained", ts_ms=T0)),
                                     ("door", 2, TrackDecision("erased", ts_ms=T0)),
                                     ("door", 3, TrackDecision("staff", staff_id="st-1", ts_ms=T0)),
                                     ("till", 4, TrackDecision("abstained", ts_ms=T0))]:
            g.save_track_decision(cam, track, decision)
        assert g.forget_track_decisions("door", keep_erased=True) == 2  # a fresh tracker session (start_session)
        assert [g.track_decision("door", t) for t in (1, 2, 3)] == [None, TrackDecision("erased", ts_ms=T0), None]
        assert g.track_decision("till", 4) is not None  # another camera's stay
        assert g.forget_track_decisions("door") == 1  # the end of the stream: every decision goes
        assert g.track_decision("door", 2) is None


@pytest.mark.parametrize("person", ["erased", "another"])
def test_a_rerun_never_enrols_an_erased_person_again(tmp_path, models, person):  # noqa: F811
    cfg = site(tmp_path)
    db = tmp_path / "gallery.db"

    def start() -> ReidStage:
        gallery = FaceGallery(cfg.faces.gallery, store=SqlGalleryStore(db, dim=128))
        return ReidStage(cfg, gallery, embedder=models.embedder, detector=models.detector)

    def run(reid: ReidStage, crops: list[tuple[int, str]]) -> list[m.CustomerMatch]:
        return [x for i, (track, photo) in enumerate(crops)
                for x in published(reid.handle(topics.PERSON_CROPS,
                                                photo_crop(1 + i, track, T0 + 100 * i, image(photo))))]

    first = start()  # a run killed after deciding track 7 (obama) and track 8 (biden): it ended no stream
    decided = {x.track_id: x.customer_id for x in run(first, [(7, OBAMA), (8, BIDEN), (7, OBAMA), (8, BIDEN)])}
    assert sorted(decided) == [7, 8]
    first.gallery.store.close()
    api = SqlGalleryStore(db, dim=128)  # obama erased through the API: their vectors are gone, track 7 "erased"
    assert api.delete_customer(decided[7])
    api.close()

    second = start()  # the next run of the file: the same track ids
    second.start_session("door")  # as the faces stage does at the camera's first crop
    store = second.gallery.store
    assert store.track_decision("door", 7).decision == "erased"  # kept (was: forgotten)
    assert store.track_decision("door", 8) is None  # the others go: decided again on their own faces
    photo = OBAMA2 if person == "erased" else BIDEN  # another: a changed tracker gave biden the id 7
    after = run(second, [(7, photo), (8, BIDEN), (7, photo), (8, BIDEN), (7, photo)])
    # track 7 stays undecided: obama is not enrolled again (was: a new customer of the erased person); the
    # trade-off: biden on track 7 is left undecided too (an erased person's privacy wins)
    assert [(x.track_id, x.customer_id) for x in after] == [(8, decided[8])]
    assert store.counts()["customers"] == 1 and len(second.gallery) == 1
    store.close()
