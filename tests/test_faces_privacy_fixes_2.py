"""Privacy follow-ups of the faces path, each on the real component.

1. The API process alone (``services/api`` on a SQLite history, no pipeline, no analytics service) runs the
   retention purge on its schedule (``privacy.retention.every_s``); it purged nothing. It does not while an
   embedded pipeline runs on the history (the pipeline purges), and of several API processes one purges.
2. In the embedded mode an erasure through the API reaches the running faces stage on ``customer-erasures`` (the
   ``CustomerErasure`` the distributed mode publishes, stored in the history's outbox and relayed onto the
   in-process bus): the erased person's faces captured before the request and still queued enrol nobody. Before,
   only the first such track found the customer gone; the next one made a new customer of the erased person.

Real API process / app (``storelens.api.server.build_app``), real embedded pipeline with the real faces models
(YuNet, attributes, dlib) on the labelled photos; the test stands in for detect-track only, publishing the person
crops of a camera that sends no frames (a live source that is down).
"""
from __future__ import annotations

import functools
import os
import pathlib
import subprocess
import sys
import threading
import time

import cv2
import httpx
import pytest
import sqlalchemy as sa
import yaml

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.storage import SqlStorage
from storelens.storage.schema import frames, track_points
from storelens.runtime.localdeploy import free_port

WORKTREE = pathlib.Path(__file__).resolve().parents[1]
DAY_MS = 86_400_000
FACES = asset("faces")
OBAMA, OBAMA2, OBAMA_TEST = "identities/obama/obama.jpg", "identities/obama/obama2.jpg", "identities_test/obama1.jpg"
BIDEN, BIDEN2 = "identities/biden/biden.jpg", "identities/biden/biden2.jpg"
DOWN = "rtsp://127.0.0.1:9/down"  # a live camera that is down: ingest retries, the pipeline runs until stopped


def _wait(cond, timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step_s)
    return bool(cond())


def _api_may_purge(db: str) -> bool:
    """Whether an API process would purge the history ``db`` now."""
    from storelens.runtime.retention import PurgeLease

    lease = PurgeLease(db)
    try:
        with lease.api_turn() as mine:
            return mine
    finally:
        lease.close()


# -- 1. the API process purges the history it serves --------------------------------------------------------------


def _seed(store: SqlStorage, ts_ms: int, seq0: int) -> None:
    box = m.BoxXYXY(x1=10, y1=20, x2=50, y2=120)
    for i in range(3):
        store.write_tracked_frame(m.TrackedFrame(camera_id="door", seq=seq0 + i, ts_ms=ts_ms + i, width=640,
                                                 height=480, tracks=[m.Track(track_id=1, bbox_xyxy=box,
                                                                             confidence=0.9)]))


def _older_than(store: SqlStorage, ts_ms: int) -> int:
    return sum(store._rows(sa.select(sa.func.count()).select_from(t).where(t.c.ts_ms < ts_ms))[0][0]
               for t in (track_points, frames))


@pytest.fixture
def api_process(tmp_path):
    """``services/api/main.py`` on a SQLite history (wall clock, track points and frames kept 7 days, purged every
    second); yields ``(store, start)``: the history and a function that starts the process."""
    db = tmp_path / "history.db"
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"store": {"id": "s"}, "cameras": [{"id": "door", "source": DOWN}],
                                    "storage": {"path": str(db)},
                                    "privacy": {"retention": {"every_s": 1, "clock": "wall"}}}))
    store = SqlStorage(str(db))
    procs = []

    def start() -> None:
        port = free_port()
        env = {**os.environ, "STORELENS_CONFIG": str(site), "STORELENS_API_PORT": str(port),
               "STORELENS_API_HOST": "127.0.0.1", "STORELENS_LOG_LEVEL": "WARNING",
               "PYTHONPATH": os.pathsep.join([str(WORKTREE), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen([sys.executable, str(WORKTREE / "services" / "api" / "main.py")], env=env,
                                start_new_session=True)
        procs.append(proc)

        def up() -> bool:
            assert proc.poll() is None, f"the api exited with {proc.returncode}"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        assert _wait(up, 60, 0.1), "the api did not start"

    yield store, start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)
    store.close()


@pytest.mark.timeout(180)
def test_the_api_process_alone_purges_the_history_on_its_schedule(api_process):
    store, start = api_process
    now = int(time.time() * 1000)
    old = now - 8 * DAY_MS  # track points and frames are kept 7 days
    _seed(store, old, 1)
    _seed(store, now - DAY_MS, 10)  # within the retention
    assert _older_than(store, now - 7 * DAY_MS) == 6

    start()
    assert _wait(lambda: _older_than(store, now - 7 * DAY_MS) == 0, 10), "the api process purged nothing"
    # on its schedule: rows that expire while it runs go within privacy.retention.every_s (1 s) too
    _seed(store, old + 100, 20)
    assert _older_than(store, now - 7 * DAY_MS) == 6
    assert _wait(lambda: _older_than(store, now - 7 * DAY_MS) == 0, 10), "no purge after the first"
    assert _older_than(store, now) == 6  # the recent rows stay


@pytest.mark.timeout(180)
def test_the_api_process_does_not_purge_while_an_embedded_pipeline_runs_on_the_history(api_process):
    from storelens.runtime.retention import purge_lease

    store, start = api_process
    now = int(time.time() * 1000)
    pipeline = purge_lease(store)  # what EmbeddedPipeline.run holds while it runs (the pipeline purges itself)
    pipeline.hold_for_pipeline()
    _seed(store, now - 8 * DAY_MS, 1)
    start()
    time.sleep(3)  # three purge periods of the api
    assert _older_than(store, now - 7 * DAY_MS) == 6  # not purged twice: the pipeline's purge does it
    pipeline.close()  # the pipeline has ended: the api takes over
    assert _wait(lambda: _older_than(store, now - 7 * DAY_MS) == 0, 10)


def test_of_several_api_processes_one_purges_and_none_while_a_pipeline_runs(tmp_path):
    from storelens.runtime.retention import PurgeLease

    db = str(tmp_path / "history.db")
    first, second, pipeline = PurgeLease(db), PurgeLease(db), PurgeLease(db)
    with first.api_turn() as mine:
        assert mine
    with second.api_turn() as mine:
        assert not mine  # the first keeps purging (api.workers: one worker purges)
    pipeline.hold_for_pipeline()
    with first.api_turn() as mine:
        assert not mine  # a pipeline runs
    pipeline.close()
    first.close()  # the first api process ended
    with second.api_turn() as mine:
        assert mine
    second.close()


@pytest.mark.timeout(180)
def test_a_running_embedded_pipeline_keeps_the_api_processes_from_purging(tmp_path):
    from storelens.runtime.embedded import EmbeddedPipeline

    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": DOWN}],
                        "ingest": {"reconnect_backoff_s": 5, "reconnect_backoff_max_s": 5},
                        "storage": {"path": str(tmp_path / "history.db")}})
    storage = SqlStorage(cfg.storage.path)
    pipe = EmbeddedPipeline(cfg, storage=storage)
    run = threading.Thread(target=pipe.run, name="pipeline", daemon=True)
    assert _api_may_purge(cfg.storage.path)
    run.start()
    assert _wait(lambda: "analytics" in pipe.runners, 120, 0.2)
    assert not _api_may_purge(cfg.storage.path)  # the pipeline purges its history itself
    pipe.stop()
    run.join(timeout=60)
    assert not run.is_alive()
    assert _api_may_purge(cfg.storage.path)  # it has ended: an API process serving the history takes over
    storage.close()


# -- 2. an erasure through the API reaches the embedded faces stage ----------------------------------------------


@functools.lru_cache(maxsize=None)
def _jpeg(photo: str) -> tuple[bytes, int, int]:
    img = cv2.imread(str(FACES / photo))
    assert img is not None, photo
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes(), img.shape[1], img.shape[0]


def _crop(seq: int, track: int, ts_ms: int, photo: str) -> bytes:
    jpeg, w, h = _jpeg(photo)
    return m.encode(m.PersonCrop(camera_id="door", seq=seq, ts_ms=ts_ms, track_id=track, jpeg=jpeg,
                                 bbox_xyxy=m.BoxXYXY(x1=100, y1=50, x2=100 + w, y2=50 + h)))


@pytest.mark.timeout(300)
@pytest.mark.skipif(not (FACES / "identities").is_dir(), reason="shared face assets not found")
def test_an_erasure_through_the_api_reaches_the_embedded_faces_stage(tmp_path):
    from storelens.api.server import build_app
    from storelens.api.testing import signed_in_client
    from storelens.runtime.embedded import EmbeddedPipeline
    from storelens.storage import open_gallery

    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": DOWN}],
                        "ingest": {"reconnect_backoff_s": 5, "reconnect_backoff_max_s": 5},
                        "storage": {"path": str(tmp_path / "history.db")},
                        "faces": {"enabled": True, "reid": {"faces_per_decision": 2}}})
    storage, gallery = SqlStorage(cfg.storage.path), open_gallery(cfg)
    pipe = EmbeddedPipeline(cfg, storage=storage, gallery=gallery)
    run = threading.Thread(target=pipe.run, name="pipeline", daemon=True)
    run.start()
    assert _wait(lambda: "faces" in pipe.runners and pipe.faces_stages is not None, 120, 0.2)
    reid = pipe.faces_stages[1]
    seq = 0

    def crops(*plan: tuple[int, int, str]) -> None:  # as detect-track publishes them
        nonlocal seq
        for track, ts, photo in plan:
            seq += 1
            pipe.bus.publish(topics.PERSON_CROPS, topics.camera_key("door"), _crop(seq, track, ts, photo))

    t0 = int(time.time() * 1000) - 300_000  # captured five minutes ago
    crops((1, t0, OBAMA), (1, t0 + 100, OBAMA))
    assert _wait(lambda: len(pipe.result.customer_matches) == 1, 60)
    [first] = pipe.result.customer_matches
    cid = first.customer_id

    app = build_app(cfg)  # the API of the embedded mode (services/api, api.workers, demo), its own connections
    with signed_in_client(app) as client:
        assert client.delete(f"/v1/customers/{cid}").status_code == 204
        # the erasure request reaches the faces stage: the customer leaves its gallery's memory
        _wait(lambda: cid not in reid.gallery, 30)
        # crops of the erased person captured before the request, still queued: two tracks; then another person
        crops((2, t0 + 5_000, OBAMA_TEST), (2, t0 + 5_100, OBAMA2), (3, t0 + 6_000, OBAMA2), (3, t0 + 6_100, OBAMA),
              (4, t0 + 7_000, BIDEN), (4, t0 + 7_100, BIDEN2))
        assert _wait(lambda: any(x.track_id == 4 for x in pipe.result.customer_matches), 60)
        later = list(pipe.result.customer_matches)[1:]
        customers = client.get("/v1/customers").json()
    pipe.stop()
    run.join(timeout=60)
    assert not run.is_alive()

    # was: track 3 (the erased person again) became a new customer
    assert [(x.track_id, x.is_new) for x in later] == [(4, True)], later
    assert [c["customer_id"] for c in customers["items"]] == [later[0].customer_id]
    assert gallery.customers() == [later[0].customer_id]
    from storelens.storage.schema import outbox

    assert storage._rows(sa.select(sa.func.count()).select_from(outbox))[0][0] == 0  # the request was taken
    gallery.store.close()
    storage.close()
