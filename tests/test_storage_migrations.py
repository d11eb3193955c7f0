"""Alembic migrations: a database written by the release before them opens in place, with its rows.

The old releases' DDL is kept verbatim under ``tests/data/legacy_schema`` (taken
from the hand-written migration lists they shipped). Every test runs on a real
SQLite file and on the real PostgreSQL of ``scripts/stack.sh`` (a fresh schema
per test, dropped afterwards).
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import uuid
from typing import Any, Iterator

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from psycopg.conninfo import make_conninfo

from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent
from storelens.errors import StorageError
from storelens.storage import SCHEMA_VERSION, SqlGalleryStore, SqlStorage
from storelens.storage.migrations import revisions
from storelens.storage.schema import HISTORY_TABLES, POSTGRES_GALLERY, SQLITE_GALLERY

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")
LEGACY = pathlib.Path(__file__).parent / "data" / "legacy_schema"
DIM = 4


def legacy(name: str, dim: int = DIM) -> list[str]:
    """The statements of one legacy DDL file."""
    text = "\n".join(line for line in (LEGACY / f"{name}.sql").read_text().splitlines() if not line.startswith("--"))
    return [s.strip().replace("{vector_bytes}", str(4 * dim)) for s in text.split(";\n") if s.strip()]


#: The hand-written migrations of the history store before Alembic, per backend: ``[i]`` = version ``i + 1``.
SQLITE_HISTORY = (legacy("sqlite_history_v1"), legacy("sqlite_history_v2"))
POSTGRES_HISTORY = (legacy("postgres_history_v1"), legacy("postgres_history_v2"))

HISTORY_ROWS = [
    "INSERT INTO track_points VALUES ('cam-1', 25, 7, 1000, 10.0, 20.0, 50.0, 120.0, 0.5)",
    "INSERT INTO crossings VALUES ('e1', 'cam-1', 'door', 7, 'in', 1000, 25)",
    "INSERT INTO occupancy VALUES ('cam-1', 1000, 1, 1, 0)",
    "INSERT INTO count_windows VALUES ('cam-1', 'door', 0, 60000, 1, 0)",
    "INSERT INTO track_attributes VALUES ('cam-1', 7, 900, 1000, 25, 3, 3, 0, 30.5, 28.0, 33.0, 'female', 0.9,"
    " 'happy', 0.8, 0.25, {true})",
    "INSERT INTO customer_matches VALUES ('m1', 'cam-1', 7, 25, 1000, 'cust-1', 0.95, {true}, {false}, 1)",
]
VEC = np.array([1, 0, 0, 0], "<f4")


def gallery_rows(p: str) -> list[tuple[str, tuple]]:
    return [
        (f"INSERT INTO {p}meta (key, value) VALUES ('dim', ?)", (str(DIM),)),
        (f"INSERT INTO {p}customers (customer_id, created_ts_ms) VALUES ('cust-1', 500)", ()),
        (f"INSERT INTO {p}embeddings (customer_id, ts_ms, vector) VALUES ('cust-1', 900, ?)", (VEC.tobytes(),)),
    ]


@pytest.fixture
def pg_schema() -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@contextlib.contextmanager
def pg(schema: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(make_conninfo(PG_DSN, options=f"-c search_path={schema}"), autocommit=True) as c:
        yield c


def write_legacy_sqlite(tmp_path: pathlib.Path) -> tuple[str, str]:
    """A history file and a gallery file as the release before Alembic wrote them, with rows."""
    history, gallery = str(tmp_path / "old.db"), str(tmp_path / "old.db.gallery.db")
    with contextlib.closing(sqlite3.connect(history)) as c, c:
        for stmt in [*SQLITE_HISTORY[0], *SQLITE_HISTORY[1]]:
            c.execute(stmt)
        c.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        c.execute("INSERT INTO schema_version VALUES (2)")
        for stmt in HISTORY_ROWS:
            c.execute(stmt.format(true=1, false=0))
    with contextlib.closing(sqlite3.connect(gallery)) as c, c:
        c.executescript(";\n".join(legacy("sqlite_gallery")))
        for stmt, params in gallery_rows(""):
            c.execute(stmt, params)
        c.execute("INSERT INTO visits VALUES ('cust-1', 1, 900, 1000, '[\"door\"]')")
    return history, gallery


def write_legacy_postgres(schema: str) -> None:
    with pg(schema) as c:
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for stmt in [*POSTGRES_HISTORY[0], *POSTGRES_HISTORY[1], *legacy("postgres_gallery")]:
            c.execute(stmt)  # type: ignore[arg-type]
        c.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        c.execute("INSERT INTO schema_version VALUES (2)")
        for stmt in HISTORY_ROWS:
            c.execute(stmt.format(true="true", false="false"))  # type: ignore[arg-type]
        c.execute("INSERT INTO gallery_meta VALUES ('layout', '1')")
        for stmt, params in gallery_rows("gallery_"):
            c.execute(stmt.replace("?", "%s"), params)  # type: ignore[arg-type]
        c.execute("INSERT INTO gallery_visits VALUES ('cust-1', 1, 900, 1000, ARRAY['door'])")


def check_rows(history: SqlStorage, gallery: SqlGalleryStore) -> None:
    assert history.schema_version() == SCHEMA_VERSION >= 3  # upgraded in place to the newest
    assert [(p.track_id, p.points[0].bbox_xyxy) for p in history.tracks("cam-1", 0, 2000)] == [(7, (10, 20, 50, 120))]
    assert history.crossings("cam-1", 0, 2000) == [CrossingEvent("e1", "cam-1", "door", 7, "in", 1000, 25)]
    assert history.occupancy("cam-1") == m.OccupancyUpdate(camera_id="cam-1", ts_ms=1000, occupancy=1, total_in=1)
    (track,) = history.customer_tracks("cust-1")
    assert (track["similarity"], track["is_new"], track["returning"]) == (0.95, True, False)
    assert track["attributes"]["age_band"] == "25-34" and track["attributes"]["final"] is True
    assert history.demographics()["gender"]["female"] == 1
    assert history.write_crossings([CrossingEvent("e1", "cam-1", "door", 7, "in", 1000, 25)]) == 0
    assert list(gallery.customers()) == [("cust-1", 500)]
    ((rid, cid, ts, vec),) = list(gallery.embeddings())
    assert (cid, ts) == ("cust-1", 900) and vec.tobytes() == VEC.tobytes()
    assert [v.cameras for v in gallery.visits("cust-1")] == [("door",)]
    assert gallery.add_embedding("cust-1", 950, VEC) > rid  # ids keep growing after the old rows
    assert gallery.counts() == {"customers": 1, "embeddings": 2, "visits": 1}


def test_sqlite_files_of_the_previous_release_open_in_place(tmp_path: pathlib.Path) -> None:
    history, gallery = write_legacy_sqlite(tmp_path)
    with SqlStorage(history) as h, SqlGalleryStore(gallery, dim=DIM) as g:
        check_rows(h, g)
    with contextlib.closing(sqlite3.connect(gallery)) as c:
        assert dict(c.execute("SELECT key, value FROM meta")) == {"dim": str(DIM), "layout": "2"}


def test_postgres_schema_of_the_previous_release_opens_in_place(pg_schema: str) -> None:
    write_legacy_postgres(pg_schema)
    with SqlStorage(PG_DSN, schema=pg_schema) as h, SqlGalleryStore(PG_DSN, dim=DIM, schema=pg_schema) as g:
        check_rows(h, g)
    with pg(pg_schema) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def foreign_keys(engine: sa.Engine, insp: Any, table: str, schema: str | None) -> list[tuple]:
    if engine.dialect.name == "sqlite":  # (SQLAlchemy does not reflect ON DELETE of an inline REFERENCES)
        with engine.connect() as c:
            rows = c.exec_driver_sql(f"PRAGMA foreign_key_list({table})").all()
        return sorted(((r.__getattribute__("from"),), r.table, r.on_delete) for r in rows)
    return sorted((tuple(f["constrained_columns"]), f["referred_table"], f["options"].get("ondelete"))
                  for f in insp.get_foreign_keys(table, schema=schema))


def describe(engine: sa.Engine, schema: str | None = None) -> dict[str, Any]:
    """Tables -> columns (type, nullable), primary key, indexes, foreign keys and checks, as the database has them."""
    insp = sa.inspect(engine)
    out = {}
    for t in insp.get_table_names(schema=schema):
        out[t] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t, schema=schema)],
            "pk": insp.get_pk_constraint(t, schema=schema)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in insp.get_indexes(t, schema=schema)),
            "fks": foreign_keys(engine, insp, t, schema),
            "checks": sorted(c["sqltext"] for c in insp.get_check_constraints(t, schema=schema)),
        }
    return out


def test_fresh_and_upgraded_sqlite_databases_are_the_same(tmp_path: pathlib.Path) -> None:
    old_history, old_gallery = write_legacy_sqlite(tmp_path)
    (tmp_path / "new").mkdir()
    new_history, new_gallery = str(tmp_path / "new" / "h.db"), str(tmp_path / "new" / "g.db")
    for history, gallery in ((old_history, old_gallery), (new_history, new_gallery)):
        SqlStorage(history).close()
        SqlGalleryStore(gallery, dim=DIM).close()
    for old, new in ((old_history, new_history), (old_gallery, new_gallery)):
        assert describe(sa.create_engine(f"sqlite:///{old}")) == describe(sa.create_engine(f"sqlite:///{new}"))
    assert set(describe(sa.create_engine(f"sqlite:///{new_gallery}"))) - {"sqlite_sequence"} == {
        t.name for t in SQLITE_GALLERY}


def test_fresh_and_upgraded_postgres_schemas_are_the_same(pg_schema: str) -> None:
    write_legacy_postgres(pg_schema)
    fresh = f"{pg_schema}_new"
    try:
        for schema in (pg_schema, fresh):
            SqlStorage(PG_DSN, schema=schema).close()
            SqlGalleryStore(PG_DSN, dim=DIM, schema=schema).close()
        engine = sa.create_engine(PG_DSN.replace("postgresql://", "postgresql+psycopg://", 1))
        old, new = describe(engine, pg_schema), describe(engine, fresh)
        assert old == new
        assert set(new) == {"schema_version"} | {t.name for t in (*HISTORY_TABLES, *POSTGRES_GALLERY)}
        engine.dispose()
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(fresh)))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_schema_module_describes_the_migrated_tables(kind: str, tmp_path: pathlib.Path, pg_schema: str) -> None:
    """The tables the stores query (storelens.storage.schema) have exactly the migrated columns."""
    if kind == "sqlite":
        targets, engines = (str(tmp_path / "h.db"), str(tmp_path / "g.db")), None
        SqlStorage(targets[0]).close()
        SqlGalleryStore(targets[1], dim=DIM).close()
        found = {**describe(sa.create_engine(f"sqlite:///{targets[0]}")),
                 **describe(sa.create_engine(f"sqlite:///{targets[1]}"))}
        tables = (*HISTORY_TABLES, *SQLITE_GALLERY)
    else:
        SqlStorage(PG_DSN, schema=pg_schema).close()
        SqlGalleryStore(PG_DSN, dim=DIM, schema=pg_schema).close()
        engines = sa.create_engine(PG_DSN.replace("postgresql://", "postgresql+psycopg://", 1))
        found = describe(engines, pg_schema)
        engines.dispose()
        tables = (*HISTORY_TABLES, *POSTGRES_GALLERY)
    for t in tables:
        # (SQLite reports a one-column primary key of old as nullable: not compared)
        assert [(c[0], c[2] or c[0] in found[t.name]["pk"]) for c in found[t.name]["columns"]] == \
            [(c.name, c.nullable or c.primary_key) for c in t.c], t.name
        assert found[t.name]["pk"] == [c.name for c in t.primary_key], t.name


def test_revisions_are_numbered_per_chain() -> None:
    history = revisions("history")
    assert history[:3] == ("0001", "0002", "0004") and len(history) == SCHEMA_VERSION
    assert list(history) == sorted(history)  # numbered in the order they apply
    assert revisions("gallery") == ("0003", "0020")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_newer_gallery_is_refused(kind: str, tmp_path: pathlib.Path, pg_schema: str) -> None:
    target = str(tmp_path / "g.db") if kind == "sqlite" else make_conninfo(PG_DSN, options=f"-c search_path={pg_schema}")
    if kind == "postgres":
        with psycopg.connect(PG_DSN, autocommit=True) as c:
            c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    SqlGalleryStore(target, dim=DIM).close()
    meta = "meta" if kind == "sqlite" else "gallery_meta"
    if kind == "sqlite":
        with contextlib.closing(sqlite3.connect(target)) as c, c:
            c.execute(f"UPDATE {meta} SET value = '9' WHERE key = 'layout'")
    else:
        with pg(pg_schema) as c:
            c.execute(f"UPDATE {meta} SET value = '9' WHERE key = 'layout'")  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="newer"):
        SqlGalleryStore(target, dim=DIM)
