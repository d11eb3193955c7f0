"""Review fixes, seventh batch: online index builds in migration 0015, reopen attempts as a metric, the store's
occupancy row after an analytics restart.

Real components only: the PostgreSQL of ``scripts/stack.sh`` (a fresh schema per test), SQLite files, ...
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sqlite3
import threading
import time
import uuid
from typing import Iterable, Iterator

import psycopg
import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from psycopg import sql
from psycopg.conninfo import make_conninfo

from storelens.config import parse_config
from storelens.contract import messages as m
from storelens.contract import topics
from storelens.domain.counting import STORE_OCCUPANCY_ID
from storelens.runtime import workers
from storelens.storage import SCHEMA_VERSION, SqlStorage
from storelens.storage.migrations import _scripts, revisions
from test_analytics_app import BOOTSTRAP, REPO, Kafka, ServiceProc, box, frame, free_port, wait_until
from test_bus import _kafka_cfg
from test_runtime_readiness import _delete_topics, _metric, _run_ingest, _wait, needs_kafka
from test_runtime_readiness import started_runtime as started_runtime  # the fixture

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")

# -- 1. migration 0015 builds its indexes CONCURRENTLY on PostgreSQL ---------------------------------------------

#: Migration 0015's indexes: name -> table.
#: The history version of a store at revision 0014 (the history chain's revisions, 0003 is the gallery's).
BEFORE_0015 = revisions("history").index("0015")
INDEXES_0015 = {"customer_matches_by_time": "customer_matches", "track_summaries_by_last_ts": "track_summaries",
                "track_points_by_track": "track_points"}
ROWS = [
    "INSERT INTO track_points (camera_id, seq, track_id, ts_ms, x1, y1, x2, y2, confidence) "
    "SELECT 'cam-1', i, i % 50, 1000 * i, 1, 2, 3, 4, 0.5 FROM {series}",
    "INSERT INTO customer_matches (event_id, camera_id, track_id, seq, ts_ms, customer_id, similarity, is_new, "
    "is_returning, visit_no) "
    "SELECT 'm' || i, 'cam-1', i % 50, i, 1000 * i, 'c1', 0.9, {true}, {false}, 1 FROM {series}",
    "INSERT INTO track_summaries (camera_id, track_id, first_ts_ms, last_ts_ms, first_seq, last_seq, n_frames, "
    "first_x, first_y, last_x, last_y, zones, crossings) "
    "SELECT 'cam-1', i, 1000 * i, 1000 * i + 500, i, i, 1, 0, 0, 1, 1, '[]', '[]' FROM {series}",
]


@pytest.fixture
def pg_schema() -> Iterator[str]:
    name = f"test_h3_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@contextlib.contextmanager
def pg(schema: str, dsn: str = PG_DSN, **kw: object) -> Iterator[psycopg.Connection]:
    """A connection to ``dsn`` (default: the stack's database) with ``schema`` as its search path."""
    with psycopg.connect(make_conninfo(dsn, options=f"-c search_path={schema}"), **kw) as c:  # type: ignore
        yield c


def downgrade_to(conn: sa.Connection, version: int) -> None:
    """A store as the first ``version`` history revisions left it: each later revision, from the head back,
    undone by its own ``downgrade()``, the version set to ``version``."""
    with Operations.context(MigrationContext.configure(connection=conn)):
        for rev in reversed(revisions("history")[version:]):
            _scripts().get_revision(rev).module.downgrade()
    conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": version})


def downgrade_to_0014(conn: sa.Connection) -> None:
    """A store as revision 0014 left it (:func:`downgrade_to`)."""
    downgrade_to(conn, BEFORE_0015)


def pg_at_revision_14(schema: str, n: int = 2000) -> None:
    """A PostgreSQL schema as revision 0014 left it (0015's downgrade), with rows in 0015's tables."""
    SqlStorage(PG_DSN, schema=schema).close()
    engine = sa.create_engine("postgresql+psycopg://", poolclass=sa.pool.NullPool, creator=lambda: psycopg.connect(
        make_conninfo(PG_DSN, options=f"-c search_path={schema}")))
    with engine.begin() as conn:
        downgrade_to_0014(conn)
    with pg(schema, autocommit=True) as c:
        for stmt in ROWS:
            c.execute(stmt.format(series=f"generate_series(1, {n}) i", true="true", false="false"))  # type: ignore


def pg_indexes(schema: str, names: Iterable[str] = INDEXES_0015, dsn: str = PG_DSN) -> dict[str, bool]:
    """The indexes of ``names`` (default: 0015's) in ``schema`` of ``dsn`` that exist: name -> pg_index.indisvalid."""
    with pg(schema, dsn, autocommit=True) as c:
        rows = c.execute("SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                         "JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = %s AND c.relname = ANY(%s)",
                         (schema, list(names))).fetchall()
    return dict(rows)


def test_0015_on_postgres_lets_writes_go_on_while_it_builds_its_indexes(pg_schema: str) -> None:
    """Upgrading from 0014 with rows: while the build of ``track_points_by_track`` waits for a writer of
    track_points, other sessions still write to track_points and customer_matches (a plain CREATE INDEX holds
    their writes until the migration commits); at the end every index is there and valid."""
    pg_at_revision_14(pg_schema)
    app = f"h3-migrate-{uuid.uuid4().hex[:8]}"
    result: list[object] = []

    def opener() -> None:
        try:
            result.append(SqlStorage(make_conninfo(PG_DSN, application_name=app), schema=pg_schema))
        except BaseException as exc:  # reported below
            result.append(exc)

    with pg(pg_schema) as blocker:
        # An open write transaction on track_points: the migration's build of its index waits for it.
        blocker.execute("INSERT INTO track_points (camera_id, seq, track_id, ts_ms, x1, y1, x2, y2, confidence) "
                        "VALUES ('cam-2', 1, 1, 1, 1, 2, 3, 4, 0.5)")
        t = threading.Thread(target=opener)
        t.start()
        try:
            with pg(pg_schema, autocommit=True) as watch:
                deadline = time.monotonic() + 30
                while not watch.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                                        "AND wait_event_type = 'Lock'", (app,)).fetchone()[0]:  # type: ignore
                    assert time.monotonic() < deadline and t.is_alive(), f"the migration never waited: {result}"
                    time.sleep(0.05)
                with pg(pg_schema, autocommit=True) as writer:
                    writer.execute("SET lock_timeout = '3s'")
                    writer.execute("INSERT INTO customer_matches (event_id, camera_id, track_id, seq, ts_ms, "
                                   "customer_id, similarity, is_new, is_returning, visit_no) "
                                   "VALUES ('during', 'cam-1', 1, 1, 1, 'c1', 0.9, true, false, 1)")
                    writer.execute("INSERT INTO track_points (camera_id, seq, track_id, ts_ms, x1, y1, x2, y2, "
                                   "confidence) VALUES ('cam-3', 1, 1, 1, 1, 2, 3, 4, 0.5)")
                assert pg_indexes(pg_schema).get("customer_matches_by_time") is True  # built and committed already
        finally:
            blocker.commit()
            t.join(60)
    (store,) = result
    assert isinstance(store, SqlStorage), store
    store.close()
    assert pg_indexes(pg_schema) == dict.fromkeys(INDEXES_0015, True)
    with pg(pg_schema, autocommit=True) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert c.execute("SELECT count(*) FROM track_points").fetchone() == (2002,)


def test_0015_on_postgres_rebuilds_an_index_a_failed_build_left_invalid(pg_schema: str) -> None:
    """A concurrent build that did not finish leaves an invalid index of that name: the next upgrade builds it
    again (IF NOT EXISTS alone would keep the invalid one for ever)."""
    pg_at_revision_14(pg_schema, n=200)
    with pg(pg_schema, autocommit=True) as c:
        with pytest.raises(psycopg.errors.UniqueViolation):  # rows share (camera_id, track_id): the build fails
            c.execute("CREATE UNIQUE INDEX CONCURRENTLY track_points_by_track ON track_points (camera_id, track_id)")
    assert pg_indexes(pg_schema)["track_points_by_track"] is False
    SqlStorage(PG_DSN, schema=pg_schema).close()
    assert pg_indexes(pg_schema) == dict.fromkeys(INDEXES_0015, True)
    with pg(pg_schema, autocommit=True) as c:
        assert c.execute("SELECT indisunique FROM pg_index WHERE indexrelid = 'track_points_by_track'::regclass"
                         ).fetchone() == (False,)


def test_concurrent_openers_of_a_schema_at_0014_with_rows_migrate_once(pg_schema: str) -> None:
    """Several services open the same store during the upgrade: one builds, the others wait, none fails."""
    pg_at_revision_14(pg_schema, n=500)
    n = 4
    barrier = threading.Barrier(n)
    out: list[object] = []

    def opener() -> None:
        try:
            barrier.wait()
            out.append(SqlStorage(PG_DSN, schema=pg_schema))
        except BaseException as exc:  # reported below
            out.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert all(isinstance(s, SqlStorage) for s in out) and len(out) == n, out
    finally:
        for s in out:
            if isinstance(s, SqlStorage):
                s.close()
    assert pg_indexes(pg_schema) == dict.fromkeys(INDEXES_0015, True)


def test_0015_on_sqlite_upgrades_a_file_at_0014_with_rows(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "h.db")
    SqlStorage(path).close()
    with sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool).begin() as conn:
        downgrade_to_0014(conn)
    with contextlib.closing(sqlite3.connect(path)) as c, c:
        series = "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300) SELECT i FROM s)"
        for stmt in ROWS:
            c.execute(stmt.format(series=series, true=1, false=0))
    SqlStorage(path).close()
    with contextlib.closing(sqlite3.connect(path)) as c:
        assert {r[0]: r[1] for r in c.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND "
                                               "name IN (?, ?, ?)", list(INDEXES_0015))} == INDEXES_0015
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# -- 2. ingest counts every reopen of a live camera's source, one outage ---------------------------------------


@needs_kafka
@pytest.mark.timeout(120)
def test_ingest_counts_each_reopen_of_a_missing_live_source_and_the_outage_once(started_runtime,  # noqa: F811
                                                                                monkeypatch):
    """A live camera whose source is missing (a closed local port) is reopened with the site's short backoff
    (``ingest.reconnect_backoff_s``): ``storelens_camera_reopen_attempts_total`` grows with every attempt while
    ``storelens_camera_outages_total`` stays 1 (before, only the outage was counted: one per hour of reopens)."""
    monkeypatch.setattr(workers, "CAMERA_FRAME_TIMEOUT_S", 1.0, raising=False)
    rt, cfg = started_runtime, _kafka_cfg()
    config = parse_config({"store": {"id": cfg.group_prefix}, "kafka": cfg.model_dump(),
                           "cameras": [{"id": "gone", "source": "rtsp://127.0.0.1:1/none", "target_fps": 5}],
                           "ingest": {"reconnect_backoff_s": 0.05, "reconnect_backoff_max_s": 0.2}})
    thread = _run_ingest(config, rt)
    try:
        assert _wait(lambda: _metric(rt, "storelens_camera_outages_total", camera="gone"), 20, "outage") == 1
        first = _metric(rt, "storelens_camera_reopen_attempts_total", camera="gone")
        assert first is not None and first >= 3, first  # 1 s of reopens 0.05, 0.1, 0.2, 0.2, ... s apart
        time.sleep(2.0)
        later = _metric(rt, "storelens_camera_reopen_attempts_total", camera="gone")
        assert later is not None and later - first >= 5, (first, later)  # about one every 0.2 s
        assert _metric(rt, "storelens_camera_outages_total", camera="gone") == 1  # the same outage
    finally:
        rt.stopping.set()
        thread.join(60)
        _delete_topics(cfg)
    assert not thread.is_alive()


# -- 3. the store's occupancy row after an analytics restart, an entrance camera down ---------------------------


def _walk_in(cam: str, seqs: range, track_ids: list[int]) -> list[m.TrackedFrame]:
    """Frames of ``cam`` in which each of ``track_ids`` walks down across the ``door`` line (y 300): one "in" each."""
    return [frame(cam, seq, [box(t, 100 + 150 * k, 240 + 13 * i) for k, t in enumerate(track_ids)])
            for i, seq in enumerate(seqs)]


@pytest.mark.timeout(300)
def test_store_row_is_current_after_an_analytics_restart_while_an_entrance_camera_is_down(
        tmp_path: pathlib.Path, pg_schema: str, monkeypatch) -> None:
    """The analytics service (a subprocess, real Kafka and PostgreSQL): cameras c and d both have an entrance
    door; 1 person comes in at c, 2 at d (``@store``: 3). After a restart d sends nothing (down) and 1 more
    person comes in at c: the store's row is 4 at once, d's counts loaded from the state table. Before, the row
    was written only once d had sent a frame too, and stayed 3."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the service runs this tree
    run = uuid.uuid4().hex[:10]
    c, d, prefix = f"h3c-{run}", f"h3d-{run}", f"sltest-h3-{run}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    door = {"id": "door", "a": [0, 300], "b": [640, 300]}
    raw = {"store": {"id": f"store-{run}", "entrance_lines": [f"{c}/door", f"{d}/door"]},
           "cameras": [{"id": cam, "source": "/dev/null", "lines": [door]} for cam in (c, d)],
           "storage": {"backend": "postgres", "dsn": make_conninfo(PG_DSN, options=f"-c search_path={pg_schema}")},
           "kafka": {"bootstrap_servers": BOOTSTRAP, "group_prefix": prefix, "topic_prefix": f"{prefix}.",
                     "partitions": 2}}
    path = tmp_path / "site.yaml"
    path.write_text(json.dumps(raw))
    kafka = Kafka(parse_config(raw).kafka.topic_prefix)

    def row(camera_id: str) -> tuple | None:
        with pg(pg_schema, autocommit=True) as conn:
            return conn.execute("SELECT occupancy, total_in, total_out FROM occupancy WHERE camera_id = %s",
                                (camera_id,)).fetchone()

    def send(frames: list[m.TrackedFrame]) -> None:
        for tf in frames:
            kafka.send(topics.camera_key(tf.camera_id), m.encode(tf))

    proc = ServiceProc(path, tmp_path / "analytics.log", free_port())
    try:
        proc.wait_ready()
        send(_walk_in(c, range(1, 11), [1]) + _walk_in(d, range(1, 11), [1, 2]))
        wait_until("the store's row of c's and d's crossings", lambda: row(STORE_OCCUPANCY_ID) == (3, 3, 0),
                   proc=proc)
        assert proc.stop() == 0, proc.log_tail()
        proc = ServiceProc(path, tmp_path / "analytics.log", proc.port)
        proc.wait_ready()
        send(_walk_in(c, range(11, 21), [5]))  # d is down: no frame of it after the restart
        wait_until("c's second crossing stored", lambda: row(c) == (2, 2, 0), proc=proc)
        assert row(STORE_OCCUPANCY_ID) == (4, 4, 0), proc.log_tail()  # written with c's row, d's 2 ins counted
        published = kafka.read(topics.OCCUPANCY, {topics.camera_key(STORE_OCCUPANCY_ID)},  # keyed by its id
                                   m.OccupancyUpdate)
        assert [(u.occupancy, u.total_in) for u in published if u.camera_id == STORE_OCCUPANCY_ID][-1] == (4, 4)
        assert proc.stop() == 0, proc.log_tail()
    finally:
        proc.stop()
        app_topics = [t for t in kafka.admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        with contextlib.suppress(Exception):
            kafka.admin.delete_topics(app_topics, 30)
        with contextlib.suppress(Exception):
            kafka.admin.delete_groups([f"{prefix}-analytics"], 30)
        kafka.close()
