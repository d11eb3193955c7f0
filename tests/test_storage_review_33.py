"""Follow-ups of a read-only review of storage (33), each failing on the code before:

1. migration 0022 builds its indexes of the existing, large ``crossings`` and ``zone_events`` with
   :func:`~storelens.storage.dialects.add_index` (PostgreSQL: ``CONCURRENTLY``, writes go on during the upgrade),
   as every index added to an existing table since 0015;
2. the queue length at a time (``/v1/queues?at_ms=``, :func:`storelens.storage.zones.lengths_at`) reads the
   entries of its look-back and the tracks still seen, not every stored entry of the camera;
3. privacy clock ``auto`` with live and file cameras: a file camera's rows are purged by its own clock (its newest
   frame), not by the wall clock the live cameras bring.

Real components: SQLite files and the PostgreSQL of ``scripts/stack.sh`` (a schema per test, dropped afterwards).
"""
from __future__ import annotations

import ast
import os
import pathlib
import threading
import time
import uuid
from typing import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from psycopg.conninfo import make_conninfo

from storelens.storage import SCHEMA_VERSION, SqlStorage
from storelens.storage.migrations import HERE, revisions
from test_review_fixes_7 import downgrade_to, pg, pg_indexes

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")


# -- 1. migration 0022's indexes on PostgreSQL are built CONCURRENTLY -----------------------------------------------


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """The calls ``op.<name>(...)`` in a revision script."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == name and isinstance(n.func.value, ast.Name) and n.func.value.id == "op"]


def _table_arg(call: ast.Call, pos: int) -> str | None:
    arg = call.args[pos] if len(call.args) > pos else next(
        (k.value for k in call.keywords if k.arg in ("table_name", "name")), None)
    return None if arg is None else ast.unparse(arg)


def _upgrade(path: pathlib.Path) -> ast.FunctionDef:
    return next(n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == "upgrade")


def test_no_revision_after_0014_indexes_an_existing_table_with_a_plain_create_index() -> None:
    """Every index a revision after 0014 adds to a table an earlier revision created goes through
    ``dialects.add_index`` (0022 called ``op.create_index`` on crossings and zone_events: a plain CREATE INDEX
    holds the pipeline's writes to them for the whole build on PostgreSQL)."""
    scripts = sorted((HERE / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert [p.name[:4] for p in scripts if int(p.name[:4]) > 14], "no revision after 0014?"
    offenders = []
    for path in scripts:
        if int(path.name[:4]) <= 14:
            continue
        up = _upgrade(path)
        created = {_table_arg(c, 0) for c in _calls(up, "create_table")}
        for call in _calls(up, "create_index"):
            table = _table_arg(call, 1)
            if table not in created:
                offenders.append(f"{path.name}: op.create_index(..., {table}, ...)")
    assert offenders == [], "use storelens.storage.dialects.add_index for an existing table"


@pytest.fixture
def pg_db() -> Iterator[str]:
    """The DSN of a PostgreSQL database of this test's own (dropped afterwards, with any session left on it): a
    ``CREATE INDEX CONCURRENTLY`` waits for every older transaction of its database, and the shared stack's other
    tests may hold some."""
    name = f"test_st33_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(PG_DSN, dbname=name)
    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


SCHEMA = "storelens"


INDEXES_0022 = {"crossings_by_line": "crossings", "zone_events_by_zone": "zone_events"}


def pg_at_0021(dsn: str, n: int = 2000) -> None:
    """A PostgreSQL schema as revision 0021 left it (the later revisions' downgrades), rows in 0022's tables."""
    SqlStorage(dsn, schema=SCHEMA).close()
    engine = sa.create_engine("postgresql+psycopg://", poolclass=sa.pool.NullPool, creator=lambda: psycopg.connect(
        make_conninfo(dsn, options=f"-c search_path={SCHEMA}")))
    version = revisions("history").index("0022")
    with engine.begin() as conn:
        downgrade_to(conn, version)
    engine.dispose()
    with pg(SCHEMA, dsn, autocommit=True) as c:
        c.execute(f"INSERT INTO crossings (event_id, camera_id, line_id, track_id, direction, ts_ms, seq) "
                  f"SELECT 'x' || i, 'cam-1', 'door', i, 'in', 1000 * i, i FROM generate_series(1, {n}) i")
        c.execute(f"INSERT INTO zone_events (event_id, camera_id, zone_id, zone_kind, track_id, kind, ts_ms, seq) "
                  f"SELECT 'z' || i, 'cam-1', 'q', 'queue', i, 'enter', 1000 * i, i FROM generate_series(1, {n}) i")


def test_0022_on_postgres_lets_writes_go_on_while_it_builds_its_indexes(pg_db: str) -> None:
    """Upgrading from 0021 with rows: while the build of ``crossings_by_line`` waits for an open write
    transaction on crossings, another session still writes crossings and zone events (lock_timeout 3 s; a plain
    CREATE INDEX queues a SHARE lock that holds them up until the migration commits)."""
    pg_at_0021(pg_db)
    assert pg_indexes(SCHEMA, INDEXES_0022, pg_db) == {}
    app = f"st33-migrate-{uuid.uuid4().hex[:8]}"
    result: list[object] = []

    def opener() -> None:
        try:
            result.append(SqlStorage(make_conninfo(pg_db, application_name=app), schema=SCHEMA))
        except BaseException as exc:  # reported below
            result.append(exc)

    with pg(SCHEMA, pg_db) as blocker:
        blocker.execute("INSERT INTO crossings (event_id, camera_id, line_id, track_id, direction, ts_ms, seq) "
                        "VALUES ('open', 'cam-2', 'door', 1, 'in', 1, 1)")
        t = threading.Thread(target=opener)
        t.start()
        try:
            with pg(SCHEMA, pg_db, autocommit=True) as watch:
                deadline = time.monotonic() + 30
                while not watch.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                                        "AND wait_event_type = 'Lock'", (app,)).fetchone()[0]:  # type: ignore
                    assert time.monotonic() < deadline and t.is_alive(), f"the migration never waited: {result}"
                    time.sleep(0.05)
                with pg(SCHEMA, pg_db, autocommit=True) as writer:
                    writer.execute("SET lock_timeout = '3s'")
                    writer.execute("INSERT INTO crossings (event_id, camera_id, line_id, track_id, direction, ts_ms, "
                                   "seq) VALUES ('during', 'cam-3', 'door', 1, 'in', 1, 1)")
                    writer.execute("INSERT INTO zone_events (event_id, camera_id, zone_id, zone_kind, track_id, "
                                   "kind, ts_ms, seq) VALUES ('during', 'cam-3', 'q', 'queue', 1, 'enter', 1, 1)")
        finally:
            blocker.commit()
            t.join(60)
    assert not t.is_alive(), "the migration did not end within 60 s after the blocking transaction"
    (store,) = result
    assert isinstance(store, SqlStorage), store
    store.close()
    assert pg_indexes(SCHEMA, INDEXES_0022, pg_db) == dict.fromkeys(INDEXES_0022, True)
    with pg(SCHEMA, pg_db, autocommit=True) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert c.execute("SELECT count(*) FROM crossings").fetchone() == (2002,)


# -- 2. the queue length at a time reads the entries of its look-back, not the camera's whole history ---------------

H_MS = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01
GAP_MS = 2400


def queue_history(store: SqlStorage, n_closed: int, at_ms: int) -> None:
    """``n_closed`` closed visits of zone q, all before the look-back of ``at_ms`` (a visit a minute, 30 s each),
    and one person in q since 3 h before ``at_ms``, still seen (frames and points every second of the last
    minute)."""
    rows = []
    for i in range(n_closed):
        ts = at_ms - 3 * H_MS - (n_closed - i) * 60_000
        rows += [(f"e{i}", "c", "q", "queue", 10_000 + i, "enter", ts, i, None, None),
                 (f"x{i}", "c", "q", "queue", 10_000 + i, "exit", ts + 30_000, i, 30_000, "service_edge")]
    rows.append(("seated", "c", "q", "queue", 7, "enter", at_ms - 3 * H_MS, n_closed, None, None))
    times = range(at_ms - 60_000, at_ms + 1, 1000)
    conn = store._conn
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO zone_events (event_id, camera_id, zone_id, zone_kind, track_id, kind, ts_ms, seq, "
                     "dwell_ms, how) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    conn.executemany("INSERT INTO frames (camera_id, seq, ts_ms, width, height, source_frame, n_tracks, "
                     "end_of_stream) VALUES ('c', ?, ?, 640, 480, ?, 1, 0)",
                     [(1_000_000 + k, t, k) for k, t in enumerate(times)])
    conn.executemany("INSERT INTO track_points (camera_id, seq, track_id, ts_ms, x1, y1, x2, y2, confidence) "
                     "VALUES ('c', ?, 7, ?, 40, 10, 60, 50, 0.9)", [(1_000_000 + k, t) for k, t in enumerate(times)])
    conn.execute("COMMIT")


def vm_steps(store: SqlStorage, fn) -> tuple[object, int]:
    """``fn()``'s answer and the SQLite virtual machine steps it took (hundreds, counted by a progress handler)."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    store._conn.set_progress_handler(count, 100)
    try:
        return fn(), steps[0]
    finally:
        store._conn.set_progress_handler(None, 0)


AT_MS = T0 + 30 * 24 * H_MS


@pytest.fixture(scope="module")
def queue_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, SqlStorage]]:
    """History files with 5,000 and 50,000 closed visits before the look-back (:func:`queue_history`)."""
    stores = {}
    for n in (5_000, 50_000):
        stores[n] = SqlStorage(str(tmp_path_factory.mktemp("q") / "h.db"))
        queue_history(stores[n], n, AT_MS)
    yield stores
    for s in stores.values():
        s.close()


@pytest.mark.parametrize("gap_ms, length", [(None, 0), (GAP_MS, 1)], ids=["look_back_only", "with_frames"])
def test_queue_length_at_does_not_read_every_stored_entry(queue_stores, gap_ms, length) -> None:
    """10 times more closed visits before the look-back: about the same work (before: 10 times more, every
    stored entry with its exit looked up), the same answer: the person seated for 3 h counts when the frames
    show them still there, not by the look-back alone."""
    from storelens.storage import zones as zq

    got = {n: vm_steps(s, lambda s=s: zq.lengths_at(s, "c", ["q", "r"], AT_MS, stream_gap_ms=gap_ms))
           for n, s in queue_stores.items()}
    assert got[5_000][0] == got[50_000][0] == {"q": length, "r": 0}
    assert got[50_000][1] < 2 * got[5_000][1] + 50, got


# -- 3. privacy clock auto with live and file cameras: a file camera's history by its own clock ---------------------

DAY_MS = 86_400_000
WALL_MS = 1_796_083_200_000  # 2026-12-01


def mixed_site(reid_days: float | None = None):
    from storelens.config import parse_config

    return parse_config({"store": {"id": "s"}, "faces": {"reid": {"retention_days": reid_days}},
                         "cameras": [{"id": "door", "source": "rtsp://cam/1"}, {"id": "clip", "source": "clip.mp4"}]})


def points(camera_id: str, ts_ms: int, seq: int):
    from storelens.contract import messages as m

    return m.TrackedFrame(camera_id=camera_id, seq=seq, ts_ms=ts_ms, width=640, height=480, tracks=[
        m.Track(track_id=seq, bbox_xyxy=m.BoxXYXY(x1=0, y1=0, x2=5, y2=9), confidence=0.9)])


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_auto_clock_purges_a_file_cameras_rows_by_its_own_newest_frame(kind, tmp_path: pathlib.Path) -> None:
    """An RTSP camera and a file camera (frames from start_ts_ms, 2026-01-01), purged with the wall clock in
    2026-12: the file camera's track points and frames of its first hour are kept (before: purged, 11 months
    "old" by the live camera's wall clock); a live camera's row older than the retention still goes."""
    from storelens.config.site import CameraConfig
    from storelens.contract import messages as m
    from storelens.runtime.retention import RetentionPurge

    start = CameraConfig.model_fields["start_ts_ms"].default
    schema = f"test_st33_{uuid.uuid4().hex[:12]}"
    store = SqlStorage(str(tmp_path / "h.db")) if kind == "sqlite" else SqlStorage(PG_DSN, schema=schema)
    try:
        store.write_batch(tracked_frames=[points("clip", start + 3_600_000, 1), points("clip", start + 7_200_000, 2),
                                          points("door", WALL_MS - 8 * DAY_MS, 3), points("door", WALL_MS - DAY_MS, 4)],
                          records=[m.ZoneEvent(event_id=f"{c}-e", camera_id=c, zone_id="q", zone_kind="queue",
                                               track_id=1, kind=m.ZONE_EVENT_ENTER, ts_ms=t, seq=1)
                                   for c, t in (("clip", start + 3_600_000), ("door", WALL_MS - 91 * DAY_MS))])
        purge = RetentionPurge(store, mixed_site(), wall_ms=lambda: WALL_MS)
        deleted = purge.run()
        assert (deleted["track_points"], deleted["frames"], deleted["zone_events"]) == (1, 1, 1)  # the door's old ones
        assert sorted(r[0] for r in store._rows(sa.text("SELECT camera_id FROM track_points"))) == ["clip", "clip",
                                                                                                     "door"]
        assert sorted(r[0] for r in store._rows(sa.text("SELECT camera_id FROM zone_events"))) == ["clip"]
        # the file camera's own clock, its newest frame: 7 days and 90 min after its start, its first hour goes
        store.write_batch(tracked_frames=[points("clip", start + 7 * DAY_MS + 5_400_000, 5)])
        assert purge.run()["track_points"] == 1
    finally:
        store.close()
        if kind == "postgres":
            with psycopg.connect(PG_DSN, autocommit=True) as c:
                c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_auto_clock_with_live_and_file_cameras_warns_of_the_face_gallery(caplog) -> None:
    """The face gallery's customers are the site's: purged by the wall clock, a file camera's customers dated
    from its start go at once; logged (naming the file cameras) and counted, once."""
    from prometheus_client import CollectorRegistry

    from storelens.runtime.retention import RetentionPurge
    from storelens.runtime.service import ServiceMetrics
    from storelens.storage import SqlGalleryStore

    metrics = ServiceMetrics(CollectorRegistry())
    with SqlStorage(":memory:") as store, SqlGalleryStore(":memory:", dim=4) as gallery:
        purge = RetentionPurge(store, mixed_site(reid_days=30), wall_ms=lambda: WALL_MS, gallery=gallery)
        with caplog.at_level("WARNING", logger="storelens.runtime.retention"):
            purge.run(metrics)
            purge.run(metrics)
    [warning] = [r for r in caplog.records if "clip" in r.getMessage()]
    assert "wall clock" in warning.getMessage()
    assert metrics.errors.labels("purge_clock_mixed")._value.get() == 1
