"""What ``storelens replay`` reads and replaces: stored frames and track points, derived rows.

* :func:`stored_frames` rebuilds the tracked frames of a camera (every frame, with its
  tracks, the stationary flag and the end of a finite source) from ``frames`` and ``track_points``;
* :func:`delete_derived` removes what the analytics stage derived from them in a range
  (crossings, count windows, and every registered record kind with a ``replay_ts``), so the
  re-derived rows replace them in one transaction with the writes (:func:`replace_derived`); the
  track summaries of the range replace the stored ones' zones, crossings and times by their key (the
  stored appearance stays), but those of tracks already on the camera before the range, which the
  replay sees only in part (:func:`_without_cut_tracks`), and those of tracks re-found after its end (a
  summary ending before the stored one never replaces it: :mod:`storelens.storage.records`). What is of
  the whole store (the ``@store`` occupancy row, the store-wide alerts ``store_occupancy`` and
  ``camera_down``) is not written: it comes from every camera, live, and a replay sees one.

A range ends at an hour edge (:func:`aligned_range`) and is derived over the frames up to
:func:`close_delay_ms` after it (and the first frame past that), so what is dated before the end but
confirmed or closed after it (an exit, the last zone buckets, the hour's last heatmap minute and its
hour row) is re-derived whole; what is dated at or after the end (:func:`record_ts`) is not written.

Frames and track points are kept for days (``privacy.retention``, points possibly less than frames),
crossings and the aggregates for longer (by default forever): a replay only re-derives where the frames
and their track points are still stored (:func:`replayable_span`, :func:`aligned_range`), so what was
derived from purged ones stays as it is. Nor does it delete rows dated after the newest frame it read
(those of a pipeline running meanwhile), nor delete or write what is still open at that frame (unless it ends
the stream: :func:`open_from`), which a running pipeline writes once a later frame closes it; a live camera silent
for :func:`stopped_after_ms` has stopped, and is ended at its newest frame as an end of stream ends it (:func:`replay`).

Erasure deletes a track's points but keeps its crossings (anonymous counts): a crossing without a stored point
of its track at its time cannot be derived again, so it is kept, and with it its share of the count windows
(counted from the stored crossings) and its buying unit (:func:`replace_derived`).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import sqlalchemy as sa

import storelens.storage.dialects as dialects
from storelens.config.alerts import STORE_KINDS
from storelens.contract import messages as m
from storelens.domain.counting import STORE_OCCUPANCY_ID, CrossingEvent
from storelens.storage.records import RECORDS
from storelens.storage.schema import (count_windows, crossings, erased_tracks, frames, group_crossings, heatmap_windows,
                                      track_points)

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000


#: How many frames (with their track points) a replay reads at a time (:func:`iter_stored_frames`): its memory is
#: that page and the analytics state, not the history (a week at 15 fps is ~9 million frames).
PAGE_FRAMES = 2_000


def stored_frames(storage: Any, camera_id: str, start_ms: int, end_ms: int) -> list[m.TrackedFrame]:
    """The camera's tracked frames with ``start_ms <= ts_ms < end_ms``, in ``seq`` order."""
    return list(iter_stored_frames(storage, camera_id, start_ms, end_ms))


def iter_stored_frames(storage: Any, camera_id: str, start_ms: int, end_ms: int,
                       page_frames: int | None = None) -> Iterator[m.TrackedFrame]:
    """:func:`stored_frames` read ``page_frames`` (:data:`PAGE_FRAMES`) frames at a time, each page with its track
    points (by ``seq``, the frames' and the points' key): the same frames in the same order, held one page at a
    time. The frames written after the first read (a live pipeline's, of higher ``seq``) are not read."""
    f, p = frames.c, track_points.c
    n = int(page_frames or PAGE_FRAMES)
    in_range = [f.camera_id == camera_id, f.ts_ms >= start_ms, f.ts_ms < end_ms]
    first, last = storage._read(lambda c: c.execute(sa.select(sa.func.min(f.seq), sa.func.max(f.seq)).where(
        *in_range)).one())
    if first is None:
        return
    after = int(first) - 1
    while after < int(last):
        rows = storage._rows(sa.select(f.seq, f.ts_ms, f.width, f.height, f.source_frame, f.end_of_stream).where(
            *in_range, f.seq > after, f.seq <= last).order_by(f.seq).limit(n))
        if not rows:
            return
        page = {int(seq): m.TrackedFrame(camera_id=camera_id, seq=seq, ts_ms=ts, width=w, height=h, source_frame=sf,
                                         end_of_stream=bool(eos))
                for seq, ts, w, h, sf, eos in rows}
        points = storage._rows(sa.select(p.seq, p.track_id, p.x1, p.y1, p.x2, p.y2, p.confidence, p.stationary).where(
            p.camera_id == camera_id, p.seq > after, p.seq <= int(rows[-1][0]), p.ts_ms >= start_ms,
            p.ts_ms < end_ms).order_by(p.seq, p.track_id))
        for seq, tid, x1, y1, x2, y2, conf, stationary in points:
            tf = page.get(int(seq))
            if tf is not None:
                tf.tracks.append(m.Track(track_id=tid, bbox_xyxy=m.BoxXYXY(x1=x1, y1=y1, x2=x2, y2=y2),
                                         confidence=conf, stationary=bool(stationary)))
        yield from page.values()
        del page, points
        after = int(rows[-1][0])


def _derived() -> list[tuple[sa.Table, str]]:
    core = [(crossings, "ts_ms"), (count_windows, "window_start_ms")]
    return core + [(k.table, k.replay_ts) for k in RECORDS.values() if k.replay_ts is not None]


def _has_point() -> Any:
    """Whether a crossing's track has a stored point at the crossing's frame (a crossing is made by a point of its
    track: its ``seq`` is that frame's): one without has lost its points to an erasure, and no replay can derive it
    again. Matched on the points' primary key ``(camera_id, seq, track_id)`` (one row, not the track's every point:
    a staff member's track holds ~10^5), the time checked on that row."""
    p, c = track_points.c, crossings.c
    return sa.exists().where(p.camera_id == c.camera_id, p.seq == c.seq, p.track_id == c.track_id,
                             p.ts_ms == c.ts_ms)


def delete_derived(conn: sa.Connection, camera_id: str, start_ms: int, end_ms: int | Mapping[str, int],
                   keep_groups: Sequence[str] = ()) -> int:
    """Delete the derived rows of ``camera_id`` in ``[start_ms, end_ms)`` (``end_ms`` per table name: the ends of
    :func:`open_from`); returns how many went. A crossing whose track has no stored point at its time is kept: its
    points were erased with a customer (:func:`storelens.storage.privacy.erase_customer` keeps the crossings as
    anonymous counts), so no replay can derive it again; so are the buying units ``keep_groups`` (event ids)."""
    n = 0
    for table, column in _derived():
        end = end_ms if isinstance(end_ms, int) else end_ms.get(table.name, min(end_ms.values()))
        where = [table.c.camera_id == camera_id, table.c[column] >= start_ms, table.c[column] < end]
        if table is crossings:
            where.append(_has_point())
        if table is group_crossings and keep_groups:
            where.append(table.c.event_id.not_in(list(keep_groups)))
        n += conn.execute(sa.delete(table).where(*where)).rowcount or 0
    return n


def _erased_units(conn: sa.Connection, camera_id: str, start_ms: int, ends: Mapping[str, int]
                  ) -> list[tuple[str, str, str, int, int, set[int]]]:
    """The stored buying units (``event_id, line, direction, ts, last_ts, track ids``) of the range holding a
    crossing :func:`delete_derived` keeps (erased points): kept as they are, as that crossing."""
    c, g = crossings.c, group_crossings.c
    kept = conn.execute(sa.select(c.line_id, c.direction, c.track_id, c.ts_ms).where(
        c.camera_id == camera_id, c.ts_ms >= start_ms, c.ts_ms < ends["crossings"], ~_has_point())).all()
    if not kept:
        return []
    kept_ts: dict[tuple[str, str, int], list[int]] = {}  # per (line, direction, track): its kept crossings' times
    for kl, kd, kt, kts in kept:
        kept_ts.setdefault((kl, kd, int(kt)), []).append(int(kts))
    units = conn.execute(sa.select(g.event_id, g.line_id, g.direction, g.ts_ms, g.last_ts_ms, g.track_ids).where(
        g.camera_id == camera_id, g.ts_ms >= start_ms, g.ts_ms < ends["group_crossings"])).all()
    out = []
    for eid, line, d, ts, last, ids in units:
        members = {int(t) for t in json.loads(ids)}
        if any(int(ts) <= kts <= int(last) for t in members for kts in kept_ts.get((line, d, t), ())):
            out.append((eid, line, d, int(ts), int(last), members))
    return out


def replace_derived(storage: Any, camera_id: str, start_ms: int, end_ms: int | Mapping[str, int],
                    records: Sequence[Any], window_s: int | None = None) -> int:
    """In one transaction: :func:`delete_derived`, then write ``records``; returns the rows deleted.

    With ``window_s`` (``counting.window_s``; ``end_ms`` the ends of :func:`open_from`) the rows of crossings a
    replay cannot derive again (erased points) stay whole: the count windows of the range are not those of
    ``records`` but counted from the stored crossings once the records are written (the kept ones, and a live
    pipeline's after the newest frame read, count as before; counted again once written, so a live write committed
    meanwhile is not overwritten: :func:`_recounted`), and the buying units holding such a crossing stay (a
    re-derived unit sharing a member and time with one is not written)."""
    def write(conn: sa.Connection) -> int:
        # the erasure lock (shared) before the deletes' row locks, as every history write of track rows takes it
        dialects.erasure_lock(storage.db, conn, exclusive=False)
        if window_s is None or isinstance(end_ms, int):
            n = delete_derived(conn, camera_id, start_ms, end_ms)
            storage._write_records_in(conn, records)
            return n
        units = _erased_units(conn, camera_id, start_ms, end_ms)
        n = delete_derived(conn, camera_id, start_ms, end_ms, keep_groups=[u[0] for u in units])
        storage._write_records_in(conn, [r for r in records if not isinstance(r, m.CountWindow)
                                         and not (isinstance(r, m.GroupCrossing) and _overlaps(r, units))])
        windows = _counted_windows(conn, camera_id, start_ms, end_ms["count_windows"], window_s)
        storage._write_records_in(conn, windows)
        storage._write_records_in(conn, _recounted(conn, camera_id, start_ms, end_ms["count_windows"], window_s,
                                                   windows))
        return n

    return storage._write(write)


def _overlaps(unit: m.GroupCrossing, kept: Sequence[tuple[str, str, str, int, int, set[int]]]) -> bool:
    """Whether a re-derived buying unit shares a member and time with a kept one (it is that unit without its
    erased members)."""
    d = "in" if unit.direction == m.DIRECTION_IN else "out"
    return any(line == unit.line_id and kd == d and ts <= unit.last_ts_ms and unit.ts_ms <= last
               and members & set(unit.track_ids) for _, line, kd, ts, last, members in kept)


def _recounted(conn: sa.Connection, camera_id: str, start_ms: int, end_ms: int, window_s: int,
               written: Sequence[m.CountWindow]) -> list[m.CountWindow]:
    """The windows of ``written`` (just upserted by the replay) whose count changed since they were counted: on
    PostgreSQL (read committed) a live pipeline's write of a window (its crossings in the same transaction) may
    commit after the count's snapshot and before the replay's upsert, which then overwrote it. The rows are the
    replay's now (locked until its commit: a later live write waits, then sets its running count), so a count from
    a new snapshot has every crossing of the writes it overwrote. A window the replay did not write stays the live
    pipeline's. SQLite writes one transaction at a time: nothing changes, nothing is rewritten."""
    if not written:
        return []
    key = lambda w: (w.line_id, w.window_start_ms)  # noqa: E731
    was = {key(w): (w.count_in, w.count_out) for w in written}
    return [w for w in _counted_windows(conn, camera_id, start_ms, end_ms, window_s)
            if key(w) in was and was[key(w)] != (w.count_in, w.count_out)]


def _counted_windows(conn: sa.Connection, camera_id: str, start_ms: int, end_ms: int,
                     window_s: int) -> list[m.CountWindow]:
    """The count windows of ``camera_id`` starting in ``[start_ms, end_ms)`` (both window edges) as the stored
    crossings make them (the analytics stage counts each crossing in the window holding its time)."""
    c = crossings.c
    w = int(window_s) * 1000
    window = c.ts_ms - c.ts_ms % sa.literal_column(str(w))  # a literal: the same expression in GROUP BY
    rows = conn.execute(sa.select(c.line_id, window, sa.func.sum(sa.case((c.direction == "in", 1), else_=0)),
                                  sa.func.sum(sa.case((c.direction == "out", 1), else_=0))).where(
        c.camera_id == camera_id, c.ts_ms >= start_ms, c.ts_ms < end_ms).group_by(c.line_id, window))
    return [m.CountWindow(camera_id=camera_id, line_id=line, window_start_ms=int(ws), window_end_ms=int(ws) + w,
                          count_in=int(n_in), count_out=int(n_out)) for line, ws, n_in, n_out in rows]


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


#: The least time without a frame after which a replay takes a live camera for stopped (:func:`stopped_after_ms`):
#: beyond what its analyses need, a margin for a pipeline writing the frames behind the wall clock (a backlog).
STOPPED_AFTER_MIN_MS = 10 * 60_000


def stopped_after_ms(config: Any, camera: Any) -> int:
    """How long after a live camera's newest stored frame (wall clock) a replay takes the camera for stopped and closes
    what is open at that frame there, as at an end of stream (:func:`replay`): longer than any later frame could still
    go on with it (:func:`close_delay_ms`; a track re-found or going on: ``journeys.track_end_after_s`` and the
    tracker's re-find window), so a frame coming after that (the camera back) closes the same visits at the same last
    seen times, and at least :data:`STOPPED_AFTER_MIN_MS`."""
    from storelens.stages.journeys import reopen_ms

    track_ms = max(int(config.journeys.track_end_after_s * 1000), reopen_ms(config))
    return max(close_delay_ms(config, camera), track_ms, STOPPED_AFTER_MIN_MS)


def _zones_open_from(config: Any, camera: Any, newest: int, derived: Sequence[Any]) -> int:
    # an event may still come dated up to the zones' grace before the next frame; the buckets from the one
    # holding newest - grace on close after newest (the zone analyzer's close rule)
    bucket_ms = int(config.zones.bucket_s) * 1000
    return (newest - _zone_grace_ms(config, camera)) // bucket_ms * bucket_ms


def _groups_open_from(config: Any, camera: Any, newest: int, derived: Sequence[Any]) -> int:
    # a buying unit closes once no crossing joined it for window_ms, and is dated at its first member: per line and
    # direction, the first of the crossings chained (at most window_ms apart) up to one within window_ms of newest
    if not (config.groups.enabled and camera.lines):
        return newest + 1
    window = int(config.groups.window_ms)
    times: dict[tuple[str, str], list[int]] = {}
    for r in derived:
        if isinstance(r, CrossingEvent):
            times.setdefault((r.line_id, r.direction), []).append(int(r.ts_ms))
    out = newest + 1
    for ts in times.values():
        ts.sort()
        if newest - ts[-1] > window:
            continue  # its last unit is closed
        first = ts[-1]
        for t in reversed(ts[:-1]):
            if first - t > window:
                break
            first = t
        out = min(out, first)
    return out


#: Per derived table (of :func:`delete_derived`): from when its rows may still be open at ``newest``, the
#: newest frame a replay read (a live pipeline writes them once a later frame confirms or closes them); see
#: :func:`open_from`. A table left out (a record kind registered elsewhere) takes the earliest.
OPEN_FROM: dict[str, Callable[[Any, Any, int, Sequence[Any]], int]] = {
    # final at the frame that makes them (the count windows are counted from the crossings: replace_derived)
    "crossings": lambda config, cam, newest, derived: newest + 1,
    "zone_events": _zones_open_from,
    "zone_stats": _zones_open_from,
    "group_crossings": _groups_open_from,
}


def open_from(config: Any, camera: Any, frames_read: Sequence[m.TrackedFrame], derived: Sequence[Any],
              end_ms: int) -> dict[str, int]:
    """Per derived table, where a replay's range ends for it (exclusive, at most ``end_ms``): the start of the oldest
    row still open at the newest frame read (:data:`OPEN_FROM`), which the replay neither deletes nor writes (a
    live pipeline writes it once a frame after the read closes it: the replay cannot re-derive it). ``derived``:
    what the frames read gave. The count windows end at the end of the window holding the crossings' end (counted
    from the crossings, also those written since); ``heatmap_windows`` (upserted, never deleted) is the end of
    the last closed minute: an hour row running past it is not written as derived, but rebuilt from its stored
    minutes (:func:`~storelens.storage.heatmaps.rebuild_hours`, the live ones too) as each of its minutes is.
    After the end of a finite source
    (the newest frame read ends the stream) nothing is open: every table ends after the newest frame."""
    newest = max((tf.ts_ms for tf in frames_read), default=-1)
    return _open_ends(config, camera, newest, not frames_read or frames_read[-1].end_of_stream, derived, end_ms)


def _open_ends(config: Any, camera: Any, newest: int, ended: bool, derived: Sequence[Any],
               end_ms: int) -> dict[str, int]:
    """:func:`open_from` of the frames read: ``newest`` their newest time, ``ended`` whether the last one read ends
    the stream (or none was read)."""
    if ended:
        ends = {t.name: min(end_ms, newest + 1) for t, _ in _derived()} | {"heatmap_windows": end_ms}
    else:
        ends = {name: min(end_ms, f(config, camera, newest, derived)) for name, f in OPEN_FROM.items()}
        earliest = min(ends.values())
        ends |= {t.name: earliest for t, _ in _derived() if t.name not in ends}
        ends["heatmap_windows"] = min(end_ms, newest // 60_000 * 60_000)
    window_ms = int(config.counting.window_s) * 1000
    ends["count_windows"] = min(end_ms, -(-ends["crossings"] // window_ms) * window_ms)
    return ends


class _FramesRead:
    """What a replay needs of the frames it read once they have gone through the analytics (:func:`replay` holds
    one page of them at a time): how many are dated before the range's ``end_ms``, the newest time, the last one."""

    def __init__(self, end_ms: int) -> None:
        self.end_ms = end_ms
        self.before_end = 0
        self.newest = -1
        self.last: m.TrackedFrame | None = None
        self.stopped: int | None = None

    def seen(self, tfs: Iterator[m.TrackedFrame]) -> Iterator[m.TrackedFrame]:
        for tf in tfs:
            self.before_end += tf.ts_ms < self.end_ms
            self.newest = max(self.newest, tf.ts_ms)
            self.last = tf
            yield tf


def _written(record: Any, end_ms: int, ends: Mapping[str, int]) -> bool:
    """Whether a replay ending at ``end_ms`` writes ``record``: dated before the end, and before its table's end
    of :func:`open_from` (a heatmap row: ending by the last closed minute)."""
    if record_ts(record) >= end_ms:
        return False
    if isinstance(record, m.HeatmapWindow):
        return record.window_end_ms <= ends["heatmap_windows"]
    table = ("crossings" if isinstance(record, CrossingEvent) else "count_windows" if isinstance(record, m.CountWindow)
             else None)
    kind = RECORDS.get(type(record))
    if table is None and kind is not None and kind.replay_ts is not None:
        table = kind.table.name
    return table is None or record_ts(record) < ends[table]


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


def replayable_span(storage: Any, camera_id: str) -> tuple[int, int, bool] | None:
    """``(oldest, newest, points_purged)``: the span of the camera's stored frames that still have their track
    points (``None``: no frames). The retention purge may keep frames longer than their points
    (``privacy.retention.days``): a frame with people (``n_tracks > 0``) older than the oldest stored point has
    lost its points, so the span starts after the newest such frame and ``points_purged`` is true (rows
    derived before it are kept: :func:`aligned_range`)."""
    f, p = frames.c, track_points.c

    def span(conn: sa.Connection) -> tuple[int, int, bool] | None:
        lo, hi = conn.execute(sa.select(sa.func.min(f.ts_ms), sa.func.max(f.ts_ms)).where(
            f.camera_id == camera_id)).one()
        if lo is None:
            return None
        oldest_point = conn.execute(sa.select(sa.func.min(p.ts_ms)).where(p.camera_id == camera_id)).scalar()
        # the newest frame with people but without its points (a backward walk of frames_by_time)
        lost = conn.execute(sa.select(f.ts_ms).where(
            f.camera_id == camera_id, f.n_tracks > 0,
            *([] if oldest_point is None else [f.ts_ms < oldest_point])).order_by(f.ts_ms.desc()).limit(1)).scalar()
        if lost is None:
            return int(lo), int(hi), False
        return int(lost) + 1, int(hi), True

    return storage._read(span)


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
    #: Why the range is narrower than asked, e.g. frames purged by retention, and what in it stays as it was under a
    #: line the config no longer has (``kept_off_lines``); ``None``: neither.
    note: str | None = None
    #: Per line id the camera's lines (the config replayed with) lack: how many crossings of erased tracks (no
    #: points to re-derive them from) stay under it in the range, with their count windows (a renamed line's
    #: counts are split between its old and new id).
    kept_off_lines: dict[str, int] = field(default_factory=dict)
    #: A live camera taken for stopped (no frame since for :func:`stopped_after_ms`, no end of stream stored): the
    #: time of its newest frame, where what was open at it was closed as at an end of stream; ``None``: not stopped.
    stopped_at_ms: int | None = None


def replay(config: Any, storage: Any, start_ms: int | None = None, end_ms: int | None = None,
           camera_ids: Sequence[str] | None = None, *, now_ms: int | None = None) -> list[ReplayResult]:
    """Re-derive the analytics of stored frames with ``config`` (moved lines, new zones) and replace them.

    Per camera: read its frames in the (aligned) range, run :func:`storelens.stages.analytics.derive`
    and, in one transaction, delete what was derived in the range and write the new records. A visit in
    progress at the range start is seen from the first frame of the range (its entry re-dated there).

    The range is kept to where the camera's frames are stored (:func:`aligned_range`): rows derived
    from frames the retention purge deleted are kept, not replaced by nothing (a recording that began
    mid-window is replayed from its first frame). Each result gives the range actually replayed and,
    when it is narrower than the one asked for, a ``note`` (also logged). Rows still open at the newest frame
    read, or dated after it, are left to the pipeline (:func:`open_from`); an erased track's crossings stay
    (:func:`replace_derived`), under their line id also when ``config`` renamed or removed that line: a warning
    and the ``note`` say so (``kept_off_lines``).

    But a live camera (:func:`~storelens.backends.video.is_live`) whose newest stored frame, read by the replay, is
    older than :func:`stopped_after_ms` before ``now_ms`` (the wall clock by default) and ends no stream has stopped
    without an end of stream (process killed, camera down): it is ended at that frame, as the pipeline's own stop
    ends it (an end-of-stream frame there), so its open visits, zone bucket, buying units, tracks and heatmap hour are
    closed and written (``stopped_at_ms``); a frame coming later closes them the same way. A file camera's frame
    times are not the wall clock (and its run resumes where it stopped): what is open at its newest frame stays open.
    So does a camera whose source is a ``${VAR}`` template of a variable not set (the commands over the history
    do not need the cameras' variables) that hides whether it is live: a warning and the ``note`` say so
    (:func:`_unknown_liveness`).
    """
    from storelens.backends.video import is_live
    from storelens.stages.analytics import derive

    now = int(time.time() * 1000) if now_ms is None else int(now_ms)

    out = []
    for cam in config.cameras:
        if camera_ids is not None and cam.id not in camera_ids:
            continue
        f = frames.c
        span = replayable_span(storage, cam.id)
        if span is None:
            out.append(ReplayResult(cam.id, start_ms or 0, end_ms or 0, 0, 0, 0, {}))
            continue
        lo, hi, points_purged = span
        start, end = aligned_range(config, start_ms, end_ms, (lo, hi),
                                   purged=lambda: points_purged or derived_before(storage, config, cam.id, lo))
        note = _narrowed(config, start_ms, start, end, (lo, hi),
                         points_gone=points_purged and _points_gone_why(storage, cam.id))
        if note is not None:  # a warning when the range was asked for and could not be replayed whole
            log.log(logging.INFO if start_ms is None else logging.WARNING, "replay of camera %s: [%d, %d) replayed; %s",
                    cam.id, start, end, note)
        if start >= end:
            out.append(ReplayResult(cam.id, start, end, 0, 0, 0, {}, start_ms, end_ms, note))
            continue
        after = end + close_delay_ms(config, cam)  # the frames after the end that confirm or close its rows
        closing = storage._read(lambda c: c.execute(sa.select(sa.func.min(f.ts_ms)).where(
            f.camera_id == cam.id, f.ts_ms >= after)).scalar())
        read = _FramesRead(end)

        def frames_fed() -> Iterator[m.TrackedFrame]:
            """The stored frames, a page at a time (:func:`iter_stored_frames`), and the end of a stopped camera."""
            nonlocal note
            yield from read.seen(iter_stored_frames(storage, cam.id, start,
                                                    after if closing is None else int(closing) + 1))
            last = read.last
            if closing is None and last is not None and not last.end_of_stream and \
                    now - last.ts_ms > stopped_after_ms(config, cam):
                if is_live(cam.source):
                    # the camera's newest frame (none after the read), long ago: ended there, as end_streams ends a
                    # camera
                    read.stopped = last.ts_ms
                    log.info("replay of camera %s: no frame since %d (%d ms before now): stopped, what is open at "
                             "that frame is closed there", cam.id, read.stopped, now - read.stopped)
                    read.last = m.TrackedFrame(camera_id=cam.id, seq=last.seq + 1, ts_ms=read.stopped,
                                               end_of_stream=True)
                    yield read.last
                elif unknown := _unknown_liveness(cam.source):
                    log.warning("replay of camera %s: %s", cam.id, unknown)
                    note = unknown if note is None else f"{note}; {unknown}"

        derived = derive(config, frames_fed())
        n_frames, stopped = read.before_end, read.stopped
        # what is still open at the newest frame read (a live pipeline writes it once a later frame closes it) and
        # what is dated after it (a live pipeline's, written since the read) is neither deleted nor written
        ends = _open_ends(config, cam, read.newest, read.last is None or read.last.end_of_stream, derived, end)
        records = [r for r in derived if _written(r, end, ends) and not _store_wide(r)]
        records = _without_cut_tracks(storage, config, cam.id, start, records)
        deleted = replace_derived(storage, cam.id, start, ends, records, window_s=config.counting.window_s)
        counts: dict[str, int] = {}
        for r in records:
            counts[type(r).__name__] = counts.get(type(r).__name__, 0) + 1
        off = kept_off_lines(storage, cam.id, start, ends["crossings"], [ln.id for ln in cam.lines])
        if off:
            kept = (f"crossings of erased tracks kept under a line camera {cam.id} no longer has (renamed or "
                    f"removed): {', '.join(f'{n} on line {k!r}' for k, n in off.items())}; with no track points they "
                    "cannot be re-derived on its lines, so they and their count windows stay under the old line id")
            log.warning("replay of camera %s: [%d, %d): %s", cam.id, start, end, kept)
            note = kept if note is None else f"{note}; {kept}"
        out.append(ReplayResult(cam.id, start, end, n_frames, deleted, len(records), counts, start_ms, end_ms, note,
                                off, stopped))
    return out


def _unknown_liveness(source: str) -> str | None:
    """Why a replay cannot tell whether a camera whose newest frame is old has stopped: its ``source`` still holds
    a ``${VAR}`` template (a variable not set; the commands over the history leave it as written) that hides
    whether it is live (``${CAM1_URL}``; ``rtsp://u:${CAM_PW}@h/`` is live). ``None``: it can tell. Such a camera
    is taken for a file camera: what is open at its newest frame stays open."""
    from storelens.config.env import has_template, mask_templates, template_names

    if not has_template(source):
        return None
    names = ", ".join(dict.fromkeys(template_names(source)))
    return (f"its source {mask_templates(source)!r} names a variable that is not set ({names}), so whether it is a "
            f"live camera that stopped is unknown: what is open at its newest frame stays open (set {names} to "
            "the camera's source and replay again to close a stopped live camera's visits and buckets there)")


def kept_off_lines(storage: Any, camera_id: str, start_ms: int, end_ms: int, lines: Sequence[str]) -> dict[str, int]:
    """Per line id not in ``lines``: how many crossings of ``camera_id`` in ``[start_ms, end_ms)`` have no stored
    point of their track (erased: :func:`delete_derived` keeps them), by line id. After a replay with a config that
    renamed or removed a line, the kept crossings of the old line stay under its id, and its count windows are
    counted from them alone (:func:`replace_derived`)."""
    c = crossings.c
    rows = storage._rows(sa.select(c.line_id, sa.func.count()).where(
        c.camera_id == camera_id, c.ts_ms >= start_ms, c.ts_ms < end_ms, c.line_id.not_in(list(lines)),
        ~_has_point()).group_by(c.line_id).order_by(c.line_id))
    return {str(line): int(n) for line, n in rows}


def _store_wide(record: Any) -> bool:
    """Whether ``record`` is of the whole store (derived from every camera, live), which a replay of one camera's
    frames cannot re-derive: the store's occupancy row, and the store-wide alerts (:data:`STORE_KINDS`: the other
    cameras would look silent, a ``camera_down`` that never resolves; ``store_occupancy`` from this camera alone)."""
    if isinstance(record, m.OccupancyUpdate):
        return record.camera_id == STORE_OCCUPANCY_ID
    return isinstance(record, m.Alert) and record.kind in STORE_KINDS


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


def _points_gone_why(storage: Any, camera_id: str) -> str:
    """Why a camera's oldest frames have no track points (:func:`replayable_span`): the retention purge, or, when
    the camera has erased tracks (``erased_tracks``), maybe an erasure (it deletes every point of a track)."""
    e = erased_tracks.c
    erased = storage._read(lambda c: c.execute(sa.select(e.track_id).where(e.camera_id == camera_id).limit(1)).first())
    return "purged (retention) or erased with a customer's tracks" if erased is not None else "purged (retention)"


def _narrowed(config: Any, start_ms: int | None, start: int, end: int, span: tuple[int, int],
              points_gone: str | bool = False) -> str | None:
    """Why ``[start, end)`` is less than asked (``None``: it is not): frames purged, their track points gone
    (``points_gone``: why), or none in the range."""
    lo, hi = span
    why = None
    if start > max(lo, lo if start_ms is None else start_ms) // replay_unit_ms(config) * replay_unit_ms(config):
        gone = (f"track points before {lo} were {points_gone}" if points_gone
                else f"frames before {lo} were purged (retention)")
        why = f"the camera's {gone}: the rows derived before {start} are kept as they are"
    if start >= end:
        return f"nothing re-derived: {why or f'the newest stored frame of the camera is at {hi}'}"
    return None if why is None else f"started at {start}, not {lo if start_ms is None else start_ms}: {why}"
