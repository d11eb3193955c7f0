"""Journeys from the history: stored track summaries (``track_summaries``) linked at query time.

The linking (:mod:`storelens.domain.journeys`) is deterministic, so linking the summaries
around a queried range again gives the same journeys and ids; the range is widened by
``journeys.max_visit_s`` on both sides so a visit that crosses its bounds is whole.
Functions take the history store (:class:`~storelens.storage.history.SqlStorage`) and read
through its connection (SQLite and PostgreSQL alike).

Speed (issue 10: a whole day of one camera, 5,000 summaries, under 200 ms): the summaries' JSON columns
are decoded in one call per column, and the work runs with the cyclic garbage collector paused
(:func:`gc_paused`): a day's summaries, visits and journeys are some 100,000 objects alive at once, which
made CPython scan the whole heap of the API process (over 100 ms) on nearly every query, though they hold
no reference cycle and reference counting frees them when the query ends.
"""
from __future__ import annotations

import gc
import json
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import numpy as np
import sqlalchemy as sa

from storelens.config.behaviour import JourneysConfig
from storelens.domain import staff as ST
from storelens.domain.journeys import Journey, TrackInfo, Visit, build_journeys, entrances, link_tracks
from storelens.storage.groups import staff_track_ids
from storelens.storage.schema import customer_matches, track_attributes, track_summaries


def track_infos(storage: Any, start_ms: int, end_ms: int, appearance: bool = True,
                entrance_lines: Iterable[str] | None = None) -> list[TrackInfo]:
    """The stored tracks overlapping ``[start_ms, end_ms)``, with their customer id and demographics
    (and their appearance embedding unless ``appearance`` is false: nothing to link by it); ``entrance_lines``:
    the site's ``store.entrance_lines``, the lines whose crossings start and end a visit (``None``: every line)."""
    s = track_summaries.c
    app_col = s.appearance if appearance else sa.null().label("appearance")
    rows = storage._rows(sa.select(s.camera_id, s.track_id, s.first_ts_ms, s.last_ts_ms, app_col, s.zones,
                                   s.crossings).where(s.first_ts_ms < end_ms, s.last_ts_ms >= start_ms)
                         .order_by(s.first_ts_ms, s.camera_id, s.track_id))
    if not rows:
        return []
    lo = min(r[2] for r in rows)
    hi = max(r[3] for r in rows)
    c = customer_matches.c
    customers = {(r[0], r[1]): r[2] for r in storage._rows(
        sa.select(c.camera_id, c.track_id, c.customer_id).where(c.ts_ms >= lo, c.ts_ms <= hi)
        .order_by(c.ts_ms))}
    a = track_attributes.c
    attrs = {(r[0], r[1]): {"age_years": r[2], "gender": None if r[3] in (None, "unknown") else r[3]}
             for r in storage._rows(sa.select(a.camera_id, a.track_id, a.age_years, a.gender)
                                    .where(a.first_ts_ms <= hi, a.last_ts_ms >= lo))}
    # one JSON document per column for all the rows: a day's 5,000 summaries decode in one call each
    zones_all = _json_rows(r[5] for r in rows)
    crossings_all = _json_rows(r[6] for r in rows)
    doors = entrances(entrance_lines)
    none: frozenset[str] = frozenset()
    out = []
    for (cam, tid, first, last, app, _, _), zones, crossings in zip(rows, zones_all, crossings_all):
        attr = attrs.get((cam, tid))
        out.append(TrackInfo(
            cam, int(tid), int(first), int(last),
            None if app is None else np.frombuffer(bytes(app), "<f4"),
            tuple([Visit(z, k, int(t0), int(t1)) for z, k, t0, t1 in zones]) if zones else (),
            tuple([(ln, d, int(t)) for ln, d, t in crossings]) if crossings else (),
            customers.get((cam, tid)),
            {k: v for k, v in attr.items() if v is not None} if attr else {},
            None if doors is None else doors.get(cam, none),
        ))
    return out


def _json_rows(texts: Iterable[str]) -> list:
    """The JSON arrays ``texts`` decoded in one :func:`json.loads` (one call per row costs more than the parsing).

        >>> _json_rows(['[["a", "area", 1, 2]]', '[]'])
        [[['a', 'area', 1, 2]], []]
    """
    return json.loads("[" + ",".join(texts) + "]")


@contextmanager
def gc_paused() -> Iterator[None]:
    """CPython's cyclic garbage collector off for the block, and back on after (when it was on).

    For work that makes many objects without reference cycles, all alive at once (a day's journeys):
    reference counting frees them; the collector would only scan them, and the whole heap with them.
    Process-wide (as :func:`gc.disable` is): other threads run without it meanwhile; when blocks nest
    or overlap, the first one that found the collector on turns it back on.

        >>> with gc_paused():
        ...     gc.isenabled()
        False
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def count_tracks(storage: Any, config: JourneysConfig, start_ms: int, end_ms: int) -> int:
    """How many stored tracks :func:`journeys` reads for ``[start_ms, end_ms)`` (counted in the database)."""
    margin = int(config.max_visit_s * 1000)
    s = track_summaries.c
    return int(storage._rows(sa.select(sa.func.count()).select_from(track_summaries).where(
        s.first_ts_ms < end_ms + margin, s.last_ts_ms >= max(0, start_ms - margin)))[0][0])


def without_staff(storage: Any, found: list[Journey]) -> list[Journey]:
    """``found`` less the journeys of staff: those with a track recognised as staff (``staff_tracks``: a
    ``staff_only`` zone, the uniform cue, a staff face) within :data:`~storelens.domain.staff.STAFF_DAY_MS` of
    the track, the rule the KPIs' visitors use (:func:`storelens.domain.staff.split_entries`)."""
    if not found:
        return found
    lo = min(j.first_ms for j in found)
    hi = max(j.last_ms for j in found)
    staff = staff_track_ids(storage, lo - ST.STAFF_DAY_MS, hi + ST.STAFF_DAY_MS)
    if not staff:
        return found
    return [j for j in found if not any(ST._is_staff(staff, t.camera_id, t.track_id, ts)
                                        for t in j.tracks for ts in (t.first_ms, t.last_ms))]


def journeys(storage: Any, config: JourneysConfig, start_ms: int, end_ms: int,
             entrance_lines: Iterable[str] | None = None, exclude_staff: bool = False) -> list[Journey]:
    """The journeys overlapping ``[start_ms, end_ms)``, by start time (``entrance_lines``: the site's
    ``store.entrance_lines``, see :func:`track_infos`; ``exclude_staff``: less staff's, :func:`without_staff`,
    as the API's journeys, flows and paths; the erasure links them all)."""
    margin = int(config.max_visit_s * 1000)
    with gc_paused():
        tracks = track_infos(storage, max(0, start_ms - margin), end_ms + margin, appearance=bool(config.links),
                             entrance_lines=entrance_lines)
        out = [j for j in build_journeys(tracks, link_tracks(tracks, config))
               if j.first_ms < end_ms and j.last_ms >= start_ms]
        return without_staff(storage, out) if exclude_staff else out


def journey(storage: Any, config: JourneysConfig, camera_id: str, track_id: int,
            entrance_lines: Iterable[str] | None = None, exclude_staff: bool = False) -> Journey | None:
    """The journey whose first track is ``(camera_id, track_id)``, or ``None`` (also a staff journey with
    ``exclude_staff``)."""
    s = track_summaries.c
    row = storage._rows(sa.select(s.first_ts_ms, s.last_ts_ms).where(s.camera_id == camera_id,
                                                                     s.track_id == track_id))
    if not row:
        return None
    first, last = int(row[0][0]), int(row[0][1])
    jid = f"{track_id}@{camera_id}"
    return next((j for j in journeys(storage, config, first, last + 1, entrance_lines, exclude_staff)
                 if j.journey_id == jid), None)
