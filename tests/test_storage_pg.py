"""PostgresStorage against a real PostgreSQL server: the Storage contract, migrations, reconnects.

The server comes from ``STORELENS_PG_DSN`` (default: the one ``scripts/stack.sh up``
starts). These tests never skip: no server is a failure. Each test works in a
fresh schema (dropped afterwards), so tests are isolated from each other and
from anything else using the database.

The backend-agnostic cases of ``tests/test_storage.py`` are imported below and
run here again against PostgreSQL (their ``store`` fixture resolves to this
module's), so both backends satisfy one contract.
"""
from __future__ import annotations

import contextlib
import doctest
import os
import random
import threading
import time
import uuid
from typing import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import storelens.storage.history
from storelens.api.testing import signed_in_client
from storelens.contract import messages as m
from storelens.api import create_app
from storelens.config import StorageConfig, parse_config
from storelens.domain.counting import CrossingEvent
from storelens.storage import SqliteStorage, Storage, StorageError, TrackPoint, open_storage
from storelens.storage.schema import HISTORY_TABLES
from storelens.storage.history import _MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION, PostgresStorage, redact_dsn

# The shared contract: these run here with this module's `store` fixture (PostgreSQL).
from test_storage import (  # collected by pytest from this module too
    CAM,
    counted,
    ev,
    frame,
    test_concurrent_writer_and_reader_threads,
    test_counts_align_negative_timestamps_downwards,
    test_counts_buckets,
    test_counts_rejects_zero_bucket,
    test_crossings_range_order_and_roundtrip,
    test_line_totals,
    test_line_totals_equal_sum_of_buckets,
    test_occupancy_upsert_keeps_latest,
    test_tracked_frame_redelivery_does_not_duplicate_points,
    test_tracked_frame_without_tracks_writes_nothing,
    test_tracks_grouped_by_track_then_time,
    test_tracks_limit_keeps_earliest_points,
    test_write_crossings_is_idempotent_on_event_id,
)

#: The imported contract cases (listed so linters see them used).
SHARED_CASES = (
    counted, test_concurrent_writer_and_reader_threads, test_counts_align_negative_timestamps_downwards,
    test_counts_buckets, test_counts_rejects_zero_bucket, test_crossings_range_order_and_roundtrip,
    test_line_totals, test_line_totals_equal_sum_of_buckets, test_occupancy_upsert_keeps_latest,
    test_tracked_frame_redelivery_does_not_duplicate_points, test_tracked_frame_without_tracks_writes_nothing,
    test_tracks_grouped_by_track_then_time, test_tracks_limit_keeps_earliest_points,
    test_write_crossings_is_idempotent_on_event_id,
)

PG_DSN = os.environ.get("STORELENS_PG_DSN", "postgresql://storelens:storelens@127.0.0.1:15432/storelens")


def admin() -> psycopg.Connection:
    return psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10)


@contextlib.contextmanager
def raw(schema: str) -> Iterator[psycopg.Connection]:
    """A plain connection whose search_path is ``schema``."""
    with psycopg.connect(make_conninfo(PG_DSN, options=f"-c search_path={schema}"),
                         autocommit=True, connect_timeout=10) as c:
        yield c


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A unique schema name; the schema (if anything created it) is dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    with admin() as c:
        c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def store(pg_schema: str) -> Iterator[PostgresStorage]:
    s = PostgresStorage(PG_DSN, schema=pg_schema)
    yield s
    s.close()


# -- opening -----------------------------------------------------------------------------


def test_open_creates_schema_and_implements_protocol(pg_schema: str, store: PostgresStorage) -> None:
    assert isinstance(store, Storage)
    assert store.ping() is True
    assert store.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
    with raw(pg_schema) as c:
        tables = {r[0] for r in c.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (pg_schema,))}
        indexes = {r[0] for r in c.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (pg_schema,))}
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert tables == {"schema_version"} | {t.name for t in HISTORY_TABLES}
    assert {"track_points", "crossings", "occupancy", "count_windows", "track_attributes", "customer_matches",
            "frames", "zone_events", "zone_stats", "zone_occupancy"} <= tables
    # The API filters every read on camera + time.
    assert {"crossings_by_time", "track_points_by_time"} <= indexes


def test_open_storage_factory_postgres(pg_schema: str) -> None:
    with admin() as c:  # schema=None uses the DSN's search_path, which must exist
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    dsn = make_conninfo(PG_DSN, options=f"-c search_path={pg_schema}")
    s = open_storage(StorageConfig(backend="postgres", dsn=dsn))
    try:
        assert isinstance(s, PostgresStorage)
        assert s.schema is None
        assert s.ping()
        s.write_crossings([ev("door", 1, "in", 1_000)])
    finally:
        s.close()
    with raw(pg_schema) as c:
        assert c.execute("SELECT count(*) FROM crossings").fetchone() == (1,)


def test_schemas_isolate_installations(pg_schema: str, store: PostgresStorage) -> None:
    other = f"{pg_schema}_b"
    try:
        with PostgresStorage(PG_DSN, schema=other) as s2:
            store.write_crossings([ev("door", 1, "in", 1_000)])
            assert s2.line_totals(CAM) == {}
            assert s2.write_crossings([ev("door", 1, "in", 1_000)]) == 1
    finally:
        with admin() as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(other)))


def test_ping_false_after_close_and_close_is_idempotent(pg_schema: str) -> None:
    s = PostgresStorage(PG_DSN, schema=pg_schema)
    s.close()
    s.close()
    assert s.ping() is False
    with pytest.raises(StorageError, match="closed"):
        s.line_totals(CAM)


def test_unreachable_server_is_a_storage_error_without_password() -> None:
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="cannot connect") as info:
        PostgresStorage("postgresql://storelens:s3cret@127.0.0.1:1/storelens", connect_timeout_s=2)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    assert time.monotonic() - t0 < 10


def test_redact_dsn() -> None:
    assert "hunter2" not in redact_dsn("host=db user=u password=hunter2 dbname=d")
    assert redact_dsn("postgresql://u@db/d") == "user=u dbname=d host=db"
    assert redact_dsn("not a dsn ===") == "<invalid dsn>"


# -- writes specific to PostgreSQL -----------------------------------------------------


def test_write_crossings_batch_is_atomic(store: PostgresStorage) -> None:
    bad = CrossingEvent("bad", CAM, "door", 9, "sideways", 5_000, 1)  # type: ignore[arg-type]
    with pytest.raises(psycopg.IntegrityError):
        store.write_crossings([ev("door", 1, "in", 1_000), bad])
    assert store.crossings(CAM, 0, 10_000) == []
    assert store.ping()  # the failed transaction left the connection usable


def test_count_window_upsert(pg_schema: str, store: PostgresStorage) -> None:
    w = m.CountWindow(camera_id=CAM, line_id="door", window_start_ms=0, window_end_ms=60_000, count_in=1)
    store.write_count_window(w)
    store.write_count_window(m.CountWindow(camera_id=CAM, line_id="door", window_start_ms=0,
                                           window_end_ms=60_000, count_in=3, count_out=2))
    store.write_count_window(m.CountWindow(camera_id=CAM, line_id="door", window_start_ms=60_000,
                                           window_end_ms=120_000, count_in=1))
    with raw(pg_schema) as c:
        rows = c.execute("SELECT window_start_ms, count_in, count_out FROM count_windows "
                         "ORDER BY window_start_ms").fetchall()
    assert rows == [(0, 3, 2), (60_000, 1, 0)]


def test_occupancy_same_ts_replaces(store: PostgresStorage) -> None:
    store.write_occupancy(m.OccupancyUpdate(camera_id=CAM, ts_ms=1_000, occupancy=2, total_in=2))
    store.write_occupancy(m.OccupancyUpdate(camera_id=CAM, ts_ms=1_000, occupancy=1, total_in=2, total_out=1))
    assert store.occupancy(CAM).occupancy == 1  # type: ignore[union-attr]


def test_frame_with_repeated_track_id_keeps_the_last(store: PostgresStorage) -> None:
    # One INSERT .. ON CONFLICT DO UPDATE may not touch a row twice; the last box wins, as in SQLite.
    store.write_tracked_frame(frame(1, 40, (7, (1, 1, 2, 2), 0.5), (7, (3, 3, 4, 4), 0.25)))
    assert store.tracks(CAM, 0, 100)[0].points == [TrackPoint(40, 1, (3.0, 3.0, 4.0, 4.0), 0.25)]


def test_write_batch_is_one_idempotent_transaction(store: PostgresStorage) -> None:
    frames = [frame(0, 0, (1, (0, 0, 1, 1), 0.5)), frame(1, 40, (1, (1, 1, 2, 2), 0.5))]
    events = [ev("door", 1, "in", 40, seq=1)]
    occ = [m.OccupancyUpdate(camera_id=CAM, ts_ms=40, occupancy=1, total_in=1),
           m.OccupancyUpdate(camera_id=CAM, ts_ms=0, occupancy=0)]  # older: ignored
    windows = [m.CountWindow(camera_id=CAM, line_id="door", window_start_ms=0, window_end_ms=60_000, count_in=1)]
    assert store.write_batch(frames, events, occ, windows) == 1
    assert store.write_batch(frames, events, occ, windows) == 0  # redelivered batch
    assert store.write_batch() == 0
    assert [len(p.points) for p in store.tracks(CAM, 0, 1_000)] == [2]
    assert store.line_totals(CAM) == {"door": {"in": 1, "out": 0}}
    assert store.occupancy(CAM).ts_ms == 40  # type: ignore[union-attr]
    # All or nothing: a bad crossing rolls back the frames and the occupancy of its batch.
    bad = CrossingEvent("bad", CAM, "door", 9, "sideways", 5_000, 1)  # type: ignore[arg-type]
    with pytest.raises(psycopg.IntegrityError):
        store.write_batch([frame(2, 80, (1, (2, 2, 3, 3), 0.5))], [bad],
                          [m.OccupancyUpdate(camera_id=CAM, ts_ms=80, occupancy=5)])
    assert [len(p.points) for p in store.tracks(CAM, 0, 1_000)] == [2]
    assert store.occupancy(CAM).ts_ms == 40  # type: ignore[union-attr]


def test_same_results_as_sqlite(tmp_path, store: PostgresStorage) -> None:
    """Differential check: one random workload (redeliveries included) read back from both backends."""
    rng = random.Random(7)
    lines = ["door", "Door", "_side", "b-2", "a.1", "Z"]  # mixed case and punctuation: byte order matters
    cams = [CAM, "cam-2"]
    events = []
    for i in range(400):
        cam = rng.choice(cams)
        seq = rng.randrange(0, 5_000)
        events.append(ev(rng.choice(lines), rng.randrange(1, 30), rng.choice(["in", "out"]),
                         rng.randrange(-100_000, 400_000), seq=seq, cam=cam))
    frames = [frame(seq, seq * 40, *[(rng.randrange(1, 8), (rng.random() * 600, 1.0, 2.0, 3.0), 0.5)
                                     for _ in range(rng.randrange(0, 4))], cam=rng.choice(cams))
              for seq in range(120)]
    occs = [m.OccupancyUpdate(camera_id=rng.choice(cams), ts_ms=rng.randrange(0, 50), occupancy=i,
                              total_in=i, total_out=0) for i in range(60)]
    redelivered = rng.sample(events, 50)
    lite = SqliteStorage(str(tmp_path / "diff.db"))
    try:
        new: dict[str, list[int]] = {}
        for name, backend in (("sqlite", lite), ("postgres", store)):
            new[name] = [backend.write_crossings(events[i:i + 37]) for i in range(0, len(events), 37)]
            new[name].append(backend.write_crossings(redelivered))
            for tf in frames + frames[::3]:
                backend.write_tracked_frame(tf)
            for u in occs:
                backend.write_occupancy(u)
        assert new["postgres"] == new["sqlite"]
        assert new["sqlite"][-1] == 0
        for cam in cams + ["cam-9"]:
            for bucket_s in (1, 7, 60, 3600):
                for line in (None, "door", "Door"):
                    assert store.counts(cam, -50_000, 350_000, bucket_s, line) == \
                        lite.counts(cam, -50_000, 350_000, bucket_s, line)
            assert list(store.line_totals(cam).items()) == list(lite.line_totals(cam).items())
            assert store.line_totals(cam, 0, 100_000) == lite.line_totals(cam, 0, 100_000)
            assert store.crossing_span(cam) == lite.crossing_span(cam)
            assert store.crossings(cam, -10**9, 10**9) == lite.crossings(cam, -10**9, 10**9)
            assert store.crossings(cam, 0, 200_000, limit=17) == lite.crossings(cam, 0, 200_000, limit=17)
            assert store.tracks(cam, 0, 10**6) == lite.tracks(cam, 0, 10**6)
            assert store.tracks(cam, 400, 3_000, limit_points=23) == lite.tracks(cam, 400, 3_000, limit_points=23)
            assert store.occupancy(cam) == lite.occupancy(cam)
    finally:
        lite.close()


# -- migrations and concurrency ------------------------------------------------------


def test_reopen_keeps_data_and_version(pg_schema: str) -> None:
    with PostgresStorage(PG_DSN, schema=pg_schema) as s:
        s.write_crossings([ev("door", 1, "in", 1_000)])
        s.write_tracked_frame(frame(0, 0, (1, (0, 0, 1, 1), 0.5)))
        s.write_occupancy(m.OccupancyUpdate(camera_id=CAM, ts_ms=1_000, occupancy=1, total_in=1))
    with PostgresStorage(PG_DSN, schema=pg_schema) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert s.line_totals(CAM) == {"door": {"in": 1, "out": 0}}
        assert s.write_crossings([ev("door", 1, "in", 1_000)]) == 0
        assert len(s.tracks(CAM, 0, 10)) == 1
        assert s.occupancy(CAM).occupancy == 1  # type: ignore[union-attr]
    with raw(pg_schema) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_newer_schema_is_refused(pg_schema: str) -> None:
    PostgresStorage(PG_DSN, schema=pg_schema).close()
    with raw(pg_schema) as c:
        c.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StorageError, match="newer"):
        PostgresStorage(PG_DSN, schema=pg_schema)


def test_concurrent_opens_do_not_race(pg_schema: str) -> None:
    n = 6
    barrier = threading.Barrier(n)
    stores: list[PostgresStorage] = []
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            barrier.wait()
            stores.append(PostgresStorage(PG_DSN, schema=pg_schema))
        except BaseException as exc:  # pragma: no cover (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert len(stores) == n
        assert sum(s.write_crossings([ev("door", 1, "in", 1_000)]) for s in stores) == 1
    finally:
        for s in stores:
            s.close()
    with raw(pg_schema) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_migration_waits_for_the_advisory_lock(pg_schema: str) -> None:
    """While another session holds the migration lock of the schema, opening blocks."""
    done = threading.Event()
    result: list[object] = []

    def opener() -> None:
        try:
            result.append(PostgresStorage(PG_DSN, schema=pg_schema))
        except BaseException as exc:  # pragma: no cover
            result.append(exc)
        done.set()

    with admin() as c:
        with c.transaction():
            c.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_MIGRATION_LOCK + pg_schema,))
            t = threading.Thread(target=opener)
            t.start()
            assert not done.wait(0.5), "migration did not wait for the advisory lock"
            assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (pg_schema,)).fetchone() == (0,)
        assert done.wait(10)
        t.join()
    s = result[0]
    assert isinstance(s, PostgresStorage)
    s.close()


def test_reconnects_after_the_server_drops_the_connection(store: PostgresStorage) -> None:
    store.write_crossings([ev("door", 1, "in", 1_000)])
    for _ in range(2):
        pid = store._conn.info.backend_pid  # type: ignore[union-attr]
        with admin() as c:
            assert c.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        time.sleep(0.1)
        # The next call notices the dead connection, reconnects (same schema) and retries.
        assert store.write_crossings([ev("door", 2, "in", 2_000)]) in (0, 1)
        assert store.line_totals(CAM) == {"door": {"in": 2, "out": 0}}
    pid = store._conn.info.backend_pid  # type: ignore[union-attr]
    with admin() as c:
        c.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.1)
    assert store.ping() is True


# -- the API and the docs over PostgreSQL ------------------------------------------------------


def test_api_over_postgres(store: PostgresStorage) -> None:
    cfg = parse_config({"store": {"id": "s1"}, "cameras": [
        {"id": CAM, "source": "/tmp/x.mp4", "lines": [{"id": "door", "a": [0, 300], "b": [640, 300]}]}]})
    store.write_crossings([ev("door", 1, "in", 1_000), ev("door", 2, "out", 61_000)])
    store.write_occupancy(m.OccupancyUpdate(camera_id=CAM, ts_ms=61_000, occupancy=0, total_in=1, total_out=1))
    client = signed_in_client(create_app(cfg, store))
    assert client.get("/readyz").json() == {"status": "ready"}
    body = client.get("/v1/counts", params={"camera_id": CAM, "start_ms": 0, "end_ms": 120_000}).json()
    assert [(b["start_ms"], b["in"], b["out"]) for b in body["buckets"]] == [(0, 1, 0), (60_000, 0, 1)]
    assert body["totals"] == {"door": {"in": 1, "out": 1}}
    assert client.get(f"/v1/occupancy/{CAM}").json()["total_out"] == 1
    store.close()
    assert client.get("/readyz").status_code == 503


def test_doctests(pg_schema: str) -> None:
    result = doctest.testmod(storelens.storage.history, extraglobs={"dsn": PG_DSN, "schema": pg_schema},
                             optionflags=doctest.ELLIPSIS, report=True)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} doctest example(s) failed (see captured stdout)"

