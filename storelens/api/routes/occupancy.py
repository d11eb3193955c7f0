"""Live occupancy (ins minus outs) of each camera and of the whole store (``/v1/occupancy``).

Read from the live state when the app has one (distributed mode), else, and
whenever the live state has nothing or does not answer, from storage.

The store's number is the ``store_occupancy`` alert's (:func:`~storelens.domain.counting.store_totals`): with
``store.entrance_lines``, the row the analytics stage writes for the store (camera id
:data:`~storelens.domain.counting.STORE_OCCUPANCY_ID`) beside the cameras' rows: one read, whatever the
history's size; without entrance lines, or before the stage wrote that row (older data), the sum of the cameras'.

A camera's ``last_seen_ts_ms`` (its newest frame: the dashboard's camera health) comes from the live state, else
(the embedded mode, or a camera the live state has not seen) from the newest stored frame, as ``/v1/zones``' time.
"""
from __future__ import annotations

from storelens.contract import messages as m
from storelens.domain.counting import STORE_OCCUPANCY_ID, StoreTotals, store_totals
from storelens.storage.privacy import newest_frame_ms

from ..deps import ApiContext, CameraDep, ContextDep, api_router
from ..models import NOT_FOUND, CameraOccupancyOut, OccupancyOut

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


def occupancy_of(ctx: ApiContext, camera_id: str) -> CameraOccupancyOut:
    """The latest occupancy of ``camera_id``: live state first, storage as the fallback."""
    st, last_seen = latest_occupancy(ctx, camera_id)
    extra = {} if last_seen is None else {"last_seen_ts_ms": last_seen}
    if st is None:
        return CameraOccupancyOut(camera_id=camera_id, occupancy=0, total_in=0, total_out=0, ts_ms=0, **extra)
    return CameraOccupancyOut(camera_id=camera_id, occupancy=st.occupancy, total_in=st.total_in,
                              total_out=st.total_out, ts_ms=st.ts_ms, **extra)


def store_totals_of(ctx: ApiContext, cameras: list[CameraOccupancyOut]) -> StoreTotals:
    """The store's occupancy, ins and outs (see the module docstring); ``cameras``: :func:`occupancy_of` of each."""
    if ctx.config.store.entrance_lines is not None:
        st, _ = latest_occupancy(ctx, STORE_OCCUPANCY_ID, seen=False)
        if st is not None:
            return StoreTotals(st.occupancy, st.total_in, st.total_out)
    return store_totals(None, [(c.occupancy, c.total_in, c.total_out) for c in cameras], {})


@router.get("/v1/occupancy", response_model=OccupancyOut, response_model_exclude_none=True,
            summary="Live occupancy of the store")
def store_occupancy(ctx: ContextDep) -> OccupancyOut:
    per_camera = [occupancy_of(ctx, c.id) for c in ctx.config.cameras]
    return OccupancyOut(store_id=ctx.config.store.id, occupancy=store_totals_of(ctx, per_camera).occupancy,
                        cameras=per_camera)


@router.get("/v1/occupancy/{camera_id}", response_model=CameraOccupancyOut, response_model_exclude_none=True,
            responses=NOT_FOUND, summary="Live occupancy of one camera")
def camera_occupancy(ctx: ContextDep, camera: CameraDep) -> CameraOccupancyOut:
    return occupancy_of(ctx, camera.id)
