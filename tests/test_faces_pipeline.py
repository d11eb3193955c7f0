"""Faces end to end in the embedded mode: two visits of real people, returning customers, attributes, erasure.

Videos are built from the labelled identity photos of the shared assets
(:mod:`storelens.backends.face_video`): visit 1 shows obama, biden and kit; visit 2,
three hours later, obama and biden again (other photos) plus alex and rose.
Both runs go through the whole embedded pipeline (ingest -> YOLO -> the default tracker ->
person crops -> YuNet -> gate -> age/gender/emotion and dlib -> FAISS) with the
gallery persisted in SQLite between them (the index is rebuilt at the second start).
"""
from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

from storelens.api.testing import signed_in_client
from storelens.contract import messages as m
from storelens.api import create_app
from storelens.config import parse_config
from storelens.errors import DecodeError
from storelens.backends.face_detectors import Faces
from storelens.storage.gallery import FaceGallery, SqliteGalleryStore
from storelens.stages.faces import (AttributesStage, ReidStage, gallery_sqlite_path, match_event_id,
                                    select_person_face)
from storelens.backends.face_video import write_visit_video
from storelens.paths import asset
from storelens.runtime.embedded import EmbeddedPipeline
from storelens.stages import UnknownCamera
from storelens.storage import SqliteStorage, open_gallery

pytestmark = pytest.mark.slow

T0 = 1_767_225_600_000
HOLD, GAP = 20, 12
VISIT_1 = [("obama", "obama.jpg"), ("biden", "biden.jpg"), ("kit_harington", "john1.jpeg")]
VISIT_2 = [("obama", "obama2.jpg"), ("alex_lacamoire", "img1.jpg"), ("biden", "biden2.jpg"),
           ("rose_leslie", "img1.jpg")]
GENDER = {"obama": "male", "biden": "male", "kit_harington": "male", "alex_lacamoire": "male",
          "rose_leslie": "female"}


def site(tmp: pathlib.Path, video: pathlib.Path, start_ts_ms: int):
    return parse_config({
        "store": {"id": "faces-test"},
        "cameras": [{"id": "door", "source": str(video), "start_ts_ms": start_ts_ms}],
        # the photos follow each other after GAP empty frames: end lost tracks sooner than that (the
        # default tracker, bytereid, keeps them 60 frames: biden's photo of visit 2 then got no customer)
        "tracker": {"track_buffer": 8},
        "crops": {"every_n_frames": 5},
        "storage": {"backend": "sqlite", "path": str(tmp / "history.db")},
        "faces": {"enabled": True, "reid": {"visit_gap_s": 1800}},
        "privacy": {"k_min": 1},  # exact demographics of a few people (k-anonymity: tests/test_privacy.py)
    })


def person_at(seq: int, people: list[tuple[str, str]]) -> str:
    """Which photo is on screen at frame ``seq`` (frames are not sampled, so seq = frame index)."""
    i = (seq - GAP) // (HOLD + GAP)
    assert 0 <= i < len(people) and (seq - GAP) % (HOLD + GAP) < HOLD, f"no person on screen at frame {seq}"
    return people[i][0]


@pytest.fixture(scope="module")
def two_visits(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faces")
    videos = []
    for n, people in enumerate((VISIT_1, VISIT_2), 1):
        videos.append(write_visit_video([asset("faces", "identities", p, f) for p, f in people],
                                        tmp / f"visit{n}.avi", hold_frames=HOLD, gap_frames=GAP))
    results = []
    for video, start, people in ((videos[0], T0, VISIT_1), (videos[1], T0 + 3 * 3_600_000, VISIT_2)):
        cfg = site(tmp, video, start)
        storage = SqliteStorage(cfg.storage.path)
        pipe = EmbeddedPipeline(cfg, storage=storage, gallery=open_gallery(cfg))
        res = pipe.run()
        attributes, reid = pipe.faces_stages
        reid.gallery.store.close()
        storage.close()
        # the decision frame (a crop of the track) tells which photo the track is
        who = {(x.camera_id, x.track_id): person_at(x.seq, people) for x in res.customer_matches}
        results.append((res, who))
    return tmp, site(tmp, videos[1], T0), results


def customers(res, who) -> dict[str, tuple[str, bool]]:
    """person -> (customer id, returning)."""
    return {who[(x.camera_id, x.track_id)]: (x.customer_id, x.returning) for x in res.customer_matches}


def test_two_visits_same_people_same_customer_returning(two_visits):
    _, _, [(r1, who1), (r2, who2)] = two_visits
    c1, c2 = customers(r1, who1), customers(r2, who2)
    assert set(c1) == {"obama", "biden", "kit_harington"}
    assert set(c2) == {"obama", "biden", "alex_lacamoire", "rose_leslie"}
    # every first visit is a new customer, and different people are never merged
    assert not any(ret for _, ret in c1.values())
    assert len({cid for cid, _ in c1.values()}) == 3
    # visit 2: the same people come back as the same customers, flagged returning
    for p in ("obama", "biden"):
        assert c2[p] == (c1[p][0], True), p
    for p in ("alex_lacamoire", "rose_leslie"):
        assert c2[p][1] is False and c2[p][0] not in {cid for cid, _ in c1.values()}, p
    assert c2["alex_lacamoire"][0] != c2["rose_leslie"][0]
    # the quality gate ran and let these clear frontal photos through
    assert r1.faces["attributes_accepted"] >= 9 and r2.faces["reid_accepted"] >= 4


def test_api_customers_attributes_and_demographics(two_visits):
    tmp, cfg, [(r1, who1), (r2, who2)] = two_visits
    storage = SqliteStorage(str(tmp / "history.db"))
    gallery = SqliteGalleryStore(gallery_sqlite_path(cfg), dim=128)
    client = signed_in_client(create_app(cfg, storage, gallery_store=gallery))
    body = client.get("/v1/customers", params={"page_size": 50}).json()
    assert body["total"] == 5
    returning = {c["customer_id"] for c in body["items"] if c["returning"]}
    cid = {p: c for p, (c, _) in (customers(r1, who1) | customers(r2, who2)).items()}
    assert returning == {cid["obama"], cid["biden"]}
    only_returning = client.get("/v1/customers", params={"returning": True}).json()
    assert {c["customer_id"] for c in only_returning["items"]} == returning
    detail = client.get(f"/v1/customers/{cid['obama']}").json()
    assert [v["visit_no"] for v in detail["visits"]] == [1, 2]
    assert detail["visits"][1]["first_seen_ts_ms"] - detail["visits"][0]["last_seen_ts_ms"] > 2 * 3_600_000
    assert all(v["cameras"] == ["door"] for v in detail["visits"])
    assert len(detail["tracks"]) == 2
    # genders of the five people from the attribute stage's per-track aggregation
    for person, c in cid.items():
        tracks = client.get(f"/v1/customers/{c}").json()["tracks"]
        genders = {t["attributes"]["gender"] for t in tracks if t["attributes"]}
        assert genders == {GENDER[person]}, (person, tracks)
    demo = client.get("/v1/demographics", params={"camera_id": "door"}).json()
    assert demo["gender"]["male"] >= 6 and demo["gender"]["female"] >= 1
    storage.close()
    gallery.close()


def test_erasure_forgets_the_face(two_visits):
    """DELETE removes the customer; a gallery rebuilt from the store no longer recognises the face."""
    tmp, cfg, [(r1, who1), _] = two_visits
    storage = SqliteStorage(str(tmp / "history.db"))
    store = SqliteGalleryStore(gallery_sqlite_path(cfg), dim=128)
    cid = customers(r1, who1)["kit_harington"][0]
    client = signed_in_client(create_app(cfg, storage, gallery_store=store))
    assert client.delete(f"/v1/customers/{cid}").status_code == 204
    assert client.get(f"/v1/customers/{cid}").status_code == 404
    assert client.delete(f"/v1/customers/{cid}").status_code == 404
    assert storage.customer_tracks(cid) == []
    gallery = FaceGallery(cfg.faces.gallery, store=store)
    assert cid not in gallery
    # the same person's other photo matches nobody now
    from storelens.backends.face_detectors import YuNetFaceDetector
    from storelens.backends.face_embedders import DlibFaceEmbedder

    img = cv2.imread(str(asset("faces", "identities", "kit_harington", "john2.jpeg")))
    faces = YuNetFaceDetector().detect(img)
    emb = DlibFaceEmbedder().embed(img, faces[int(np.argmax(faces.score))])
    assert gallery.match(emb[0]).customer_id is None
    storage.close()
    store.close()


def _copy_sqlite(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    import sqlite3

    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return dst


def test_erasure_removes_every_derived_row(two_visits, tmp_path):
    """Right to erasure after a real run: a returning customer's links, attributes, summaries, points and zone
    events leave every table (a copy of the run's databases; crossings stay as anonymous counts)."""
    import sqlalchemy as sa

    from storelens.storage.schema import HISTORY_TABLES, SQLITE_GALLERY

    tmp, cfg, [(r1, who1), (r2, who2)] = two_visits
    history = _copy_sqlite(tmp / "history.db", tmp_path / "history.db")
    gallery_db = _copy_sqlite(pathlib.Path(gallery_sqlite_path(cfg)), tmp_path / "gallery.db")
    storage, store = SqliteStorage(str(history)), SqliteGalleryStore(gallery_db, dim=128)
    cid = customers(r2, who2)["obama"][0]  # returning: a track in each visit
    other = customers(r2, who2)["biden"][0]
    tracks = {(t["camera_id"], t["track_id"]) for t in storage.customer_tracks(cid)}
    others = {(t["camera_id"], t["track_id"]) for t in storage.customer_tracks(other)}
    assert len(tracks) >= 2 and others and not tracks & others

    def rows_of(keys) -> dict[str, int]:
        out = {}
        for table in HISTORY_TABLES:  # (erased_tracks: the erased tracks' numbers, which keep their rows out)
            if "track_id" in table.c and "camera_id" in table.c and table.name != "erased_tracks":
                q = sa.select(sa.func.count()).select_from(table).where(
                    sa.or_(*[sa.and_(table.c.camera_id == c, table.c.track_id == t) for c, t in keys]))
                out[table.name] = storage._read(lambda conn, q=q: conn.execute(q).scalar())
        return out

    before, before_others = rows_of(tracks), rows_of(others)
    assert before["customer_matches"] >= 2 and before["track_attributes"] >= 2
    assert before["track_points"] > 0 and before["track_summaries"] >= 2
    client = signed_in_client(create_app(cfg, storage, gallery_store=store))
    assert client.get("/v1/journeys", params={"limit": 1000}).json()["total"] > 0
    assert client.delete(f"/v1/customers/{cid}").status_code == 204
    after = rows_of(tracks)
    assert after == {name: (before[name] if name == "crossings" else 0) for name in before}, after
    assert rows_of(others) == before_others  # nobody else's rows went
    cm = storage._read(lambda c: c.execute(sa.select(sa.func.count()).where(
        sa.table("customer_matches", sa.column("customer_id")).c.customer_id == cid)).scalar())
    assert cm == 0
    for table in SQLITE_GALLERY[1:]:  # customers, embeddings, visits
        q = sa.select(sa.func.count()).select_from(table).where(table.c.customer_id == cid)
        assert store._read(lambda c, q=q: c.execute(q).scalar()) == 0, table.name
    journeys = client.get("/v1/journeys", params={"limit": 1000}).json()["journeys"]
    assert cid not in {j["customer_id"] for j in journeys}
    assert not {(s["camera_id"], s["track_id"]) for j in journeys for s in j["path"]} & tracks
    storage.close()
    store.close()


# -- stage behaviour on real crops -----------------------------------------------------


def _crop(camera="door", seq=1, track=7, path=("identities", "obama", "obama.jpg"), ts=T0):
    img = cv2.imread(str(asset("faces", *path)))
    ok, buf = cv2.imencode(".jpg", img)
    h, w = img.shape[:2]
    return m.PersonCrop(camera_id=camera, seq=seq, ts_ms=ts, track_id=track,
                        bbox_xyxy=m.BoxXYXY(x1=100, y1=50, x2=100 + w, y2=50 + h), jpeg=buf.tobytes())


@pytest.fixture(scope="module")
def stages_cfg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stages")
    return parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "x.mp4"}],
                         "storage": {"path": str(tmp / "h.db")},
                         "faces": {"enabled": True, "reid": {"faces_per_decision": 2, "track_idle_s": 5}}})


@pytest.fixture(scope="module")
def attributes_stage(stages_cfg):
    return AttributesStage(stages_cfg)


def test_attributes_stage_observation_in_frame_coordinates(stages_cfg, attributes_stage):
    out = attributes_stage.process(_crop(seq=1))
    [obs] = out.observations
    assert obs.accepted and obs.HasField("age_years") and len(obs.emotion_probs) == 7
    # the face box is inside the person box, shifted by the crop origin
    b = obs.face_bbox_xyxy
    assert 100 <= b.x1 < b.x2 and 50 <= b.y1 < b.y2
    [summary] = out.summaries
    assert (summary.track_id, summary.n_faces, summary.final) == (7, 1, False)
    # redelivery is skipped; a later crop adds evidence
    assert attributes_stage.process(_crop(seq=1)).duplicate
    assert attributes_stage.process(_crop(seq=2)).summaries[-1].n_faces == 2
    # end of stream closes the track with a final summary
    end = attributes_stage.process(m.PersonCrop(camera_id="door", seq=3, ts_ms=T0, end_of_stream=True))
    assert [(s.track_id, s.final, s.n_faces) for s in end.summaries] == [(7, True, 2)]


def test_attributes_stage_bad_input(attributes_stage):
    bad = _crop(seq=10)
    bad.jpeg = b"\xff\xd8 not really a jpeg"
    with pytest.raises(DecodeError):
        attributes_stage.process(bad)
    with pytest.raises(UnknownCamera):
        attributes_stage.process(_crop(camera="nowhere", seq=11))


def test_reid_stage_decides_once_and_erases(stages_cfg, tmp_path):
    gallery = FaceGallery(stages_cfg.faces.gallery, store=SqliteGalleryStore(tmp_path / "g.db"))
    reid = ReidStage(stages_cfg, gallery)
    assert reid.process(_crop(seq=1, track=1)) == []  # 1 of 2 faces
    [match] = reid.process(_crop(seq=2, track=1))
    assert match.is_new and not match.returning and match.n_faces == 2
    assert match.event_id == match_event_id("door", 1) and match.embedder == "dlib-resnet-v1"
    assert reid.process(_crop(seq=3, track=1)) == []  # decided once per track
    # another photo of the same person on another track, after the idle time: same customer
    other = ("identities", "obama", "obama2.jpg")
    reid.process(_crop(seq=4, track=2, path=other, ts=T0 + 10_000))
    [again] = reid.process(_crop(seq=5, track=2, path=other, ts=T0 + 10_500))
    assert again.customer_id == match.customer_id and not again.is_new
    # a different person with a single good face is decided when the stream ends
    assert reid.process(_crop(seq=6, track=3, path=("identities", "biden", "biden.jpg"), ts=T0 + 11_000)) == []
    [biden] = reid.process(m.PersonCrop(camera_id="door", seq=7, ts_ms=T0 + 12_000, end_of_stream=True))
    assert biden.is_new and biden.customer_id != match.customer_id and biden.n_faces == 1
    assert reid.erase(match.customer_id)
    assert match.customer_id not in gallery and gallery.store.visits(match.customer_id) == []


def test_select_person_face_prefers_the_head_region():
    faces = Faces(np.array([[0, 300, 60, 360], [20, 20, 60, 60], [30, 10, 90, 80]], np.float32),
                  np.zeros((3, 5, 2), np.float32), np.array([0.99, 0.9, 0.8], np.float32))
    assert select_person_face(faces, (400, 120)).bbox_xyxy.tolist() == [[30, 10, 90, 80]]
    assert len(select_person_face(faces[[0]], (400, 120))) == 0


def test_reid_stage_retention_purges_old_customers(tmp_path):
    """Embeddings and visits older than faces.reid.retention_days are purged as camera time passes."""
    cfg = parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "x.mp4"}],
                        "faces": {"enabled": True, "reid": {"faces_per_decision": 1, "retention_days": 1}}})
    gallery = FaceGallery(cfg.faces.gallery, store=SqliteGalleryStore(tmp_path / "g.db"))
    reid = ReidStage(cfg, gallery)
    [first] = reid.process(_crop(seq=1, track=1))
    assert first.is_new and len(gallery) == 1
    # the same person two days later: the old customer was purged first, so this is a new one
    [later] = reid.process(_crop(seq=2, track=2, path=("identities", "obama", "obama2.jpg"), ts=T0 + 2 * 86_400_000))
    assert later.is_new and later.customer_id != first.customer_id
    assert first.customer_id not in gallery and gallery.store.visits(first.customer_id) == []
    assert reid.stats["purged_embeddings"] == 1


def test_a_detect_track_stage_built_by_the_caller_keeps_the_faces_stage(two_visits, tmp_path):
    """``EmbeddedPipeline.run(stage)`` (a detect-track stage the caller built, as bench/bench_pipeline.py does)
    still gives the faces stage its gallery: on a fresh gallery, visit 2's people are as many new customers."""
    from storelens.backends.detectors import build_detector
    from storelens.backends.trackers import build_tracker
    from storelens.stages import DetectTrackStage

    _, cfg, [_, (r2, _)] = two_visits
    cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"path": str(tmp_path / "h.db")})})
    storage = SqliteStorage(cfg.storage.path)
    pipe = EmbeddedPipeline(cfg, storage=storage, gallery=open_gallery(cfg))
    try:
        res = pipe.run(DetectTrackStage(cfg, build_detector(cfg.detector), lambda: build_tracker(cfg.tracker)))
    finally:
        pipe.faces_stages[1].gallery.store.close()
        storage.close()
    assert res.customer_matches, "the faces stage ran"
    assert len({x.customer_id for x in res.customer_matches}) == len({x.customer_id for x in r2.customer_matches})
    assert not any(x.returning for x in res.customer_matches)
