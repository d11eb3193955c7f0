"""Demographics: tracks with faces by estimated age band, gender and dominant emotion (``/v1/demographics``)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Query

from ..deps import ContextDep, FromMs, ToMs, api_router, check_range
from ..models import NOT_FOUND, DemographicsOut

router = api_router("demographics")


@router.get("/v1/demographics", response_model=DemographicsOut, responses=NOT_FOUND,
            summary="Age bands, gender and emotion of the tracks seen",
            description="Counts tracks with at least one face by estimated age band, gender and dominant "
            "emotion. A track is in the range when its last sighting is in [start_ms, end_ms). "
            "Estimates are per track (aggregated over its faces), never per image.")
def demographics(
    ctx: ContextDep,
    camera_id: Annotated[str | None, Query(max_length=200, description="Only this camera.")] = None,
    start_ms: FromMs = None,
    end_ms: ToMs = None,
) -> DemographicsOut:
    if camera_id is not None:
        ctx.camera(camera_id)
    check_range(start_ms, end_ms)
    return DemographicsOut.model_validate(ctx.storage.demographics(camera_id, start_ms, end_ms))
