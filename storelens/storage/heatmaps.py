"""Heatmap queries of the history store: cells summed over a time range, reference frames.

The analytics stage writes one row per camera, cell size and minute, plus one per hour
with the running sum of its minutes (``heatmap_windows``, ``span_ms`` 60 000 or
3 600 000; from :class:`~storelens.contract.messages.HeatmapWindow`), the non-empty
cells packed in one binary column. A range query reads the hour rows of the whole
hours inside the range and the minute rows of its edges -- a day of a camera is 24 + at
most 118 rows whatever the number of people or cells -- by the primary key
``(camera_id, cell_px, span_ms, window_start_ms)``, and sums the cells with numpy.
(Measured on PostgreSQL, 2 busy cores: a ``GROUP BY`` over one row per cell and minute
took ~ 300 ms for a day of 200 busy cells a minute, minute rows alone ~ 150 ms.)

Ranges are half-open and minute-resolved: the minutes *starting* in
``[start_ms, end_ms)`` count in full (round the bounds to minutes for exact answers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

import storelens.storage.dialects as dialects
from storelens.storage.schema import camera_snapshots, heatmap_windows


@dataclass(frozen=True)
class HeatmapCells:
    """A camera's cells summed over a range: ``cells`` = ``(gx, gy, occupancy_ms, dwell_ms)``."""

    camera_id: str
    cell_px: int
    width: int
    height: int
    minutes: int
    cells: list[tuple[int, int, int, int]] = field(default_factory=list)

    def total_ms(self, kind: str = "occupancy") -> int:
        i = 2 if kind == "occupancy" else 3
        return sum(c[i] for c in self.cells)

    def values(self, kind: str = "occupancy") -> list[tuple[int, int, int]]:
        i = 2 if kind == "occupancy" else 3
        return [(c[0], c[1], c[i]) for c in self.cells if c[i] > 0]


@dataclass(frozen=True)
class Snapshot:
    camera_id: str
    ts_ms: int
    width: int
    height: int
    blurred: int
    jpeg: bytes


MINUTE_MS = 60_000
HOUR_MS = 3_600_000
#: Most minute-row ranges one statement of :func:`heatmap` reads (SQLite allows 500 terms in a compound SELECT).
UNION_PARTS = 200


def heatmap_cell_sizes(store: Any, camera_id: str, start_ms: int, end_ms: int) -> dict[int, int]:
    """cell_px -> latest minute with data in the range (several when the configured cell size changed)."""
    h = heatmap_windows.c
    stmt = (sa.select(h.cell_px, sa.func.max(h.window_start_ms))
            .where(h.camera_id == camera_id, h.span_ms == MINUTE_MS, h.window_start_ms >= start_ms,
                   h.window_start_ms < end_ms)
            .group_by(h.cell_px))
    return {int(px): int(ts) for px, ts in store._rows(stmt)}


def unpack_cells(data: bytes) -> np.ndarray:
    """``(N, 4)`` int64 ``(gx, gy, occupancy_ms, dwell_ms)`` of a packed ``cells`` column."""
    return np.frombuffer(data, "<i4").reshape(-1, 4).astype(np.int64)


def sum_cells(arr: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(gx, gy, occupancy_ms, dwell_ms)`` rows summed by cell, row by row then column."""
    if not len(arr):
        return []
    cols = int(arr[:, 0].max()) + 1
    keys = arr[:, 1] * cols + arr[:, 0]
    occ = np.bincount(keys, weights=arr[:, 2])
    dwell = np.bincount(keys, weights=arr[:, 3], minlength=len(occ))
    seen = np.bincount(keys, minlength=len(occ)) > 0
    return [(int(k % cols), int(k // cols), int(round(occ[k])), int(round(dwell[k]))) for k in np.nonzero(seen)[0]]


def rebuild_hours(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Make the hour rows of the hours ``rows`` (just written) touched the sum of their stored minute rows
    of the frame size of the hour's latest minute, in the writer's transaction (one read of at most 60 rows
    per camera, cell size and hour of a batch): whatever hour sum the analytics stage sent (a restarted
    embedded run starts its sum afresh; a re-pointed file's minutes replace the old file's), the hour row
    equals its minutes. An hour with no minute row stored keeps the row it was sent.

    Writers of the same hour (a replay and the live analytics on PostgreSQL) are serialised by the hour row's
    lock, taken before the minutes are read (an upsert of the row: a placeholder where it is missing): the
    second one waits for the first one's commit, then reads its minutes too (READ COMMITTED: a fresh snapshot
    per statement), so neither fails on the key nor writes a sum lacking the other's minute."""
    h = heatmap_windows.c
    ins = dialects.insert_on(conn, heatmap_windows)
    key = [c.name for c in heatmap_windows.primary_key]
    lock = ins.on_conflict_do_update(index_elements=key, set_={"window_end_ms": ins.excluded.window_end_ms})
    write = ins.on_conflict_do_update(index_elements=key, set_={
        c.name: ins.excluded[c.name] for c in heatmap_windows.c if c.name not in key})
    for cam, px, hour in sorted({(r["camera_id"], int(r["cell_px"]), int(r["window_start_ms"]) // HOUR_MS * HOUR_MS)
                                 for r in rows}):
        row = {"camera_id": cam, "cell_px": px, "span_ms": HOUR_MS, "window_start_ms": hour,
               "window_end_ms": hour + HOUR_MS}
        # n_cells -1 marks the placeholder (the row is missing only when no minute of the hour was written)
        conn.execute(lock, [{**row, "width": 0, "height": 0, "n_cells": -1, "occupancy_ms": 0, "dwell_ms": 0,
                             "cells": b""}])
        minutes = conn.execute(
            sa.select(h.width, h.height, h.cells, h.window_start_ms)
            .where(h.camera_id == cam, h.cell_px == px, h.span_ms == MINUTE_MS, h.window_start_ms >= hour,
                   h.window_start_ms < hour + HOUR_MS).order_by(h.window_start_ms)).all()
        if not minutes:
            conn.execute(sa.delete(heatmap_windows).where(h.camera_id == cam, h.cell_px == px, h.span_ms == HOUR_MS,
                                                          h.window_start_ms == hour, h.n_cells == -1))
            continue
        width, height = int(minutes[-1][0]), int(minutes[-1][1])
        packed = [unpack_cells(r[2]) for r in minutes if (int(r[0]), int(r[1])) == (width, height)]
        cells = sum_cells(np.concatenate(packed))
        conn.execute(write, [{**row, "width": width, "height": height, "n_cells": len(cells),
                              "occupancy_ms": sum(c[2] for c in cells), "dwell_ms": sum(c[3] for c in cells),
                              "cells": np.array(cells, "<i4").reshape(-1, 4).tobytes()}])


def heatmap(store: Any, camera_id: str, start_ms: int, end_ms: int, cell_px: int | None = None) -> HeatmapCells | None:
    """The camera's cells over the minutes starting in ``[start_ms, end_ms)``; ``None`` when there are none.

    ``cell_px``: the grid to read (default: the configured one if it has rows, else the latest used).
    """
    sizes = heatmap_cell_sizes(store, camera_id, start_ms, end_ms)
    if not sizes:
        return None
    px = cell_px if cell_px in sizes else max(sizes, key=lambda k: sizes[k])
    h = heatmap_windows.c
    first = -(-start_ms // MINUTE_MS) * MINUTE_MS  # the first minute starting in the range
    h_start, h_end = -(-first // HOUR_MS) * HOUR_MS, end_ms // HOUR_MS * HOUR_MS
    grid = (h.camera_id == camera_id, h.cell_px == px)
    latest = (sa.select(h.width, h.height).where(*grid, h.span_ms == MINUTE_MS, h.window_start_ms == sizes[px]))

    def read(conn: sa.Connection) -> tuple[int, int, list[Any], int]:
        # one frame size: the latest minute's (a camera whose frame size changed has cells of two grids)
        width, height = (int(v) for v in conn.execute(latest).one())
        size = (*grid, h.width == width, h.height == height)
        minute_rows = sa.select(h.cells).where(*size, h.span_ms == MINUTE_MS)
        rows: list[Any] = []
        if h_start < h_end:  # whole hours from the hour rows (of this size), the rest from the minute rows
            rows = conn.execute(sa.select(h.cells, h.window_start_ms).where(
                *size, h.span_ms == HOUR_MS, h.window_start_ms >= h_start, h.window_start_ms < h_end)).all()
        parts: list[Any] = []
        lo = start_ms
        for t in sorted(int(r[1]) for r in rows) + [None]:  # the minute rows between the hours read from hour rows
            hi = end_ms if t is None else t
            if lo < hi:
                parts.append(minute_rows.where(h.window_start_ms >= lo, h.window_start_ms < hi))
            lo = -1 if t is None else t + HOUR_MS
        # a part per run of hours without an hour row (a night without people): over a long history more than
        # one statement takes (SQLite: at most 500 terms in a compound SELECT)
        for i in range(0, len(parts), UNION_PARTS):
            chunk = parts[i:i + UNION_PARTS]
            rows += conn.execute(sa.union_all(*chunk) if len(chunk) > 1 else chunk[0]).all()
        count = sa.select(sa.func.count()).where(*size, h.span_ms == MINUTE_MS, h.window_start_ms >= start_ms,
                                                 h.window_start_ms < end_ms)
        return width, height, rows, int(conn.execute(count).scalar_one())

    width, height, rows, minutes = store._read(read)
    packed = [unpack_cells(r[0]) for r in rows]
    arr = np.concatenate(packed) if packed else np.zeros((0, 4), np.int64)
    return HeatmapCells(camera_id, int(px), width, height, minutes, sum_cells(arr))


def snapshot(store: Any, camera_id: str, at_ms: int | None = None) -> Snapshot | None:
    """The camera's reference frame: the latest taken before ``at_ms`` (else the earliest after), or ``None``."""
    s = camera_snapshots.c
    cols = (s.camera_id, s.ts_ms, s.width, s.height, s.blurred, s.jpeg)
    stmt = sa.select(*cols).where(s.camera_id == camera_id)
    rows = []
    if at_ms is not None:
        rows = store._rows(stmt.where(s.ts_ms < at_ms).order_by(s.ts_ms.desc()).limit(1))
        if not rows:
            rows = store._rows(stmt.order_by(s.ts_ms).limit(1))
    else:
        rows = store._rows(stmt.order_by(s.ts_ms.desc()).limit(1))
    if not rows:
        return None
    r = rows[0]
    return Snapshot(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4]), bytes(r[5]))
