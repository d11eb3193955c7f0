"""Reads of the zone tables (``zone_events``, ``zone_stats``, ``zone_occupancy``) for the API and replay.

Functions take the history store (:class:`~storelens.storage.history.SqlStorage`) and read
through its connection, so they work on SQLite and PostgreSQL alike.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Iterable

import sqlalchemy as sa

from storelens.domain.calendar import BucketGrid
from storelens.domain.zones import ZoneEvent
from storelens.storage.history import _bucket_start as bucket_start_sql
from storelens.storage.schema import (frames, staff_tracks, track_attributes, track_points, zone_events, zone_occupancy,
                                      zone_stats)


@dataclass(frozen=True)
class ZoneBucketRow:
    camera_id: str
    zone_id: str
    start_ms: int
    end_ms: int
    visits: int
    unique_people: int
    mean_occupancy: float
    max_occupancy: int
    dwell_median_s: float | None
    dwell_p90_s: float | None
    visits_ended: int
    stoppers: int
    served: int
    abandoned: int
    lost: int
    #: The time of the bucket the stream showed, which ``mean_occupancy`` is over (rows stored without it, before
    #: migration 0016 or by an analytics of before it: the whole bucket).
    covered_ms: int


def covered_mean(rows: Iterable[ZoneBucketRow]) -> float:
    """The time-weighted mean occupancy of several stored buckets (one zone): each bucket's mean weighted by the
    time its stream showed (``covered_ms``), so a bucket a stall left half covered counts half; buckets with no
    covered time (an event dated in a stall) count only when no bucket has any, then each by its length."""
    rows = list(rows)
    covered = sum(r.covered_ms for r in rows)
    if covered:
        return sum(r.mean_occupancy * r.covered_ms for r in rows) / covered
    span = sum(r.end_ms - r.start_ms for r in rows)
    return sum(r.mean_occupancy * (r.end_ms - r.start_ms) for r in rows) / span if span else 0.0


def zone_buckets(storage: Any, camera_id: str | None, zone_id: str | None, start_ms: int,
                 end_ms: int) -> list[ZoneBucketRow]:
    """Stored per-bucket statistics that start in ``[start_ms, end_ms)``, by camera, zone, time."""
    z = zone_stats.c
    stmt = sa.select(z.camera_id, z.zone_id, z.bucket_start_ms, z.bucket_end_ms, z.visits, z.unique_people,
                     z.mean_occupancy, z.max_occupancy, z.dwell_median_s, z.dwell_p90_s, z.visits_ended,
                     z.stoppers, z.served, z.abandoned, z.lost,
                     sa.func.coalesce(z.covered_ms, z.bucket_end_ms - z.bucket_start_ms)).where(
        z.bucket_start_ms >= start_ms, z.bucket_start_ms < end_ms)
    if camera_id is not None:
        stmt = stmt.where(z.camera_id == camera_id)
    if zone_id is not None:
        stmt = stmt.where(z.zone_id == zone_id)
    stmt = stmt.order_by(z.camera_id, z.zone_id, z.bucket_start_ms)
    return [ZoneBucketRow(*r) for r in storage._rows(stmt)]


def bucket_span(storage: Any, camera_id: str, zone_id: str | None, start_ms: int) -> tuple[int, int] | None:
    """``(first, last)`` ``bucket_start_ms`` of the camera's stored buckets (of ``zone_id`` if given) starting at or
    after ``start_ms``, ``None`` without any: one aggregate query (the size of an open-ended range's answer)."""
    z = zone_stats.c
    stmt = sa.select(sa.func.min(z.bucket_start_ms), sa.func.max(z.bucket_start_ms)).where(
        z.camera_id == camera_id, z.bucket_start_ms >= start_ms)
    if zone_id is not None:
        stmt = stmt.where(z.zone_id == zone_id)
    first, last = storage._rows(stmt)[0]
    return None if first is None else (int(first), int(last))


def count_buckets(storage: Any, camera_id: str, zone_id: str | None, start_ms: int, grid: BucketGrid) -> int:
    """How many buckets of ``grid`` the camera's stored buckets (of ``zone_id`` if given) starting at or after
    ``start_ms`` start in: one aggregate query (an open-ended range's answer's size)."""
    z = zone_stats.c
    if len(grid.runs) == 1:
        origin_ms, width_ms = grid.runs[0]
        shift = width_ms - origin_ms % width_ms  # bucket starts are >= 0: a non-negative quotient on every database
        bucket = (z.bucket_start_ms + shift) // width_ms
    else:  # a run per change of the zone's sub-hour offset (StoreCalendar.grid)
        bucket = bucket_start_sql(grid, z.bucket_start_ms)
    stmt = sa.select(sa.func.count(sa.distinct(bucket))).where(z.camera_id == camera_id, z.bucket_start_ms >= start_ms)
    if zone_id is not None:
        stmt = stmt.where(z.zone_id == zone_id)
    return int(storage._rows(stmt)[0][0] or 0)


def count_ended_visits(storage: Any, zone_keys: Iterable[tuple[str, str]], start_ms: int, end_ms: int) -> int:
    """How many rows :func:`ended_visits` would read (counted in the database)."""
    keys = sorted(set(zone_keys))
    if not keys:
        return 0
    e, st = zone_events.c, staff_tracks.c
    staff = sa.exists().where(st.camera_id == e.camera_id, st.track_id == e.track_id)
    return int(storage._rows(sa.select(sa.func.count()).select_from(zone_events).where(
        e.kind == "exit", e.ts_ms >= start_ms, e.ts_ms < end_ms, sa.tuple_(e.camera_id, e.zone_id).in_(keys),
        ~staff))[0][0])


def events(storage: Any, camera_id: str | None, start_ms: int, end_ms: int, *, zone_ids: Iterable[str] | None = None,
           kinds: Iterable[str] | None = None, limit: int = 100_000) -> list[tuple[ZoneEvent, str]]:
    """Zone events in ``[start_ms, end_ms)`` in time order (the earliest ``limit``), with their zone kind."""
    e = zone_events.c
    stmt = sa.select(e.event_id, e.camera_id, e.zone_id, e.track_id, e.kind, e.ts_ms, e.seq, e.dwell_ms, e.how,
                     e.zone_kind).where(e.ts_ms >= start_ms, e.ts_ms < end_ms)
    if camera_id is not None:
        stmt = stmt.where(e.camera_id == camera_id)
    if zone_ids is not None:
        stmt = stmt.where(e.zone_id.in_(sorted(zone_ids)))
    if kinds is not None:
        stmt = stmt.where(e.kind.in_(sorted(kinds)))
    stmt = stmt.order_by(e.ts_ms, e.seq, e.camera_id, e.zone_id, e.track_id, e.kind).limit(limit)
    return [(ZoneEvent(*r[:9]), r[9]) for r in storage._rows(stmt)]


#: How far back :func:`length_at` looks for an entry still open when no frame of the camera is stored in that
#: time (not written, or purged): a queue visit longer than this is not a wait but an entry that was never closed
#: (the run was killed, the camera or zone removed). With stored frames the frames and track points decide.
QUEUE_LOOKBACK_MS = 2 * 3_600_000


def length_at(storage: Any, camera_id: str, zone_id: str, at_ms: int, stream_gap_ms: int | None = None,
              lookback_ms: int = QUEUE_LOOKBACK_MS) -> int:
    """People in the zone at ``at_ms`` from its stored events (:func:`lengths_at` of one zone)."""
    return lengths_at(storage, camera_id, [zone_id], at_ms, stream_gap_ms, lookback_ms).get(zone_id, 0)


def lengths_at(storage: Any, camera_id: str, zone_ids: Iterable[str], at_ms: int, stream_gap_ms: int | None = None,
               lookback_ms: int = QUEUE_LOOKBACK_MS) -> dict[str, int]:
    """People in each of the camera's zones ``zone_ids`` at ``at_ms`` from their stored events: the visits open
    at it (an entry at or before ``at_ms`` of a track with no exit of that visit up to ``at_ms``, an exit's visit
    starting at ``ts_ms - dwell_ms``). A few queries per camera, whatever the number of zones.

    With ``stream_gap_ms`` (frames further apart are a stall, the :class:`~storelens.domain.zones.StreamCoverage`
    rule) and stored frames from the oldest open entry on: none when the frames stopped (a stall, a killed run, a
    removed camera) more than ``stream_gap_ms`` before ``at_ms``; an entry from before the stream's last cut (a gap
    in the frames, or an end of stream) counts only if its visit went on after it: its track has a stored point
    from the cut to ``at_ms`` (track ids are not reused, not even by another run), or its exit is dated after
    ``at_ms``. A camera that lost frames for seconds (an RTSP reconnect, a detector behind) or is sampled slower
    than ``stream_gap_ms`` keeps the people it still shows, and an entry a killed run or an ended stream never
    closed does not count. Without stored frames there, only the entries of the last ``lookback_ms``.

    Only the entries of the last ``lookback_ms`` are read (the camera's zone events of that time, not all of its
    stored ones, a query costs the same with 90 days of history): an older entry counts only (by the rules above)
    while its track is still seen: a stored point of it in the last two ``stream_gap_ms`` up to ``at_ms`` (the zone
    tracker ends the visit of a person unseen for its ``lost_after_ms``, at most ``stream_gap_ms``, with an exit
    dated at the last sighting). An older entry whose track is not seen there is one that was never closed (a
    killed run, a removed camera), also when the frames went on."""
    zone_ids = sorted(set(zone_ids))
    out = dict.fromkeys(zone_ids, 0)
    if not zone_ids:
        return out
    e, x = zone_events.c, zone_events.alias("x").c
    visit = (x.camera_id == e.camera_id, x.zone_id == e.zone_id, x.track_id == e.track_id, x.kind == "exit",
             x.ts_ms >= e.ts_ms)
    closed = sa.exists().where(*visit, x.ts_ms <= at_ms, sa.or_(x.dwell_ms.is_(None), x.ts_ms - x.dwell_ms >= e.ts_ms))
    exits_later = sa.exists().where(*visit, x.ts_ms > at_ms)

    def open_entries(*where: Any) -> list[tuple[str, int, int, bool]]:
        return [(str(z), int(tid), int(t), bool(later)) for z, tid, t, later in storage._rows(
            sa.select(e.zone_id, e.track_id, e.ts_ms, exits_later).where(
                e.camera_id == camera_id, e.zone_id.in_(zone_ids), e.kind == "enter", e.ts_ms <= at_ms, ~closed,
                *where))]

    since = at_ms - lookback_ms
    opened = open_entries(e.ts_ms > since)  # a range of zone_events_by_time
    f, g, p = frames.c, frames.alias("g").c, track_points.c
    if stream_gap_ms is not None:  # older entries: of the tracks seen in the last two stream gaps only
        seen_lately = sorted({int(tid) for (tid,) in storage._rows(sa.select(p.track_id).where(  # track_points_by_time
            p.camera_id == camera_id, p.ts_ms >= at_ms - 2 * stream_gap_ms, p.ts_ms <= at_ms))})
        for i in range(0, len(seen_lately), 500):  # zone_events_by_track
            opened += open_entries(e.track_id.in_(seen_lately[i:i + 500]), e.ts_ms <= since)
    if not opened:
        return out
    oldest = min(t for _, _, t, _ in opened)
    last = None if stream_gap_ms is None else storage._rows(sa.select(sa.func.max(f.ts_ms)).where(
        f.camera_id == camera_id, f.ts_ms >= oldest - stream_gap_ms, f.ts_ms <= at_ms))[0][0]
    if last is None:  # no frame stored there (not written, or purged): the entries as they are, of the look-back
        for z, _, t, _ in opened:
            out[z] += t > at_ms - lookback_ms
        return out
    if at_ms - int(last) > stream_gap_ms:
        return out
    # the stream's last cut since the oldest open entry: a frame after a gap, or the end of a stream (the next
    # stream starts after it); scanned back from at_ms, the database stops at the first one
    after_gap = ~sa.exists().where(g.camera_id == camera_id, g.ts_ms < f.ts_ms, g.ts_ms >= f.ts_ms - stream_gap_ms)
    cut = storage._rows(sa.select(f.ts_ms, f.end_of_stream).where(
        f.camera_id == camera_id, f.ts_ms >= oldest, f.ts_ms <= at_ms, sa.or_(f.end_of_stream.is_(True), after_gap))
        .order_by(f.ts_ms.desc()).limit(1))
    start = oldest if not cut else int(cut[0][0]) + bool(cut[0][1])
    before = sorted({tid for _, tid, t, later in opened if t < start and not later})
    seen = {int(tid) for i in range(0, len(before), 500) for (tid,) in storage._rows(
        sa.select(p.track_id).distinct().where(p.camera_id == camera_id, p.track_id.in_(before[i:i + 500]),
                                               p.ts_ms >= start, p.ts_ms <= at_ms))} if before else set()
    for z, tid, t, later in opened:
        out[z] += t >= start or later or tid in seen
    return out


def exit_dwells(storage: Any, camera_id: str, start_ms: int, end_ms: int,
                zone_ids: Iterable[str] | None = None) -> list[tuple[str, int, int]]:
    """``(zone_id, ts_ms, dwell_ms)`` of every visit that ended in ``[start_ms, end_ms)`` (all of them: the
    statistics per bucket need each one)."""
    e = zone_events.c
    stmt = sa.select(e.zone_id, e.ts_ms, sa.func.coalesce(e.dwell_ms, 0)).where(
        e.camera_id == camera_id, e.kind == "exit", e.ts_ms >= start_ms, e.ts_ms < end_ms)
    if zone_ids is not None:
        stmt = stmt.where(e.zone_id.in_(sorted(zone_ids)))
    return [(str(z), int(t), int(d)) for z, t, d in storage._rows(stmt)]


def frame_runs(storage: Any, camera_id: str, start_ms: int, end_ms: int, max_gap_ms: int) -> list[tuple[int, int]]:
    """``(first, last)`` frame times of each run of the camera's stored frames in ``[start_ms, end_ms)`` no more
    than ``max_gap_ms`` apart, in time order (the runs of :class:`~storelens.domain.zones.StreamCoverage`):
    found in the database, which sends only the frames that start a run and the time of the last frame."""
    f = frames.c
    sub = sa.select(f.ts_ms.label("ts"), sa.func.lag(f.ts_ms).over(order_by=(f.ts_ms, f.seq)).label("prev")).where(
        f.camera_id == camera_id, f.ts_ms >= start_ms, f.ts_ms < end_ms).subquery()
    starts = storage._rows(sa.select(sub.c.ts, sub.c.prev).where(
        sa.or_(sub.c.prev.is_(None), sub.c.ts - sub.c.prev > max_gap_ms)).order_by(sub.c.ts))
    if not starts:
        return []
    last = storage._rows(sa.select(sa.func.max(f.ts_ms)).where(
        f.camera_id == camera_id, f.ts_ms >= start_ms, f.ts_ms < end_ms))[0][0]
    ends = [int(prev) for _, prev in starts[1:]] + [int(last)]
    return [(int(ts), end) for (ts, _), end in zip(starts, ends)]


def bucket_coverage(storage: Any, camera_id: str, zone_ids: Iterable[str], start_ms: int,
                    end_ms: int) -> list[tuple[int, int, int]]:
    """``(bucket_start_ms, bucket_end_ms, covered_ms)`` of the camera's stored buckets (``zone_stats``) that lie
    whole in ``[start_ms, end_ms]``, in time order: the time each one's stream showed, the most of any of
    ``zone_ids`` (every zone of a camera has the same; a row stored without it: the whole bucket). One row per
    bucket, however many frames it had: the covered time of a long window without reading its frames."""
    z = zone_stats.c
    covered = sa.func.max(sa.func.coalesce(z.covered_ms, z.bucket_end_ms - z.bucket_start_ms))
    stmt = (sa.select(z.bucket_start_ms, z.bucket_end_ms, covered)
            .where(z.camera_id == camera_id, z.zone_id.in_(sorted(set(zone_ids))), z.bucket_start_ms >= start_ms,
                   z.bucket_start_ms < end_ms, z.bucket_end_ms <= end_ms)
            .group_by(z.bucket_start_ms, z.bucket_end_ms).order_by(z.bucket_start_ms))
    return [(int(a), int(b), int(c)) for a, b, c in storage._rows(stmt)]


def occupancy_now(storage: Any, camera_id: str) -> tuple[int | None, dict[str, int]]:
    """``(ts_ms of the latest update or None, zone id -> people inside)`` as last stored for the camera."""
    o = zone_occupancy.c
    rows = storage._rows(sa.select(o.zone_id, o.ts_ms, o.occupancy).where(o.camera_id == camera_id))
    if not rows:
        return None, {}
    return max(r[1] for r in rows), {r[0]: int(r[2]) for r in rows}


@dataclass(frozen=True, slots=True)
class VisitRow:
    """An ended zone visit with the track's face attributes where they exist."""

    camera_id: str
    zone_id: str
    track_id: int
    exit_ts_ms: int
    dwell_ms: int
    how: str | None
    attention_share: float | None
    emotion: str | None


def ended_visits(storage: Any, zone_keys: Iterable[tuple[str, str]], start_ms: int, end_ms: int) -> list[VisitRow]:
    """Exits in ``[start_ms, end_ms)`` of the given ``(camera_id, zone_id)`` zones, joined with the
    track's attention share and emotion (``track_attributes``) where the faces stages produced them; none of staff
    tracks (``staff_tracks``: staff are no passers, as they are no visitors)."""
    keys = sorted(set(zone_keys))
    if not keys:
        return []
    e, a, st = zone_events.c, track_attributes.c, staff_tracks.c
    staff = sa.exists().where(st.camera_id == e.camera_id, st.track_id == e.track_id)
    stmt = (sa.select(e.camera_id, e.zone_id, e.track_id, e.ts_ms, e.dwell_ms, e.how, a.attention_share, a.emotion)
            .select_from(zone_events.outerjoin(track_attributes, sa.and_(a.camera_id == e.camera_id,
                                                                        a.track_id == e.track_id)))
            .where(e.kind == "exit", e.ts_ms >= start_ms, e.ts_ms < end_ms,
                   sa.tuple_(e.camera_id, e.zone_id).in_(keys), ~staff)
            .order_by(e.ts_ms, e.camera_id, e.zone_id, e.track_id))
    return [VisitRow(r[0], r[1], int(r[2]), int(r[3]), int(r[4] or 0), r[5], r[6], r[7]) for r in storage._rows(stmt)]


def people_per_bucket(storage: Any, camera_id: str, zone_id: str | None, start_ms: int, end_ms: int,
                      grid: BucketGrid, visits_to_ms: int | None = None) -> dict[tuple[str, int], int]:
    """``(zone_id, bucket start) -> distinct track ids`` of the camera's visits in each bucket of ``grid`` that
    its stored buckets (``zone_stats``) starting in ``[start_ms, end_ms)`` fall in: the visits entering in the
    bucket and those open at its start (an exit after it of a visit that entered before it; track ids are not
    reused). The database gives each visit's first and last bucket (on SQLite and PostgreSQL alike) and the
    buckets stored; each visit is spread over its buckets here, in time linear in the visits and the buckets they
    span (a join of visits to buckets on ranges was a nested loop: seconds over weeks of visits). A visit not
    closed yet counts in the bucket it entered in only, and visits whose events were purged (zone_events
    retention, an erasure) not at all: the caller bounds this by the stored buckets' own counts. ``visits_to_ms``
    (default ``end_ms``): the visits entering up to it count (a range ending inside a stored bucket reads that
    bucket's whole)."""
    e, z = zone_events.c, zone_stats.c
    to_ms = end_ms if visits_to_ms is None else visits_to_ms

    def at(ts: Any) -> Any:
        return bucket_start_sql(grid, ts)

    zone = (lambda col: col == zone_id) if zone_id is not None else (lambda col: sa.true())
    entered = e.ts_ms - sa.func.coalesce(e.dwell_ms, 0)
    buckets: dict[str, list[int]] = {}
    for zid, s in storage._rows(sa.select(z.zone_id, at(z.bucket_start_ms)).distinct().where(
            z.camera_id == camera_id, zone(z.zone_id), z.bucket_start_ms >= start_ms, z.bucket_start_ms < end_ms)):
        buckets.setdefault(str(zid), []).append(int(s))
    if not buckets:
        return {}
    for starts in buckets.values():
        starts.sort()
    visits = sa.union_all(
        # every visit ended after start_ms that entered before end_ms: the buckets from its entry to its exit's
        sa.select(e.zone_id, e.track_id, at(entered), at(e.ts_ms - 1)).where(
            e.camera_id == camera_id, zone(e.zone_id), e.kind == "exit", e.ts_ms > start_ms, entered < to_ms),
        # every entry in the range (a visit not closed yet: its bucket)
        sa.select(e.zone_id, e.track_id, at(e.ts_ms), at(e.ts_ms)).where(
            e.camera_id == camera_id, zone(e.zone_id), e.kind == "enter", e.ts_ms >= start_ms, e.ts_ms < to_ms),
    )
    people: dict[tuple[str, int], set[int]] = {}
    for zid, tid, first_b, last_b in storage._rows(visits):
        starts = buckets.get(str(zid))
        if not starts:
            continue
        i, last = bisect.bisect_left(starts, int(first_b)), int(last_b)
        while i < len(starts) and starts[i] <= last:
            people.setdefault((str(zid), starts[i]), set()).add(int(tid))
            i += 1
    return {k: len(v) for k, v in people.items()}
