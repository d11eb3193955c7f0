"""Live occupancy (ins minus outs) of each camera and of the whole store (``/v1/occupancy``).

Read from the live state when the app has one (distributed mode), else, and
whenever the live state has nothing or does not answer, from storage.

The store's number is the ``store_occupancy`` alert's (:func:`~storelens.domain.counting.store_totals` over
``store.entrance_lines``, else every line, clamped at 0 once for the store): the row the analytics stage writes for
the store (camera id :data:`~storelens.domain.counting.STORE_OCCUPANCY_ID`) beside the cameras' rows: one read,
whatever the history's size; before the stage wrote that row (older data), the sum of the cameras'.

A camera's ``last_seen_ts_ms`` (its newest frame: the dashboard's camera health) comes from the live state, else
(the embedded mode, or a camera the live state has not seen) from the newest stored frame, as ``/v1/zones``' time.
A live camera whose newest frame (``last_seen_ts_ms``, else its row's time) is over 60 s old at the wall clock is
``stale`` with its ``age_s``, and so is one without any frame (no ``age_s``: never received): the rule of
``/v1/zones`` and ``/v1/queues`` (:func:`~.zones._live_age`); a recorded file never is.

**The daily reset** (``store.occupancy_reset``): the stage restarts a camera at its first frame after a reset, so a
camera without a frame since (down overnight, or simply behind) still has yesterday's row. A row (a camera's or
the store's) older than the latest reset at the API's "now" (:func:`reset_now_ms`) is shown as 0 in, 0 out,
occupancy 0 (``ts_ms`` the reset's), as the stage's ``store_occupancy`` alert counts it; the rule is the stage's
(:func:`~storelens.stages.analytics.occupancy_reset`).
"""
from __future__ import annotations

import time
from typing import Iterable

from storelens.backends.video import is_live
from storelens.config import CameraConfig
from storelens.contract import messages as m
from storelens.domain.counting import STORE_OCCUPANCY_ID, OccupancyReset, StoreTotals, store_totals
from storelens.stages.analytics import occupancy_reset
from storelens.storage.privacy import newest_frame_ms

from ..deps import ApiContext, CameraDep, ContextDep, api_router
from ..models import NOT_FOUND, CameraOccupancyOut, OccupancyOut
from .zones import _live_age

router = api_router("occupancy", role='viewer')


def latest_occupancy(ctx: ApiContext, camera_id: str, *, seen: bool = True) -> tuple[m.OccupancyUpdate | None,
                                                                                   int | None]:
    """The latest occupancy row of ``camera_id`` and (``seen``) its newest frame's time: live state first,
    storage (the occupancy row, the newest stored frame) as the fallback."""
    st, last_seen = None, None
    if ctx.live is not None:
        try:
            st = ctx.live.occupancy(camera_id)
            last_seen = ctx.live.last_seen(camera_id) if seen else None
        except Exception:  # live state unreachable: history still answers (readyz reports it)
            st, last_seen = None, None
    if st is None:
        st = ctx.storage.occupancy(camera_id)
    if seen and last_seen is None:
        last_seen = newest_frame_ms(ctx.storage, camera_id)
    return st, last_seen


def reset_now_ms(ctx: ApiContext, seen: Iterable[int | None]) -> int | None:
    """The "now" at which a row is checked against the daily reset: the wall clock when a camera of the site is
    live (its frames carry wall-clock times; the stage's clock moves with the wall clock too), else (recorded
    files) the newest of ``seen`` (the cameras' newest frame and row times), the stage's store clock: a recorded
    clip answers as it did, as ``/v1/queues``' "now"."""
    if any(is_live(c.source) for c in ctx.config.cameras):
        return int(time.time() * 1000)
    return max((t for t in seen if t is not None), default=None)


def _shown(camera_id: str, st: m.OccupancyUpdate | None, last_seen: int | None, reset: OccupancyReset,
           now_ms: int | None, cam: CameraConfig | None = None) -> CameraOccupancyOut:
    extra: dict = {} if last_seen is None else {"last_seen_ts_ms": last_seen}
    if cam is not None:  # a camera (not the store's row): stale as in /v1/zones
        newest = max((t for t in (last_seen, None if st is None else st.ts_ms) if t is not None), default=None)
        age_ms, stale = _live_age(cam, newest, int(time.time() * 1000))
        extra.update(stale=stale, age_s=None if age_ms is None else max(0, age_ms) / 1000)
    if st is None:
        return CameraOccupancyOut(camera_id=camera_id, occupancy=0, total_in=0, total_out=0, ts_ms=0, **extra)
    if now_ms is not None and reset.void_at(st.ts_ms, now_ms):  # yesterday's row: no frame since the reset
        return CameraOccupancyOut(camera_id=camera_id, occupancy=0, total_in=0, total_out=0,
                                  ts_ms=reset.last_reset_ms(now_ms), **extra)
    return CameraOccupancyOut(camera_id=camera_id, occupancy=st.occupancy, total_in=st.total_in,
                              total_out=st.total_out, ts_ms=st.ts_ms, **extra)


def cameras_occupancy(ctx: ApiContext) -> tuple[list[CameraOccupancyOut], int | None]:
    """Every camera's latest occupancy (live state first, storage as the fallback), a row older than the latest
    reset shown as 0; and the "now" of that check (:func:`reset_now_ms`)."""
    rows = [(c, *latest_occupancy(ctx, c.id)) for c in ctx.config.cameras]
    now = reset_now_ms(ctx, [t for _, st, seen in rows for t in (seen, None if st is None else st.ts_ms)])
    reset = occupancy_reset(ctx.config)
    return [_shown(cam.id, st, seen, reset, now, cam) for cam, st, seen in rows], now


def occupancy_of(ctx: ApiContext, camera_id: str) -> CameraOccupancyOut:
    """The latest occupancy of ``camera_id``, as :func:`cameras_occupancy` shows it."""
    return next(c for c in cameras_occupancy(ctx)[0] if c.camera_id == camera_id)


def store_totals_of(ctx: ApiContext, cameras: list[CameraOccupancyOut], now_ms: int | None) -> StoreTotals:
    """The store's occupancy, ins and outs (see the module docstring); ``cameras`` and ``now_ms``:
    :func:`cameras_occupancy`'s."""
    st, _ = latest_occupancy(ctx, STORE_OCCUPANCY_ID, seen=False)
    if st is not None:
        shown = _shown(STORE_OCCUPANCY_ID, st, None, occupancy_reset(ctx.config), now_ms)
        return StoreTotals(shown.occupancy, shown.total_in, shown.total_out)
    return store_totals(None, [(c.occupancy, c.total_in, c.total_out) for c in cameras], {})


@router.get("/v1/occupancy", response_model=OccupancyOut, response_model_exclude_none=True,
            summary="Live occupancy of the store")
def store_occupancy(ctx: ContextDep) -> OccupancyOut:
    per_camera, now = cameras_occupancy(ctx)
    return OccupancyOut(store_id=ctx.config.store.id, occupancy=store_totals_of(ctx, per_camera, now).occupancy,
                        stale=any(c.stale for c in per_camera), cameras=per_camera)


@router.get("/v1/occupancy/{camera_id}", response_model=CameraOccupancyOut, response_model_exclude_none=True,
            responses=NOT_FOUND, summary="Live occupancy of one camera")
def camera_occupancy(ctx: ContextDep, camera: CameraDep) -> CameraOccupancyOut:
    return occupancy_of(ctx, camera.id)
