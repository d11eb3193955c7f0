"""Face history in both storages: track attributes, customer matches, demographics, erasure.

Every contract test runs twice, on a real SQLite file and on the real
PostgreSQL of ``scripts/stack.sh`` (``STORELENS_PG_DSN``; a fresh schema per
test, dropped afterwards; no server is a failure, never a skip).
"""
from __future__ import annotations

import doctest
import math
import os
import pathlib
import sqlite3
import uuid
from typing import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import storelens.storage
from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent, crossing_event_id
from storelens.storage import AGE_BAND_KEYS, EMOTION_KEYS, GENDER_KEYS, SqliteStorage, age_band
from storelens.storage import SCHEMA_VERSION as SQLITE_VERSION
from storelens.storage import SCHEMA_VERSION as PG_VERSION
from storelens.storage import PostgresStorage
from test_storage_migrations import POSTGRES_HISTORY as PG_MIGRATIONS  # the DDL of the releases before Alembic
from test_storage_migrations import SQLITE_HISTORY as SQLITE_MIGRATIONS

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
CAM = "cam-1"
T0 = 1_767_225_600_000


def attrs(track_id: int, last_seq: int, *, cam: str = CAM, last_ts: int = T0, n_faces: int = 3,
          age: float | None = None, gender: str = "unknown", emotion: str = "unknown", **kw: object
          ) -> m.TrackAttributes:
    a = m.TrackAttributes(camera_id=cam, track_id=track_id, first_ts_ms=last_ts - 1_000, last_ts_ms=last_ts,
                          last_seq=last_seq, n_faces=n_faces, n_used=n_faces, gender=m.gender_value(gender),
                          emotion=m.emotion_value(emotion), **kw)
    if age is not None:
        a.age_years = age
    return a


def match(customer_id: str, track_id: int, ts_ms: int, *, cam: str = CAM, **kw: object) -> m.CustomerMatch:
    return m.CustomerMatch(event_id=f"{cam}:{track_id}", camera_id=cam, track_id=track_id, seq=ts_ms // 40,
                           ts_ms=ts_ms, customer_id=customer_id, **kw)


# -- backends ---------------------------------------------------------------------------


def pg_admin() -> psycopg.Connection:
    return psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    name = f"test_faces_{uuid.uuid4().hex[:12]}"
    yield name
    with pg_admin() as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[SqliteStorage | PostgresStorage]:
    if request.param == "sqlite":
        s: SqliteStorage | PostgresStorage = SqliteStorage(str(tmp_path / "faces.db"))
    else:
        s = PostgresStorage(PG_DSN, schema=request.getfixturevalue("pg_schema"))
    yield s
    s.close()


def stored(store: SqliteStorage | PostgresStorage, track_id: int, cam: str = CAM) -> dict | None:
    """The stored attributes of a track, read back through a match of customer ``probe``."""
    store.write_customer_matches([match("probe", track_id, T0, cam=cam)])
    (t,) = [t for t in store.customer_tracks("probe") if (t["camera_id"], t["track_id"]) == (cam, track_id)]
    return t["attributes"]


# -- track attributes ---------------------------------------------------------------------


@pytest.mark.parametrize(("batches", "want_seq", "want_age"), [
    pytest.param([[(5, 30.0)], [(9, 40.0)]], 9, 40.0, id="newer-replaces"),
    pytest.param([[(9, 40.0)], [(5, 30.0)]], 9, 40.0, id="older-ignored"),
    pytest.param([[(9, 40.0)], [(9, 41.0)]], 9, 41.0, id="same-seq-replaces"),
    pytest.param([[(5, 30.0), (9, 40.0), (7, 35.0)]], 9, 40.0, id="out-of-order-in-one-batch"),
    pytest.param([[(5, 30.0), (5, 30.0)], [(5, 30.0)]], 5, 30.0, id="redelivered"),
])
def test_track_attributes_upsert_keeps_highest_last_seq(store, batches, want_seq, want_age) -> None:
    for batch in batches:
        store.write_track_attributes([attrs(7, seq, age=age) for seq, age in batch])
    a = stored(store, 7)
    assert a is not None and (a["last_seq"], a["age_years"]) == (want_seq, want_age)
    assert store.demographics()["tracks"] == 1  # one row per (camera, track), whatever was redelivered


def test_track_attributes_key_is_camera_and_track(store) -> None:
    store.write_track_attributes([attrs(7, 1, age=20.0), attrs(7, 1, cam="cam-2", age=70.0), attrs(8, 1)])
    assert stored(store, 7)["age_band"] == "18-24"  # type: ignore[index]
    assert stored(store, 7, cam="cam-2")["age_band"] == "65+"  # type: ignore[index]
    assert store.demographics()["tracks"] == 3


def test_track_attributes_roundtrip_every_field(store) -> None:
    full = attrs(1, 12, age=31.5, gender="female", emotion="happy", gender_confidence=0.875,
                 emotion_confidence=0.625, n_rejected=2, attention_share=0.5, final=True)
    full.age_low_years, full.age_high_years, full.n_used = 27.0, 36.0, 2
    bare = m.TrackAttributes(camera_id=CAM, track_id=2, first_ts_ms=5, last_ts_ms=6, last_seq=1,
                             age_years=math.nan)  # unspecified enums, NaN and unset optionals
    store.write_track_attributes([full, bare])
    assert stored(store, 1) == {
        "first_ts_ms": T0 - 1_000, "last_ts_ms": T0, "last_seq": 12, "n_faces": 3, "n_used": 2, "n_rejected": 2,
        "age_years": 31.5, "age_low_years": 27.0, "age_high_years": 36.0, "age_band": "25-34",
        "gender": "female", "gender_confidence": 0.875, "emotion": "happy", "emotion_confidence": 0.625,
        "attention_share": 0.5, "final": True,
    }
    b = stored(store, 2)
    assert b is not None
    assert (b["age_years"], b["age_low_years"], b["attention_share"], b["age_band"]) == (None, None, None, "unknown")
    assert (b["gender"], b["emotion"], b["final"], b["n_faces"]) == ("unknown", "unknown", False, 0)


def test_empty_writes_are_noops(store) -> None:
    store.write_track_attributes([])
    store.write_customer_matches([])
    assert store.demographics()["tracks"] == 0 and store.customer_tracks("x") == []


# -- customer matches ---------------------------------------------------------------------


def test_customer_matches_upsert_by_event_id_and_tracks_oldest_first(store) -> None:
    store.write_track_attributes([attrs(1, 3, age=50.0, gender="male"), attrs(3, 1, cam="cam-2")])
    first = match("c1", 1, T0 + 100, similarity=0.0, is_new=True, visit_no=1)
    later = match("c1", 3, T0 + 50_000, cam="cam-2", similarity=0.75, returning=True, visit_no=2)
    store.write_customer_matches([later, first, match("c2", 2, T0)])
    store.write_customer_matches([first, later])  # redelivery: no duplicate
    tracks = store.customer_tracks("c1")
    assert [(t["camera_id"], t["track_id"]) for t in tracks] == [(CAM, 1), ("cam-2", 3)]
    assert {k: v for k, v in tracks[0].items() if k != "attributes"} == {
        "event_id": "cam-1:1", "camera_id": CAM, "track_id": 1, "seq": (T0 + 100) // 40, "ts_ms": T0 + 100,
        "similarity": 0.0, "is_new": True, "returning": False, "visit_no": 1,
    }
    assert (tracks[0]["attributes"]["gender"], tracks[0]["attributes"]["age_band"]) == ("male", "45-54")
    assert (tracks[1]["similarity"], tracks[1]["returning"], tracks[1]["visit_no"]) == (0.75, True, 2)
    # An upsert replaces the stored match (same event id).
    store.write_customer_matches([match("c1", 1, T0 + 100, similarity=0.5, is_new=True, visit_no=1)])
    assert store.customer_tracks("c1")[0]["similarity"] == 0.5
    # A track without attributes (yet) is still listed.
    assert [t["attributes"] for t in store.customer_tracks("c2")] == [None]
    assert store.customer_tracks("nobody") == []


# -- demographics -----------------------------------------------------------------------------


@pytest.mark.parametrize(("age", "band"), [
    (0.0, "0-17"), (17.9, "0-17"), (18.0, "18-24"), (24.9, "18-24"), (25.0, "25-34"), (34.5, "25-34"),
    (35.0, "35-44"), (44.9, "35-44"), (45.0, "45-54"), (55.0, "55-64"), (64.9, "55-64"), (65.0, "65+"),
    (101.0, "65+"), (None, "unknown"),
])
def test_demographics_age_bands(store, age: float | None, band: str) -> None:
    store.write_track_attributes([attrs(1, 1, age=age)])
    d = store.demographics()
    assert d["age"] == {k: int(k == band) for k in AGE_BAND_KEYS}
    assert age_band(age) == band  # the SQL bands and the Python ones agree


def test_demographics_gender_and_emotion_counts(store) -> None:
    store.write_track_attributes([
        attrs(1, 1, gender="female", emotion="happy"), attrs(2, 1, gender="female", emotion="neutral"),
        attrs(3, 1, gender="male", emotion="happy"), attrs(4, 1),
        m.TrackAttributes(camera_id=CAM, track_id=5, last_ts_ms=T0, last_seq=1, n_faces=1),  # unspecified enums
    ])
    d = store.demographics()
    assert d["tracks"] == 5
    assert d["gender"] == {"female": 2, "male": 1, "unknown": 2}
    assert list(d["gender"]) == list(GENDER_KEYS)
    assert list(d["emotion"]) == list(EMOTION_KEYS) == ["angry", "disgust", "fear", "happy", "sad", "surprise",
                                                        "neutral", "unknown"]
    assert d["emotion"] == {**dict.fromkeys(EMOTION_KEYS, 0), "happy": 2, "neutral": 1, "unknown": 2}


@pytest.mark.parametrize(("camera_id", "start_ms", "end_ms", "tracks"), [
    (None, None, None, [1, 2, 3, 4]),
    (CAM, None, None, [1, 2, 3]),
    ("cam-2", None, None, [4]),
    ("cam-9", None, None, []),
    (None, T0 + 1_000, None, [2, 3, 4]),  # start inclusive
    (None, None, T0 + 1_000, [1]),  # end exclusive
    (CAM, T0 + 1_000, T0 + 2_000, [2]),
    (None, T0 + 10_000, T0 + 20_000, []),
])
def test_demographics_filters(store, camera_id, start_ms, end_ms, tracks: list[int]) -> None:
    # The age encodes the track (track n is 10n years old) so the bands tell which tracks were counted.
    store.write_track_attributes([
        attrs(1, 1, last_ts=T0, age=10.0), attrs(2, 1, last_ts=T0 + 1_000, age=20.0),
        attrs(3, 1, last_ts=T0 + 2_000, age=30.0), attrs(4, 1, cam="cam-2", last_ts=T0 + 1_500, age=40.0),
        attrs(5, 1, last_ts=T0 + 1_000, n_faces=0),  # no face: never counted
    ])
    d = store.demographics(camera_id, start_ms, end_ms)
    assert (d["camera_id"], d["start_ms"], d["end_ms"]) == (camera_id, start_ms, end_ms)
    assert d["tracks"] == len(tracks) == sum(d["age"].values()) == sum(d["gender"].values())
    assert d["age"] == {k: int(k in {age_band(10.0 * t) for t in tracks}) for k in AGE_BAND_KEYS}


# -- erasure ---------------------------------------------------------------------------------


def test_erase_customer_deletes_only_its_rows(store) -> None:
    store.write_track_attributes([attrs(1, 1, age=30.0), attrs(2, 1), attrs(3, 1)])
    store.write_customer_matches([match("c1", 1, T0), match("c1", 2, T0 + 1), match("c2", 3, T0)])
    assert store.erase_customer("c1") == 4  # its 2 matches and the attributes of its 2 tracks
    assert store.erase_customer("c1") == 0  # idempotent
    assert store.erase_customer("nobody") == 0
    assert store.customer_tracks("c1") == []
    assert [t["track_id"] for t in store.customer_tracks("c2")] == [3]
    assert store.demographics()["tracks"] == 1  # the other customer's track stays
    store.write_customer_matches([match("c1", 1, T0)])  # the erased track's late match is not stored again
    assert store.customer_tracks("c1") == []
    store.write_customer_matches([match("c1", 4, T0)])  # a later match of the id, another track, is stored
    assert len(store.customer_tracks("c1")) == 1


# -- migrations --------------------------------------------------------------------------------


def test_sqlite_upgrades_a_version_1_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as raw:
        for stmt in SQLITE_MIGRATIONS[0]:
            raw.execute(stmt)
        raw.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        raw.execute("INSERT INTO schema_version VALUES (1)")
        raw.execute("INSERT INTO crossings VALUES ('e1', 'cam-1', 'door', 1, 'in', 1000, 25)")
    raw.close()
    with SqliteStorage(str(path)) as s:
        assert s.schema_version() == SQLITE_VERSION >= 2
        assert s.line_totals(CAM) == {"door": {"in": 1, "out": 0}}
        s.write_track_attributes([attrs(1, 1, age=30.0)])
        assert s.demographics()["age"]["25-34"] == 1


def test_postgres_upgrades_a_version_1_schema(pg_schema: str) -> None:
    with psycopg.connect(make_conninfo(PG_DSN, options=f"-c search_path={pg_schema}"), autocommit=True) as c:
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
        for stmt in PG_MIGRATIONS[0]:
            c.execute(stmt)  # type: ignore[arg-type]
        c.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        c.execute("INSERT INTO schema_version VALUES (1)")
        c.execute("INSERT INTO crossings VALUES ('e1', 'cam-1', 'door', 1, 'in', 1000, 25)")
    with PostgresStorage(PG_DSN, schema=pg_schema) as s:
        assert s.schema_version() == PG_VERSION >= 2
        assert s.line_totals(CAM) == {"door": {"in": 1, "out": 0}}
        s.write_track_attributes([attrs(1, 1, age=30.0)])
        assert s.demographics()["age"]["25-34"] == 1
    with psycopg.connect(make_conninfo(PG_DSN, options=f"-c search_path={pg_schema}"), autocommit=True) as c:
        indexes = {r[0] for r in c.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (pg_schema,))}
    assert {"track_attributes_by_time", "customer_matches_by_customer"} <= indexes


# -- PostgreSQL write_batch ------------------------------------------------------------------


def test_postgres_write_batch_with_faces_is_one_idempotent_transaction(pg_schema: str) -> None:
    with PostgresStorage(PG_DSN, schema=pg_schema) as s:
        batch = {"track_attributes": [attrs(1, 1, age=20.0), attrs(1, 4, age=22.0), attrs(1, 2, age=21.0)],
                 "customer_matches": [match("c1", 1, T0)]}
        bad = CrossingEvent("bad", CAM, "door", 9, "sideways", 5_000, 1)  # type: ignore[arg-type]
        with pytest.raises(psycopg.IntegrityError):  # all or nothing
            s.write_batch(crossings=[bad], **batch)
        assert s.customer_tracks("c1") == [] and s.demographics()["tracks"] == 0
        good = CrossingEvent(crossing_event_id(CAM, "door", 1, 25), CAM, "door", 1, "in", T0, 25)
        assert s.write_batch(crossings=[good], **batch) == 1
        assert s.write_batch(crossings=[good], **batch) == 0  # redelivered
        assert s.write_batch(track_attributes=[attrs(1, 3, age=60.0)]) == 0  # older summary: ignored
        (t,) = s.customer_tracks("c1")
        assert (t["attributes"]["last_seq"], t["attributes"]["age_years"]) == (4, 22.0)
        assert s.demographics()["tracks"] == 1


def test_storage_doctests() -> None:
    result = doctest.testmod(storelens.storage, optionflags=doctest.ELLIPSIS, report=True)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} doctest example(s) failed (see captured stdout)"


def test_pg_match_of_an_erased_customer_is_not_stored(pg_schema):
    """A customer-match that arrives after the customer was erased from the gallery (same database) is dropped."""
    from storelens.storage.gallery import PostgresGalleryStore

    with PostgresStorage(PG_DSN, schema=pg_schema) as s, PostgresGalleryStore(PG_DSN, dim=4, schema=pg_schema) as gallery:
        gallery.add_customer("cust-kept", 1)
        s.write_customer_matches([
            m.CustomerMatch(event_id="e1", camera_id="cam-1", track_id=1, customer_id="cust-kept", ts_ms=5),
            m.CustomerMatch(event_id="e2", camera_id="cam-1", track_id=2, customer_id="cust-erased", ts_ms=6)])
        assert [t["track_id"] for t in s.customer_tracks("cust-kept")] == [1]
        assert s.customer_tracks("cust-erased") == []
