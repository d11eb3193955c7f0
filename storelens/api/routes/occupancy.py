"""Live occupancy (ins minus outs) of each camera and of the whole store (``/v1/occupancy``).

Read from the live state when the app has one (distributed mode), else, and
whenever the live state has nothing or does not answer, from storage.
"""
from __future__ import annotations

from ..deps import ApiContext, CameraDep, ContextDep, api_router
from ..models import NOT_FOUND, CameraOccupancyOut, OccupancyOut

router = api_router("occupancy", role='viewer')


def occupancy_of(ctx: ApiContext, camera_id: str) -> CameraOccupancyOut:
    """The latest occupancy of ``camera_id``: live state first, storage as the fallback."""
    st, last_seen = None, None
    if ctx.live is not None:
        try:
            st, last_seen = ctx.live.occupancy(camera_id), ctx.live.last_seen(camera_id)
        except Exception:  # live state unreachable: history still answers (readyz reports it)
            st, last_seen = None, None
    if st is None:
        st = ctx.storage.occupancy(camera_id)
    extra = {} if last_seen is None else {"last_seen_ts_ms": last_seen}
    if st is None:
        return CameraOccupancyOut(camera_id=camera_id, occupancy=0, total_in=0, total_out=0, ts_ms=0, **extra)
    return CameraOccupancyOut(camera_id=camera_id, occupancy=st.occupancy, total_in=st.total_in,
                              total_out=st.total_out, ts_ms=st.ts_ms, **extra)


@router.get("/v1/occupancy", response_model=OccupancyOut, response_model_exclude_none=True,
            summary="Live occupancy of the store")
def store_occupancy(ctx: ContextDep) -> OccupancyOut:
    per_camera = [occupancy_of(ctx, c.id) for c in ctx.config.cameras]
    return OccupancyOut(store_id=ctx.config.store.id, occupancy=sum(c.occupancy for c in per_camera),
                        cameras=per_camera)


@router.get("/v1/occupancy/{camera_id}", response_model=CameraOccupancyOut, response_model_exclude_none=True,
            responses=NOT_FOUND, summary="Live occupancy of one camera")
def camera_occupancy(ctx: ContextDep, camera: CameraDep) -> CameraOccupancyOut:
    return occupancy_of(ctx, camera.id)
