"""The hourly retention purge and the erasure read only the rows they delete (real SQLite files).

The purge runs every hour inside the history's write transaction (``BEGIN IMMEDIATE`` on SQLite): a
statement that scans a whole table (a week of track points is hundreds of millions of rows) holds up
every write of the pipeline meanwhile. So for every statement the purge, its camera clock and an
erasure actually run (caught on the store's engine), SQLite's ``EXPLAIN QUERY PLAN`` must show an index
search that bounds more than the camera, never a scan; and they delete exactly the rows they deleted
before (``time column < cutoff``, per kind; the points of the erased tracks), on several cameras, one
of them left only in the crossings. A purge that deleted rows also leaves nothing of them readable in
the write-ahead log.
"""
from __future__ import annotations

import contextlib
import pathlib
import re
import sqlite3
from typing import Any, Iterator

import sqlalchemy as sa

from storelens.contract import messages as m
from storelens.domain.counting import CrossingEvent
from storelens.storage import SqlStorage
from storelens.storage.privacy import DAY_MS, RETENTION_TABLES, TRACK_TABLES

NOW = 1_767_225_600_000 + 200 * DAY_MS
#: Every kind purged (the defaults keep crossings, groups and staff tracks): every statement is checked.
DAYS = {"track_points": 7, "frames": 7, "track_attributes": 30, "customer_matches": 30, "track_summaries": 30,
        "zone_events": 90, "crossings": 365, "group_crossings": 365, "staff_tracks": 365}
CAMERAS = ("Door 2", "cam-a", "cam-b", "é-floor")  # byte order differs from any locale's
AGES = (0.5, 6.9, 7.1, 29, 31, 89, 91, 364, 366)


def person(cam: str, track_id: int, seq: int, ts_ms: int, customer: str | None = None) -> list[Any]:
    """One row of every kind of personal data for one track last seen at ``ts_ms`` (3 points, 2 other tracks
    in the same frames, so the camera holds far more points than the track)."""
    box = m.BoxXYXY(x1=10, y1=20, x2=50, y2=120)
    frames = [m.TrackedFrame(camera_id=cam, seq=seq + k, ts_ms=ts_ms - 2000 + 1000 * k, width=640, height=480,
                             tracks=[m.Track(track_id=t, bbox_xyxy=box, confidence=0.9)
                                     for t in (track_id, track_id + 1000, track_id + 2000)]) for k in range(3)]
    return frames + [
        m.TrackAttributes(camera_id=cam, track_id=track_id, first_ts_ms=ts_ms - 2000, last_ts_ms=ts_ms,
                          last_seq=seq + 2, n_faces=2, gender=m.gender_value("female"), age_years=30.0),
        m.CustomerMatch(event_id=f"{cam}:{track_id}", camera_id=cam, track_id=track_id, seq=seq + 2, ts_ms=ts_ms,
                        customer_id=customer or f"cust-{cam}-{track_id}", similarity=0.9),
        m.TrackSummary(camera_id=cam, track_id=track_id, first_ts_ms=ts_ms - 2000, last_ts_ms=ts_ms, n_frames=3),
        m.ZoneEvent(event_id=f"{cam}:z:{track_id}", camera_id=cam, zone_id="z", zone_kind="area",
                    track_id=track_id, kind=m.ZONE_EVENT_EXIT, ts_ms=ts_ms, seq=seq + 2, dwell_ms=900),
        CrossingEvent(f"{cam}:door:{track_id}", cam, "door", track_id, "in", ts_ms, seq + 2),
        m.GroupCrossing(event_id=f"{cam}:door:g{track_id}", camera_id=cam, line_id="door",
                        direction=m.DIRECTION_IN, ts_ms=ts_ms, seq=seq + 2, last_ts_ms=ts_ms, track_ids=[track_id]),
        m.StaffTrack(camera_id=cam, track_id=track_id, ts_ms=ts_ms, seq=seq + 2, cue="zone", detail="z"),
    ]


def fill(store: SqlStorage) -> None:
    """Every camera: one track per age; a camera taken off the site long ago is left only in the crossings."""
    for cam in CAMERAS:
        rows: list[Any] = []
        for i, age in enumerate(AGES):
            rows += person(cam, 10 + i, 10 * i, int(NOW - age * DAY_MS))
        store.write_records(rows)
    store.write_records([CrossingEvent("old:door:1", "old-cam", "door", 1, "in", NOW - 400 * DAY_MS, 1),
                         CrossingEvent("old:door:2", "old-cam", "door", 2, "out", NOW - 300 * DAY_MS, 2)])


def keys(store: SqlStorage, table: sa.Table, where: Any = None) -> set[tuple]:
    """The primary keys of ``table``'s rows (matching ``where``)."""
    stmt = sa.select(*table.primary_key.columns)
    return set(map(tuple, store._rows(stmt if where is None else stmt.where(where))))


@contextlib.contextmanager
def statements(store: SqlStorage) -> Iterator[list[tuple[str, Any]]]:
    """The SQL (and parameters) the store sends to the database meanwhile."""
    seen: list[tuple[str, Any]] = []

    def hook(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        seen.append((statement, parameters))

    sa.event.listen(store.db.engine, "before_cursor_execute", hook)
    try:
        yield seen
    finally:
        sa.event.remove(store.db.engine, "before_cursor_execute", hook)


def _index_columns(db: sqlite3.Connection, table: str, using: str) -> list[str]:
    if using == "PRIMARY KEY":
        return [r[1] for r in sorted((r for r in db.execute(f"PRAGMA table_info('{table}')") if r[5]),
                                     key=lambda r: r[5])]
    return [r[2] for r in db.execute(f"PRAGMA index_info('{using}')")]


def full_reads(db: sqlite3.Connection, sql: str, params: Any) -> list[str]:
    """The steps of ``sql``'s plan that read a whole table, a whole index or a whole camera.

    Accepted: a ``SEARCH`` whose bounds go beyond ``camera_id=?``, and SQLite's min/max shortcut (one index
    entry: the aggregated column follows the equality bounds in the index), whatever the bounds."""
    bad = []
    agg = re.match(r"\s*SELECT (?:min|max)\((?:\w+\.)?(\w+)\)", sql)
    for *_, detail in db.execute("EXPLAIN QUERY PLAN " + sql, params or ()):
        step = re.fullmatch(r"SEARCH (\w+) USING (?:COVERING )?(?:INDEX (\w+)|(PRIMARY KEY))(?: \((.*)\))?", detail)
        if step is None:
            bad.append(detail)
            continue
        table, using, bounds = step[1], step[2] or step[3], step[4] or ""
        equal = [b[:-2] for b in bounds.split(" AND ") if b.endswith("=?")] if bounds else []
        columns = _index_columns(db, table, using)
        if agg and len(columns) > len(equal) and columns[:len(equal)] == equal and columns[len(equal)] == agg[1]:
            continue  # min/max: one entry of the index
        if not bounds or bounds == "camera_id=?":
            bad.append(detail)
    return bad


def check_plans(db_path: pathlib.Path, seen: list[tuple[str, Any]]) -> list[str]:
    """Every SELECT and DELETE in ``seen`` with the steps of its plan that read more than they need."""
    queries = [(sql, p) for sql, p in seen if re.match(r"\s*(SELECT|DELETE)\b", sql)]
    assert queries, "no statement was caught"
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        return [f"{' '.join(sql.split())} -> {bad}" for sql, p in queries if (bad := full_reads(db, sql, p))]


def test_purge_deletes_the_expired_rows_camera_by_camera_through_indexes(tmp_path: pathlib.Path) -> None:
    """Every statement of the purge and of its camera clock is an index search (no scan of track points,
    frames, matches, summaries, zone events or crossings), and each kind loses exactly its rows older than
    its period, on every camera, the one left only in the crossings too; a second purge deletes nothing."""
    with SqlStorage(str(tmp_path / "h.db")) as store:
        fill(store)
        before = {kind: keys(store, table) for kind, (table, _) in RETENTION_TABLES.items()}
        expired = {kind: keys(store, table, table.c[col] < int(NOW - DAYS[kind] * DAY_MS))
                   for kind, (table, col) in RETENTION_TABLES.items()}
        assert all(expired.values()) and all(before[k] - expired[k] for k in before)  # both sides of each cutoff
        assert ("old:door:1",) in expired["crossings"] and ("old:door:2",) in before["crossings"] - expired["crossings"]
        with statements(store) as seen:
            deleted = store.purge_expired(DAYS, NOW)
            assert store.newest_frame_ms() == int(NOW - 0.5 * DAY_MS)
        assert deleted == {kind: len(rows) for kind, rows in expired.items()}
        assert {kind: keys(store, table) for kind, (table, _) in RETENTION_TABLES.items()} == \
            {kind: before[kind] - expired[kind] for kind in before}
        assert check_plans(tmp_path / "h.db", seen) == []
        assert store.purge_expired(DAYS, NOW) == dict.fromkeys(RETENTION_TABLES, 0)


def test_erasure_finds_the_points_of_the_erased_tracks_only(tmp_path: pathlib.Path) -> None:
    """The erasure's statements search the erased tracks' rows by camera and track (never every point of the
    camera), and delete the same rows as ever: every row of the customer's tracks, nobody else's."""
    with SqlStorage(str(tmp_path / "h.db")) as store:
        fill(store)
        rows = person("cam-a", 500, 900, NOW - DAY_MS, "cu-erased") + person("é-floor", 501, 900, NOW, "cu-erased")
        store.write_records(rows)
        tracks = [("cam-a", 500), ("é-floor", 501)]
        before = {t.name: keys(store, t) for t in TRACK_TABLES}
        theirs = {t.name: keys(store, t, sa.tuple_(t.c.camera_id, t.c.track_id).in_(tracks)) for t in TRACK_TABLES}
        assert len(theirs["track_points"]) == 6 and all(theirs.values())
        with statements(store) as seen:
            assert store.erase_customer("cu-erased") == 2 + sum(map(len, theirs.values()))
        assert {t.name: keys(store, t) for t in TRACK_TABLES} == {n: before[n] - theirs[n] for n in before}
        assert check_plans(tmp_path / "h.db", seen) == []


def test_purged_rows_are_not_left_in_the_write_ahead_log(tmp_path: pathlib.Path) -> None:
    """After an hourly purge that deleted rows, the expired customer link cannot be read from the database
    file nor from its write-ahead log (which held the inserted pages); the kept one is still in the store."""
    db, wal = tmp_path / "h.db", tmp_path / "h.db-wal"
    with SqlStorage(str(db)) as store:
        store.write_records(person("cam", 1, 1, NOW - 40 * DAY_MS, "cu-EXPIRED-SECRET")
                            + person("cam", 2, 10, NOW - DAY_MS, "cu-kept"))
        assert any(b"cu-EXPIRED-SECRET" in p.read_bytes() for p in (db, wal) if p.exists())  # the check sees it
        assert store.purge_expired({"customer_matches": 30}, NOW)["customer_matches"] == 1
        for p in (db, wal):
            if p.exists():
                assert b"cu-EXPIRED-SECRET" not in p.read_bytes(), p.name
        assert [t["track_id"] for t in store.customer_tracks("cu-kept")] == [2]
