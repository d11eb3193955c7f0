"""The hourly retention purge checkpoints SQLite's write-ahead log after its transaction has committed and
without the store's lock, so the pipeline's writes do not wait for a checkpoint of a large log (real SQLite
files; the checkpoint is caught by SQLite's own trace callback on every connection of the store's engine).

When no one else writes, the log file is truncated to 0 bytes; when another connection is writing at that
moment, SQLite answers busy: the purge still succeeds, logs it at debug, and the next purge truncates.
"""
from __future__ import annotations

import contextlib
import logging
import pathlib
import sqlite3
import threading
from typing import Callable, Iterator

import sqlalchemy as sa

from storelens.contract import messages as m
from storelens.storage import SqlStorage
from storelens.storage.privacy import DAY_MS

NOW = 1_767_225_600_000 + 200 * DAY_MS
DAYS = {"track_points": 7, "frames": 7}


def frame(seq: int, ts_ms: int, cam: str = "cam") -> m.TrackedFrame:
    box = m.BoxXYXY(x1=10, y1=20, x2=50, y2=120)
    return m.TrackedFrame(camera_id=cam, seq=seq, ts_ms=ts_ms, width=640, height=480,
                          tracks=[m.Track(track_id=t, bbox_xyxy=box, confidence=0.9) for t in range(1, 4)])


def fill(store: SqlStorage) -> None:
    """200 expired frames and 20 kept ones (a few hundred KB of write-ahead log)."""
    for i in range(200):
        store.write_tracked_frame(frame(i, NOW - 30 * DAY_MS + i * 1000))
    for i in range(20):
        store.write_tracked_frame(frame(1000 + i, NOW - DAY_MS + i * 1000))


@contextlib.contextmanager
def at_checkpoint(store: SqlStorage, action: Callable[[], None]) -> Iterator[list[str]]:
    """Calls ``action()`` when a ``wal_checkpoint`` statement starts on any connection of ``store`` (its own, and
    those its engine opens meanwhile): SQLite's trace callback, in the thread running the checkpoint."""
    seen: list[str] = []

    def trace(sql: str) -> None:  # SQLite ignores what it raises: the tests check what the action did
        if "wal_checkpoint" in sql.lower():
            seen.append(sql)
            action()

    def on_connect(dbapi_conn, record) -> None:  # noqa: ANN001
        dbapi_conn.set_trace_callback(trace)

    own = store._conn
    own.set_trace_callback(trace)
    sa.event.listen(store.db.engine, "connect", on_connect)
    try:
        yield seen
    finally:
        sa.event.remove(store.db.engine, "connect", on_connect)
        own.set_trace_callback(None)


def test_the_checkpoint_runs_without_the_store_lock_and_a_write_completes_meanwhile(tmp_path: pathlib.Path) -> None:
    """At the checkpoint statement another thread can take the store's lock and write a frame through the store
    (the purge's transaction has committed, its lock is released); the log is still truncated afterwards."""
    wal = tmp_path / "h.db-wal"
    with SqlStorage(str(tmp_path / "h.db")) as store:
        fill(store)
        found: dict[str, object] = {}

        def other_thread() -> None:
            free = store._lock.acquire(blocking=False)
            found["lock_free"] = free
            if free:  # write only when it cannot block on the purge's lock (a failing test must not hang)
                try:
                    store.write_tracked_frame(frame(5000, NOW))
                    found["written"] = True
                finally:
                    store._lock.release()

        def during_checkpoint() -> None:
            t = threading.Thread(target=other_thread)
            t.start()
            t.join(30)
            found["joined"] = not t.is_alive()

        with at_checkpoint(store, during_checkpoint) as seen:
            deleted = store.purge_expired(DAYS, NOW)
        assert deleted["frames"] == 200 and deleted["track_points"] == 600
        assert seen, "no checkpoint was made"
        assert found == {"lock_free": True, "written": True, "joined": True}
        assert wal.stat().st_size == 0  # the frame written meanwhile was checkpointed too
        assert store.newest_frame_ms() == NOW


def test_the_log_is_truncated_when_no_one_else_writes(tmp_path: pathlib.Path) -> None:
    wal = tmp_path / "h.db-wal"
    with SqlStorage(str(tmp_path / "h.db")) as store:
        fill(store)
        assert wal.stat().st_size > 100_000
        assert store.purge_expired(DAYS, NOW)["frames"] == 200
        assert wal.stat().st_size == 0
        kept = store._read(lambda c: c.exec_driver_sql("SELECT count(*) FROM frames").scalar())
        assert kept == 20


def test_a_writer_at_the_checkpoint_leaves_it_to_the_next_purge(tmp_path: pathlib.Path, monkeypatch, caplog) -> None:
    """Another process (here: a connection of its own) holds SQLite's write lock when the checkpoint starts: SQLite
    answers busy, the purge returns its counts and logs it at debug; the next purge (nothing left to delete)
    truncates."""
    import storelens.storage.dialects as dialects

    monkeypatch.setattr(dialects, "PURGE_CHECKPOINT_WAIT_MS", 0)  # busy at once: no wait in the test
    db, wal = tmp_path / "h.db", tmp_path / "h.db-wal"
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        with SqlStorage(str(db)) as store:
            fill(store)

            def writer_starts() -> None:
                if not other.in_transaction:
                    other.execute("BEGIN IMMEDIATE")
                    other.execute("INSERT INTO frames (camera_id, seq, ts_ms, width, height, source_frame, n_tracks, "
                                  "end_of_stream) VALUES ('other', 1, ?, 640, 480, 1, 0, 0)", (NOW,))

            with caplog.at_level(logging.DEBUG, logger="storelens.storage.dialects"), \
                    at_checkpoint(store, writer_starts) as seen:
                assert store.purge_expired(DAYS, NOW)["frames"] == 200
            assert len(seen) == 1 and other.in_transaction
            assert wal.stat().st_size > 0
            assert any("not truncated" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
            other.execute("COMMIT")
            assert store.purge_expired(DAYS, NOW)["frames"] == 0
            assert wal.stat().st_size == 0
            assert store._read(lambda c: c.exec_driver_sql(
                "SELECT count(*) FROM frames WHERE camera_id = 'other'").scalar()) == 1  # the other write is kept
    finally:
        other.close()
