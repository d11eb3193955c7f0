"""SqliteStorage against a real SQLite file: idempotency, bucketing, reads, migrations."""
from __future__ import annotations

import pathlib
import sqlite3
import threading
from typing import Iterator

import pytest

from storelens.contract import messages as m
from storelens.config import StorageConfig
from storelens.domain.counting import CrossingEvent, crossing_event_id
from storelens.storage import (
    SCHEMA_VERSION,
    CountBucket,
    SqliteStorage,
    Storage,
    StorageError,
    TrackPoint,
    open_storage,
)

CAM = "cam-1"


def ev(line: str, track: int, direction: str, ts_ms: int, seq: int | None = None, cam: str = CAM) -> CrossingEvent:
    seq = ts_ms // 40 if seq is None else seq
    return CrossingEvent(crossing_event_id(cam, line, track, seq), cam, line, track, direction, ts_ms, seq)  # type: ignore[arg-type]


def frame(seq: int, ts_ms: int, *tracks: tuple[int, tuple[float, float, float, float], float],
          cam: str = CAM) -> m.TrackedFrame:
    return m.TrackedFrame(
        camera_id=cam, seq=seq, ts_ms=ts_ms, width=640, height=480,
        tracks=[
            m.Track(track_id=tid, bbox_xyxy=m.BoxXYXY(x1=b[0], y1=b[1], x2=b[2], y2=b[3]), confidence=conf)
            for tid, b, conf in tracks
        ],
    )


@pytest.fixture
def db_path(tmp_path: pathlib.Path) -> str:
    return str(tmp_path / "data" / "storelens.db")


@pytest.fixture
def store(db_path: str) -> Iterator[SqliteStorage]:
    s = SqliteStorage(db_path)
    yield s
    s.close()


def test_open_creates_file_in_wal_mode_and_implements_protocol(db_path: str, store: SqliteStorage) -> None:
    assert pathlib.Path(db_path).is_file()
    assert isinstance(store, Storage)
    assert store.ping() is True
    assert store.schema_version() == SCHEMA_VERSION
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_open_storage_factory(tmp_path: pathlib.Path) -> None:
    s = open_storage(StorageConfig(backend="sqlite", path=str(tmp_path / "x.db")))
    try:
        assert isinstance(s, SqliteStorage)
        assert s.ping()
    finally:
        s.close()


def test_ping_false_after_close_and_close_is_idempotent(db_path: str) -> None:
    s = SqliteStorage(db_path)
    s.close()
    s.close()
    assert s.ping() is False


# -- idempotency -----------------------------------------------------------------------


def test_write_crossings_is_idempotent_on_event_id(store: SqliteStorage) -> None:
    events = [ev("door", 1, "in", 1_000), ev("door", 2, "out", 2_000), ev("side", 1, "in", 3_000)]
    assert store.write_crossings(events) == 3
    assert store.write_crossings(events) == 0
    # A batch mixing old and new events counts only the new ones; a duplicate within a batch counts once.
    new = ev("door", 3, "in", 4_000)
    assert store.write_crossings([events[0], new, new]) == 1
    assert store.write_crossings([]) == 0
    assert store.line_totals(CAM) == {"door": {"in": 2, "out": 1}, "side": {"in": 1, "out": 0}}
    assert [e.event_id for e in store.crossings(CAM, 0, 10_000)] == [
        events[0].event_id, events[1].event_id, events[2].event_id, new.event_id]


def test_write_crossings_batch_is_atomic(store: SqliteStorage) -> None:
    bad = CrossingEvent("bad", CAM, "door", 9, "sideways", 5_000, 1)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.write_crossings([ev("door", 1, "in", 1_000), bad])
    assert store.crossings(CAM, 0, 10_000) == []


def test_tracked_frame_redelivery_does_not_duplicate_points(store: SqliteStorage) -> None:
    tf = frame(5, 200, (7, (10, 20, 50, 120), 0.5), (8, (100, 20, 150, 120), 0.75))
    store.write_tracked_frame(tf)
    store.write_tracked_frame(tf)
    paths = store.tracks(CAM, 0, 1_000)
    assert [(p.track_id, len(p.points)) for p in paths] == [(7, 1), (8, 1)]
    assert paths[0].points[0] == TrackPoint(200, 5, (10.0, 20.0, 50.0, 120.0), 0.5)
    # Redelivery with a corrected box replaces the point rather than adding one.
    store.write_tracked_frame(frame(5, 200, (7, (12, 20, 52, 120), 0.25)))
    paths = store.tracks(CAM, 0, 1_000)
    assert paths[0].points == [TrackPoint(200, 5, (12.0, 20.0, 52.0, 120.0), 0.25)]


def test_tracked_frame_without_tracks_writes_nothing(store: SqliteStorage) -> None:
    store.write_tracked_frame(m.TrackedFrame(camera_id=CAM, seq=1, ts_ms=40, end_of_stream=True))
    assert store.tracks(CAM, 0, 1_000) == []


# -- counts ------------------------------------------------------------------------


@pytest.fixture
def counted(store: SqliteStorage) -> SqliteStorage:
    store.write_crossings([
        ev("door", 1, "in", 0),
        ev("door", 2, "in", 59_999),
        ev("door", 3, "out", 60_000),
        ev("side", 4, "in", 61_000),
        ev("door", 5, "in", 179_999),
        ev("door", 6, "in", 10_000, cam="cam-2"),  # other camera: never counted for cam-1
    ])
    return store


@pytest.mark.parametrize(
    ("start_ms", "end_ms", "bucket_s", "line_id", "expected"),
    [
        pytest.param(0, 180_000, 60, None, [
            CountBucket("door", 0, 60_000, 2, 0),
            CountBucket("door", 60_000, 120_000, 0, 1),
            CountBucket("side", 60_000, 120_000, 1, 0),
            CountBucket("door", 120_000, 180_000, 1, 0),
        ], id="minute-buckets-ordered-by-start-then-line"),
        pytest.param(0, 180_000, 60, "side", [CountBucket("side", 60_000, 120_000, 1, 0)], id="one-line"),
        pytest.param(0, 179_999, 60, "door", [
            CountBucket("door", 0, 60_000, 2, 0),
            CountBucket("door", 60_000, 120_000, 0, 1),
        ], id="end-is-exclusive"),
        pytest.param(59_999, 60_001, 60, None, [
            CountBucket("door", 0, 60_000, 1, 0),
            CountBucket("door", 60_000, 120_000, 0, 1),
        ], id="start-is-inclusive-buckets-keep-aligned-bounds"),
        pytest.param(30_000, 200_000, 3600, None, [
            CountBucket("door", 0, 3_600_000, 2, 1),
            CountBucket("side", 0, 3_600_000, 1, 0),
        ], id="hour-bucket-aligned-to-epoch-not-to-start"),
        pytest.param(1, 59_999, 60, None, [], id="empty-range-no-buckets"),
        pytest.param(0, 180_000, 60, "nope", [], id="unknown-line"),
    ],
)
def test_counts_buckets(counted: SqliteStorage, start_ms: int, end_ms: int, bucket_s: int,
                        line_id: str | None, expected: list[CountBucket]) -> None:
    assert counted.counts(CAM, start_ms, end_ms, bucket_s, line_id=line_id) == expected


def test_counts_align_negative_timestamps_downwards(store: SqliteStorage) -> None:
    store.write_crossings([ev("door", 1, "in", -1, seq=0)])
    assert store.counts(CAM, -120_000, 0, 60) == [CountBucket("door", -60_000, 0, 1, 0)]


def test_counts_rejects_zero_bucket(store: SqliteStorage) -> None:
    with pytest.raises(ValueError, match="bucket_s"):
        store.counts(CAM, 0, 1, 0)


@pytest.mark.parametrize(
    ("start_ms", "end_ms", "expected"),
    [
        (None, None, {"door": {"in": 3, "out": 1}, "side": {"in": 1, "out": 0}}),
        (60_000, None, {"door": {"in": 1, "out": 1}, "side": {"in": 1, "out": 0}}),
        (None, 60_000, {"door": {"in": 2, "out": 0}}),
        (61_000, 61_001, {"side": {"in": 1, "out": 0}}),
        (200_000, 300_000, {}),
    ],
)
def test_line_totals(counted: SqliteStorage, start_ms: int | None, end_ms: int | None,
                     expected: dict[str, dict[str, int]]) -> None:
    assert counted.line_totals(CAM, start_ms, end_ms) == expected


def test_line_totals_equal_sum_of_buckets(counted: SqliteStorage) -> None:
    sums: dict[str, dict[str, int]] = {}
    for b in counted.counts(CAM, 0, 10**9, 1):
        s = sums.setdefault(b.line_id, {"in": 0, "out": 0})
        s["in"] += b.count_in
        s["out"] += b.count_out
    assert sums == counted.line_totals(CAM, 0, 10**9)


# -- occupancy and count windows -----------------------------------------------------


def test_occupancy_upsert_keeps_latest(store: SqliteStorage) -> None:
    assert store.occupancy(CAM) is None
    store.write_occupancy(m.OccupancyUpdate(camera_id=CAM, ts_ms=1_000, occupancy=2, total_in=2, total_out=0))
    store.write_occupancy(m.OccupancyUpdate(camera_id=CAM, ts_ms=2_000, occupancy=1, total_in=2, total_out=1))
    # A stale redelivery (older ts) does not roll the live state back.
    store.write_occupancy(m.OccupancyUpdate(camera_id=CAM, ts_ms=1_000, occupancy=2, total_in=2, total_out=0))
    store.write_occupancy(m.OccupancyUpdate(camera_id="cam-2", ts_ms=500, occupancy=4, total_in=4, total_out=0))
    assert store.occupancy(CAM) == m.OccupancyUpdate(camera_id=CAM, ts_ms=2_000, occupancy=1, total_in=2,
                                                     total_out=1)
    assert store.occupancy("cam-2").occupancy == 4  # type: ignore[union-attr]
    assert store.occupancy("cam-3") is None


def test_count_window_upsert(db_path: str, store: SqliteStorage) -> None:
    w = m.CountWindow(camera_id=CAM, line_id="door", window_start_ms=0, window_end_ms=60_000, count_in=1)
    store.write_count_window(w)
    store.write_count_window(m.CountWindow(camera_id=CAM, line_id="door", window_start_ms=0,
                                           window_end_ms=60_000, count_in=3, count_out=2))
    store.write_count_window(m.CountWindow(camera_id=CAM, line_id="door", window_start_ms=60_000,
                                           window_end_ms=120_000, count_in=1))
    with sqlite3.connect(db_path) as raw:
        rows = raw.execute("SELECT window_start_ms, count_in, count_out FROM count_windows "
                           "ORDER BY window_start_ms").fetchall()
    assert rows == [(0, 3, 2), (60_000, 1, 0)]


# -- tracks and crossings ---------------------------------------------------------------


def test_tracks_grouped_by_track_then_time(store: SqliteStorage) -> None:
    # Written out of order, across cameras, and partly outside the range.
    store.write_tracked_frame(frame(2, 80, (9, (3, 3, 4, 4), 0.5), (4, (5, 5, 6, 6), 0.5)))
    store.write_tracked_frame(frame(1, 40, (9, (1, 1, 2, 2), 0.5)))
    store.write_tracked_frame(frame(0, 0, (4, (0, 0, 1, 1), 0.5)))
    store.write_tracked_frame(frame(3, 120, (4, (7, 7, 8, 8), 0.5)))
    store.write_tracked_frame(frame(1, 40, (4, (0, 0, 1, 1), 0.5), cam="cam-2"))
    paths = store.tracks(CAM, 0, 120)
    assert [(p.track_id, [(pt.ts_ms, pt.seq) for pt in p.points]) for p in paths] == [
        (4, [(0, 0), (80, 2)]),
        (9, [(40, 1), (80, 2)]),
    ]
    assert paths[1].points[1].bbox_xyxy == (3.0, 3.0, 4.0, 4.0)


@pytest.mark.parametrize(("limit", "expected"), [
    (0, []),
    (1, [(4, [0])]),
    (2, [(4, [0]), (9, [40])]),
    (3, [(4, [0, 80]), (9, [40])]),
    (100, [(4, [0, 80, 120]), (9, [40, 80])]),
])
def test_tracks_limit_keeps_earliest_points(store: SqliteStorage, limit: int,
                                            expected: list[tuple[int, list[int]]]) -> None:
    store.write_tracked_frame(frame(0, 0, (4, (0, 0, 1, 1), 0.5)))
    store.write_tracked_frame(frame(1, 40, (9, (1, 1, 2, 2), 0.5)))
    store.write_tracked_frame(frame(2, 80, (9, (3, 3, 4, 4), 0.5), (4, (5, 5, 6, 6), 0.5)))
    store.write_tracked_frame(frame(3, 120, (4, (7, 7, 8, 8), 0.5)))
    got = store.tracks(CAM, 0, 1_000, limit_points=limit)
    assert [(p.track_id, [pt.ts_ms for pt in p.points]) for p in got] == expected


def test_crossings_range_order_and_roundtrip(counted: SqliteStorage) -> None:
    got = counted.crossings(CAM, 59_999, 61_001)
    assert got == [ev("door", 2, "in", 59_999), ev("door", 3, "out", 60_000), ev("side", 4, "in", 61_000)]
    assert counted.crossings(CAM, 0, 10**9, limit=2) == [ev("door", 1, "in", 0), ev("door", 2, "in", 59_999)]
    assert counted.crossings("cam-9", 0, 10**9) == []


# -- migrations and concurrency ------------------------------------------------------


def test_reopen_existing_file_keeps_data_and_version(db_path: str) -> None:
    with SqliteStorage(db_path) as s:
        s.write_crossings([ev("door", 1, "in", 1_000)])
        s.write_tracked_frame(frame(0, 0, (1, (0, 0, 1, 1), 0.5)))
        s.write_occupancy(m.OccupancyUpdate(camera_id=CAM, ts_ms=1_000, occupancy=1, total_in=1))
    with SqliteStorage(db_path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        assert s.line_totals(CAM) == {"door": {"in": 1, "out": 0}}
        assert s.write_crossings([ev("door", 1, "in", 1_000)]) == 0
        assert len(s.tracks(CAM, 0, 10)) == 1
        assert s.occupancy(CAM).occupancy == 1  # type: ignore[union-attr]
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_newer_schema_is_refused(db_path: str) -> None:
    SqliteStorage(db_path).close()
    with sqlite3.connect(db_path) as raw:
        raw.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StorageError, match="newer"):
        SqliteStorage(db_path)


def test_concurrent_writer_and_reader_threads(store: SqliteStorage) -> None:
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(200):
                store.write_crossings([ev("door", i, "in", i * 10, seq=i)])
        except BaseException as exc:  # pragma: no cover (reported below)
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(200):
                store.line_totals(CAM)
                store.counts(CAM, 0, 10_000, 1)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.line_totals(CAM) == {"door": {"in": 200, "out": 0}}
