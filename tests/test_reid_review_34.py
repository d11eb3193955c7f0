"""Review fixes of returning customers, visits and cross-camera appearance (review 34), on real models and stores.

1. A track's appearance embedding that is not finite, or of another length than the track's earlier ones (a malformed
   ``TrackedFrame``), no longer fails the analytics of the frame and of every later frame of that track (counts,
   zones, journeys of the whole camera were dead letters until the track ended): it is left out and counted.
2. A customer's visit runs from their track's first crop, not from the decision (which waits for good faces): a person
   present all along whose new track shows a face only later is not a returning customer of a second visit.
3. ``storelens_returning_customers_total`` (the reid stage's ``returning``) counts returning visits, as its help says,
   not every track of them: a second camera's track of the same visit is not a second return.
4. The reid stage's retention purge (by the crops' camera time) never goes past the host's clock: one crop dated in
   the future (a camera clock, a file's ``start_ts_ms`` set wrong) purged every customer of the gallery.
5. The crops of one decided track never start a second visit: a ``faces.reid.visit_gap_s`` shorter than the camera's
   crop interval (0 was accepted) made each crop a new visit.

Real face models (YuNet, dlib) on the shared asset photos; the gallery on SQLite and on the PostgreSQL of the test
stack (``STORELENS_PG_DSN``, skipped when it cannot be reached).
"""
from __future__ import annotations

import contextlib
import os
import time
import uuid
from types import SimpleNamespace

import cv2
import numpy as np
import psycopg
import pytest
from psycopg import sql

from storelens.backends.face_index import FaceGallery
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.stages.faces import DecodedCrop, ReidStage, decode_crop
from storelens.storage.gallery import SqlGalleryStore

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
FACES = asset("faces")
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000


# -- 1. a bad appearance vector fails nothing ------------------------------------------------------------------------

def analytics_site():
    return parse_config({
        "store": {"id": "s"},
        "cameras": [{"id": "cam", "source": "/tmp/x.mp4", "lines": [{"id": "door", "a": [0, 100], "b": [400, 100]}]}],
        "journeys": {"track_end_after_s": 1, "min_track_frames": 3},
    })


def tracked_frame(seq: int, people: list[tuple[int, float, list[float]]]) -> m.TrackedFrame:
    """people: (track id, anchor y, appearance); boxes 20 px wide around x = 100."""
    tf = m.TrackedFrame(camera_id="cam", seq=seq, ts_ms=seq * 100, width=400, height=400)
    for tid, y, emb in people:
        t = tf.tracks.add(track_id=tid, bbox_xyxy=m.BoxXYXY(x1=90, y1=y - 60, x2=110, y2=y), confidence=0.9)
        t.appearance.extend(emb)
    return tf


E1, E2 = [1.0, 0.0], [0.0, 1.0]
BAD_APPEARANCE = "bad_appearance"  # storelens.stages.journeys.BAD_APPEARANCE


@pytest.mark.parametrize("case, bad_at, bad", [
    ("longer vector first", 0, [1.0, 0.0, 0.0]),
    ("shorter vector midway", 5, [1.0]),
    ("NaN", 5, [float("nan"), 1.0]),
    ("infinity", 0, [float("inf"), 0.0]),
])
def test_a_bad_appearance_vector_is_left_out_and_the_frames_go_on(case, bad_at, bad) -> None:
    from storelens.stages.analytics import AnalyticsStage

    stage = AnalyticsStage(analytics_site())
    crossings, summaries, errors = 0, [], 0
    for seq in range(20):  # track 1 walks down through the door line (in); track 2 stands by (E2)
        emb = bad if seq == bad_at else E1
        out = stage.handle(topics.TRACKS, tracked_frame(seq, [(1, 50 + seq * 6, emb), (2, 300, E2)]))
        crossings += sum(p.topic == topics.CROSSINGS for p in out.publish)
        errors += out.info.get("errors", {}).get(BAD_APPEARANCE, 0)
    for seq in range(20, 35):  # nobody: both tracks end
        out = stage.handle(topics.TRACKS, tracked_frame(seq, []))
        summaries += [p.message for p in out.publish if p.topic == topics.TRACK_SUMMARIES]
    assert crossings == 1, case  # the crossing of the frames after the bad vector still counts
    got = {s.track_id: (s.n_frames, list(s.appearance)) for s in summaries}
    assert got[1][0] == 20 and np.allclose(got[1][1], E1), case  # the mean of the good vectors only
    assert got[2][0] == 20 and np.allclose(got[2][1], E2), case
    assert errors in (1, 2), case  # counted (a bad first vector: also the next one, before the majority tells)


# -- 2, 3. visits and returning customers (real faces) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def models():
    if not (FACES / "identities").is_dir():
        pytest.skip("shared face assets not found")
    from storelens.backends.face_detectors import YuNetFaceDetector
    from storelens.backends.face_embedders.dlib import DlibFaceEmbedder

    face = cv2.imread(str(FACES / "identities" / "obama" / "obama.jpg"))
    assert face is not None
    back = np.full((400, 200, 3), 128, np.uint8)  # the same person turned away: a crop without a face
    detector = YuNetFaceDetector()
    assert len(detector.detect(back)) == 0
    return SimpleNamespace(detector=detector, embedder=DlibFaceEmbedder(), face=face, back=back)


@contextlib.contextmanager
def gallery_store(backend: str, tmp_path, dim: int = 128):
    """A gallery store of ``dim``-long embeddings on SQLite (in ``tmp_path``) or in a fresh PostgreSQL schema."""
    if backend == "sqlite":
        store = SqlGalleryStore(tmp_path / "g.db", dim=dim)
        try:
            yield store
        finally:
            store.close()
        return
    schema = f"test_reid_review_34_{uuid.uuid4().hex[:12]}"
    try:
        store = SqlGalleryStore(PG_DSN, dim=dim, schema=schema, connect_timeout_s=5)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def reid_stage(models, store) -> ReidStage:
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "x.mp4"},
                                                          {"id": "aisle", "source": "y.mp4"}],
                        "faces": {"enabled": True, "reid": {"faces_per_decision": 2, "track_idle_s": 3600,
                                                            "visit_gap_s": 1800}}})
    return ReidStage(cfg, FaceGallery(cfg.faces.gallery, store=store), embedder=models.embedder,
                     detector=models.detector)


class Feed:
    """Crops into a reid stage; its decisions collected."""

    def __init__(self, stage: ReidStage) -> None:
        self.stage, self.seq, self.matches = stage, 0, []

    def __call__(self, image, cam: str, track: int, ts: int) -> None:
        self.seq += 1
        ok, buf = cv2.imencode(".jpg", image)
        assert ok
        h, w = image.shape[:2]
        c = m.PersonCrop(camera_id=cam, seq=self.seq, ts_ms=ts, track_id=track,
                         bbox_xyxy=m.BoxXYXY(x1=0, y1=0, x2=w, y2=h), jpeg=buf.tobytes())
        out = self.stage.handle(topics.PERSON_CROPS, DecodedCrop(c, decode_crop(c)))
        self.matches += [p.message for p in out.publish]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_visit_runs_from_the_tracks_first_crop(models, backend, tmp_path) -> None:
    with gallery_store(backend, tmp_path) as store:
        feed = Feed(reid_stage(models, store))
        feed(models.face, "door", 1, T0)  # first visit: decided at once
        feed(models.face, "door", 1, T0 + 1_000)
        # still in the store, an id switch: track 2 shows the back of the head from 10 min on, a face at 45 min
        for t in (10, 20, 30, 40):
            feed(models.back, "door", 2, T0 + t * MIN)
        feed(models.face, "door", 2, T0 + 45 * MIN)
        feed(models.face, "door", 2, T0 + 45 * MIN + 1_000)
        assert [(x.track_id, x.is_new, x.visit_no, x.returning) for x in feed.matches] == [
            (1, True, 1, False), (2, False, 1, False)]  # before: visit 2, returning
        (visit,) = store.visits(feed.matches[0].customer_id)
        assert (visit.first_ts_ms, visit.last_ts_ms) == (T0, T0 + 45 * MIN + 1_000)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_returning_counts_visits_not_their_tracks(models, backend, tmp_path) -> None:
    with gallery_store(backend, tmp_path) as store:
        stage = reid_stage(models, store)
        feed = Feed(stage)
        feed(models.face, "door", 1, T0)
        feed(models.face, "door", 1, T0 + 1_000)
        # back 3 h later: the door camera's track and then the aisle camera's, one visit
        for cam, track, t in (("door", 2, 180 * MIN), ("aisle", 3, 182 * MIN)):
            feed(models.back, cam, track, T0 + t)
            feed(models.face, cam, track, T0 + t + 1_000)
            feed(models.face, cam, track, T0 + t + 2_000)
        assert [(x.camera_id, x.visit_no, x.returning) for x in feed.matches] == [
            ("door", 1, False), ("door", 2, True), ("aisle", 2, True)]
        assert (stage.stats["matches"], stage.stats["new"], stage.stats["returning"]) == (3, 1, 1)  # before: 2
        visits = store.visits(feed.matches[0].customer_id)
        assert [(v.visit_no, v.first_ts_ms, v.cameras) for v in visits] == [
            (1, T0, ("door",)), (2, T0 + 180 * MIN, ("aisle", "door"))]


# -- 4. a crop dated in the future does not purge the gallery --------------------------------------------------------

DAY = 86_400_000


def now_ms() -> int:
    """This host's clock: the purge never goes past it."""
    return int(time.time() * 1000) // 1000 * 1000


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("enrolled_ts, crop_ts, kept, clock_ahead", [
    pytest.param(lambda: T0, lambda: T0 + 40 * DAY, False, 0, id="40 days later, before now: purged"),
    pytest.param(lambda: now_ms() - DAY, lambda: now_ms() + 3652 * DAY, True, 1, id="10 years ahead: nobody purged"),
    pytest.param(lambda: now_ms() - DAY, lambda: now_ms() + 10 * MIN, True, 0, id="a camera clock minutes ahead"),
])
def test_the_retention_purge_never_goes_by_a_crop_from_the_future(models, backend, tmp_path, enrolled_ts, crop_ts,
                                                                   kept, clock_ahead) -> None:
    enrolled_ts, crop_ts = enrolled_ts(), crop_ts()
    case = f"enrolled {enrolled_ts}, crop {crop_ts}"
    with gallery_store(backend, tmp_path) as store:
        stage = reid_stage(models, store)
        feed = Feed(stage)
        feed(models.face, "door", 1, enrolled_ts)
        feed(models.face, "door", 1, enrolled_ts + 1_000)
        (match,) = feed.matches
        ok, buf = cv2.imencode(".jpg", models.back)
        c = m.PersonCrop(camera_id="aisle", seq=99, ts_ms=crop_ts, track_id=5,
                         bbox_xyxy=m.BoxXYXY(x1=0, y1=0, x2=200, y2=400), jpeg=buf.tobytes())
        out = stage.handle(topics.PERSON_CROPS, DecodedCrop(c, decode_crop(c)))
        assert store.customer_exists(match.customer_id) is kept, case  # before: purged (the whole gallery)
        assert (match.customer_id in stage.gallery) is kept, case
        assert out.info.get("errors", {}).get("clock_ahead", 0) == clock_ahead, case


# -- 5. one track is one visit, whatever faces.reid.visit_gap_s --------------------------------------------------------

@pytest.mark.parametrize("gap_s", [0, 5])
def test_the_crops_of_one_track_never_start_a_second_visit(models, gap_s, tmp_path) -> None:
    """A visit gap shorter than the camera's crop interval (a slow camera: a crop every 10 s) made every crop of a
    decided track a new visit: one person in front of the camera became a returning customer of many visits."""
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "x.mp4"}],
                        "faces": {"enabled": True, "reid": {"faces_per_decision": 2, "track_idle_s": 60,
                                                            "visit_gap_s": gap_s}}})
    with gallery_store("sqlite", tmp_path) as store:
        stage = ReidStage(cfg, FaceGallery(cfg.faces.gallery, store=store), embedder=models.embedder,
                          detector=models.detector)
        feed = Feed(stage)
        for t in (0, 1, 10, 20, 30):
            feed(models.face if t < 2 else models.back, "door", 1, T0 + t * 1_000)
        (match,) = feed.matches
        visits = store.visits(match.customer_id)
        assert [(v.visit_no, v.first_ts_ms, v.last_ts_ms) for v in visits] == [(1, T0, T0 + 30_000)]  # before: 4
        assert stage.stats["returning"] == 0
