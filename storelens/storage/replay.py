"""What ``storelens replay`` reads and replaces: stored frames and track points, derived rows.

* :func:`stored_frames` rebuilds the tracked frames of a camera (every frame, with its
  tracks, the stationary flag and the end of a finite source) from ``frames`` and ``track_points``;
* :func:`delete_derived` removes what the analytics stage derived from them in a range
  (crossings, count windows, and every registered record kind with a ``replay_ts``), so the
  re-derived rows replace them in one transaction with the writes (:func:`replace_derived`); the
  track summaries of the range replace the stored ones' zones, crossings and times by their key (the
  stored appearance stays), but those of tracks already on the camera before the range, which the
  replay sees only in part (:func:`_without_cut_tracks`), and those of tracks re-found after its end (a
  summary ending before the stored one never replaces it: :mod:`storelens.storage.records`).

A range ends at an hour edge (:func:`aligned_range`) and is derived over the frames up to
:func:`close_delay_ms` after it (and the first frame past that), so what is dated before the end but
confirmed or closed after it (an exit, the last zone buckets, the hour's last heatmap minute and its
hour row) is re-derived whole; what is dated at or after the end (:func:`record_ts`) is not written.

Frames and track points are kept for days (``privacy.retention``), crossings and the aggregates
for longer (by default forever): a replay only re-derives where the frames are still stored
(:func:`aligned_range`), so what was derived from purged frames stays as it is.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import sqlalchemy as sa

import storelens.storage.dialects as dialects
from storelens.contract import messages as m
from storelens.domain.counting import STORE_OCCUPANCY_ID
from storelens.storage.records import RECORDS
from storelens.storage.schema import count_windows, crossings, frames, heatmap_windows, track_points

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000


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
        # the erasure lock (shared) before the deletes' row locks, as every history write of track rows takes it
        dialects.erasure_lock(storage.db, conn, exclusive=False)
        n = delete_derived(conn, camera_id, start_ms, end_ms)
        storage._write_records_in(conn, records)
        return n

    return storage._write(write)


def _zone_grace_ms(config: Any, camera: Any) -> int:
    from storelens.stages.zones import zone_analyzer

    analyzer = zone_analyzer(config, camera)
    return 0 if analyzer is None else analyzer.grace_ms


#: Per analysis: how long after a time ``t`` the frames must go on before every record dated before ``t``
#: is as final as live (confirmed, closed); the first frame at or after ``t`` plus that is what closes it.
CLOSE_DELAYS: list[tuple[str, Callable[[Any, Any], int]]] = [
    # an event is dated up to the zones' inertia before the frame confirming it; a bucket closes that
    # much (plus CLOSE_GRACE_MS) after its end: the zone analyzer's own close rule
    ("zones", _zone_grace_ms),
    # a buying unit closes when no crossing joined it for window_ms
    ("groups", lambda config, cam: config.groups.window_ms if config.groups.enabled and cam.lines else 0),
    # a heatmap minute (and its hour row) closes at the first frame at or after its end
    ("heatmap", lambda config, cam: 0),
    # crossings and count windows are dated at the frame that makes them
    ("counting", lambda config, cam: 0),
]


def close_delay_ms(config: Any, camera: Any) -> int:
    """The longest of :data:`CLOSE_DELAYS` for ``camera``: a replay ending at ``end`` derives over the
    frames before ``end`` plus this, and the first frame at or after that."""
    return max(delay(config, camera) for _, delay in CLOSE_DELAYS)


#: The time a derived record is dated by, where it is not its table's replay column (records of a
#: registered kind with a ``replay_ts``) nor ``ts_ms``.
_DATED_BY: dict[type, str] = {m.CountWindow: "window_start_ms", m.HeatmapWindow: "window_start_ms",
                              m.TrackSummary: "first_ts_ms", m.Alert: "fired_ts_ms"}


def record_ts(record: Any) -> int:
    """The time a record derived by the analytics stage is dated by: a replay ending at ``end`` keeps the
    records with ``record_ts < end`` (those are the rows it deletes, for the kinds it deletes)."""
    kind = RECORDS.get(type(record))
    name = _DATED_BY.get(type(record)) or (kind.replay_ts if kind is not None and kind.replay_ts else "ts_ms")
    return int(getattr(record, name))


def replay_unit_ms(config: Any) -> int:
    """The step a replayed range is aligned to: whole count windows, zone buckets, heatmap minutes and
    hours (an hour's heatmap row is the running sum of its minutes, so an hour is always re-derived whole)."""
    return math.lcm(int(config.counting.window_s), int(config.zones.bucket_s), 60, HOUR_MS // 1000) * 1000


def aligned_range(config: Any, start_ms: int | None, end_ms: int | None, span: tuple[int, int], *,
                  purged: bool | Callable[[], bool] = True) -> tuple[int, int]:
    """``[start, end)`` widened to whole windows of every derived aggregate (:func:`replay_unit_ms`),
    within the stored frames ``span`` (oldest, newest frame time); ``None`` bounds take the span.

    The start (at the earliest the oldest stored frame) is rounded down; but if that falls before the
    oldest stored frame and frames before it were ``purged`` (by retention; a callable is asked only
    then, see :func:`derived_before`), it is rounded up: the window holding the oldest frame lacks them
    and cannot be re-derived whole (its rows, and everything older, stay as derived live). The end
    stops after the newest frame (rounded up). An empty range (``start == end``): nothing to re-derive.
    """
    unit = replay_unit_ms(config)
    lo, hi = span
    start = max(lo if start_ms is None else start_ms, lo) // unit * unit
    if start < lo and (purged() if callable(purged) else purged):
        start = -(-lo // unit) * unit
    end = -(-(hi + 1 if end_ms is None else min(end_ms, hi + 1)) // unit) * unit
    return start, max(start, end)


def derived_before(storage: Any, config: Any, camera_id: str, oldest_ms: int) -> bool:
    """Whether rows were derived from frames older than the camera's oldest stored one (``oldest_ms``),
    i.e. the retention purge took frames (a recording that simply began then has none): an event
    (crossing, zone event, buying unit) before it, or a window (count window, zone bucket, heatmap)
    starting before the replay window that holds it."""
    unit_start = oldest_ms // replay_unit_ms(config) * replay_unit_ms(config)
    checks = [(t, c, oldest_ms if c == "ts_ms" else unit_start) for t, c in _derived()]
    checks.append((heatmap_windows, "window_start_ms", unit_start))

    def any_older(conn: sa.Connection) -> bool:
        return any(conn.execute(sa.select(t.c.camera_id).where(t.c.camera_id == camera_id, t.c[c] < before)
                                .limit(1)).first() is not None for t, c, before in checks)

    return bool(storage._read(any_older))


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did for one camera: ``[start_ms, end_ms)`` is the range actually re-derived (its rows
    replaced), which may be narrower than the one asked for (``requested_*``, ``None``: not given)."""

    camera_id: str
    start_ms: int
    end_ms: int
    frames: int
    deleted: int
    written: int
    counts: dict[str, int]
    requested_start_ms: int | None = None
    requested_end_ms: int | None = None
    #: Why the range is narrower than asked (``None`` when it is not), e.g. frames purged by retention.
    note: str | None = None


def replay(config: Any, storage: Any, start_ms: int | None = None, end_ms: int | None = None,
           camera_ids: Sequence[str] | None = None) -> list[ReplayResult]:
    """Re-derive the analytics of stored frames with ``config`` (moved lines, new zones) and replace them.

    Per camera: read its frames in the (aligned) range, run :func:`storelens.stages.analytics.derive`
    and, in one transaction, delete what was derived in the range and write the new records. A visit in
    progress at the range start is seen from the first frame of the range (its entry re-dated there).

    The range is kept to where the camera's frames are stored (:func:`aligned_range`): rows derived
    from frames the retention purge deleted are kept, not replaced by nothing (a recording that began
    mid-window is replayed from its first frame). Each result gives the range actually replayed and,
    when it is narrower than the one asked for, a ``note`` (also logged).
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
        lo, hi = int(lo), int(hi)
        start, end = aligned_range(config, start_ms, end_ms, (lo, hi),
                                   purged=lambda: derived_before(storage, config, cam.id, lo))
        note = _narrowed(config, start_ms, start, end, (lo, hi))
        if note is not None:  # a warning when the range was asked for and could not be replayed whole
            log.log(logging.INFO if start_ms is None else logging.WARNING, "replay of camera %s: [%d, %d) replayed; %s",
                    cam.id, start, end, note)
        if start >= end:
            out.append(ReplayResult(cam.id, start, end, 0, 0, 0, {}, start_ms, end_ms, note))
            continue
        after = end + close_delay_ms(config, cam)  # the frames after the end that confirm or close its rows
        closing = storage._read(lambda c: c.execute(sa.select(sa.func.min(f.ts_ms)).where(
            f.camera_id == cam.id, f.ts_ms >= after)).scalar())
        tfs = stored_frames(storage, cam.id, start, after if closing is None else int(closing) + 1)
        records = [r for r in derive(config, tfs) if record_ts(r) < end  # the store's row: from every camera, live
                   and not (isinstance(r, m.OccupancyUpdate) and r.camera_id == STORE_OCCUPANCY_ID)]
        records = _without_cut_tracks(storage, config, cam.id, start, records)
        deleted = replace_derived(storage, cam.id, start, end, records)
        counts: dict[str, int] = {}
        for r in records:
            counts[type(r).__name__] = counts.get(type(r).__name__, 0) + 1
        n_frames = sum(tf.ts_ms < end for tf in tfs)
        out.append(ReplayResult(cam.id, start, end, n_frames, deleted, len(records), counts, start_ms, end_ms, note))
    return out


def _without_cut_tracks(storage: Any, config: Any, camera_id: str, start_ms: int, records: list) -> list:
    """``records`` without the track summaries of tracks that were on the camera before ``start_ms`` (a stored
    point of the track in the time before it that a track may stay unseen and go on): the replay saw only their
    rest, so the stored summary, of the whole track, stays as it is (a re-derived summary replaces its zones,
    crossings and times: :mod:`storelens.storage.records`)."""
    from storelens.stages.journeys import reopen_ms

    ids = sorted({r.track_id for r in records if isinstance(r, m.TrackSummary)})
    if not ids:
        return records
    p = track_points.c
    horizon = max(int(config.journeys.track_end_after_s * 1000), reopen_ms(config))
    cut: set[int] = set()
    for i in range(0, len(ids), 500):
        cut |= {int(t) for (t,) in storage._rows(sa.select(p.track_id).distinct().where(
            p.camera_id == camera_id, p.track_id.in_(ids[i:i + 500]), p.ts_ms < start_ms,
            p.ts_ms >= start_ms - horizon))}
    return [r for r in records if not (isinstance(r, m.TrackSummary) and r.track_id in cut)]


def _narrowed(config: Any, start_ms: int | None, start: int, end: int, span: tuple[int, int]) -> str | None:
    """Why ``[start, end)`` is less than asked (``None``: it is not): frames purged, or none in the range."""
    lo, hi = span
    why = None
    if start > max(lo, lo if start_ms is None else start_ms) // replay_unit_ms(config) * replay_unit_ms(config):
        why = (f"the camera's frames before {lo} were purged (retention): the rows derived before {start} "
               "are kept as they are")
    if start >= end:
        return f"nothing re-derived: {why or f'the newest stored frame of the camera is at {hi}'}"
    return None if why is None else f"started at {start}, not {lo if start_ms is None else start_ms}: {why}"
