"""What ``storelens replay`` reads and replaces: stored frames and track points, derived rows.

* :func:`stored_frames` rebuilds the tracked frames of a camera (every frame, with its
  tracks, the stationary flag and the end of a finite source) from ``frames`` and ``track_points``;
* :func:`delete_derived` removes what the analytics stage derived from them in a range
  (crossings, count windows, and every registered record kind with a ``replay_ts``), so the
  re-derived rows replace them in one transaction with the writes (:func:`replace_derived`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import sqlalchemy as sa

from storelens.contract import messages as m
from storelens.storage.records import RECORDS
from storelens.storage.schema import count_windows, crossings, frames, track_points


def stored_frames(storage: Any, camera_id: str, start_ms: int, end_ms: int) -> list[m.TrackedFrame]:
    """The camera's tracked frames with ``start_ms <= ts_ms < end_ms``, in ``seq`` order."""
    f, p = frames.c, track_points.c
    rows = storage._rows(sa.select(f.seq, f.ts_ms, f.width, f.height, f.source_frame, f.end_of_stream).where(
        f.camera_id == camera_id, f.ts_ms >= start_ms, f.ts_ms < end_ms).order_by(f.seq))
    out = {int(seq): m.TrackedFrame(camera_id=camera_id, seq=seq, ts_ms=ts, width=w, height=h, source_frame=sf,
                                    end_of_stream=bool(eos))
           for seq, ts, w, h, sf, eos in rows}
    points = storage._rows(sa.select(p.seq, p.track_id, p.x1, p.y1, p.x2, p.y2, p.confidence, p.stationary).where(
        p.camera_id == camera_id, p.ts_ms >= start_ms, p.ts_ms < end_ms).order_by(p.seq, p.track_id))
    for seq, tid, x1, y1, x2, y2, conf, stationary in points:
        tf = out.get(int(seq))
        if tf is not None:
            tf.tracks.append(m.Track(track_id=tid, bbox_xyxy=m.BoxXYXY(x1=x1, y1=y1, x2=x2, y2=y2), confidence=conf,
                                     stationary=bool(stationary)))
    return list(out.values())


def _derived() -> list[tuple[sa.Table, str]]:
    core = [(crossings, "ts_ms"), (count_windows, "window_start_ms")]
    return core + [(k.table, k.replay_ts) for k in RECORDS.values() if k.replay_ts is not None]


def delete_derived(conn: sa.Connection, camera_id: str, start_ms: int, end_ms: int) -> int:
    """Delete the derived rows of ``camera_id`` in ``[start_ms, end_ms)``; returns how many went."""
    n = 0
    for table, column in _derived():
        n += conn.execute(sa.delete(table).where(table.c.camera_id == camera_id, table.c[column] >= start_ms,
                                                 table.c[column] < end_ms)).rowcount or 0
    return n


def replace_derived(storage: Any, camera_id: str, start_ms: int, end_ms: int, records: Sequence[Any]) -> int:
    """In one transaction: :func:`delete_derived`, then write ``records``; returns the rows deleted."""
    def write(conn: sa.Connection) -> int:
        n = delete_derived(conn, camera_id, start_ms, end_ms)
        storage._write_records_in(conn, records)
        return n

    return storage._write(write)


def aligned_range(config: Any, start_ms: int | None, end_ms: int | None, span: tuple[int, int]) -> tuple[int, int]:
    """``[start, end)`` widened to whole windows of every derived aggregate (count windows, zone
    buckets, heatmap minutes), so no re-derived window is partial; ``None`` bounds take the stored span."""
    unit = math.lcm(int(config.counting.window_s), int(config.zones.bucket_s), 60) * 1000
    start = span[0] if start_ms is None else start_ms
    end = span[1] + 1 if end_ms is None else end_ms
    return start // unit * unit, -(-end // unit) * unit


@dataclass(frozen=True)
class ReplayResult:
    camera_id: str
    start_ms: int
    end_ms: int
    frames: int
    deleted: int
    written: int
    counts: dict[str, int]


def replay(config: Any, storage: Any, start_ms: int | None = None, end_ms: int | None = None,
           camera_ids: Sequence[str] | None = None) -> list[ReplayResult]:
    """Re-derive the analytics of stored frames with ``config`` (moved lines, new zones) and replace them.

    Per camera: read its frames in the (aligned) range, run :func:`storelens.stages.analytics.derive`
    and, in one transaction, delete what was derived in the range and write the new records. A visit in
    progress at the range start is seen from the first frame of the range (its entry re-dated there).
    """
    from storelens.stages.analytics import derive

    out = []
    for cam in config.cameras:
        if camera_ids is not None and cam.id not in camera_ids:
            continue
        f = frames.c
        lo, hi = storage._read(lambda c: c.execute(sa.select(sa.func.min(f.ts_ms), sa.func.max(f.ts_ms)).where(
            f.camera_id == cam.id)).one())
        if lo is None:
            out.append(ReplayResult(cam.id, start_ms or 0, end_ms or 0, 0, 0, 0, {}))
            continue
        start, end = aligned_range(config, start_ms, end_ms, (int(lo), int(hi)))
        tfs = stored_frames(storage, cam.id, start, end)
        records = derive(config, tfs)
        deleted = replace_derived(storage, cam.id, start, end, records)
        counts: dict[str, int] = {}
        for r in records:
            counts[type(r).__name__] = counts.get(type(r).__name__, 0) + 1
        out.append(ReplayResult(cam.id, start, end, len(tfs), deleted, len(records), counts))
    return out
