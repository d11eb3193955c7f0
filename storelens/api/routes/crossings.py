"""Individual line-crossing events of one camera, in time order (``/v1/cameras/{camera_id}/crossings``)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Query

from ..deps import MAX_POINTS, CameraDep, EndMs, StartMs, StorageDep, api_router, resolve_range
from ..models import NOT_FOUND, CrossingOut

router = api_router("counts", role='manager')


@router.get("/v1/cameras/{camera_id}/crossings", response_model=list[CrossingOut], responses=NOT_FOUND,
            summary="Line crossings of one camera, in time order")
def crossings(
    camera: CameraDep,
    storage: StorageDep,
    start_ms: StartMs = 0,
    end_ms: EndMs = None,
    limit: Annotated[int, Query(ge=1, le=MAX_POINTS, description="Most events returned (the earliest).")]
    = 10_000,
) -> list[CrossingOut]:
    start, end = resolve_range(start_ms, end_ms)
    return [
        CrossingOut(event_id=e.event_id, line_id=e.line_id, track_id=e.track_id, direction=e.direction,
                    ts_ms=e.ts_ms, seq=e.seq)
        for e in storage.crossings(camera.id, start, end, limit=limit)
    ]
