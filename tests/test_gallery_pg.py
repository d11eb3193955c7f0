"""Face gallery stores: one contract on SQLite and on a real PostgreSQL, then PostgreSQL specifics.

The contract cases take the ``backend`` fixture and run once per store
(``SqliteGalleryStore`` in a temporary file, ``PostgresGalleryStore``). The
PostgreSQL server comes from ``STORELENS_PG_DSN`` (default: the one
``scripts/stack.sh up`` starts); these tests never skip: no server is a
failure. Each PostgreSQL test gets a private schema, made the connection's
``search_path`` through the DSN's ``options`` (exactly how a deployment points
the store at a schema), so the production table names ``gallery_*`` are used
unchanged; the schema is dropped afterwards.
"""
from __future__ import annotations

import contextlib
import doctest
import os
import random
import sqlite3
import threading
import time
import uuid
from typing import Iterator

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import storelens.backends.face_index
import storelens.storage.gallery
from storelens.errors import ConfigError
from storelens.storage.gallery import (
    CustomerSummary,
    FaceGallery,
    GalleryConfig,
    GalleryStore,
    SqliteGalleryStore,
    Visit,
    VisitTracker,
)
from storelens.storage.gallery import PostgresGalleryStore
from storelens.storage import StorageError

# Real faces (dlib) for the PostgreSQL restart test; those cases skip without the shared assets.
from test_faces_reid import (FACES, LEARN_EVERY_MATCH, MIN, T0, THRESHOLD, embedder, enroll_all,  # noqa: F401
                             faces)  # (fixtures)

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
DIM = 16
DAY = 24 * 60 * MIN
needs_faces = pytest.mark.skipif(not (FACES / "identities").is_dir(), reason="shared face assets not found")


def admin() -> psycopg.Connection:
    return psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10)


def schema_dsn(schema: str) -> str:
    return make_conninfo(PG_DSN, options=f"-c search_path={schema}")


@contextlib.contextmanager
def private_schema() -> Iterator[str]:
    name = f"test_gallery_{uuid.uuid4().hex[:12]}"
    with admin() as c:
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with admin() as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh empty schema (dropped afterwards)."""
    with private_schema() as name:
        yield name


@pytest.fixture
def pg_dsn(pg_schema: str) -> str:
    """A DSN whose ``search_path`` is a fresh private schema."""
    return schema_dsn(pg_schema)


class Backend:
    """Opens stores on one database (SQLite file or PostgreSQL schema) and reads its tables directly."""

    TABLES = {"sqlite": {"customers": "customers", "embeddings": "embeddings", "visits": "visits"},
              "postgres": {"customers": "gallery_customers", "embeddings": "gallery_embeddings",
                           "visits": "gallery_visits"}}

    def __init__(self, kind: str, target: str) -> None:
        self.kind, self.target = kind, target
        self._stores: list = []

    def __repr__(self) -> str:
        return self.kind

    def open(self, dim: int = DIM) -> GalleryStore:
        store = SqliteGalleryStore(self.target, dim=dim) if self.kind == "sqlite" else \
            PostgresGalleryStore(self.target, dim=dim)
        self._stores.append(store)
        return store

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """``query`` names tables ``{customers}``, ``{embeddings}``, ``{visits}`` and binds with ``?``."""
        query = query.format(**self.TABLES[self.kind])
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.target)) as db:
                return db.execute(query, params).fetchall()
        with psycopg.connect(self.target, autocommit=True) as c:
            return c.execute(query.replace("?", "%s"), params).fetchall()

    def close(self) -> None:
        for s in self._stores:
            s.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[Backend]:
    target = str(tmp_path / "gallery.db") if request.param == "sqlite" else request.getfixturevalue("pg_dsn")
    b = Backend(request.param, target)
    yield b
    b.close()


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- the store contract (both backends) ---------------------------------------------------


def test_embeddings_add_replace_remove_roundtrip(backend: Backend) -> None:
    rng = np.random.default_rng(0)
    v = unit(rng, 6)
    s = backend.open()
    s.add_customer("a", 1)
    s.add_customers([("b", 2), ("c", 3)])
    s.add_customers([])
    r0 = s.add_embedding("a", 10, v[0])
    ids = s.add_embeddings([("b", 11, v[1]), ("c", 12, v[2]), ("a", 13, v[3])])
    assert s.add_embeddings([]) == []
    assert r0 < ids[0] < ids[1] < ids[2]
    assert list(s.customers()) == [("a", 1), ("b", 2), ("c", 3)]  # insertion order
    assert s.customer_exists("b") and not s.customer_exists("z")

    def rows():
        return [(rid, cid, ts, vec.tolist()) for rid, cid, ts, vec in s.embeddings()]

    assert rows() == [(r0, "a", 10, v[0].tolist()), (ids[0], "b", 11, v[1].tolist()),
                      (ids[1], "c", 12, v[2].tolist()), (ids[2], "a", 13, v[3].tolist())]  # exact float32
    # stored as the little-endian float32 bytes
    assert backend.sql("SELECT vector FROM {embeddings} WHERE id = ?", (ids[1],))[0][0] == v[2].astype("<f4").tobytes()

    s.replace_embedding(ids[0], 20, v[4])  # same row, new capture
    s.remove_embeddings([r0, ids[1]])
    s.remove_embeddings([])
    assert rows() == [(ids[0], "b", 20, v[4].tolist()), (ids[2], "a", 13, v[3].tolist())]
    assert s.counts() == {"customers": 3, "embeddings": 2, "visits": 0}
    for bad in (np.zeros(DIM + 1, np.float32), np.zeros((2, DIM), np.float32)):
        with pytest.raises(ValueError, match=f"{DIM}-d"):
            s.add_embedding("a", 30, bad)
        with pytest.raises(ValueError, match=f"{DIM}-d"):
            s.add_embeddings([("a", 30, v[5]), ("a", 31, bad)])
    assert s.counts()["embeddings"] == 2
    s.close()
    again = backend.open()
    assert [(rid, cid, ts, vec.tolist()) for rid, cid, ts, vec in again.embeddings()] == \
        [(ids[0], "b", 20, v[4].tolist()), (ids[2], "a", 13, v[3].tolist())]
    assert again.add_embedding("c", 40, v[5]) > ids[2]  # ids are never reused


def test_add_embeddings_is_all_or_nothing(backend: Backend) -> None:
    v = unit(np.random.default_rng(1), 3)
    s = backend.open()
    s.add_customer("a", 0)
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        s.add_embeddings([("a", 1, v[0]), ("nobody", 2, v[1])])
    assert s.counts()["embeddings"] == 0
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        s.add_customer("a", 5)  # ids are unique
    assert s.add_embeddings([("a", 3, v[2])])  # still usable


def test_delete_customer_removes_customer_embeddings_and_visits(backend: Backend) -> None:
    v = unit(np.random.default_rng(2), 5)
    s = backend.open()
    s.add_customers([("a", 0), ("b", 0)])
    s.add_embeddings([("a", 1, v[0]), ("a", 2, v[1]), ("b", 3, v[2])])
    s.add_embedding("a", 4, v[3])
    tracker = VisitTracker(s, gap_ms=MIN)
    for t in (0, 5 * MIN, 10 * MIN):
        tracker.observe("a", t, "door")
        tracker.observe("b", t, "till")

    def count(table: str, cid: str) -> int:
        return backend.sql(f"SELECT COUNT(*) FROM {{{table}}} WHERE customer_id = ?", (cid,))[0][0]

    assert [count(t, "a") for t in ("customers", "embeddings", "visits")] == [1, 3, 3]
    assert s.delete_customer("a") is True
    assert [count(t, "a") for t in ("customers", "embeddings", "visits")] == [0, 0, 0]
    assert [count(t, "b") for t in ("customers", "embeddings", "visits")] == [1, 1, 3]
    assert s.delete_customer("a") is False and s.delete_customer("nobody") is False
    assert s.last_visit("a") is None and s.visits("a") == [] and not s.customer_exists("a")
    assert s.counts() == {"customers": 1, "embeddings": 1, "visits": 3}
    assert [c.customer_id for c in s.list_customers()[1]] == ["b"]
    with pytest.raises(KeyError):
        tracker.observe("a", 20 * MIN, "door")


def test_purge_older_than_applies_retention(backend: Backend) -> None:
    v = unit(np.random.default_rng(3), 4)
    s = backend.open()
    s.add_customers([("alex", T0), ("rose", T0), ("ghost", T0)])  # ghost: visits but no embedding
    s.add_embeddings([("alex", T0, v[0]), ("rose", T0, v[1]), ("rose", T0 + 40 * DAY, v[2])])
    tracker = VisitTracker(s, gap_ms=30 * MIN)
    for cid, ts in (("alex", T0), ("rose", T0), ("rose", T0 + 40 * DAY), ("ghost", T0 + 40 * DAY)):
        tracker.observe(cid, ts, "door")
    assert s.purge_older_than(T0 + 30 * DAY) == (2, 2, 3)  # embeddings, customers (alex, ghost), visits
    assert list(s.customers()) == [("rose", T0)]
    assert [(cid, ts) for _, cid, ts, _ in s.embeddings()] == [("rose", T0 + 40 * DAY)]
    assert s.counts() == {"customers": 1, "embeddings": 1, "visits": 1}
    assert backend.sql("SELECT customer_id, visit_no FROM {visits}") == [("rose", 2)]
    assert s.purge_older_than(T0 + 30 * DAY) == (0, 0, 0)
    assert tracker.observe("rose", T0 + 41 * DAY, "door").visit_no == 3  # numbering goes on
    assert tracker.is_returning("rose")


def test_gallery_purge_through_the_store(backend: Backend) -> None:
    v = unit(np.random.default_rng(4), 3, 128)
    gallery = FaceGallery(GalleryConfig(), store=backend.open(128), id_factory=iter(["old", "new"]).__next__)
    gallery.enroll_or_match(v[0], T0)
    gallery.enroll_or_match(v[1], T0 + 40 * DAY)
    assert gallery.purge_older_than(T0 + 30 * DAY) == (1, 1, 0)
    assert gallery.customers() == ["new"]
    restarted = FaceGallery(GalleryConfig(), store=backend.open(128))
    assert restarted.customers() == ["new"] and restarted.num_embeddings == 1
    assert restarted.match(v[0]).customer_id is None and restarted.match(v[1]).customer_id == "new"


@pytest.mark.parametrize(
    "sightings, expected",
    [
        # (minute, camera) -> (visit_no, returning, cameras of that visit)
        ([(0, "door"), (10, "aisle"), (39, "till")],
         [(1, False, ("door",)), (1, False, ("aisle", "door")), (1, False, ("aisle", "door", "till"))]),
        ([(0, "door"), (30, "door")], [(1, False, ("door",)), (1, False, ("door",))]),  # exactly the gap
        ([(0, "door"), (31, None), (32, "door")], [(1, False, ("door",)), (2, True, ()), (2, True, ("door",))]),
        ([(0, "door"), (100, "door"), (1000, "Z-cam")],
         [(1, False, ("door",)), (2, True, ("door",)), (3, True, ("Z-cam",))]),
    ],
)
def test_visits_via_tracker(backend: Backend, sightings, expected) -> None:
    s = backend.open()
    s.add_customer("c1", T0)
    assert s.last_visit("c1") is None and s.visits("c1") == []
    tracker = VisitTracker(s, gap_ms=30 * MIN)
    got = [tracker.observe("c1", T0 + m * MIN, cam) for m, cam in sightings]
    assert [(v.visit_no, v.returning, v.cameras) for v in got] == expected
    s.close()
    reopened = VisitTracker(backend.open(), gap_ms=30 * MIN)  # persisted: continues where it stopped
    assert reopened.visits("c1")[-1] == got[-1] == reopened.store.last_visit("c1")
    assert [v.visit_no for v in reopened.visits("c1")] == sorted({v.visit_no for v in got})
    assert reopened.is_returning("c1") is got[-1].returning
    nxt = reopened.observe("c1", got[-1].last_ts_ms + 31 * MIN, "door")
    assert nxt == Visit("c1", got[-1].visit_no + 1, nxt.first_ts_ms, nxt.first_ts_ms, ("door",)) and nxt.returning
    with pytest.raises(KeyError):
        reopened.observe("nobody", T0, "door")


def test_dim_mismatch_is_a_config_error(backend: Backend) -> None:
    s = backend.open(DIM)
    s.add_customer("a", 0)
    s.add_embedding("a", 0, np.ones(DIM, np.float32))
    s.close()
    with pytest.raises(ConfigError, match=f"{DIM}-d embeddings, not {2 * DIM}-d"):
        backend.open(2 * DIM)
    with pytest.raises(ConfigError, match=f"{DIM}-d"):
        FaceGallery(GalleryConfig(dim=2 * DIM), store=backend.open(DIM))
    assert backend.open(DIM).counts()["embeddings"] == 1  # the failed opens changed nothing


# -- list_customers ---------------------------------------------------------------------------------


def reference(store: GalleryStore, *, returning: bool | None = None, from_ts_ms: int | None = None,
              to_ts_ms: int | None = None, limit: int = 50, offset: int = 0) -> tuple[int, list[CustomerSummary]]:
    """``list_customers`` by its definition, in Python (from the store's visits)."""
    out = []
    ranged = from_ts_ms is not None or to_ts_ms is not None
    for cid, created in store.customers():
        vs = store.visits(cid)
        in_range = [v for v in vs if (from_ts_ms is None or v.last_ts_ms >= from_ts_ms)
                    and (to_ts_ms is None or v.first_ts_ms < to_ts_ms)]
        if ranged and not in_range:
            continue
        ret = bool(vs) and vs[-1].returning
        # with a range, returning of the range: one of its visits is a second or later one
        if returning is not None and (any(v.returning for v in in_range) if ranged else ret) != returning:
            continue
        out.append(CustomerSummary(cid, created, len(vs), min((v.first_ts_ms for v in vs), default=created),
                                   max((v.last_ts_ms for v in vs), default=created), ret,
                                   tuple(sorted({c for v in vs for c in v.cameras}))))
    out.sort(key=lambda c: (-c.last_seen_ts_ms, c.customer_id))
    return len(out), out[offset:offset + limit]


def test_list_customers_pages_filters_and_order(backend: Backend) -> None:
    s = backend.open()
    s.add_customers([("new", T0 + 5), ("once", T0), ("back", T0), ("tie-b", T0), ("tie-a", T0), ("late", T0)])
    for v in [Visit("once", 1, T0 + 10, T0 + 20, ("door",)),
              Visit("back", 1, T0 + 1, T0 + 2, ("door",)), Visit("back", 2, T0 + 100, T0 + 130, ("aisle", "till")),
              Visit("tie-a", 1, T0 + 40, T0 + 50, ()), Visit("tie-b", 1, T0 + 45, T0 + 50, ("door",)),
              Visit("late", 2, T0 + 200, T0 + 210, ("door",))]:  # its first visit was purged: still returning
        s.save_visit(v)

    def summary(cid, created, n, first, last, ret, cams=()):
        return CustomerSummary(cid, created, n, first, last, ret, tuple(cams))

    everyone = [
        summary("late", T0, 1, T0 + 200, T0 + 210, True, ["door"]),
        summary("back", T0, 2, T0 + 1, T0 + 130, True, ["aisle", "door", "till"]),
        summary("tie-a", T0, 1, T0 + 40, T0 + 50, False),
        summary("tie-b", T0, 1, T0 + 45, T0 + 50, False, ["door"]),
        summary("once", T0, 1, T0 + 10, T0 + 20, False, ["door"]),
        summary("new", T0 + 5, 0, T0 + 5, T0 + 5, False),  # no visit yet: seen when created
    ]
    assert s.list_customers() == (6, everyone)
    assert [s.list_customers(limit=4, offset=o) for o in (0, 4, 8)] == [(6, everyone[:4]), (6, everyone[4:]), (6, [])]
    assert s.list_customers(limit=0) == (6, [])
    assert s.list_customers(returning=True) == (2, everyone[:2])
    assert s.list_customers(returning=False, limit=2, offset=1) == (4, everyone[3:5])
    # time filter: a visit [first, last] overlapping [from, to)
    # "once" ends at from (kept), "tie-a" starts at to (not kept)
    assert s.list_customers(from_ts_ms=T0 + 20, to_ts_ms=T0 + 40) == (1, [everyone[4]])
    assert s.list_customers(from_ts_ms=T0 + 21, to_ts_ms=T0 + 41) == (1, [everyone[2]])
    assert s.list_customers(from_ts_ms=T0 + 131) == (1, [everyone[0]])
    assert s.list_customers(to_ts_ms=T0 + 2) == (1, [everyone[1]])  # back's first visit; summary covers all visits
    assert s.list_customers(from_ts_ms=T0, to_ts_ms=T0 + 10**6, returning=False) == (3, everyone[2:5])  # not "new"
    assert s.list_customers(from_ts_ms=T0 + 100, to_ts_ms=T0 + 100) == (0, [])
    for kwargs in ({}, {"returning": True}, {"returning": False}, {"from_ts_ms": T0 + 20, "to_ts_ms": T0 + 46}):
        assert s.list_customers(**kwargs) == reference(s, **kwargs)
    for bad in ({"limit": -1}, {"offset": -1}):
        with pytest.raises(ValueError):
            s.list_customers(**bad)


def test_list_customers_matches_its_definition_on_random_visits(backend: Backend) -> None:
    rng = random.Random(11)
    s = backend.open()
    ids = [f"{rng.choice(['c', 'C', '_', 'z', 'é'])}-{i:03d}" for i in range(120)]  # byte order matters
    s.add_customers([(c, rng.randrange(0, 10_000)) for c in ids])
    tracker = VisitTracker(s, gap_ms=30 * MIN)
    for cid in rng.sample(ids, 100):
        t = rng.randrange(0, 50 * MIN)
        for _ in range(rng.randrange(1, 8)):
            t += rng.choice([1, 5, 29, 31, 90, 600]) * MIN
            tracker.observe(cid, t, rng.choice([None, "door", "till", "aisle-2", "Door"]))
    s.save_visit(Visit(ids[0], 9, 0, 0, ("door",)))  # a visit number far ahead, at time 0
    cases = [{}]
    for _ in range(60):
        lo = rng.randrange(0, 400 * MIN)
        hi = lo + rng.randrange(0, 60 * MIN)
        cases.append({"returning": rng.choice([None, True, False]),
                      "from_ts_ms": rng.choice([None, lo]), "to_ts_ms": rng.choice([None, hi]),
                      "limit": rng.choice([1, 7, 50, 500]), "offset": rng.choice([0, 3, 40, 200])})
    for kwargs in cases:
        assert s.list_customers(**kwargs) == reference(s, **kwargs), kwargs


# -- the gallery over a store (both backends) ---------------------------------------------------------


def test_gallery_rebuild_gives_the_same_matches(backend: Backend) -> None:
    """Enrol, learn, replace, cap, erase; a gallery restarted on the store answers exactly as before."""
    rng = np.random.default_rng(5)
    people = unit(rng, 150, 128)

    def view(i: int) -> np.ndarray:
        return people[i] + 0.02 * rng.standard_normal(128).astype(np.float32)  # ~0.95 to another view

    # the synthetic views are made for a 0.91 threshold that learns every match (the default is tuned on real faces)
    cfg = GalleryConfig(max_embeddings_per_customer=3, match_threshold=0.91, learn_threshold=0.91)
    gallery = FaceGallery(cfg, store=backend.open(128))
    who: dict[int, str] = {}
    for t in range(600):
        i = int(rng.integers(0, len(people)))
        cid, _, is_new = gallery.enroll_or_match(people[i] if t % 50 == 0 else view(i), T0 + t * MIN)
        assert is_new is (i not in who)
        who.setdefault(i, cid)
        assert who[i] == cid
    for i in list(who)[:5]:
        assert gallery.delete(who.pop(i))
    queries = np.stack([view(i) for i in range(len(people))])
    before = gallery.match_many(queries)
    assert sum(m.customer_id is not None for m in before) == len(who)
    counts = gallery.store.counts()
    assert counts["customers"] == len(who) and counts["embeddings"] == gallery.num_embeddings
    gallery.store.close()

    restarted = FaceGallery(cfg, store=backend.open(128))
    assert restarted.customers() == gallery.customers()  # same order too
    assert restarted.num_embeddings == gallery.num_embeddings
    after = restarted.match_many(queries)
    assert [m.customer_id for m in after] == [m.customer_id for m in before]
    np.testing.assert_allclose([m.similarity for m in after], [m.similarity for m in before], atol=1e-6)
    for cid in who.values():
        for a, b in zip(restarted.embeddings_of(cid), gallery.embeddings_of(cid)):
            np.testing.assert_array_equal(a, b)


# -- PostgreSQL specifics ---------------------------------------------------------------------------


def test_tables_columns_and_storage(pg_schema: str, pg_dsn: str) -> None:
    s = PostgresGalleryStore(pg_dsn, dim=DIM)
    try:
        assert s.dim == DIM and "password=***" in repr(s)  # the DSN's password is redacted
        s.add_customer("a", 1)
        vec = unit(np.random.default_rng(6), 1)[0]
        rid = s.add_embedding("a", 2, vec)
        with admin() as c:
            tables = {r[0] for r in c.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (pg_schema,))}
            assert tables == {"gallery_meta", "gallery_customers", "gallery_embeddings", "gallery_visits",
                              "gallery_track_decisions"}
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            assert dict(c.execute("SELECT key, value FROM gallery_meta").fetchall()) == {"dim": str(DIM), "layout": "2"}
            assert c.execute("SELECT octet_length(vector), vector FROM gallery_embeddings WHERE id = %s",
                             (rid,)).fetchone() == (4 * DIM, vec.astype("<f4").tobytes())
            with pytest.raises(psycopg.errors.CheckViolation):  # no vector of another size gets in
                c.execute("INSERT INTO gallery_embeddings (customer_id, ts_ms, vector) VALUES ('a', 3, %s)",
                          (b"\0" * 4 * (DIM + 1),))
    finally:
        s.close()


def test_schema_argument_creates_and_uses_its_schema() -> None:
    name = f"test_gallery_{uuid.uuid4().hex[:12]}"
    try:
        with PostgresGalleryStore(PG_DSN, dim=DIM, schema=name) as s:
            s.add_customer("a", 1)
        with psycopg.connect(schema_dsn(name), autocommit=True) as c:
            assert c.execute("SELECT customer_id FROM gallery_customers").fetchall() == [("a",)]
        with PostgresGalleryStore(schema_dsn(name), dim=DIM) as s:  # the same tables through the search_path
            assert list(s.customers()) == [("a", 1)]
    finally:
        with admin() as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_concurrent_creators_do_not_fail(pg_schema: str, pg_dsn: str) -> None:
    n = 6
    barrier = threading.Barrier(n)
    stores: list[PostgresGalleryStore] = []
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            barrier.wait()
            stores.append(PostgresGalleryStore(pg_dsn, dim=DIM))
        except BaseException as exc:  # pragma: no cover (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(stores) == n
        stores[0].add_customer("a", 0)
        assert all(s.customer_exists("a") for s in stores)
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM gallery_meta").fetchone() == (2,)
    finally:
        for s in stores:
            s.close()


def test_one_store_shared_by_threads(pg_dsn: str) -> None:
    store = PostgresGalleryStore(pg_dsn, dim=128)
    gallery = FaceGallery(GalleryConfig(), store=store)
    tracker = VisitTracker(store, gap_ms=MIN)
    people = unit(np.random.default_rng(7), 80, 128)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(k, len(people), 8):
                cid = gallery.enroll_or_match(people[i], T0 + i).customer_id
                tracker.observe(cid, T0 + i, f"cam-{k}")
                tracker.observe(cid, T0 + i + 2 * MIN, f"cam-{k}")
                store.list_customers(returning=True, limit=5)
                list(store.embeddings())
        except BaseException as exc:  # pragma: no cover (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert store.counts() == {"customers": 80, "embeddings": 80, "visits": 160}
        total, page = store.list_customers(returning=True, limit=100)
        assert total == 80 and all(c.visits == 2 and len(c.cameras) == 1 for c in page)
    finally:
        store.close()


def test_embeddings_stream_in_batches(pg_dsn: str) -> None:
    v = unit(np.random.default_rng(8), 25)
    s = PostgresGalleryStore(pg_dsn, dim=DIM, batch_size=4)
    try:
        s.add_customers([(f"c{i}", i) for i in range(10)])
        ids = s.add_embeddings([(f"c{i % 10}", i, v[i]) for i in range(25)])
        s.remove_embeddings(ids[3:9])
        got = list(s.embeddings())
        assert [r[0] for r in got] == ids[:3] + ids[9:]
        np.testing.assert_array_equal(np.stack([r[3] for r in got]), np.concatenate([v[:3], v[9:]]))
        assert list(s.customers()) == [(f"c{i}", i) for i in range(10)]
        assert FaceGallery(GalleryConfig(dim=DIM), store=s).num_embeddings == 19
    finally:
        s.close()


def vacuum_count(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT pg_stat_clear_snapshot()")
        row = c.execute("SELECT vacuum_count FROM pg_stat_user_tables "
                        "WHERE relname = 'gallery_embeddings' AND schemaname = current_schema()").fetchone()
        return int(row[0])


def test_erasure_vacuums_the_gallery_tables(pg_dsn: str) -> None:
    v = unit(np.random.default_rng(9), 4)
    s = PostgresGalleryStore(pg_dsn, dim=DIM)
    try:
        s.add_customers([("a", 0), ("b", 0), ("c", 0)])
        s.add_embeddings([("a", 0, v[0]), ("b", 0, v[1]), ("c", 5, v[2])])
        before = vacuum_count(pg_dsn)
        assert s.delete_customer("nobody") is False
        assert vacuum_count(pg_dsn) == before  # nothing erased, nothing to vacuum
        assert s.delete_customer("a") is True
        deadline = time.monotonic() + 5
        while vacuum_count(pg_dsn) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vacuum_count(pg_dsn) == before + 1
        assert s.purge_older_than(1) == (1, 1, 0)
        while vacuum_count(pg_dsn) == before + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vacuum_count(pg_dsn) == before + 2
        s.vacuum_after_erase = False
        assert s.delete_customer("c") is True
        time.sleep(0.2)
        assert vacuum_count(pg_dsn) == before + 2
    finally:
        s.close()


def test_reconnects_after_the_server_drops_the_connection(pg_dsn: str) -> None:
    v = unit(np.random.default_rng(10), 6)
    s = PostgresGalleryStore(pg_dsn, dim=DIM)

    def drop() -> None:
        with admin() as c:
            assert c.execute("SELECT pg_terminate_backend(%s)", (s._conn.info.backend_pid,)).fetchone() == (True,)
        time.sleep(0.1)

    try:
        s.add_customer("a", 0)
        ids: list[int] = []
        steps = [
            lambda: s.add_customer("b", 1),
            lambda: ids.append(s.add_embedding("a", 1, v[0])),
            lambda: ids.extend(s.add_embeddings([("a", 2, v[1]), ("b", 3, v[2])])),
            lambda: s.save_visit(Visit("a", 1, 5, 6, ("door",))),
            lambda: s.replace_embedding(ids[0], 7, v[3]),
            lambda: s.list_customers(),
            lambda: list(s.embeddings()),
            lambda: s.delete_customer("b"),
        ]
        for step in steps:  # each call reconnects and retries once
            drop()
            step()
        assert s.counts() == {"customers": 1, "embeddings": 2, "visits": 1}
        assert [(cid, ts) for _, cid, ts, _ in s.embeddings()] == [("a", 7), ("a", 2)]
    finally:
        s.close()


def test_retried_inserts_are_not_applied_twice(pg_dsn: str) -> None:
    """The retry paths used after a lost connection, when the first attempt had committed."""
    v = unit(np.random.default_rng(12), 3)
    s = PostgresGalleryStore(pg_dsn, dim=DIM)
    try:
        calls: list[str] = []
        real_run = s._run

        def run_twice(fn, retry=None):  # the first attempt commits, then "the connection is lost"
            real_run(fn)
            calls.append("retry" if retry is not None else "again")
            return real_run(retry or fn)

        s._run = run_twice  # type: ignore[method-assign]
        s.add_customer("a", 0)
        s.add_customers([("b", 0), ("c", 0)])
        ids = s.add_embeddings([("a", 1, v[0]), ("b", 2, v[1])])
        rid = s.add_embedding("c", 3, v[2])
        s._run = real_run  # type: ignore[method-assign]
        assert "retry" in calls
        assert s.counts() == {"customers": 3, "embeddings": 3, "visits": 0}
        assert [r[0] for r in s.embeddings()] == ids + [rid]
    finally:
        s.close()


def test_closed_store_and_unreachable_server() -> None:
    with private_schema() as name:
        s = PostgresGalleryStore(schema_dsn(name), dim=DIM)
        s.close()
        s.close()
        with pytest.raises(StorageError, match="closed"):
            s.counts()
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="cannot connect") as info:
        PostgresGalleryStore("postgresql://storelens:s3cret@127.0.0.1:1/storelens", connect_timeout_s=2)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    assert time.monotonic() - t0 < 10


def test_rebuild_of_a_large_gallery_is_fast(pg_dsn: str) -> None:
    """100k 128-d embeddings: written with COPY, streamed back in batches; the exact index is rebuilt."""
    n = 100_000
    x = unit(np.random.default_rng(13), n, 128)
    cids = [f"c{i // 2}" for i in range(n)]
    cfg = GalleryConfig(approximate_from=10**9)  # exact index: time the store, not IVF training
    store = PostgresGalleryStore(pg_dsn, dim=128)
    try:
        FaceGallery(cfg, store=store).bulk_load(cids, x, np.arange(n))
        t0 = time.perf_counter()
        rows = list(store.embeddings())
        streamed = time.perf_counter() - t0
        t0 = time.perf_counter()
        gallery = FaceGallery(cfg, store=store)
        started = time.perf_counter() - t0
        assert len(rows) == gallery.num_embeddings == n and len(gallery) == n // 2
        assert [m.customer_id for m in gallery.match_many(x[:50])] == cids[:50]
        assert streamed < 5, streamed
        assert started < 15, started
    finally:
        store.close()


# -- real faces over PostgreSQL -------------------------------------------------------------------


@needs_faces
def test_real_faces_rebuild_from_postgres_with_the_same_matches(pg_dsn: str, faces) -> None:  # noqa: F811
    store = PostgresGalleryStore(pg_dsn)
    gallery = FaceGallery(LEARN_EVERY_MATCH, store=store)
    visits = VisitTracker(store, gap_ms=30 * MIN)
    cust = enroll_all(gallery, faces, visits)
    before = {k: gallery.match(f.vec) for k, f in faces.items()}
    store.close()

    store2 = PostgresGalleryStore(pg_dsn)
    restarted = FaceGallery(GalleryConfig(), store=store2)
    try:
        assert restarted.customers() == gallery.customers()
        assert restarted.num_embeddings == gallery.num_embeddings == len(faces)
        for k, f in faces.items():
            cid, sim = restarted.match(f.vec)
            assert cid == before[k].customer_id and sim == pytest.approx(before[k].similarity, abs=1e-6)
        total, page = store2.list_customers()
        assert total == 6 and {c.customer_id for c in page} == set(cust.values())
        # erasure: Obama is gone from the tables and from a gallery rebuilt afterwards
        obama = cust["obama"]
        assert restarted.delete(obama) is True
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            for table in ("gallery_customers", "gallery_embeddings", "gallery_visits"):
                assert c.execute(sql.SQL("SELECT count(*) FROM {} WHERE customer_id = %s").format(
                    sql.Identifier(table)), (obama,)).fetchone() == (0,)
        fresh = FaceGallery(GalleryConfig(), store=store2)
        for f in faces.values():
            cid, sim = fresh.match(f.vec)
            if f.label == "obama":
                assert cid is None and sim < THRESHOLD
            else:
                assert cid == cust[f.label]
    finally:
        store2.close()


# -- docs -------------------------------------------------------------------------------------------


def test_doctests(pg_dsn: str) -> None:
    for module, globs in ((storelens.backends.face_index, {}), (storelens.storage.gallery, {"dsn": pg_dsn})):
        result = doctest.testmod(module, extraglobs=globs, optionflags=doctest.ELLIPSIS, report=True)
        assert result.attempted > 0, module.__name__
        assert result.failed == 0, f"{result.failed} doctest example(s) failed in {module.__name__}"
