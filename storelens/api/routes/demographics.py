"""Demographics: tracks with faces by estimated age band, gender and dominant emotion (``/v1/demographics``)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Query

from storelens.domain.privacy import suppress_counts
from storelens.storage.schema import track_attributes

from ..deps import ContextDep, FromMs, Text, ToMs, api_router, check_range
from ..models import NOT_FOUND, DemographicsOut

router = api_router("demographics", role='viewer')


@router.get("/v1/demographics", response_model=DemographicsOut, responses=NOT_FOUND,
            summary="Age bands, gender and emotion of the tracks seen",
            description="Counts tracks with at least one face by estimated age band, gender and dominant "
            "emotion. A track is in the range when its last sighting is in [start_ms, end_ms). "
            "Estimates are per track (aggregated over its faces), never per image. k-anonymity: a band of "
            "1 to k_min-1 tracks (privacy.k_min, default 5) is withheld as null with `suppressed: true`, and "
            "when that withholds one band of a breakdown, its next smallest band is withheld too. A range of 1 "
            "to k_min-1 tracks in all has every band null, the empty ones too (`tracks` is shown).")
def demographics(
    ctx: ContextDep,
    camera_id: Annotated[Text | None, Query(max_length=200, description=(
        "Only this camera (also one removed from the site through /v1/site: its stored tracks)."))] = None,
    start_ms: FromMs = None,
    end_ms: ToMs = None,
) -> DemographicsOut:
    if camera_id is not None:
        ctx.history_camera(camera_id, track_attributes)  # 404 when neither configured nor stored
    check_range(start_ms, end_ms)
    out = ctx.storage.demographics(camera_id, start_ms, end_ms)
    k = ctx.config.privacy.k_min
    hidden = False
    for key in ("age", "gender", "emotion"):
        out[key], withheld = suppress_counts(out[key], k)
        hidden = hidden or withheld
    return DemographicsOut.model_validate({**out, "suppressed": hidden, "k_min": k})
