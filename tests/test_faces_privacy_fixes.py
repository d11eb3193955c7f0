"""Privacy fixes of the faces / returning-customer path, each on the real component.

1. Kafka topics kept by time get a ``segment.ms`` well below their ``retention.ms`` (Kafka deletes whole
   segments, and a segment stays open up to 7 days by default): when created, and an existing topic without
   it gets it at start, its other settings kept (real broker, a topic prefix of the test's own).
2. The face gallery is purged by the scheduled retention purge too, without any crop (store closed, cameras
   down, a run without the faces stage): an old customer's embeddings go, and the history's links to them.
3. An attribute track that comes back after an idle end goes on with its summary: the stored summary covers
   both parts (it was replaced by one of the second part only: 5 faces -> 1).
4. An erasure also reaches the erased person's undecided open tracks and the crops captured before the
   request that are still queued: none of them enrols the person again (real YuNet + dlib, labelled photos).
"""
from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import sqlalchemy as sa

from storelens.backends.face_embedders import DlibFaceEmbedder
from storelens.backends.face_index import FaceGallery
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.runtime.localdeploy import KAFKA
from storelens.stages.faces import AttributesStage, ReidStage
from storelens.storage import SqlStorage
from storelens.storage.gallery import SqliteGalleryStore
from storelens.storage.schema import track_attributes
from test_faces_review_fixes import crop, end_of_stream, image, published  # labelled photos as crops
from test_runtime_readiness import _kafka_up

FACES = asset("faces")
needs_faces = pytest.mark.skipif(not (FACES / "identities").is_dir(), reason="shared face assets not found")

DAY_MS = 86_400_000
T0 = 1_767_225_600_000
IDLE_MS = 5_000
OBAMA, OBAMA2, OBAMA_TEST = "identities/obama/obama.jpg", "identities/obama/obama2.jpg", "identities_test/obama1.jpg"
BIDEN, BIDEN2 = "identities/biden/biden.jpg", "identities/biden/biden2.jpg"


# -- 1. segment.ms of the topics --------------------------------------------------------------------------------


@pytest.fixture
def kafka():
    if not _kafka_up():
        pytest.skip(f"no Kafka at {KAFKA}")
    from storelens.config import KafkaConfig
    from storelens.runtime.kafka import KafkaAdmin

    run = uuid.uuid4().hex[:10]
    cfg = KafkaConfig(bootstrap_servers=KAFKA, group_prefix=f"test-privacy-{run}",
                      topic_prefix=f"test-privacy-{run}.", partitions=1)
    admin = KafkaAdmin(cfg)
    yield SimpleNamespace(cfg=cfg, admin=admin, name=lambda base: topics.topic_name(base, cfg.topic_prefix))
    try:
        admin.delete_topics([t for t in admin.list_topics().topics if t.startswith(cfg.topic_prefix)])
    finally:
        admin.close()


def _specs(*names: str) -> list[topics.TopicSpec]:
    return [s for s in topics.TOPICS if s.name in names]


def _own(admin, name: str) -> dict[str, str]:
    """The settings set on topic ``name`` itself, as the broker describes them (waiting for a topic just
    created to be known)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def describe(client):
        return await client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])

    deadline = time.monotonic() + 30
    while True:
        [(code, _msg, _type, _name, entries)] = [r for resp in admin.call(describe) for r in resp.resources]
        if code == 0:  # entries: (name, value, read_only, source (1: set on the topic), ...)
            return {e[0]: e[1] for e in entries if e[3] == 1}
        assert time.monotonic() < deadline, f"topic {name}: error {code}"
        time.sleep(0.5)


@pytest.mark.timeout(120)
def test_created_topics_kept_by_time_get_a_segment_ms_well_below_their_retention(kafka):
    from storelens.runtime.kafka import ensure_topics

    ensure_topics(kafka.cfg, _specs(topics.PERSON_CROPS, topics.FRAMES, topics.DEAD_LETTER, topics.SITE_CONFIG))

    for base in (topics.PERSON_CROPS, topics.FRAMES, topics.DEAD_LETTER):
        own = _own(kafka.admin, kafka.name(base))
        retention = int(own["retention.ms"])
        assert "segment.ms" in own, base
        assert 0 < int(own["segment.ms"]) <= min(retention // 4, DAY_MS), (base, own)
    assert int(_own(kafka.admin, kafka.name(topics.PERSON_CROPS))["segment.ms"]) == 15 * 60_000  # 1 h kept
    assert "segment.ms" not in _own(kafka.admin, kafka.name(topics.SITE_CONFIG))  # compacted: kept for ever


@pytest.mark.timeout(120)
def test_an_existing_topic_without_segment_ms_gets_it_at_start_and_keeps_its_other_settings(kafka):
    from storelens.runtime.kafka import NewTopic, ensure_topics

    crops, frames = kafka.name(topics.PERSON_CROPS), kafka.name(topics.FRAMES)
    before = {"retention.ms": "3600000", "max.message.bytes": "2097152", "retention.bytes": "1073741824",
              "min.cleanable.dirty.ratio": "0.3"}  # as created by an older release, plus an operator's setting
    kafka.admin.create_topics([NewTopic(crops, 1, kafka.cfg.replication_factor, topic_configs=before),
                               NewTopic(frames, 1, kafka.cfg.replication_factor,
                                        topic_configs={"retention.ms": "3600000", "segment.ms": "60000"})])
    assert "segment.ms" not in _own(kafka.admin, crops)

    assert ensure_topics(kafka.cfg, _specs(topics.PERSON_CROPS, topics.FRAMES)) == []  # nothing created

    want = {**before, "segment.ms": str(15 * 60_000)}
    deadline = time.monotonic() + 10  # the altered config reaches the broker's describe a moment later under load
    while (got := _own(kafka.admin, crops)) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    assert got == want
    assert _own(kafka.admin, frames)["segment.ms"] == "60000"  # a shorter one set by hand is kept


# -- shared: real models and labelled photos --------------------------------------------------------------------


def config(tmp, **faces):
    return parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "rtsp://cam/door"}],
                         "storage": {"path": str(tmp / "h.db")},
                         "faces": {"enabled": True, **faces,
                                   "reid": {"faces_per_decision": 2, "track_idle_s": IDLE_MS / 1000,
                                            "retention_days": 30}}})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The models, loaded once: face detector and attribute analyzer as ``faces`` configures them, dlib."""
    if not (FACES / "identities").is_dir():
        pytest.skip("shared face assets not found")
    attributes = AttributesStage(config(tmp_path_factory.mktemp("models")))
    return SimpleNamespace(detector=attributes.finder.detector, analyzer=attributes.analyzer,
                           embedder=DlibFaceEmbedder())


def embedding(models, photo: str) -> np.ndarray:
    from storelens.stages.faces import CropFaceFinder

    img = image(photo)
    return models.embedder.embed(img, CropFaceFinder(models.detector).find(img))[0]


# -- 2. the gallery purged on the schedule, without crops -------------------------------------------------------


@needs_faces
@pytest.mark.parametrize("faces_on", [True, False], ids=["faces-stage", "faces-off"])
def test_the_scheduled_purge_drops_expired_gallery_entries_without_any_crop(tmp_path, models, faces_on):
    """No crop reaches the reid stage (store closed, cameras down; or faces off, the gallery left by an earlier
    run): the wall-clock purge of the embedded run still keeps the gallery to ``faces.reid.retention_days``."""
    from storelens.runtime.embedded import EmbeddedPipeline

    cfg = config(tmp_path)
    now = int(time.time() * 1000)
    old, recent = now - 31 * DAY_MS, now - 2 * DAY_MS
    gallery = FaceGallery(cfg.faces.gallery, store=SqliteGalleryStore(tmp_path / "h.db.gallery.db"))
    gallery.add("old", embedding(models, OBAMA), old)
    gallery.add("recent", embedding(models, BIDEN), recent)
    storage = SqlStorage(str(tmp_path / "h.db"))
    storage.write_customer_matches([m.CustomerMatch(event_id=f"e-{cid}", camera_id="door", track_id=i, seq=i,
                                                    ts_ms=recent, customer_id=cid) for i, cid in enumerate(
                                                        ("old", "recent"), 1)])
    if not faces_on:  # what `storelens run` with faces.enabled: false passes: the store alone, if one exists
        from storelens.storage.gallery import open_gallery_store_to_purge

        gallery.store.close()
        cfg = cfg.model_copy(update={"faces": cfg.faces.model_copy(update={"enabled": False})})
        gallery = open_gallery_store_to_purge(cfg, storage)
        assert gallery is not None
    pipe = EmbeddedPipeline(cfg, storage=storage, gallery=gallery)

    purge = pipe._retention()  # what the run schedules in the analytics thread
    assert purge is not None and purge.due()
    deleted = purge.run()

    store = gallery.store if faces_on else gallery
    assert deleted["gallery_embeddings"] == 1 and deleted["gallery_customers"] == 1
    assert not store.customer_exists("old") and store.customer_exists("recent")
    assert store.counts()["embeddings"] == 1
    if faces_on:
        assert gallery.customers() == ["recent"]  # the in-memory index too
    # the history's link to the purged customer went in the same run
    assert [t["camera_id"] for t in storage.customer_tracks("old")] == []
    assert [t["track_id"] for t in storage.customer_tracks("recent")] == [2]
    assert not purge.due()  # next one on the timer
    store.close()
    storage.close()


# -- 3. an attribute track back after an idle end ---------------------------------------------------------------


@needs_faces
def test_attribute_summary_of_a_track_back_after_an_idle_end_covers_both_parts(tmp_path, models):
    cfg = config(tmp_path)
    stage = AttributesStage(cfg, analyzer=models.analyzer, detector=models.detector)
    storage = SqlStorage(":memory:")
    back = T0 + 400 + IDLE_MS + 1_000
    plan = [(7, T0 + 100 * i, OBAMA) for i in range(5)] + [(7, back, OBAMA2), (7, back + 100, OBAMA2)]
    finals = []
    for seq, (track, ts, photo) in enumerate(plan, 1):
        out = published(stage.handle(topics.PERSON_CROPS, crop(seq, track, ts, photo)), topics.TRACK_ATTRIBUTES)
        storage.write_track_attributes(out)
        finals += [(seq, s.n_faces) for s in out if s.final]
    end = published(stage.handle(topics.PERSON_CROPS, end_of_stream(len(plan) + 1, back + 20_000)),
                    topics.TRACK_ATTRIBUTES)
    storage.write_track_attributes(end)
    finals += [(len(plan) + 1, s.n_faces) for s in end if s.final]

    assert finals == [(6, 5), (8, 7)]  # the idle end, then the real end with all the evidence
    [row] = storage._rows(sa.select(track_attributes).where(track_attributes.c.track_id == 7))
    row = row._mapping
    assert (row["n_faces"], row["first_ts_ms"], row["last_ts_ms"], row["final"]) == (7, T0, back + 100, True)
    assert row["gender"] == "male"
    storage.close()


# -- 4. erasure and the erased person's faces still in flight ---------------------------------------------------


def reid_stage(tmp_path, models) -> ReidStage:
    cfg = config(tmp_path)
    gallery = FaceGallery(cfg.faces.gallery, store=SqliteGalleryStore(tmp_path / "gallery.db"))
    return ReidStage(cfg, gallery, embedder=models.embedder, detector=models.detector)


def run(reid: ReidStage, plan, seq0: int = 0) -> list:
    """``plan``: ``(track, ts_ms, photo)`` crops of camera door, seq numbers from ``seq0 + 1``; the decisions."""
    out = []
    for i, (track, ts, photo) in enumerate(plan, seq0 + 1):
        out += published(reid.handle(topics.PERSON_CROPS, crop(i, track, ts, photo)))
    return out


def _erase(reid: ReidStage, customer_id: str, ts_ms: int) -> None:
    reid.handle(topics.CUSTOMER_ERASURES, m.CustomerErasure(customer_id=customer_id, ts_ms=ts_ms, request_id="r"))


@needs_faces
def test_an_erasure_drops_the_persons_undecided_open_track(tmp_path, models):
    reid = reid_stage(tmp_path, models)
    [first] = run(reid, [(1, T0, OBAMA), (1, T0 + 100, OBAMA)])
    # the same person on another track, one good face so far (fewer than faces_per_decision: undecided)
    # and another shopper, undecided too
    assert run(reid, [(2, T0 + 1_000, OBAMA2), (3, T0 + 1_100, BIDEN)], seq0=2) == []

    _erase(reid, first.customer_id, T0 + 2_000)
    later = run(reid, [(2, T0 + 2_500, OBAMA_TEST)], seq0=4)
    later += published(reid.handle(topics.PERSON_CROPS, end_of_stream(6, T0 + 3_000)), topics.CUSTOMER_MATCHES)

    assert [x.track_id for x in later] == [3]  # the other shopper only: the erased person is not enrolled again
    assert reid.gallery.customers() == [later[0].customer_id]
    assert reid.gallery.store.counts()["customers"] == 1
    reid.gallery.store.close()


@needs_faces
def test_queued_crops_captured_before_the_erasure_never_enrol_the_person_again(tmp_path, models):
    reid = reid_stage(tmp_path, models)
    [first] = run(reid, [(1, T0, OBAMA), (1, T0 + 100, OBAMA)])
    asked = T0 + 10_000
    _erase(reid, first.customer_id, asked)  # the erasures are served first: these crops were still queued
    queued = run(reid, [(3, T0 + 5_000, OBAMA_TEST), (4, T0 + 5_100, BIDEN), (3, T0 + 5_200, OBAMA2),
                         (4, T0 + 5_300, BIDEN2)], seq0=2)

    assert [x.track_id for x in queued] == [4]  # another person captured then is enrolled as before
    assert len(reid.gallery) == 1 and reid._erasures  # the erased embeddings stay while earlier crops may come

    # seen again after the request: a new customer (erasure is not an opt-out), and the erased embeddings
    # leave memory once the camera has sent a crop captured since the request
    after = run(reid, [(5, asked + 1_000, OBAMA2), (5, asked + 1_100, OBAMA)], seq0=6)
    assert [(x.track_id, x.is_new) for x in after] == [(5, True)] and after[0].customer_id != first.customer_id
    assert reid._erasures == []
    reid.gallery.store.close()
