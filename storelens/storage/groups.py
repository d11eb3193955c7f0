"""Buying units and staff in the history store: what ``/v1/counts`` and ``/v1/kpis`` read.

Functions take the history store (:class:`~storelens.storage.history.SqlStorage`) and go through
its connection, so they work on SQLite and PostgreSQL alike. The rows are written like every
other record (:data:`~storelens.storage.records.RECORDS`: ``GroupCrossing`` -> ``group_crossings``,
``StaffTrack`` -> ``staff_tracks``).
"""
from __future__ import annotations

import json
from typing import Any, Iterable

import sqlalchemy as sa

from storelens.domain.calendar import BucketGrid
from storelens.domain.groups import Crossing, Group
from storelens.storage.schema import crossings, group_crossings, staff_tracks


def group_totals(storage: Any, camera_id: str, start_ms: int | None, end_ms: int | None,
                 line_id: str | None = None) -> dict[str, dict[str, int]]:
    """``{line_id: {"in": units, "out": units}}`` of the groups that started in the range."""
    g = group_crossings.c
    stmt = (sa.select(g.line_id, g.direction, sa.func.count()).where(g.camera_id == camera_id)
            .group_by(g.line_id, g.direction))
    if start_ms is not None:
        stmt = stmt.where(g.ts_ms >= start_ms)
    if end_ms is not None:
        stmt = stmt.where(g.ts_ms < end_ms)
    if line_id is not None:
        stmt = stmt.where(g.line_id == line_id)
    out: dict[str, dict[str, int]] = {}
    for line, direction, n in storage._rows(stmt):
        out.setdefault(line, {"in": 0, "out": 0})[direction] = int(n)
    return out


def group_span(storage: Any, camera_id: str) -> tuple[int, int] | None:
    """``(first_ts_ms, last_ts_ms)`` of the camera's groups (as ``crossing_span``), ``None`` if there are none."""
    g = group_crossings.c
    (row,) = storage._rows(sa.select(sa.func.min(g.ts_ms), sa.func.max(g.ts_ms)).where(g.camera_id == camera_id))
    return None if row[0] is None else (int(row[0]), int(row[1]))


def group_buckets(storage: Any, camera_id: str, start_ms: int, end_ms: int, grid: BucketGrid,
                  line_id: str | None = None) -> dict[tuple[str, int], dict[str, int]]:
    """``{(line_id, bucket_start_ms): {"in": units, "out": units}}`` in the buckets of ``grid`` (as ``counts``:
    exact over the groups of the range, see :func:`group_span`)."""
    g = group_crossings.c
    stmt = sa.select(g.line_id, g.direction, g.ts_ms).where(g.camera_id == camera_id, g.ts_ms >= start_ms,
                                                            g.ts_ms < end_ms)
    if line_id is not None:
        stmt = stmt.where(g.line_id == line_id)
    out: dict[tuple[str, int], dict[str, int]] = {}
    for line, direction, ts in storage._rows(stmt):
        out.setdefault((line, grid.start_of(int(ts))), {"in": 0, "out": 0})[direction] += 1
    return out


def unit_entries(storage: Any, lines: Iterable[tuple[str, str]] | None, start_ms: int,
                 end_ms: int) -> list[tuple[int, str, list[int]]]:
    """``(ts_ms, camera_id, track_ids)`` of the groups entering (``in``) through the lines (``None``: every line)."""
    g = group_crossings.c
    stmt = sa.select(g.ts_ms, g.camera_id, g.track_ids).where(g.direction == "in", g.ts_ms >= start_ms,
                                                              g.ts_ms < end_ms)
    if lines is not None:
        keys = sorted(set(lines))
        if not keys:
            return []
        stmt = stmt.where(sa.tuple_(g.camera_id, g.line_id).in_(keys))
    return sorted((int(ts), cam, [int(t) for t in json.loads(ids)]) for ts, cam, ids in storage._rows(stmt))


def in_crossings_by_track(storage: Any, lines: Iterable[tuple[str, str]] | None, start_ms: int,
                          end_ms: int) -> list[tuple[int, str, int]]:
    """``(ts_ms, camera_id, track_id)`` of the ``in`` crossings of the lines (``None``: every line), in time order."""
    c = crossings.c
    stmt = sa.select(c.ts_ms, c.camera_id, c.track_id).where(c.direction == "in", c.ts_ms >= start_ms,
                                                             c.ts_ms < end_ms)
    if lines is not None:
        keys = sorted(set(lines))
        if not keys:
            return []
        stmt = stmt.where(sa.tuple_(c.camera_id, c.line_id).in_(keys))
    return sorted((int(ts), cam, int(t)) for ts, cam, t in storage._rows(stmt))


def staff_track_ids(storage: Any, start_ms: int, end_ms: int) -> dict[tuple[str, int], int]:
    """``{(camera_id, track_id): ts_ms}`` of the tracks recognised as staff in the range."""
    s = staff_tracks.c
    stmt = sa.select(s.camera_id, s.track_id, s.ts_ms).where(s.ts_ms >= start_ms, s.ts_ms < end_ms)
    return {(cam, int(t)): int(ts) for cam, t, ts in storage._rows(stmt)}


def stored_groups(storage: Any, camera_id: str) -> list[Group]:
    """The camera's groups read back with their members' crossings (for scoring against expected groups)."""
    c, g = crossings.c, group_crossings.c
    rows = storage._rows(sa.select(c.event_id, c.line_id, c.track_id, c.direction, c.ts_ms, c.seq)
                         .where(c.camera_id == camera_id))
    by_key: dict[tuple[str, int, str], list[Crossing]] = {}
    for eid, line, tid, d, ts, seq in rows:
        by_key.setdefault((line, int(tid), d), []).append(Crossing(eid, line, int(tid), d, int(ts), int(seq)))
    out = []
    for line, d, ts, last, ids in storage._rows(
            sa.select(g.line_id, g.direction, g.ts_ms, g.last_ts_ms, g.track_ids).where(g.camera_id == camera_id)
            .order_by(g.ts_ms, g.event_id)):
        members = []
        for tid in json.loads(ids):
            cands = [x for x in by_key.get((line, int(tid), d), []) if int(ts) <= x.ts_ms <= int(last)]
            if cands:
                members.append(cands[0])
        if members:
            out.append(Group(camera_id, line, d, tuple(sorted(members, key=lambda x: (x.ts_ms, x.seq, x.track_id)))))
    return out
