"""Track paths of one camera: boxes per frame in source pixels (``/v1/cameras/{camera_id}/tracks``)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Query

from ..deps import MAX_POINTS, CameraDep, EndMs, StartMs, StorageDep, api_router, resolve_range
from ..models import NOT_FOUND, TrackOut, TrackPointOut, TracksOut

router = api_router("tracks", role='manager')


@router.get("/v1/cameras/{camera_id}/tracks", response_model=TracksOut, responses=NOT_FOUND,
            summary="Track paths of one camera")
def tracks(
    camera: CameraDep,
    storage: StorageDep,
    start_ms: StartMs = 0,
    end_ms: EndMs = None,
    limit_points: Annotated[int, Query(ge=1, le=MAX_POINTS,
                                       description="Most points returned (the earliest ones).")] = 10_000,
) -> TracksOut:
    start, end = resolve_range(start_ms, end_ms)
    paths = storage.tracks(camera.id, start, end, limit_points=limit_points)
    return TracksOut(
        camera_id=camera.id,
        tracks=[
            TrackOut(track_id=p.track_id, points=[
                TrackPointOut(ts_ms=pt.ts_ms, seq=pt.seq, bbox_xyxy=pt.bbox_xyxy, confidence=pt.confidence)
                for pt in p.points
            ])
            for p in paths
        ],
    )
