"""The opt-in staff face gallery (issue 11 item 3): consent, enrolment, the reid stage's face cue, removal.

Real models (YuNet + dlib, as ``faces.detector`` / ``faces.embedder`` configure them) on the labelled
identity photos of the shared assets; enrolment from ``faces/identities``, probes from other photos
(``faces/identities_test``). Every store test runs on a SQLite file and on the PostgreSQL of
``scripts/stack.sh`` (``STORELENS_PG_DSN``; a fresh schema per test; no server is a failure).
"""
from __future__ import annotations

import os
import pathlib
import uuid
from typing import Iterator

import cv2
import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from storelens.cli import main as cli_main
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.errors import ConfigError
from storelens.paths import asset
from storelens.backends.face_video import write_visit_video
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.runtime.sinks import HistorySink
from storelens.runtime.still_faces import StillFaceEmbedder
from storelens.stages.analytics import AnalyticsStage
from storelens.stages.faces import DecodedCrop, ReidStage, decode_crop
from storelens.storage import SqlStorage, open_gallery
from storelens.storage.gallery import FaceGallery, SqliteGalleryStore
from storelens.storage.groups import staff_track_ids
from storelens.storage.schema import staff_face_embeddings, staff_tracks
from storelens.storage.staff_faces import StaffFaceSource, enroll, enroll_images, list_members, remove

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
T0 = 1_767_225_600_000
ENROL = [str(asset("faces", "identities", "obama", n)) for n in ("obama.jpg", "obama2.jpg")]
OBAMA_PROBE = ("identities_test", "obama1.jpg")  # a photo that was not enrolled
OTHER_PERSON = ("identities", "biden", "biden.jpg")


@pytest.fixture
def pg_schema() -> Iterator[str]:
    name = f"test_staff_faces_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[SqlStorage]:
    if request.param == "sqlite":
        s = SqlStorage(str(tmp_path / "history.db"))
    else:
        s = SqlStorage(PG_DSN, schema=request.getfixturevalue("pg_schema"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def models() -> StillFaceEmbedder:
    """YuNet + dlib, loaded once: enrolment and the reid stage share them (as they share the config)."""
    return StillFaceEmbedder()


def config(tmp: pathlib.Path):
    return parse_config({
        "store": {"id": "s"}, "cameras": [{"id": "door", "source": "x.mp4"}],
        "storage": {"path": str(tmp / "h.db")},
        # reload_s tiny: every decision reads the staff gallery again (enrol / remove without a restart)
        "staff": {"faces": {"reload_s": 0.001}},
        "faces": {"enabled": True, "reid": {"faces_per_decision": 2, "track_idle_s": 5}},
    })


def photo_crop(seq: int, track: int, ts: int, img: np.ndarray) -> DecodedCrop:
    """``img`` as a crop of ``track`` by camera ``door`` (a JPEG, its box at (100, 50)), decoded as the reid stage
    gets it."""
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    h, w = img.shape[:2]
    c = m.PersonCrop(camera_id="door", seq=seq, ts_ms=ts, track_id=track,
                     bbox_xyxy=m.BoxXYXY(x1=100, y1=50, x2=100 + w, y2=50 + h), jpeg=buf.tobytes())
    return DecodedCrop(c, decode_crop(c))


def crop(seq: int, track: int, path: tuple[str, ...], ts: int = T0) -> DecodedCrop:
    return photo_crop(seq, track, ts, cv2.imread(str(asset("faces", *path))))


def run_track(reid: ReidStage, track: int, path: tuple[str, ...], seq0: int, ts: int) -> list:
    """Two crops of one track through the service contract (``handle``): what it publishes."""
    out = []
    for i in range(2):
        out += reid.handle(topics.PERSON_CROPS, crop(seq0 + i, track, path, ts + 100 * i)).publish
    return out


def test_enroll_refuses_without_consent(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    db = str(tmp_path / "h.db")
    assert cli_main(["staff", "enroll", "--db", db, "--id", "s1", "--name", "Ann", *ENROL]) == 2
    assert "--consent-by is required" in capsys.readouterr().err
    assert cli_main(["staff", "enroll", "--db", db, "--id", "s1", "--name", "Ann", "--consent-by", "  ", *ENROL]) == 2
    with SqlStorage(db) as s:
        assert list_members(s) == []
        with pytest.raises(ConfigError, match="consent_by is required"):
            enroll(s, "s1", "Ann", consent_by="", embeddings=[[1.0, 0.0]], model="m", dim=2)
        assert list_members(s) == []


def test_cli_enroll_list_remove(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    db = str(tmp_path / "h.db")
    assert cli_main(["staff", "enroll", "--db", db, "--id", "obama", "--name", "B. Obama", "--consent-by", "HR: Bea",
                     "--consent-note", "form 12", *ENROL]) == 0
    assert cli_main(["staff", "list", "--db", db, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"embeddings": 2' in out and '"consent_by": "HR: Bea"' in out and '"consent_note": "form 12"' in out
    assert cli_main(["staff", "remove", "--db", db, "obama"]) == 0
    assert cli_main(["staff", "remove", "--db", db, "obama"]) == 2  # gone
    with SqlStorage(db) as s:
        assert list_members(s) == []
        assert s._rows(sa.select(sa.func.count()).select_from(staff_face_embeddings)) == [(0,)]


def test_reid_face_cue_staff_not_customer_then_removed(store: SqlStorage, models: StillFaceEmbedder,
                                                      tmp_path: pathlib.Path) -> None:
    cfg = config(tmp_path)
    n, problems = enroll_images(store, cfg.faces, "obama", "B. Obama", consent_by="HR: Bea", images=ENROL,
                                embedder=models)
    assert (n, problems) == (2, [])
    gallery = FaceGallery(cfg.faces.gallery, store=SqliteGalleryStore(tmp_path / "g.db"))
    reid = ReidStage(cfg, gallery, embedder=models.embedder, detector=models.detector,
                     staff_faces=StaffFaceSource(store))
    assert topics.STAFF_TRACKS in reid.outputs

    # an enrolled member on another photo: a StaffTrack (cue face), no customer
    pub = run_track(reid, 1, OBAMA_PROBE, 1, T0)
    assert [(p.topic, type(p.message)) for p in pub] == [(topics.STAFF_TRACKS, m.StaffTrack)]
    staff = pub[0].message
    assert (staff.camera_id, staff.track_id, staff.cue, staff.detail) == ("door", 1, "face", "obama")
    assert len(gallery) == 0 and reid.stats["staff"] == 1
    assert reid.handle(topics.PERSON_CROPS, crop(3, 1, OBAMA_PROBE, T0 + 300)).publish == []  # decided once

    # someone else: not staff, a new customer
    pub = run_track(reid, 2, OTHER_PERSON, 4, T0 + 1_000)
    assert [(p.topic, p.message.is_new) for p in pub] == [(topics.CUSTOMER_MATCHES, True)]
    assert len(gallery) == 1

    # the StaffTrack goes where the staff analyzer's go: analytics records -> history -> staff_tracks
    analytics = AnalyticsStage(cfg)
    assert analytics.inputs[topics.STAFF_TRACKS] is m.StaffTrack
    HistorySink(store).write(analytics.handle(topics.STAFF_TRACKS, staff).records)
    assert staff_track_ids(store, T0 - 1, T0 + 10_000) == {("door", 1): T0 + 100}

    # consent withdrawn: embeddings and member deleted; the running stage no longer matches (no restart)
    assert remove(store, "obama")
    assert list_members(store) == []
    assert store._rows(sa.select(sa.func.count()).select_from(staff_face_embeddings)) == [(0,)]
    pub = run_track(reid, 3, OBAMA_PROBE, 6, T0 + 2_000)
    assert [(p.topic, p.message.is_new) for p in pub] == [(topics.CUSTOMER_MATCHES, True)]
    gallery.store.close()


@pytest.mark.slow
def test_embedded_pipeline_records_enrolled_staff_by_face(tmp_path: pathlib.Path) -> None:
    """Whole embedded run (YOLO, tracker, crops, YuNet, dlib) on a video of two photos: the enrolled person
    (enrolled from another photo) is a staff track with cue ``face`` in the history, the other a customer."""
    video = write_visit_video([asset("faces", "identities", "obama", "obama2.jpg"),
                               asset("faces", "identities", "biden", "biden.jpg")],
                              tmp_path / "v.avi", hold_frames=20, gap_frames=12)
    cfg = parse_config({
        "store": {"id": "s"}, "cameras": [{"id": "door", "source": str(video), "start_ts_ms": T0}],
        "crops": {"every_n_frames": 5},  # the default tracker (bytereid) keeps the two photos apart
        "storage": {"backend": "sqlite", "path": str(tmp_path / "h.db")},
        "faces": {"enabled": True}, "staff": {"faces": {}}})
    with SqlStorage(cfg.storage.path) as s:
        enroll_images(s, cfg.faces, "obama", "B. Obama", consent_by="HR: Bea", images=ENROL[:1])
        gallery = open_gallery(cfg)
        res = EmbeddedPipeline(cfg, storage=s, gallery=gallery, staff_faces=StaffFaceSource(s)).run()
        gallery.store.close()
        staff = s._rows(sa.select(staff_tracks.c.track_id, staff_tracks.c.cue, staff_tracks.c.detail))
        assert [(cue, detail) for _, cue, detail in staff] == [("face", "obama")]
        assert len(res.customer_matches) == 1  # the other person only
        assert res.customer_matches[0].track_id != staff[0][0]
        assert res.faces["reid_staff"] == 1


@pytest.mark.parametrize("module", ["storelens.storage.staff_faces", "storelens.config.groups",
                                    "storelens.runtime.still_faces"])
def test_doctests(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
