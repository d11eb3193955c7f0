"""Review fixes of the faces / returning-customer path (review 31), on real models and real stores.

1. An erased person is not enrolled again when a file is re-run after a clean end: the end of stream keeps the
   ``erased`` track decisions, and the API's erasure writes one for each track the history matched to them.
2. A customer another process's retention purge (the analytics service's) dropped is no erased customer: the reid
   gallery that still holds their (expired) vectors forgets them and enrols the face anew.
3. Staff are left out of face analytics: ``/v1/demographics``, the zones' interest (no passer), ``/v1/customers``.

SQLite and the PostgreSQL of the test stack (``STORELENS_PG_DSN``, skipped when it cannot be reached).
"""
from __future__ import annotations

import contextlib
import os
import uuid
from types import SimpleNamespace

import cv2
import numpy as np
import psycopg
import pytest
from psycopg import sql

from storelens.api import create_app
from storelens.api.testing import signed_in_client
from storelens.backends.face_index import FaceGallery
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.stages.faces import DecodedCrop, ReidStage, decode_crop
from storelens.storage import PostgresStorage, SqliteStorage
from storelens.storage.gallery import SqlGalleryStore, open_gallery_store_to_purge
from storelens.storage.zones import ended_visits

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
FACES = asset("faces")
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
BACKENDS = ["sqlite", "postgres"]


def site(tmp_path, **faces):
    return parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "x.mp4"}],
                         "storage": {"path": str(tmp_path / "h.db")}, "privacy": {"k_min": 1},
                         "faces": {"enabled": True, "reid": {"faces_per_decision": 2}, **faces}})


@contextlib.contextmanager
def stores(backend: str, tmp_path):
    """``(history, open_gallery_store)``: a history store and a factory of gallery stores over one gallery (each
    call a new connection, as another process's)."""
    opened = []
    if backend == "sqlite":
        history = SqliteStorage(str(tmp_path / "h.db"))

        def gallery():
            opened.append(SqlGalleryStore(tmp_path / "h.db.gallery.db", dim=128))
            return opened[-1]
        try:
            yield history, gallery
        finally:
            for g in opened:
                g.close()
            history.close()
        return
    schema = f"test_faces_review_31_{uuid.uuid4().hex[:12]}"
    try:
        history = PostgresStorage(PG_DSN, schema=schema)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL not reachable: {exc}")

    def gallery():
        opened.append(SqlGalleryStore(PG_DSN, dim=128, schema=schema))
        return opened[-1]
    try:
        yield history, gallery
    finally:
        for g in opened:
            g.close()
        history.close()
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def models():
    if not (FACES / "identities").is_dir():
        pytest.skip("shared face assets not found")
    from storelens.backends.face_detectors import YuNetFaceDetector
    from storelens.backends.face_embedders.dlib import DlibFaceEmbedder

    img = cv2.imread(str(FACES / "identities" / "obama" / "obama.jpg"))
    assert img is not None
    return SimpleNamespace(detector=YuNetFaceDetector(), embedder=DlibFaceEmbedder(), image=img)


def crop(models, seq: int, track: int, ts: int) -> DecodedCrop:
    ok, buf = cv2.imencode(".jpg", models.image)
    assert ok
    h, w = models.image.shape[:2]
    c = m.PersonCrop(camera_id="door", seq=seq, ts_ms=ts, track_id=track,
                     bbox_xyxy=m.BoxXYXY(x1=0, y1=0, x2=w, y2=h), jpeg=buf.tobytes())
    return DecodedCrop(c, decode_crop(c))


def run_file(models, cfg, store) -> list:
    """One embedded run of the same file: a fresh stage (start_session), track 7's crops, the end of stream."""
    stage = ReidStage(cfg, FaceGallery(cfg.faces.gallery, store=store), embedder=models.embedder,
                      detector=models.detector)
    stage.start_session("door")
    out = []
    for i in range(3):
        out += [p.message for p in stage.handle(topics.PERSON_CROPS, crop(models, 1 + i, 7, T0 + 100 * i)).publish]
    eos = DecodedCrop(m.PersonCrop(camera_id="door", seq=10, ts_ms=T0 + 1_000, end_of_stream=True), None)
    out += [p.message for p in stage.handle(topics.PERSON_CROPS, eos).publish]
    return out


# -- 1. an erased person stays erased when the file runs again ------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_rerun_after_a_clean_end_never_enrols_an_erased_person_again(models, tmp_path, backend):
    cfg = site(tmp_path)
    with stores(backend, tmp_path) as (history, gallery):
        first = run_file(models, cfg, gallery())
        matches = [x for x in first if isinstance(x, m.CustomerMatch)]
        assert [(x.track_id, x.is_new) for x in matches] == [(7, True)]
        history.write_customer_matches(matches)  # what analytics stores
        api_gallery = gallery()
        assert api_gallery.decided_tracks(matches[0].customer_id) == set()  # forgotten at the end of stream
        erased: list[str] = []
        with signed_in_client(create_app(cfg, history, gallery_store=api_gallery, on_erasure=erased.append)) as c:
            assert c.delete(f"/v1/customers/{matches[0].customer_id}").status_code == 204
        assert erased == [matches[0].customer_id]
        assert api_gallery.track_decision("door", 7).decision == "erased"

        second = run_file(models, cfg, gallery())
        assert [x for x in second if isinstance(x, m.CustomerMatch)] == []
        assert gallery().counts()["customers"] == 0
        # a third run too: the erased decision survives the second run's end of stream
        assert [x for x in run_file(models, cfg, gallery()) if isinstance(x, m.CustomerMatch)] == []
        # the retention purge drops the erased decision with the rest (it holds no face)
        g = gallery()
        g.purge_older_than(T0 + 31 * DAY)
        assert g.track_decision("door", 7) is None


# -- 2. a customer purged by another process's retention is enrolled anew ---------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_customer_purged_by_the_analytics_retention_is_enrolled_anew(tmp_path, backend):
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "rtsp://x/y"}],
                        "storage": {"path": str(tmp_path / "h.db")}})  # faces off: the analytics service purges
    v = np.random.default_rng(0).normal(size=128).astype(np.float32)
    with stores(backend, tmp_path) as (history, gallery):
        days = cfg.faces.reid.retention_days
        reid = FaceGallery(cfg.faces.gallery, store=gallery(), retention_ms=int(days * DAY))
        first = reid.enroll_or_match(v, ts_ms=1 * DAY)
        assert first.is_new
        if backend == "sqlite":
            other = open_gallery_store_to_purge(cfg, history)  # what the analytics service opens
            assert other is not None
        else:
            other = gallery()
        assert other.purge_older_than(2 * DAY).customers == 1
        again = reid.enroll_or_match(v, ts_ms=31 * DAY + 1)  # no CustomerErased
        assert again.is_new and again.customer_id != first.customer_id
        assert gallery().counts() == {"customers": 1, "embeddings": 1, "visits": 0}
        assert len(reid) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_customer_erased_by_another_process_is_still_not_enrolled(tmp_path, backend):
    """The other side of 2: a customer deleted (the API) while their vectors are recent stays erased."""
    from storelens.backends.face_index import CustomerErased

    v = np.random.default_rng(1).normal(size=128).astype(np.float32)
    with stores(backend, tmp_path) as (_, gallery):
        reid = FaceGallery(site(tmp_path).faces.gallery, store=gallery(), retention_ms=30 * DAY)
        cid = reid.enroll_or_match(v, ts_ms=1 * DAY).customer_id
        assert gallery().delete_customer(cid)
        with pytest.raises(CustomerErased):
            reid.enroll_or_match(v, ts_ms=2 * DAY)


# -- 3. staff are left out of face analytics -----------------------------------------------------------


def attrs(track: int, ts: int) -> m.TrackAttributes:
    return m.TrackAttributes(camera_id="door", track_id=track, first_ts_ms=ts - 5_000, last_ts_ms=ts,
                             last_seq=ts // 40, n_faces=3, gender=m.gender_value("female"),
                             emotion=m.emotion_value("happy"), attention_share=0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_staff_tracks_and_staff_only_customers_are_left_out(tmp_path, backend):
    cfg = site(tmp_path)
    rng = np.random.default_rng(2)
    with stores(backend, tmp_path) as (history, gallery):
        history.write_track_attributes([attrs(t, T0 + 1_000 * t) for t in range(1, 7)])
        history.write_records([
            m.StaffTrack(camera_id="door", track_id=3, ts_ms=T0 + 3_000, seq=75, cue="uniform", detail="red"),
            m.StaffTrack(camera_id="door", track_id=5, ts_ms=T0 + 5_000, seq=125, cue="zone", detail="back"),
            *[m.ZoneEvent(event_id=f"z{t}", camera_id="door", zone_id="shelf", zone_kind="shelf", track_id=t,
                          kind=m.ZONE_EVENT_EXIT, ts_ms=T0 + 1_000 * t, seq=t, dwell_ms=2_000) for t in (2, 3)],
        ])
        g = gallery()
        for cid, created in (("cust-staff", T0), ("cust-mixed", T0 + 1), ("cust-shopper", T0 + 2)):
            g.add_customer(cid, created)
            g.add_embedding(cid, created, rng.standard_normal(128).astype(np.float32))
        history.write_customer_matches([
            m.CustomerMatch(event_id=f"door:{t}", camera_id="door", track_id=t, seq=t, ts_ms=T0 + 1_000 * t,
                            customer_id=cid, is_new=True)
            for cid, t in (("cust-staff", 3), ("cust-staff", 5), ("cust-mixed", 4), ("cust-mixed", 3),
                           ("cust-shopper", 6))])
        with signed_in_client(create_app(cfg, history, gallery_store=g)) as c:
            demo = c.get("/v1/demographics").json()
            assert demo["tracks"] == 4  # 6 tracks with faces, 2 of staff
            assert demo["gender"]["female"] == 4
            body = c.get("/v1/customers").json()
            assert body["total"] == 2
            assert sorted(x["customer_id"] for x in body["items"]) == ["cust-mixed", "cust-shopper"]
            assert c.get("/v1/customers", params={"returning": "false"}).json()["total"] == 2
            assert c.get("/v1/customers/cust-staff").status_code == 200  # still reachable (and erasable) by id
        visits = {v.track_id: v.attention_share for v in
                  ended_visits(history, [("door", "shelf")], T0, T0 + DAY)}
        assert visits == {2: 0.5}  # the staff member's exit is no visit (no passer: tests/test_merged_review_31a.py)


@pytest.mark.parametrize("backend", BACKENDS)
def test_demographics_without_staff_tracks_counts_every_track(tmp_path, backend):
    """Six tracks with faces and one staff track: five in /v1/demographics (the brief's numbers)."""
    with stores(backend, tmp_path) as (history, gallery):
        history.write_track_attributes([attrs(t, T0 + 1_000 * t) for t in range(1, 7)])
        with signed_in_client(create_app(site(tmp_path), history, gallery_store=gallery())) as c:
            assert c.get("/v1/demographics").json()["tracks"] == 6
        history.write_records([m.StaffTrack(camera_id="door", track_id=1, ts_ms=T0, seq=1, cue="uniform")])
        with signed_in_client(create_app(site(tmp_path), history, gallery_store=gallery())) as c:
            assert c.get("/v1/demographics").json()["tracks"] == 5
