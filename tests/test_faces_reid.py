"""Returning-customer recognition on real faces: dlib embeddings + FAISS gallery + SQLite store.

Real photos from the shared assets (``faces/identities*``), real dlib models,
no mocks. The two group photos are labelled by hand from left to right
(``obama_and_biden.jpg``: Biden, Obama and a child who is none of the known
people).
"""
from __future__ import annotations

import itertools
import pathlib
import random

import cv2
import numpy as np
import pytest

from storelens.errors import ConfigError, ModelError
from storelens.backends.face_embedders import DlibFaceEmbedder, DlibHogFaceDetector
from storelens.backends.face_index import FaceGallery, GalleryConfig, Visit, VisitTracker
from storelens.storage.gallery import SqliteGalleryStore
from storelens.paths import asset

FACES = asset("faces")
pytestmark = pytest.mark.skipif(not (FACES / "identities").is_dir(), reason="shared face assets not found")

#: image (relative to faces/) -> identities of its faces, left to right
LABELS: dict[str, list[str]] = {
    "identities/alex_lacamoire/img1.jpg": ["alex_lacamoire"],
    "identities/biden/biden.jpg": ["biden"],
    "identities/biden/biden2.jpg": ["biden"],
    "identities/kit_harington/john1.jpeg": ["kit_harington"],
    "identities/kit_harington/john2.jpeg": ["kit_harington"],
    "identities/obama/obama.jpg": ["obama"],
    "identities/obama/obama2.jpg": ["obama"],
    "identities/rose_leslie/img1.jpg": ["rose_leslie"],
    "identities/rose_leslie/img2.jpg": ["rose_leslie"],
    "identities_test/alex_lacamoire1.jpg": ["alex_lacamoire"],
    "identities_test/johnsnow_test1.jpg": ["kit_harington"],
    "identities_test/obama1.jpg": ["obama"],
    "identities_test/kit_with_rose.jpg": ["rose_leslie", "kit_harington"],
    "identities_test/obama_and_biden.jpg": ["biden", "obama", "child"],
}
THRESHOLD = GalleryConfig().match_threshold
#: Every matched view learnt (the default learns from ``match_threshold`` + 0.03 only): the tests of the
#: gallery's bookkeeping (caps, persistence, erasure, retention) need several views per customer.
LEARN_EVERY_MATCH = GalleryConfig(learn_threshold=THRESHOLD)
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000


class Face:
    def __init__(self, key: str, label: str, vec: np.ndarray) -> None:
        self.key, self.label, self.vec = key, label, vec

    def __repr__(self) -> str:
        return self.key


@pytest.fixture(scope="module")
def embedder() -> DlibFaceEmbedder:
    return DlibFaceEmbedder()


@pytest.fixture(scope="module")
def faces(embedder: DlibFaceEmbedder) -> dict[str, Face]:
    """Every labelled face, keyed ``"<image>#<i>"`` (i = position from the left)."""
    det = DlibHogFaceDetector(upsample=0)
    out = {}
    for rel, who in LABELS.items():
        image = cv2.imread(str(FACES / rel))
        assert image is not None, rel
        boxes = det.detect(image).bbox_xyxy
        assert len(boxes) == len(who), f"{rel}: {len(boxes)} faces found, {len(who)} expected"
        for i, (label, vec) in enumerate(zip(who, embedder.embed(image, boxes))):
            out[f"{rel}#{i}"] = Face(f"{rel}#{i}", label, vec)
    return out


def face(faces: dict[str, Face], short: str) -> Face:
    """Look a face up by an unambiguous suffix of its key (``"obama1.jpg#0"``)."""
    hits = [f for k, f in faces.items() if k.endswith(short)]
    assert len(hits) == 1, (short, hits)
    return hits[0]


def ids_from(*names: str):
    return iter(names).__next__


# -- the embedder ----------------------------------------------------------------------


def test_embeddings_are_unit_128d_from_boxes_and_landmarks(embedder: DlibFaceEmbedder) -> None:
    image = cv2.imread(str(FACES / "identities_test/kit_with_rose.jpg"))
    boxes = DlibHogFaceDetector(upsample=0).detect(image).bbox_xyxy
    from_boxes = embedder.embed(image, boxes)
    assert from_boxes.shape == (2, 128) and from_boxes.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(from_boxes, axis=1), 1.0, atol=1e-5)
    # YuNet's five landmarks (the services' detector) align the faces almost exactly like dlib
    net = cv2.FaceDetectorYN.create(str(asset("models", "face_detection_yunet_2026may.onnx")), "", (0, 0), 0.6)
    net.setInputSize((image.shape[1], image.shape[0]))
    raw = net.detect(image)[1]
    raw = raw[np.argsort(raw[:, 0])]
    from_landmarks = embedder.embed(image, raw[:, 4:14].reshape(-1, 5, 2))
    agreement = np.sum(from_boxes * from_landmarks, axis=1)
    assert (agreement > 0.97).all(), agreement
    assert embedder.embed(image, np.zeros((0, 4))).shape == (0, 128)
    assert len(embedder.chips(image, boxes)) == 2 and embedder.chips(image, boxes)[0].shape == (150, 150, 3)
    with pytest.raises(ValueError):
        embedder.embed(image, np.zeros((2, 3)))
    with pytest.raises(ModelError, match="not found"):
        DlibFaceEmbedder(recognition_weights="/nonexistent/model.dat")


def test_threshold_separates_every_genuine_pair_from_every_impostor_pair(faces: dict[str, Face]) -> None:
    genuine, impostor = [], []
    for a, b in itertools.combinations(faces.values(), 2):
        (genuine if a.label == b.label else impostor).append(float(a.vec @ b.vec))
    assert len(genuine) == 19 and len(impostor) == 117
    assert min(genuine) >= THRESHOLD > max(impostor), (min(genuine), THRESHOLD, max(impostor))


# -- re-identification -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "enrolled, probe, same",
    [
        ("obama/obama.jpg#0", "identities_test/obama1.jpg#0", True),
        ("obama/obama2.jpg#0", "obama_and_biden.jpg#1", True),
        ("biden/biden.jpg#0", "obama_and_biden.jpg#0", True),
        ("kit_harington/john1.jpeg#0", "johnsnow_test1.jpg#0", True),
        ("kit_harington/john2.jpeg#0", "kit_with_rose.jpg#1", True),
        ("rose_leslie/img1.jpg#0", "kit_with_rose.jpg#0", True),
        ("alex_lacamoire/img1.jpg#0", "alex_lacamoire1.jpg#0", True),
        ("obama/obama.jpg#0", "biden/biden.jpg#0", False),
        ("obama/obama.jpg#0", "obama_and_biden.jpg#0", False),  # Biden beside Obama
        ("biden/biden2.jpg#0", "obama_and_biden.jpg#1", False),  # Obama beside Biden
        ("rose_leslie/img2.jpg#0", "kit_with_rose.jpg#1", False),  # Kit beside Rose
        ("kit_harington/john1.jpeg#0", "kit_with_rose.jpg#0", False),  # Rose beside Kit
        ("alex_lacamoire/img1.jpg#0", "johnsnow_test1.jpg#0", False),
        ("obama/obama.jpg#0", "obama_and_biden.jpg#2", False),  # the child
    ],
)
def test_match_table(faces: dict[str, Face], enrolled: str, probe: str, same: bool) -> None:
    gallery = FaceGallery(GalleryConfig(), id_factory=ids_from("customer-1", "customer-2"))
    first = gallery.enroll_or_match(face(faces, enrolled).vec, T0)
    assert first.is_new and first.customer_id == "customer-1"
    cid, sim = gallery.match(face(faces, probe).vec)
    assert (cid == "customer-1") is same, (sim, THRESHOLD)
    second = gallery.enroll_or_match(face(faces, probe).vec, T0 + MIN)
    assert second.is_new is (not same)
    assert len(gallery) == (1 if same else 2)


@pytest.mark.parametrize("order", ["as listed", "reversed", "shuffled-1", "shuffled-2", "group photos first"])
def test_enroll_or_match_gives_one_customer_per_person(faces: dict[str, Face], order: str) -> None:
    seq = list(faces.values())
    if order == "reversed":
        seq.reverse()
    elif order.startswith("shuffled"):
        random.Random(int(order[-1])).shuffle(seq)
    elif order == "group photos first":
        seq.sort(key=lambda f: "identities_test/" not in f.key)
    gallery = FaceGallery(LEARN_EVERY_MATCH)
    customer_of: dict[str, set[str]] = {}
    seen: set[str] = set()
    for i, f in enumerate(seq):
        cid, sim, is_new = gallery.enroll_or_match(f.vec, T0 + i * MIN)
        assert is_new is (f.label not in seen), (f, sim)
        seen.add(f.label)
        customer_of.setdefault(f.label, set()).add(cid)
    # same person -> one customer id; different people -> different ids
    assert all(len(c) == 1 for c in customer_of.values()), customer_of
    assert len({next(iter(c)) for c in customer_of.values()}) == len(customer_of) == 6
    assert len(gallery) == 6 and gallery.num_embeddings == len(faces)  # all views differ enough to be kept
    # identity-level search: the best customers, each once, best first
    top = gallery.search(face(faces, "obama1.jpg#0").vec, k=3)
    assert [m.customer_id for m in top][0] == next(iter(customer_of["obama"]))
    assert len({m.customer_id for m in top}) == 3 and top[0].similarity >= top[1].similarity >= top[2].similarity


def test_embeddings_per_customer_are_capped_recent_and_diverse(faces: dict[str, Face], embedder) -> None:
    obama = [f for f in faces.values() if f.label == "obama"]
    assert len(obama) == 4
    gallery = FaceGallery(GalleryConfig(max_embeddings_per_customer=2))
    for i, f in enumerate(obama):
        gallery.add("obama", f.vec, T0 + i * MIN)
    vecs, ts = gallery.embeddings_of("obama")
    assert list(ts) == [T0 + 2 * MIN, T0 + 3 * MIN]  # the two most recent are kept
    np.testing.assert_allclose(vecs, np.stack([obama[2].vec, obama[3].vec]), atol=1e-6)
    # the same photo again (aligned from YuNet landmarks: similarity ~0.99) replaces its earlier embedding
    image = cv2.imread(str(FACES / obama[3].key.split("#")[0]))
    net = cv2.FaceDetectorYN.create(str(asset("models", "face_detection_yunet_2026may.onnx")), "", (0, 0), 0.6)
    net.setInputSize((image.shape[1], image.shape[0]))
    raw = net.detect(image)[1]
    raw = raw[np.argsort(raw[:, 0])]
    again = embedder.embed(image, raw[1:2, 4:14].reshape(-1, 5, 2))[0]  # obama_and_biden.jpg: Obama is 2nd
    assert again @ obama[3].vec >= GalleryConfig().duplicate_similarity
    gallery.add("obama", again, T0 + 10 * MIN)
    vecs, ts = gallery.embeddings_of("obama")
    assert list(ts) == [T0 + 2 * MIN, T0 + 10 * MIN] and gallery.num_embeddings == 2


# -- index switch ---------------------------------------------------------------------------


def distractors(faces: dict[str, Face], n: int, seed: int = 0) -> np.ndarray:
    """Face-like vectors near the real ones (similarity ~0.8-0.87) but nobody's: a crowded gallery."""
    rng = np.random.default_rng(seed)
    base = np.stack([f.vec for f in faces.values()])
    x = base[rng.integers(0, len(base), n)] + rng.standard_normal((n, 128)).astype(np.float32) * 0.06
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_exact_to_approximate_switch_keeps_the_top_identity(faces: dict[str, Face]) -> None:
    noise = distractors(faces, 4000)
    names = [f"distractor-{i}" for i in range(len(noise))]
    reference: dict[str, Face] = {}
    for f in faces.values():  # the first photo of each person is enrolled, the others are probes
        reference.setdefault(f.label, f)
    probes = [f for f in faces.values() if f not in reference.values()]
    assert len(reference) == 6 and len(probes) == 11
    results = {}
    for kind, approximate_from in (("flat", 10**9), ("ivf", len(noise) + 3)):
        gallery = FaceGallery(GalleryConfig(approximate_from=approximate_from))
        gallery.bulk_load(names, noise, [T0] * len(noise))
        assert gallery.index_kind == "flat"
        for i, f in enumerate(reference.values()):
            gallery.add(f.label, f.vec, T0 + i)
        assert gallery.index_kind == kind  # the switch happens on the add that reaches the size
        results[kind] = [gallery.search(p.vec, k=1)[0] for p in probes]
        assert [m.customer_id for m in results[kind]] == [p.label for p in probes]
    for exact, approx in zip(results["flat"], results["ivf"]):
        assert exact.customer_id == approx.customer_id and approx.similarity == pytest.approx(exact.similarity, abs=1e-5)


# -- persistence, erasure, retention -------------------------------------------------------


def enroll_all(gallery: FaceGallery, faces: dict[str, Face], visits: VisitTracker | None = None) -> dict[str, str]:
    """Enrol every face (one per minute); returns label -> customer id."""
    cust = {}
    for i, f in enumerate(faces.values()):
        cid = gallery.enroll_or_match(f.vec, T0 + i * MIN).customer_id
        cust.setdefault(f.label, cid)
        assert cust[f.label] == cid
        if visits is not None:
            visits.observe(cid, T0 + i * MIN, f"cam-{i % 2}")
    return cust


def test_gallery_persists_and_rebuilds_at_start_with_the_same_matches(tmp_path: pathlib.Path, faces) -> None:
    db = tmp_path / "gallery.db"
    store = SqliteGalleryStore(db)
    gallery = FaceGallery(LEARN_EVERY_MATCH, store=store)
    enroll_all(gallery, faces)
    before = {k: gallery.match(f.vec) for k, f in faces.items()}
    store.close()

    store2 = SqliteGalleryStore(db)
    restarted = FaceGallery(GalleryConfig(), store=store2)
    assert sorted(restarted.customers()) == sorted(gallery.customers())
    assert restarted.num_embeddings == gallery.num_embeddings == len(faces)
    for k, f in faces.items():
        cid, sim = restarted.match(f.vec)
        assert cid == before[k].customer_id and sim == pytest.approx(before[k].similarity, abs=1e-6)
    # only ids, times and float32 vectors are stored: no images
    tables = {r[0] for r in store2._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables - {"sqlite_sequence"} == {"meta", "customers", "embeddings", "visits", "track_decisions"}
    assert {r[0] for r in store2._db.execute("SELECT length(vector) FROM embeddings")} == {128 * 4}
    with pytest.raises(ConfigError, match="128-d"):
        SqliteGalleryStore(db, dim=512)
    store2.close()


def db_bytes(db: pathlib.Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_delete_erases_the_customer_everywhere(tmp_path: pathlib.Path, faces) -> None:
    db = tmp_path / "gallery.db"
    store = SqliteGalleryStore(db)
    gallery = FaceGallery(LEARN_EVERY_MATCH, store=store)
    visits = VisitTracker(store, gap_ms=30 * MIN)
    cust = enroll_all(gallery, faces, visits)
    obama = cust["obama"]
    obama_vecs, _ = gallery.embeddings_of(obama)
    assert len(obama_vecs) == 4 and visits.visits(obama)
    assert all(v.tobytes() in db_bytes(db) for v in obama_vecs)

    assert gallery.delete(obama) is True
    assert obama not in gallery and gallery.num_embeddings == len(faces) - 4
    assert gallery.match(face(faces, "obama1.jpg#0").vec).customer_id is None
    # gone from the database, including the bytes of the file and its write-ahead log
    assert store.counts()["customers"] == 5 and visits.visits(obama) == []
    assert store._db.execute("SELECT COUNT(*) FROM embeddings WHERE customer_id=?", (obama,)).fetchone()[0] == 0
    assert not any(v.tobytes() in db_bytes(db) for v in obama_vecs)
    store.close()

    # a gallery rebuilt from the store no longer knows Obama, and still knows the others
    fresh = FaceGallery(GalleryConfig(), store=SqliteGalleryStore(db))
    for f in faces.values():
        cid, sim = fresh.match(f.vec)
        if f.label == "obama":
            assert cid is None and sim < THRESHOLD
        else:
            assert cid == cust[f.label]
    assert fresh.enroll_or_match(face(faces, "obama.jpg#0").vec, T0 + 999 * MIN).is_new
    assert fresh.delete("nobody") is False


def test_retention_purge(tmp_path: pathlib.Path, faces) -> None:
    store = SqliteGalleryStore(tmp_path / "gallery.db")
    gallery = FaceGallery(LEARN_EVERY_MATCH, store=store, id_factory=ids_from("alex", "rose"))
    visits = VisitTracker(store, gap_ms=30 * MIN)
    day = 24 * 60 * MIN
    plan = [  # (face, ts): Alex only long ago; Rose long ago and again recently
        ("alex_lacamoire/img1.jpg#0", T0),
        ("rose_leslie/img1.jpg#0", T0),
        ("rose_leslie/img2.jpg#0", T0 + 40 * day),
    ]
    for key, ts in plan:
        cid = gallery.enroll_or_match(face(faces, key).vec, ts).customer_id
        visits.observe(cid, ts, "door")
    assert len(gallery) == 2 and gallery.num_embeddings == 3
    assert [v.visit_no for v in visits.visits("rose")] == [1, 2]

    result = gallery.purge_older_than(T0 + 30 * day)
    assert result == (2, 1, 2)  # embeddings, customers, visits (Alex's only one, Rose's first)
    assert gallery.customers() == ["rose"] and gallery.num_embeddings == 1
    assert store.counts() == {"customers": 1, "embeddings": 1, "visits": 1}
    for g in (gallery, FaceGallery(GalleryConfig(), store=store)):
        assert g.match(face(faces, "alex_lacamoire1.jpg#0").vec).customer_id is None
        assert g.match(face(faces, "kit_with_rose.jpg#0").vec).customer_id == "rose"
    assert visits.observe("rose", T0 + 41 * day, "door").visit_no == 3  # numbering goes on


def test_list_customers_after_real_visits(faces) -> None:
    store = SqliteGalleryStore(":memory:")
    gallery = FaceGallery(GalleryConfig(), store=store)
    # one face per minute: a person whose photos are more than 5 listed faces apart comes back
    visits = VisitTracker(store, gap_ms=5 * MIN)
    cust = enroll_all(gallery, faces, visits)
    total, page = store.list_customers(limit=100)
    assert total == 6 and {c.customer_id for c in page} == set(cust.values())
    assert [c.last_seen_ts_ms for c in page] == sorted((c.last_seen_ts_ms for c in page), reverse=True)
    for c in page:
        vs = visits.visits(c.customer_id)
        assert (c.visits, c.first_seen_ts_ms, c.last_seen_ts_ms, c.returning) == \
            (len(vs), vs[0].first_ts_ms, vs[-1].last_ts_ms, vs[-1].returning)
        assert c.cameras == tuple(sorted({cam for v in vs for cam in v.cameras}))
    n_returning, returning = store.list_customers(returning=True)
    assert n_returning == sum(visits.is_returning(c) for c in cust.values()) > 0
    assert store.list_customers(returning=True, limit=1, offset=1)[1] == returning[1:2]
    assert store.customer_exists(cust["obama"])
    gallery.delete(cust["obama"])
    assert not store.customer_exists(cust["obama"]) and store.list_customers()[0] == 5
    first = T0 + len(faces) * MIN  # nobody was seen after the last enrolment
    assert store.list_customers(from_ts_ms=first) == (0, [])


# -- visits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sightings, expected",
    [
        # (minute, camera) -> (visit_no, returning, cameras of that visit)
        ([(0, "door")], [(1, False, ("door",))]),
        ([(0, "door"), (10, "aisle"), (39, "till")],
         [(1, False, ("door",)), (1, False, ("aisle", "door")), (1, False, ("aisle", "door", "till"))]),
        ([(0, "door"), (30, "door")], [(1, False, ("door",)), (1, False, ("door",))]),  # exactly the gap: same visit
        ([(0, "door"), (31, "door")], [(1, False, ("door",)), (2, True, ("door",))]),
        ([(0, "door"), (20, "door"), (45, "door"), (200, "aisle")],
         [(1, False, ("door",)), (1, False, ("door",)), (1, False, ("door",)), (2, True, ("aisle",))]),
        ([(0, "door"), (100, "door"), (1000, "door")],
         [(1, False, ("door",)), (2, True, ("door",)), (3, True, ("door",))]),
    ],
)
def test_visit_semantics(tmp_path: pathlib.Path, sightings, expected) -> None:
    store = SqliteGalleryStore(tmp_path / "g.db")
    store.add_customer("c1", T0)
    tracker = VisitTracker(store, gap_ms=30 * MIN)
    got = [tracker.observe("c1", T0 + m * MIN, cam) for m, cam in sightings]
    assert [(v.visit_no, v.returning, v.cameras) for v in got] == expected
    store.close()
    # persisted: a tracker on the reopened store continues where this one stopped
    reopened = VisitTracker(SqliteGalleryStore(tmp_path / "g.db"), gap_ms=30 * MIN)
    last = got[-1]
    assert reopened.visits("c1")[-1] == last
    assert reopened.is_returning("c1") is last.returning
    nxt = reopened.observe("c1", last.last_ts_ms + 31 * MIN, "door")
    assert nxt == Visit("c1", last.visit_no + 1, nxt.first_ts_ms, nxt.first_ts_ms, ("door",)) and nxt.returning


def test_visits_need_a_known_customer(tmp_path: pathlib.Path) -> None:
    tracker = VisitTracker(SqliteGalleryStore(tmp_path / "g.db"), gap_ms=MIN)
    with pytest.raises(KeyError):
        tracker.observe("nobody", T0, "door")


def test_config_is_strict() -> None:
    with pytest.raises(Exception, match="extra"):
        GalleryConfig(match_treshold=0.9)
    with pytest.raises(Exception, match="learn_threshold"):
        GalleryConfig(match_threshold=0.9, learn_threshold=0.8)
    with pytest.raises(ConfigError):
        FaceGallery(GalleryConfig(dim=64), store=SqliteGalleryStore(":memory:"))
