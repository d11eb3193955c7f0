"""Review fixes of the faces stages and the customers' gallery, on real models and the labelled photos.

1. A customer erased by another process (the API deletes the rows of the shared gallery file) is never matched
   again by a running gallery that still held the vectors, and never stops the run: the face is decided again
   (another customer; the erased person's face that found them gone makes no new customer, its next one does).
2. A reid track that comes back after an idle end keeps its decision: no second decision with the same
   ``event_id``, no second customer.
3. A shopper who turns the face away (crops keep coming, without a face) for longer than the idle time keeps
   the attribute track open: one ``final`` summary, at the real end, with all the evidence.

Real YuNet, dlib and attribute models (``faces`` defaults); "turned away" crops are the lower part of
``obama.jpg`` (the suit, no face in it).
"""
from __future__ import annotations

import functools
import pathlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from storelens.backends.face_embedders import DlibFaceEmbedder
from storelens.backends.face_index import CustomerErased, FaceGallery, GalleryConfig
from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.paths import asset
from storelens.stages.faces import AttributesStage, CropFaceFinder, DecodedCrop, FacesStage, ReidStage, \
    match_event_id
from storelens.storage.gallery import SqliteGalleryStore
from test_staff_faces import photo_crop  # a photo as the crop of a track

FACES = asset("faces")
pytestmark = pytest.mark.skipif(not (FACES / "identities").is_dir(), reason="shared face assets not found")

T0 = 1_767_225_600_000
IDLE_MS = 5_000
OBAMA, OBAMA2, OBAMA_TEST = "identities/obama/obama.jpg", "identities/obama/obama2.jpg", "identities_test/obama1.jpg"
BODY = "body"  # a crop of the person without a face (turned away)


@functools.lru_cache(maxsize=None)
def image(photo: str) -> np.ndarray:
    if photo == BODY:
        return cv2.imread(str(FACES / OBAMA))[500:]  # below the face: the suit
    img = cv2.imread(str(FACES / photo))
    assert img is not None, photo
    return img


def config(tmp: pathlib.Path):
    return parse_config({"store": {"id": "s"}, "cameras": [{"id": "door", "source": "x.mp4"}],
                         "storage": {"path": str(tmp / "h.db")},
                         "faces": {"enabled": True,
                                   "reid": {"faces_per_decision": 2, "track_idle_s": IDLE_MS / 1000}}})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The models, loaded once: face detector, attribute analyzer (as ``faces`` configures them), dlib."""
    attributes = AttributesStage(config(tmp_path_factory.mktemp("models")))
    detector = attributes.finder.detector
    assert len(CropFaceFinder(detector).find(image(BODY))) == 0, "the body crop must show no face"
    return SimpleNamespace(detector=detector, analyzer=attributes.analyzer, embedder=DlibFaceEmbedder())


def embedding(models, photo: str) -> np.ndarray:
    img = image(photo)
    return models.embedder.embed(img, CropFaceFinder(models.detector).find(img))[0]


def crop(seq: int, track: int, ts: int, photo: str) -> DecodedCrop:
    return photo_crop(seq, track, ts, image(photo))


def end_of_stream(seq: int, ts: int) -> DecodedCrop:
    return DecodedCrop(m.PersonCrop(camera_id="door", seq=seq, ts_ms=ts, end_of_stream=True), None)


def published(outputs, topic: str = topics.CUSTOMER_MATCHES) -> list:
    """What ``outputs`` publishes on ``topic`` (by default the reid stage's decisions)."""
    return [p.message for p in outputs.publish if p.topic == topic]


def ids(*names: str):
    return iter(names).__next__


# -- 1. erasure by another process ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "enrolled, erased, probe, gallery_cfg, expected",
    [
        # the face is learnt as a new view: the store's foreign key refused it (IntegrityError stopped the run)
        ([("obama-1", OBAMA)], "obama-1", OBAMA_TEST, {}, "new"),
        # a near-duplicate replaces an embedding: the UPDATE changed nothing and the erased id was published
        ([("obama-1", OBAMA)], "obama-1", OBAMA, {}, "new"),
        # matched but not learnt (below learn_threshold): no store call at all, the erased id was published
        ([("obama-1", OBAMA)], "obama-1", OBAMA_TEST, {"learn_threshold": 0.999}, "new"),
        # another customer of the same face remains: it is matched instead
        ([("obama-1", OBAMA), ("obama-2", OBAMA2)], "obama-1", OBAMA, {}, "obama-2"),
    ],
    ids=["learn-new-view", "near-duplicate", "match-without-learning", "another-customer"],
)
def test_a_customer_erased_by_another_process_is_never_matched(tmp_path, models, enrolled, erased, probe,
                                                                gallery_cfg, expected):
    db = tmp_path / "gallery.db"
    gallery = FaceGallery(GalleryConfig(**gallery_cfg), store=SqliteGalleryStore(db), id_factory=ids("new"))
    for cid, photo in enrolled:
        gallery.add(cid, embedding(models, photo), T0)
    api = SqliteGalleryStore(db)  # the other process (the API) on the same file
    assert api.delete_customer(erased)
    assert erased in gallery  # the running gallery still holds the vectors

    if expected == "new":  # the face that finds the customer gone makes none (its vectors wait for the request)
        with pytest.raises(CustomerErased):
            gallery.enroll_or_match(embedding(models, probe), T0 + 60_000)
        assert erased not in gallery and len(gallery) == 0 and api.counts()["customers"] == 0
        assert gallery.take_erased(erased) is not None and gallery.take_erased(erased) is None
    got = gallery.enroll_or_match(embedding(models, probe), T0 + 60_000)

    assert (got.customer_id, got.is_new) == (expected, expected == "new")
    assert erased not in gallery and api.customer_exists(expected)
    assert gallery.match(embedding(models, probe)).customer_id == expected
    # memory and store agree: the erased vectors are gone from the index, nothing was brought back
    counts = api.counts()
    assert (len(gallery), gallery.num_embeddings) == (counts["customers"], counts["embeddings"])
    assert not api.customer_exists(erased) and api.visits(erased) == []
    api.close()
    gallery.store.close()


@pytest.mark.parametrize("probe", [OBAMA_TEST, OBAMA], ids=["new-view", "near-duplicate"])
def test_adding_to_a_customer_erased_elsewhere_does_not_bring_it_back(tmp_path, models, probe):
    db = tmp_path / "gallery.db"
    gallery = FaceGallery(GalleryConfig(), store=SqliteGalleryStore(db))
    gallery.add("obama-1", embedding(models, OBAMA), T0)
    api = SqliteGalleryStore(db)
    api.delete_customer("obama-1")
    with pytest.raises(CustomerErased):
        gallery.add("obama-1", embedding(models, probe), T0 + 60_000)
    assert "obama-1" not in gallery and gallery.num_embeddings == 0
    assert api.counts() == {"customers": 0, "embeddings": 0, "visits": 0}
    api.close()
    gallery.store.close()


def test_embedded_run_goes_on_after_an_erasure_by_the_api(tmp_path, models):
    """The embedded faces stage (``on_error = "stop"``): the erased person's track that finds them gone is not
    decided; their next track is a new customer."""
    cfg = config(tmp_path)
    db = tmp_path / "gallery.db"
    gallery = FaceGallery(cfg.faces.gallery, store=SqliteGalleryStore(db))
    faces = FacesStage(AttributesStage(cfg, analyzer=models.analyzer, detector=models.detector),
                       ReidStage(cfg, gallery, embedder=models.embedder, detector=models.detector))
    matches = []
    for seq, (track, ts, photo) in enumerate([(1, T0, OBAMA), (1, T0 + 100, OBAMA),
                                              (2, T0 + 60_000, OBAMA2), (2, T0 + 60_100, OBAMA2),
                                              (3, T0 + 120_000, OBAMA2), (3, T0 + 120_100, OBAMA2)], 1):
        if seq == 3:  # the API erases the customer of track 1 meanwhile
            api = SqliteGalleryStore(db)
            assert api.delete_customer(matches[0].customer_id)
            api.close()
        matches += published(faces.handle(topics.PERSON_CROPS, crop(seq, track, ts, photo)), topics.CUSTOMER_MATCHES)
    first, again = matches
    assert again.track_id == 3 and again.is_new and again.customer_id != first.customer_id
    assert gallery.customers() == [again.customer_id] and gallery.store.customer_exists(again.customer_id)
    gallery.store.close()


# -- 2. a reid track back after an idle end -------------------------------------------------------------------

AWAY = IDLE_MS + 1_000  # longer than the idle time: the track is ended in between


@pytest.mark.parametrize(
    "before, erase_while_away, decisions_after",
    [
        ([OBAMA, OBAMA], False, 0),  # decided while open
        ([OBAMA], False, 1),  # one good face: decided when the idle end closes it (on the next crop)
        ([OBAMA, OBAMA], True, 0),  # erased while away: the track stays erased, nobody is enrolled again
    ],
    ids=["decided-while-open", "decided-at-idle-end", "erased-while-away"],
)
def test_reid_track_back_after_an_idle_end_keeps_its_decision(tmp_path, models, before, erase_while_away,
                                                              decisions_after):
    cfg = config(tmp_path)
    gallery = FaceGallery(cfg.faces.gallery, store=SqliteGalleryStore(tmp_path / "gallery.db"))
    reid = ReidStage(cfg, gallery, embedder=models.embedder, detector=models.detector)
    seq = 0

    def run(photos: list[str], t0: int) -> list:
        nonlocal seq
        out = []
        for i, photo in enumerate(photos):
            seq += 1
            out += published(reid.handle(topics.PERSON_CROPS, crop(seq, 7, t0 + 100 * i, photo)),
                             topics.CUSTOMER_MATCHES)
        return out

    decided = run(before, T0)
    back = T0 + 100 * len(before) + AWAY
    if erase_while_away:
        [match] = decided
        reid.handle(topics.CUSTOMER_ERASURES, m.CustomerErasure(customer_id=match.customer_id, request_id="r1"))
    after = run([OBAMA2, OBAMA2, OBAMA2], back)
    after += published(reid.handle(topics.PERSON_CROPS, end_of_stream(seq + 1, back + 1_000)), topics.CUSTOMER_MATCHES)

    assert len(after) == decisions_after and len(decided) + len(after) == 1
    [match] = decided + after
    assert match.event_id == match_event_id("door", 7) and match.is_new
    if erase_while_away:
        assert len(gallery) == 0 and gallery.store.counts()["customers"] == 0
    else:
        assert gallery.customers() == [match.customer_id]
        # the track's crops after the gap still extend the customer's visit
        assert gallery.store.visits(match.customer_id)[-1].last_ts_ms == back + 200
    gallery.store.close()


# -- 3. attributes of a face turned away ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["embedded", "service"])
@pytest.mark.parametrize(
    "away",
    [
        [1_000 * k for k in range(1, 9)],  # a crop without a face every second for 8 s
        [4_900, 9_800, 14_700],  # crops without a face just within the idle time of each other
    ],
    ids=["every-second", "just-within-idle"],
)
def test_attribute_track_with_the_face_turned_away_is_not_closed_early(tmp_path, models, mode, away):
    cfg = config(tmp_path)
    attributes = AttributesStage(cfg, analyzer=models.analyzer, detector=models.detector)
    stage = attributes if mode == "service" else FacesStage(attributes, None)
    back = away[-1] + 1_000
    plan = ([(7, 0, OBAMA), (7, 100, OBAMA)] + [(7, t, BODY) for t in away] + [(7, back, OBAMA2)]
            # another shopper, long after: track 7 is idle now and ends
            + [(8, back + IDLE_MS + 1_000, BODY)])
    finals, summaries = [], []
    for seq, (track, t, photo) in enumerate(plan, 1):
        out = published(stage.handle(topics.PERSON_CROPS, crop(seq, track, T0 + t, photo)), topics.TRACK_ATTRIBUTES)
        summaries += out
        finals += [(seq, s.track_id, s.n_faces) for s in out if s.final]
    end = published(stage.handle(topics.PERSON_CROPS, end_of_stream(len(plan) + 1, T0 + back + 20_000)),
                    topics.TRACK_ATTRIBUTES)

    assert finals == [(len(plan), 7, 3)] and end == []  # one final, when the track really went idle
    # the summaries grow over the whole track; the final one carries the latest face crop's seq
    assert [s.n_faces for s in summaries] == [1, 2, 3, 3]
    assert summaries[-1].last_seq == len(plan) - 1 and summaries[-1].first_ts_ms == T0
