"""Zones, queues and product interest (``/v1/zones``, ``/v1/queues``, ``/v1/interest``).

Live numbers (people inside now) come from the live state when it has them, else the
latest stored ``zone_occupancy``; history from the per-bucket ``zone_stats`` and the
``zone_events`` (exact dwell percentiles, queue waits, interest; once they are purged, the dwell
percentiles of the stored buckets), and the stored ``frames`` (the time of a queue's window the stream
showed, which its service rate is over; over an hour, the stored buckets' covered time and the frames at its
edges). "Now" for a queue is
the camera's latest frame time (``at_ms`` overrides), so a recorded clip answers as it
did live: the live state's last seen time, else the newest stored frame of the camera
(a ``zone_occupancy`` row is written only when the occupancy changes), else, without
stored frames, the latest stored occupancy's time. A live camera whose "now" is older than
:data:`STALE_AFTER_MS` at the wall clock (or at an ``at_ms`` after it), or without any frame, is ``stale``
(:func:`_live_age`): no people inside now, no queue length.
"""
from __future__ import annotations

import bisect
import time
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, HTTPException, Query
from pydantic import Field

from storelens.backends.video import is_live
from storelens.config import CameraConfig, ZoneConfig
from storelens.domain.privacy import is_suppressed, keep, suppress_counts
from storelens.domain.zones import QueueStats, StreamCoverage
from storelens.storage import EMOTION_KEYS
from storelens.storage import zones as zq
from storelens.storage.privacy import newest_frame_ms
from storelens.storage import schema as tables
from storelens.storage.site import has_rows

from ..deps import MAX_TS_MS, ApiContext, ContextDep, EndMs, Text, api_router, check_range, require_role
from ..models import NOT_FOUND, AlignedTo, StoreTimezone, _Out
from .counts import MAX_BUCKETS, bucket_grid

router = api_router("zones", role='viewer')

ZoneKindName = Literal["area", "entrance", "queue", "shelf", "staff_only"]
#: Dwell histogram bin edges (seconds) of ``/v1/interest``.
DWELL_BINS_S = (0, 3, 10, 30, 60, 300)
#: ``/v1/queues`` windows longer than this take the covered time of their whole stored buckets from ``zone_stats``
#: and read the frames only at the edges (a day of frames at 15 fps is 1.3 M rows).
FRAMES_COVERAGE_MAX_MS = 3_600_000
#: A live camera whose newest frame is older than this (at the wall clock) is stale (:func:`_live_age`): ``/v1/zones``
#: gives no people inside now, ``/v1/queues`` no length and no predicted wait (the dashboard's camera health calls
#: such a camera stale too).
STALE_AFTER_MS = 60_000
#: Most ended shelf visits one ``/v1/interest`` answer reads (each one is read: exact dwell percentiles).
MAX_INTEREST_VISITS = 1_000_000
FromMs0 = Annotated[int, Query(ge=0, le=MAX_TS_MS, description="Range start (inclusive), ms since epoch.")]


class ZoneStateOut(_Out):
    camera_id: str
    zone_id: str
    kind: ZoneKindName
    product: str | None = None
    category: str | None = None
    polygon: list[tuple[float, float]] = Field(description="Vertices [x, y] in source pixels.")
    occupancy: int | None = Field(description="People inside now (inertia applied); null when `stale`.")
    ts_ms: int | None = Field(None, description="Time of the occupancy (the camera's latest frame); null before "
                                                "the first frame.")
    stale: bool = Field(False, description="A live camera whose newest frame (ts_ms) is older than 60 s at the wall "
                                           "clock, or without any frame (age_s null): who is inside now is "
                                           "not known (occupancy null).")
    age_s: float | None = Field(None, description="A live camera: the age of its newest frame (ts_ms) at the wall "
                                                  "clock; null for recorded files and before the first frame.")


class ZonesOut(_Out):
    zones: list[ZoneStateOut]


class DwellOut(_Out):
    median: float | None = None
    p90: float | None = None
    mean: float | None = None
    total: float | None = Field(0.0, description="Sum of the durations; null: suppressed, or only the stored "
                                                 "buckets' median and p90 are left (`dwell_source` `bucket` or "
                                                 "`buckets`).")
    n: int | None = Field(0, description="Durations measured; null: suppressed.")
    suppressed: bool = Field(False, description="Measured from 1 to k_min-1 visits (privacy.k_min): every figure "
                                                "is withheld (null), so no one person's dwell or wait can be read.")


class ZoneBucketOut(_Out):
    camera_id: str
    zone_id: str
    start_ms: int
    end_ms: int
    visits: int = Field(description="Entries in the bucket.")
    unique_people: int = Field(description="Distinct tracks inside or entering during the bucket: the stored "
                                           "bucket's (bucket_s equal to the site's zones.bucket_s); merged "
                                           "buckets count each track once from the stored zone events (the "
                                           "visits entering in the bucket and those open at its start), at "
                                           "least the largest and at most the sum of the stored buckets' counts "
                                           "(zone events purged, or a visit not closed yet).")
    mean_occupancy: float = Field(description="Time-weighted mean of the people inside, over the time the "
                                              "stream showed (a stall longer than lost_after_ms is not counted; "
                                              "merged buckets weigh by the time each showed).")
    max_occupancy: int
    dwell_s: DwellOut = Field(description="Dwell of the visits that ended in the bucket.")
    dwell_source: Literal["events", "bucket", "buckets"] | None = Field(description=(
        "Where dwell_s comes from: `events` the stored exits (exact: every stored bucket merged here still has "
        "all the exits it counted); once some are purged (zone_events retention, an erasure), the stored "
        "buckets' median and p90 (`bucket`: one stored bucket, exact; `buckets`: the medians and p90s of the "
        "stored buckets without their exits and the percentiles of the exits still stored, weighted by the "
        "visits that ended in each, an approximation; a bucket without a p90 is left out of the p90), without "
        "mean and total; null without any ended visit."))
    stoppers: int
    served: int
    abandoned: int
    lost: int


class ZoneStatsOut(_Out):
    start_ms: int
    end_ms: int
    bucket_s: int
    aligned_to: AlignedTo
    timezone: StoreTimezone
    buckets: list[ZoneBucketOut]


class ZoneEventOut(_Out):
    event_id: str
    camera_id: str
    zone_id: str
    zone_kind: str
    track_id: int
    kind: Literal["enter", "exit", "loiter"]
    ts_ms: int
    seq: int
    dwell_ms: int | None = None
    how: str | None = None


class ZoneEventsOut(_Out):
    events: list[ZoneEventOut]


class QueueOut(_Out):
    camera_id: str
    zone_id: str
    at_ms: int | None = Field(description="The 'now' of the numbers (the camera's latest frame by default).")
    window_s: float
    length: int | None = Field(description="People in the queue now; null when `stale`.")
    predicted_wait_s: float | None = Field(description="For someone joining now, by Little's law: length / "
                                                       "service rate (served / covered_s); null when nobody was "
                                                       "served, the stream showed less than 30 s of the window "
                                                       "(the whole window, if shorter), or `stale`.")
    stale: bool = Field(False, description="A live camera whose newest frame is older than 60 s at the wall "
                                           "clock (with at_ms: at at_ms, when at_ms is after that frame): its "
                                           "queue is not known now (length and predicted wait null); the other "
                                           "figures are of the window ending at at_ms. Also a live camera without any "
                                           "frame (age_s null). The rule of /v1/zones.")
    age_s: float | None = Field(None, description="A live camera: the age of its newest frame at the wall clock "
                                                  "(with at_ms: at at_ms); null for recorded files and for an at_ms "
                                                  "at or before that frame.")
    covered_s: float | None = Field(None, description="The time of the window the stream showed (its stored frames: "
                                                      "from the first one, or the end of a stall longer than the "
                                                      "zones' lost_after_ms), which the service rate is over; the "
                                                      "whole window when no frame of it is stored. A window over "
                                                      "an hour: its whole stored buckets' covered time "
                                                      "(zone_stats), its frames at the edges.")
    served: int
    abandoned: int
    lost: int
    wait_s: DwellOut = Field(description="Measured waits (entry to leaving through the service edge) in the window.")


class QueuesOut(_Out):
    queues: list[QueueOut]


class InterestOut(_Out):
    key: str = Field(description="Zone '<camera>/<zone>', product or category, per group_by.")
    zones: list[str]
    passers: int | None = Field(description="Visits that ended in the range (not of staff tracks); null: suppressed.")
    stoppers: int | None = Field(description="Of those, visits of at least the zone's stopper_after_s; null: "
                                             "suppressed.")
    interest_rate: float | None = Field(description="stoppers / passers; null without passers or suppressed.")
    dwell_s: DwellOut | None = Field(description="Dwell of the passers; null: suppressed.")
    dwell_histogram: dict[str, int | None] | None = Field(
        description="Visits per dwell band in seconds, e.g. '3-10' (a band of fewer than k_min visits is null); "
                    "null: suppressed.")
    attention_s: float | None = Field(description="Total over the stoppers (not per person) of their dwell "
                                                  "weighted by their face's attention share (faces stages); "
                                                  "null when none had a usable face, or withheld when 1 to "
                                                  "k_min-1 did (then `attention_suppressed`).")
    attention_suppressed: bool = Field(False, description="attention_s is withheld (null): 1 to k_min-1 stoppers "
                                                          "had a usable face (privacy.k_min). False when none had "
                                                          "one, and in a suppressed row (`suppressed` says it).")
    attending_emotions: dict[str, int | None] | None = Field(
        description="Stoppers with attention > 0.5 by expression, every expression listed (a cell of fewer than "
                    "k_min: null); null when fewer than k_min stoppers had a usable face (as attention_s), when "
                    "1 to k_min-1 of them attended, or when the row is suppressed.")
    suppressed: bool = Field(False, description="The row had 1 to k_min-1 passers (privacy.k_min): every "
                                                "figure is withheld (null). Cells of fewer than k_min inside a "
                                                "reported row are null too.")


class InterestListOut(_Out):
    start_ms: int
    end_ms: int
    group_by: Literal["zone", "product", "category"]
    items: list[InterestOut]


def _dwell(values_s: list[float]) -> DwellOut:
    if not values_s:
        return DwellOut()
    med, p90 = np.percentile(values_s, [50, 90])
    return DwellOut(median=float(med), p90=float(p90), mean=float(np.mean(values_s)), total=float(sum(values_s)),
                    n=len(values_s))


def _k_anonymous(dwell: DwellOut, k: int) -> DwellOut:
    """``dwell``, or every figure withheld (null, ``suppressed``) when it was measured from 1 to ``k``-1 visits
    (:func:`storelens.domain.privacy.is_suppressed`, the rule of ``/v1/kpis`` and ``/v1/interest``)."""
    if not is_suppressed(dwell.n or 0, k):
        return dwell
    return DwellOut(median=None, p90=None, mean=None, total=None, n=None, suppressed=True)


def _zones(ctx: ApiContext, camera_id: str | None = None, kinds: tuple[str, ...] | None = None
           ) -> list[tuple[CameraConfig, ZoneConfig]]:
    cams = [ctx.camera(camera_id)] if camera_id is not None else ctx.config.cameras
    return [(c, z) for c in cams for z in c.zones if z.kind != "exclude" and (kinds is None or z.kind in kinds)]


def _occupancy(ctx: ApiContext, camera_id: str) -> tuple[int | None, dict[str, int]]:
    """``(the camera's latest frame time, zone id -> people inside)``: from the live state, else the stored
    occupancy (it holds since its row was written) as of the newest stored frame (see the module docstring)."""
    if ctx.live is not None and hasattr(ctx.live, "zone_occupancy"):
        try:
            live = ctx.live.zone_occupancy(camera_id)
            if live is not None:
                return ctx.live.last_seen(camera_id), live
        except Exception:  # live state unreachable: history answers
            pass
    ts, occ = zq.occupancy_now(ctx.storage, camera_id)
    frame_ts = newest_frame_ms(ctx.storage, camera_id)
    return max((t for t in (ts, frame_ts) if t is not None), default=None), occ


def _live_age(cam: CameraConfig, ts_ms: int | None, wall_ms: int, at_ms: int | None = None
              ) -> tuple[int | None, bool]:
    """``(age_ms, stale)`` of a camera's "now" ``ts_ms`` (its newest frame): a live camera's age at the wall clock
    ``wall_ms`` and whether it is over :data:`STALE_AFTER_MS` (down, or its writer stopped: what it showed last is
    not "now"); ``(None, False)`` for a recorded file (its "now" is its last frame, as it was live). A live camera
    without any frame (``ts_ms`` ``None``: a new camera with a wrong URL, never connected) is ``(None, True)``: stale
    with no age, not a "live" camera with zeros. An explicit ``at_ms`` replaces the wall clock: after the newest
    frame, its age is ``at_ms - ts_ms`` (a live camera down two hours is stale at an ``at_ms`` of now too); at or
    before it, ``(None, False)`` (a time of the history). The rule of ``/v1/zones``, ``/v1/queues``,
    ``/v1/occupancy`` and ``/v1/live``."""
    if not is_live(cam.source):
        return None, False
    if ts_ms is None:
        return None, True
    if at_ms is not None and at_ms <= ts_ms:
        return None, False
    age_ms = (wall_ms if at_ms is None else at_ms) - ts_ms
    return age_ms, age_ms > STALE_AFTER_MS


@router.get("/v1/zones", response_model=ZonesOut, responses=NOT_FOUND,
            summary="Zones with the people inside now")
def zones(ctx: ContextDep,
          camera_id: Annotated[Text | None, Query(max_length=200, description="Only this camera.")] = None,
          kind: Annotated[ZoneKindName | None, Query(description="Only zones of this kind.")] = None) -> ZonesOut:
    out = []
    occ: dict[str, tuple[int | None, dict[str, int]]] = {}
    wall_ms = int(time.time() * 1000)
    for cam, z in _zones(ctx, camera_id, (kind,) if kind else None):
        ts, per_zone = occ.setdefault(cam.id, _occupancy(ctx, cam.id))
        age_ms, stale = _live_age(cam, ts, wall_ms)
        out.append(ZoneStateOut(camera_id=cam.id, zone_id=z.id, kind=z.kind, product=z.product, category=z.category,
                                polygon=list(z.polygon), occupancy=None if stale else per_zone.get(z.id, 0), ts_ms=ts,
                                stale=stale, age_s=None if age_ms is None else max(0, age_ms) / 1000))
    return ZonesOut(zones=out)


def _history_zone(ctx: ApiContext, camera_id: str, zone_id: str | None, *stored: Any) -> None:
    """404 unless ``camera_id`` is configured or has rows in the ``stored`` tables (a camera a site version removed
    keeps its history), and ``zone_id`` (when given) is a zone of its config or has rows there."""
    cam = ctx.history_camera(camera_id, *stored)
    if zone_id is None or (cam is not None and any(z.id == zone_id and z.kind != "exclude" for z in cam.zones)):
        return
    if not has_rows(ctx.storage, stored, camera_id=camera_id, zone_id=zone_id):
        raise HTTPException(404, f"unknown zone {zone_id!r} of camera {camera_id!r}")


@router.get("/v1/zones/stats", response_model=ZoneStatsOut, responses=NOT_FOUND,
            summary="Visits, occupancy and dwell per zone and time bucket",
            description="The stored buckets (the site's zones.bucket_s) merged into buckets of `bucket_s`, aligned "
                        "as in `/v1/counts`: whole days are the store's local days (`aligned_to`); a stored "
                        "bucket counts in the bucket it starts in. When the store's alignment would cut stored "
                        "buckets (hours of a +05:30 zone over stored hours, local days over stored buckets that "
                        "local midnight falls inside), the buckets are aligned on the epoch (`aligned_to`: "
                        "`epoch`). k-anonymity: a bucket's `dwell_s` measured from 1 to k_min-1 visits "
                        "(privacy.k_min, default 5) is withheld: every figure null and `suppressed: true`. At most "
                        "100,000 buckets (422): over [start_ms, end_ms), or without end_ms those the answer has (the "
                        "buckets the stored ones from start_ms fall in). A camera (zone) removed from the site "
                        "through `/v1/site` keeps its history: its stored buckets answer under their zone ids; 404 "
                        "for a camera (zone) neither configured nor in the stored buckets and zone events.")
def zone_stats(ctx: ContextDep, camera_id: Annotated[Text, Query(max_length=200)], start_ms: FromMs0,
               end_ms: EndMs = None,
               zone_id: Annotated[Text | None, Query(max_length=200, description="Only this zone.")] = None,
               bucket_s: Annotated[int | None, Query(ge=1, le=86_400 * 31, description=(
                   "Bucket width: a multiple of the site's zones.bucket_s (default that)."))] = None) -> ZoneStatsOut:
    _history_zone(ctx, camera_id, zone_id, tables.zone_stats, tables.zone_events)
    base = ctx.config.zones.bucket_s
    bucket_s = bucket_s or base
    if bucket_s % base:
        raise HTTPException(422, f"bucket_s ({bucket_s}) must be a multiple of the site's zones.bucket_s ({base})")
    end = end_ms if end_ms is not None else MAX_TS_MS
    check_range(start_ms, end)
    if end_ms is not None:  # 422 before reading when the range spans too many buckets
        bucket_grid(ctx.config, start_ms, end, bucket_s, data=None, stored_s=base)
    elif (span := zq.bucket_span(ctx.storage, camera_id, zone_id, start_ms)) is not None:
        # no end: the same limit over the stored buckets' time, from the first to the end of the last; past it,
        # over the buckets the answer has (those the stored buckets start in), counted in the database
        try:
            bucket_grid(ctx.config, span[0], span[1] + base * 1000, bucket_s, data=None, stored_s=base)
        except HTTPException as exc:
            if bucket_s % 86_400 == 0:  # whole days: the span's limit (100,000 days)
                raise HTTPException(422, f"without end_ms, the stored buckets from start_ms on: {exc.detail} "
                                         f"(end_ms)") from None
            # shorter buckets: the answer's grid (a run of equal widths; a run per change of a zone's sub-hour offset)
            grid = bucket_grid(ctx.config, start_ms, span[1] + base * 1000, bucket_s, data=span, limit=False,
                               stored_s=base)
            if (n := zq.count_buckets(ctx.storage, camera_id, zone_id, start_ms, grid)) > MAX_BUCKETS:
                raise HTTPException(422, f"without end_ms, the stored buckets from start_ms on fall in {n} buckets "
                                         f"of bucket_s={bucket_s}, more than the limit of {MAX_BUCKETS}: give "
                                         f"end_ms or a larger bucket_s") from None
    rows = zq.zone_buckets(ctx.storage, camera_id, zone_id, start_ms, end)
    # the exits of the stored buckets read whole, as their counts are (a range ending inside one)
    exits_to = max([end, *(r.end_ms for r in rows)])
    exits = zq.exit_dwells(ctx.storage, camera_id, start_ms, exits_to, None if zone_id is None else [zone_id])
    times = [r.start_ms for r in rows] + [ts_ms for _, ts_ms, _ in exits if ts_ms < end]
    data = (min(times), max(times)) if times else None
    # No end: the buckets of the data read (no limit on their number but for whole days). Stored buckets of
    # zones.bucket_s fall whole into the grid's, or it is the epoch's.
    last = data[1] if data is not None else start_ms
    grid = bucket_grid(ctx.config, start_ms, end if end_ms is not None else last + 1, bucket_s, data=data,
                       limit=end_ms is not None, stored_s=base)
    dwells: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for zid, ts_ms, dwell_ms in exits:
        dwells.setdefault((zid, grid.start_of(ts_ms)), []).append((ts_ms, dwell_ms / 1000))
    merged: dict[tuple[str, int], list[zq.ZoneBucketRow]] = {}
    for r in rows:
        merged.setdefault((r.zone_id, grid.start_of(r.start_ms)), []).append(r)
    # stored buckets merged: their people counted once each, from the visits (zone_events), between the stored
    # buckets' largest count and their sum (the visits purged, or not closed yet)
    people = (zq.people_per_bucket(ctx.storage, camera_id, zone_id, start_ms, end, grid, exits_to)
              if bucket_s != base and rows else {})
    buckets = []
    for (zid, start), rs in sorted(merged.items()):
        dwell, source = _bucket_dwell(dwells.get((zid, start), []), rs)
        stored_people = [r.unique_people for r in rs]
        buckets.append(ZoneBucketOut(
            camera_id=camera_id, zone_id=zid, start_ms=start, end_ms=grid.end_of(start),
            visits=sum(r.visits for r in rs),
            unique_people=stored_people[0] if len(rs) == 1 else min(
                sum(stored_people), max(people.get((zid, start), 0), *stored_people)),
            mean_occupancy=zq.covered_mean(rs),
            max_occupancy=max(r.max_occupancy for r in rs),
            dwell_s=_k_anonymous(dwell, ctx.config.privacy.k_min), dwell_source=source,
            stoppers=sum(r.stoppers for r in rs), served=sum(r.served for r in rs),
            abandoned=sum(r.abandoned for r in rs), lost=sum(r.lost for r in rs)))
    return ZoneStatsOut(start_ms=start_ms, end_ms=end, bucket_s=bucket_s, aligned_to=grid.aligned_to,
                        timezone=ctx.config.store.timezone, buckets=buckets)


def _bucket_dwell(exits: list[tuple[int, float]], rows: list[zq.ZoneBucketRow]) -> tuple[DwellOut, str | None]:
    """Dwell of a merged bucket from its stored exits ``(ts_ms, dwell_s)`` and stored buckets ``rows`` (in time
    order): exact (``events``) when every stored bucket still has all the exits it counted (``visits_ended``;
    exits after the last stored bucket, not closed yet, count too); else the exits of the stored buckets that
    still have all theirs, with the median and p90 of those that do not (zone_events retention, an erasure)
    weighted by the visits that ended in each (``buckets``, an approximation; one stored bucket alone:
    ``bucket``, exact); a stored bucket without a p90 is left out of the p90's weights."""
    starts = [r.start_ms for r in rows]
    held: list[list[float]] = [[] for _ in rows]
    outside: list[float] = []  # exits in no stored bucket (one not closed yet)
    for ts_ms, dwell_s in exits:
        i = bisect.bisect_right(starts, ts_ms) - 1
        (held[i] if i >= 0 and ts_ms < rows[i].end_ms else outside).append(dwell_s)
    whole = [len(h) >= r.visits_ended for r, h in zip(rows, held)]
    if all(whole):
        return (_dwell([d for _, d in exits]), "events") if exits else (DwellOut(), None)
    values = outside + [d for h, ok in zip(held, whole) if ok for d in h]
    kept = [r for r, ok in zip(rows, whole) if not ok and r.dwell_median_s is not None and r.visits_ended > 0]
    n = len(values) + sum(r.visits_ended for r in kept)
    if not n:
        return DwellOut(), None
    if not values and len(kept) == 1:
        return DwellOut(median=kept[0].dwell_median_s, p90=kept[0].dwell_p90_s, total=None, n=n), "bucket"
    # (value, p90, weight) of each part: the exits' own percentiles, then each purged bucket's
    parts = [(r.dwell_median_s, r.dwell_p90_s, r.visits_ended) for r in kept]
    if values:
        ev = _dwell(values)
        parts.append((ev.median, ev.p90, len(values)))
    med = sum(m * w for m, _, w in parts) / n
    with_p90 = [(p, w) for _, p, w in parts if p is not None]
    p90 = sum(p * w for p, w in with_p90) / sum(w for _, w in with_p90) if with_p90 else None
    return DwellOut(median=med, p90=p90, total=None, n=n), "buckets"


@router.get("/v1/zones/events", response_model=ZoneEventsOut, response_model_exclude_none=True,
            dependencies=[Depends(require_role("manager"))],
            responses=NOT_FOUND, summary="Zone entries, exits and loitering in time order",
            description="A camera (zone) removed from the site through `/v1/site` keeps its history: its stored "
                        "events answer (with the zone kind stored with each); 404 for a camera (zone) neither "
                        "configured nor in the stored zone events.")
def zone_event_list(ctx: ContextDep, camera_id: Annotated[Text, Query(max_length=200)], start_ms: FromMs0,
                    end_ms: EndMs = None,
                    zone_id: Annotated[Text | None, Query(max_length=200)] = None,
                    kind: Annotated[Literal["enter", "exit", "loiter"] | None, Query()] = None,
                    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000) -> ZoneEventsOut:
    _history_zone(ctx, camera_id, zone_id, tables.zone_events)
    end = end_ms if end_ms is not None else MAX_TS_MS
    check_range(start_ms, end)
    rows = zq.events(ctx.storage, camera_id, start_ms, end, zone_ids=None if zone_id is None else [zone_id],
                     kinds=None if kind is None else [kind], limit=limit)
    return ZoneEventsOut(events=[ZoneEventOut(event_id=e.event_id, camera_id=e.camera_id, zone_id=e.zone_id,
                                              zone_kind=zk, track_id=e.track_id, kind=e.kind, ts_ms=e.ts_ms,
                                              seq=e.seq, dwell_ms=e.dwell_ms, how=e.how) for e, zk in rows])


@router.get("/v1/queues", response_model=QueuesOut, responses=NOT_FOUND,
            summary="Queue zones: length now, predicted and measured waits, served and abandoned",
            description="k-anonymity: `wait_s` measured from 1 to k_min-1 served (privacy.k_min, default 5) is "
                        "withheld: every figure null and `suppressed: true`.")
def queues(ctx: ContextDep, camera_id: Annotated[Text | None, Query(max_length=200)] = None,
           at_ms: Annotated[int | None, Query(ge=1, le=MAX_TS_MS, description=(
               "The 'now' (default: the camera's latest frame). The length at it counts the visits open then, "
               "of the stream showing then: one from before a frame gap or an end of stream only if its track "
               "was seen after it or its exit is dated later; none when the frames stopped before it."))] = None,
           window_s: Annotated[float | None, Query(gt=0, le=86_400, description=(
               "Window of the service rate and waits (default the site's zones.queue_window_s)."))] = None,
           ) -> QueuesOut:
    window_s = window_s or ctx.config.zones.queue_window_s
    window_ms = int(window_s * 1000)
    out = []
    covered: dict[tuple[str, int], int | None] = {}
    lengths: dict[str, dict[str, int]] = {}
    wall_ms = int(time.time() * 1000)
    for cam, z in _zones(ctx, camera_id, ("queue",)):
        ts, occ = _occupancy(ctx, cam.id)
        now = at_ms if at_ms is not None else ts
        # a live camera's "now" is its newest frame: that far behind the wall clock, the queue is not known now
        age_ms, stale = _live_age(cam, ts, wall_ms, at_ms)
        if at_ms is not None and cam.id not in lengths:  # every queue zone of the camera at once
            # past the camera's newest frame: its people then (as without at_ms; a live camera over 60 s behind is
            # stale), not "the stream stopped: nobody"
            lengths[cam.id] = _lengths_at(ctx, cam, at_ms if ts is None else min(at_ms, ts))
        length = occ.get(z.id, 0) if at_ms is None else lengths[cam.id].get(z.id, 0)
        if now is None:  # no frame ever (a live camera's: stale)
            out.append(QueueOut(camera_id=cam.id, zone_id=z.id, at_ms=None, window_s=window_s,
                                length=None if stale else 0, predicted_wait_s=None, stale=stale, served=0,
                                abandoned=0, lost=0, wait_s=DwellOut()))
            continue
        evs = [e for e, _ in zq.events(ctx.storage, cam.id, max(0, now - window_ms + 1), now + 1, zone_ids=[z.id],
                                       kinds=["exit"])]
        if (cam.id, now) not in covered:
            covered[(cam.id, now)] = _covered_ms(ctx, cam, now, window_ms)
        q = QueueStats.compute(evs, z.id, now, window_ms, length, covered[(cam.id, now)])
        out.append(QueueOut(camera_id=cam.id, zone_id=z.id, at_ms=now, window_s=window_s,
                            length=None if stale else length,
                            predicted_wait_s=None if q.predicted_wait_ms is None or stale
                            else q.predicted_wait_ms / 1000,
                            stale=stale, age_s=None if age_ms is None else max(0, age_ms) / 1000,
                            covered_s=q.rate_ms / 1000,
                            served=q.served, abandoned=q.abandoned, lost=q.lost,
                            wait_s=_k_anonymous(_dwell([w / 1000 for w in q.waits_ms]), ctx.config.privacy.k_min)))
    return QueuesOut(queues=out)


def _covered_ms(ctx: ApiContext, cam: CameraConfig, now_ms: int, window_ms: int) -> int | None:
    """The time of ``(now_ms - window_ms, now_ms]`` the camera's stream showed (:meth:`StreamCoverage.for_zones`);
    ``None`` without any stored frame in the window while frames after it are stored, or none at all (not stored,
    or purged: the whole window counts). Without a stored frame in the window or after it (the history written
    only up to before the window: its writer behind, the camera down), what the stored frames show of it (0, or
    the last one's hold into it), never the whole window.

    A window longer than :data:`FRAMES_COVERAGE_MAX_MS` reads the frames only at its edges: the whole
    ``zones.bucket_s`` buckets in it that are stored (``zone_stats``, closed) give their covered time (the same
    rule, kept per bucket), so a day's window costs a row per bucket and a bucket or two of frames, not its
    1.3 M frames at 15 fps."""
    cover = StreamCoverage.for_zones(cam.zones, ctx.config.zones)
    lo = now_ms - window_ms
    base = ctx.config.zones.bucket_s * 1000
    first = -(-lo // base) * base  # the first whole bucket's start
    rows = (zq.bucket_coverage(ctx.storage, cam.id, [z.id for z in cam.zones], first, now_ms)
            if window_ms > FRAMES_COVERAGE_MAX_MS and first < now_ms else [])
    # frames for what the stored buckets do not cover: before the first stored bucket, between two that are not
    # adjacent (a bucket not stored: an analytics restart, a purge), after the last stored one
    edges = ([(lo, rows[0][0]), *((a[1], b[0]) for a, b in zip(rows, rows[1:])), (rows[-1][1], now_ms)]
             if rows else [(lo, now_ms)])
    covered, seen = sum(c for _, _, c in rows), bool(rows)
    for a, b in edges:
        if b <= a:
            continue
        runs = zq.frame_runs(ctx.storage, cam.id, max(0, a - cover.max_gap_ms), b + 1, cover.max_gap_ms)
        seen = seen or any(last > lo for _, last in runs)
        covered += StreamCoverage(cover.max_gap_ms, runs).covered_ms(b, b - a)
    if seen:
        return covered
    newest = newest_frame_ms(ctx.storage, cam.id)
    return None if newest is None or newest > now_ms else covered


def _lengths_at(ctx: ApiContext, cam: CameraConfig, at_ms: int) -> dict[str, int]:
    """People in each queue zone of the camera at ``at_ms``: the visits open at it, of the stream showing then
    or going on across a frame gap (from the events, frames and track points,
    :func:`storelens.storage.zones.lengths_at`)."""
    gap = StreamCoverage.for_zones(cam.zones, ctx.config.zones).max_gap_ms
    return zq.lengths_at(ctx.storage, cam.id, [z.id for z in cam.zones if z.kind == "queue"], at_ms,
                         stream_gap_ms=gap)


@router.get("/v1/interest", response_model=InterestListOut, responses=NOT_FOUND,
            summary="Product interest of shelf zones: passers, stoppers, dwell, attention",
            description="Per shelf zone, product or category: visits that ended in [start_ms, end_ms), how many "
            "stopped, their dwell and attention. k-anonymity: a row of 1 to k_min-1 passers (privacy.k_min, "
            "default 5) is withheld: every figure null and `suppressed: true`; inside a reported row, "
            "histogram and emotion cells of fewer than k_min are null, attention_s (a total over the stoppers) is "
            "withheld (null, `attention_suppressed: true`) when 1 to k_min-1 stoppers had a usable face (null "
            "without one), and so is attending_emotions, also when 1 to k_min-1 of them attended. 422 when the "
            "range holds more than 1,000,000 ended shelf visits (each one is read).")
def interest(ctx: ContextDep, start_ms: FromMs0, end_ms: EndMs = None,
             group_by: Annotated[Literal["zone", "product", "category"], Query()] = "zone",
             camera_id: Annotated[Text | None, Query(max_length=200)] = None,
             product: Annotated[Text | None, Query(max_length=200)] = None,
             category: Annotated[Text | None, Query(max_length=200)] = None) -> InterestListOut:
    end = end_ms if end_ms is not None else MAX_TS_MS
    check_range(start_ms, end)
    shelves = [(c, z) for c, z in _zones(ctx, camera_id, ("shelf",))
               if (product is None or z.product == product) and (category is None or z.category == category)]
    # every ended visit is read (exact dwell percentiles): 422 before reading more than MAX_INTEREST_VISITS
    if (n := zq.count_ended_visits(ctx.storage, [(c.id, z.id) for c, z in shelves], start_ms, end)) \
            > MAX_INTEREST_VISITS:
        raise HTTPException(422, f"range [{start_ms}, {end}) has {n} ended shelf visits, more than the limit of "
                                 f"{MAX_INTEREST_VISITS}; narrow the range (end_ms) or the zones")
    visits = zq.ended_visits(ctx.storage, [(c.id, z.id) for c, z in shelves], start_ms, end)
    by_zone: dict[tuple[str, str], list[zq.VisitRow]] = {}
    for v in visits:
        by_zone.setdefault((v.camera_id, v.zone_id), []).append(v)
    groups: dict[str, list[tuple[CameraConfig, ZoneConfig]]] = {}
    for c, z in shelves:
        key = {"zone": f"{c.id}/{z.id}", "product": z.product or "", "category": z.category or ""}[group_by]
        groups.setdefault(key, []).append((c, z))
    items = []
    for key, members in sorted(groups.items()):
        dwells, stop_dwell, attention, stoppers = [], 0.0, None, 0
        # every expression listed (a key only where one occurred would name it while its count is withheld)
        emotions, watchers, attending = dict.fromkeys(EMOTION_KEYS, 0), 0, 0
        for c, z in members:
            limit_ms = z.rules(ctx.config.zones).stopper_after_s * 1000
            for v in by_zone.get((c.id, z.id), []):
                dwells.append(v.dwell_ms / 1000)
                if v.dwell_ms >= limit_ms:
                    stoppers += 1
                    stop_dwell += v.dwell_ms / 1000
                    if v.attention_share is not None:
                        watchers += 1
                        attention = (attention or 0.0) + v.attention_share * v.dwell_ms / 1000
                        if v.attention_share > 0.5:
                            attending += 1
                            emotions[v.emotion if v.emotion in emotions else "unknown"] += 1
        hist = {f"{lo}-{hi}": 0 for lo, hi in zip(DWELL_BINS_S, DWELL_BINS_S[1:])} | {f"{DWELL_BINS_S[-1]}+": 0}
        for d in dwells:
            i = int(np.searchsorted(DWELL_BINS_S, d, side="right")) - 1
            hist[list(hist)[min(i, len(hist) - 1)]] += 1
        zones = [f"{c.id}/{z.id}" for c, z in members]
        k = ctx.config.privacy.k_min
        if is_suppressed(len(dwells), k):
            items.append(InterestOut(key=key, zones=zones, passers=None, stoppers=None, interest_rate=None,
                                     dwell_s=None, dwell_histogram=None, attention_s=None, attending_emotions=None,
                                     suppressed=True))
            continue
        items.append(InterestOut(key=key, zones=zones, passers=len(dwells),
                                 stoppers=stoppers, interest_rate=stoppers / len(dwells) if dwells else None,
                                 dwell_s=_dwell(dwells), dwell_histogram=suppress_counts(hist, k)[0],
                                 attention_s=keep(attention, watchers, k),
                                 attention_suppressed=is_suppressed(watchers, k),
                                 attending_emotions=None if watchers < k or is_suppressed(attending, k)
                                 else suppress_counts(emotions, k)[0]))
    return InterestListOut(start_ms=start_ms, end_ms=end, group_by=group_by, items=items)
