"""People counts: crossings of a camera's lines per aligned time bucket, with totals (``/v1/counts``).

Buckets of whole days are the store's local calendar days (``store.timezone``; 23 or 25 hours when
the clocks change), shorter ones multiples of the width since the epoch, moved by the sub-hour part
of a UTC offset such as India's +05:30 (:meth:`~storelens.domain.calendar.StoreCalendar.grid`).
"""
from __future__ import annotations

import time
from typing import Annotated

from fastapi import HTTPException, Query

from storelens.config import SiteConfig
from storelens.domain.calendar import CALENDAR_MAX_MS, BucketGrid, StoreCalendar
from storelens.storage import groups as gq
from storelens.storage.schema import crossings, group_crossings
from storelens.storage.site import has_rows

from ..deps import MAX_TS_MS, ContextDep, EndMs, OptStartMs, Text, api_router, resolve_range
from ..models import NOT_FOUND, BucketOut, CountsOut, InOut

#: Largest bucket width: 31 days.
MAX_BUCKET_S = 86_400 * 31
#: Most buckets a single ``/v1/counts`` range may span.
MAX_BUCKETS = 100_000

router = api_router("counts", role='viewer')


def n_buckets(start_ms: int, end_ms: int, bucket_s: int) -> int:
    """Aligned buckets that ``[start_ms, end_ms)`` touches."""
    w = bucket_s * 1000
    return (end_ms - 1) // w - start_ms // w + 1


def _too_many(start: int, end: int, bucket_s: int, n: int) -> HTTPException:
    # Any bucket_s >= this keeps n <= MAX_BUCKETS (alignment adds at most one bucket).
    min_bucket_s = -(-(end - start) // ((MAX_BUCKETS - 1) * 1000))
    hint = f" or use bucket_s >= {min_bucket_s}" if min_bucket_s <= MAX_BUCKET_S else ""
    return HTTPException(
        422,
        f"range [{start}, {end}) at bucket_s={bucket_s} spans {n} buckets, "
        f"more than the limit of {MAX_BUCKETS}; narrow the range{hint}",
    )


def bucket_grid(config: SiteConfig, start: int, end: int, bucket_s: int, *, data: tuple[int, int] | None,
                limit: bool = True, stored_s: int | None = None) -> BucketGrid:
    """The buckets of ``bucket_s`` seconds over ``[start, end)`` in the store's calendar
    (:meth:`~storelens.domain.calendar.StoreCalendar.grid`). 422 when the range spans more than
    :data:`MAX_BUCKETS` of them (whole days: always, each costs a calendar day; shorter: when ``limit``)
    or, for whole days, ends past the calendar's last day.

    ``data``: the first and last instant of the data to bucket (``None``: there is none). The grid is laid
    out over the part of the range holding it only (it is exact there, and a bucket is the same whichever
    range holds it): decades of range over a few days of data cost a few days (whole days: a calendar day
    each; a zone whose offset changes its sub-hour part, as Lord Howe: a run per change); the range's
    buckets are counted without laying them out (:meth:`~storelens.domain.calendar.StoreCalendar.bucket_count`).
    ``stored_s``: the data is stored in buckets of that width since the epoch (zone statistics): a grid
    with an edge inside a stored bucket (hours of a +05:30 zone over stored hours, local midnights over
    stored 2 h buckets in a +01:00 zone) would date a bucket's content wrongly, the epoch's is used instead
    (``aligned_to``: ``epoch``; whole weeks from Monday 00:00 UTC, :meth:`BucketGrid.epoch`)."""
    days = bucket_s % 86_400 == 0
    n = n_buckets(start, end, bucket_s)  # the store's alignment moves this by at most one
    if (limit or days) and n > MAX_BUCKETS + 1:
        raise _too_many(start, end, bucket_s, n)
    if days and end > CALENDAR_MAX_MS:
        raise HTTPException(422, f"end_ms ({end}) is past the calendar's last day (at most {CALENDAR_MAX_MS}) "
                                 f"for buckets of whole days")
    cal = StoreCalendar(config.store.timezone)
    lo, hi = (max(start, data[0]), min(end, data[1] + 1)) if data is not None else (start, start)
    if hi <= lo:  # nothing to bucket: the alignment only
        lo, hi = start, start + 1
    grid = cal.grid(bucket_s, lo, hi)
    epoch = stored_s is not None and not (cal.offsets_on_multiples_of(stored_s * 1000)
                                          and grid.on_multiples_of(stored_s * 1000))  # decided by the zone
    if epoch and stored_s is not None:
        grid = BucketGrid.epoch(bucket_s * 1000, unit_ms=stored_s * 1000)
    n = grid.count(start, end) if epoch else cal.bucket_count(bucket_s, start, end)
    if (limit or days) and n > MAX_BUCKETS:
        raise _too_many(start, end, bucket_s, n)
    return grid


@router.get("/v1/counts", response_model=CountsOut, responses=NOT_FOUND, summary="Line crossings per time bucket",
            response_model_exclude_none=True,
            description="Crossings (`in`, `out`) per line and aligned bucket. A `bucket_s` of whole days "
                        "(86400, 604800, ...) makes local calendar days of the store (`store.timezone`: from local "
                        "midnight, 23 or 25 hours when the clocks change; several days count from the local "
                        "1970-01-01, whole weeks (604800, 1209600, ...) from a Monday: ISO weeks, Monday to "
                        "Sunday, as `/v1/kpis?period=week`); shorter buckets are multiples of `bucket_s` since "
                        "the epoch, moved by the sub-hour part of the store's UTC offset when it has one (e.g. "
                        "+05:30), so local whole hours are edges. `aligned_to` says which (`store_local_day`, `epoch`, "
                        "`store_local_hour`); each bucket's `start_ms` / `end_ms` are its real edges. With "
                        "`groups=true` each bucket and "
                        "total also has `groups_in` / `groups_out`: buying units (people who crossed together, "
                        "see the `groups:` config, count once; a person alone is a unit), dated at the first "
                        "member's crossing. A camera (line) removed from the site through `/v1/site` keeps its "
                        "history: its stored crossings are counted under their line ids (`totals` has the lines "
                        "with stored crossings in the range); 404 for a camera (line) neither configured nor in "
                        "the stored crossings.")
def counts(
    ctx: ContextDep,
    camera_id: Annotated[Text, Query(max_length=200)],
    start_ms: OptStartMs = None,
    end_ms: EndMs = None,
    bucket_s: Annotated[int, Query(ge=1, le=MAX_BUCKET_S, description="Bucket width in seconds; whole days "
                                   "are the store's local days, shorter widths aligned on the epoch (see "
                                   "`aligned_to`).")] = 60,
    line_id: Annotated[Text | None, Query(max_length=200, description="Only this line.")] = None,
    groups: Annotated[bool, Query(description="Add groups_in / groups_out (buying units).")] = False,
) -> CountsOut:
    cam = ctx.history_camera(camera_id, crossings, group_crossings)  # a removed camera: its stored crossings
    line_ids = [ln.id for ln in cam.lines] if cam is not None else []
    storage = ctx.storage
    if line_id is not None and line_id not in line_ids and not has_rows(storage, [crossings], camera_id=camera_id,
                                                                          line_id=line_id):  # crossings_by_line
        raise HTTPException(404, f"unknown line {line_id!r} of camera {camera_id!r}")
    span = storage.crossing_span(camera_id)
    if start_ms is None:  # default: from the camera's first crossing (or now when there is none)
        start_ms = span[0] if span else min(int(time.time() * 1000), MAX_TS_MS - 1)
    if end_ms is None and span is not None:
        end_ms = max(span[1] + 1, start_ms + 1)
    start, end = resolve_range(start_ms, end_ms)
    if groups and (g_span := gq.group_span(storage, camera_id)) is not None:  # units are dated in the grid too
        span = g_span if span is None else (min(span[0], g_span[0]), max(span[1], g_span[1]))
    grid = bucket_grid(ctx.config, start, end, bucket_s, data=span)
    buckets = storage.counts(camera_id, start, end, bucket_s, line_id=line_id, grid=grid)
    stored = storage.line_totals(camera_id, start, end)
    wanted = [line_id] if line_id is not None else sorted({*line_ids, *stored})
    zero = {"in": 0, "out": 0}
    units: dict = {}
    unit_totals: dict = {}
    if groups:
        units = gq.group_buckets(storage, camera_id, start, end, grid, line_id=line_id)
        unit_totals = gq.group_totals(storage, camera_id, start, end, line_id=line_id)

    def with_units(row: dict, u: dict | None) -> dict:
        return {**row, "groups_in": (u or zero)["in"], "groups_out": (u or zero)["out"]} if groups else row

    return CountsOut(
        camera_id=camera_id, start_ms=start, end_ms=end, bucket_s=bucket_s, aligned_to=grid.aligned_to,
        timezone=ctx.config.store.timezone,
        buckets=[
            BucketOut.model_validate(with_units({
                "line_id": b.line_id, "start_ms": b.start_ms, "end_ms": b.end_ms, "in": b.count_in,
                "out": b.count_out}, units.get((b.line_id, b.start_ms))))
            for b in buckets
        ],
        totals={ln: InOut.model_validate(with_units(stored.get(ln, zero), unit_totals.get(ln))) for ln in wanted},
    )
