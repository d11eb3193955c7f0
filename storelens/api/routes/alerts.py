"""Alerts of the site's rules (``/v1/alerts``): list, acknowledge, resolve.

Alerts are made by the analytics stage from the ``alerts:`` rules of the site file
(:mod:`storelens.config.alerts`) and stored by ``alert_id``; a person acknowledges one
(``ack``) or closes it (``resolve``) here (managers and admins; the signed-in name is recorded).
"""
from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Path, Query
from pydantic import Field

from storelens.storage import alerts as aq

from ..deps import ContextDep, FromMs, Text, ToMs, api_router, check_range, require_role
from ..security import Principal
from ..models import ErrorOut, _Out

router = api_router("alerts", role='viewer')

NOT_FOUND = {404: {"model": ErrorOut, "description": "Unknown alert."}}
AlertId = Annotated[Text, Path(min_length=1, max_length=300, description="The alert's id.")]


class AlertOut(_Out):
    alert_id: str
    rule_id: str
    kind: str = Field(description="camera_occupancy, zone_occupancy, queue_length, loitering, staff_only, "
                                  "store_occupancy, queue_wait, camera_down, camera_frozen, no_detections.")
    severity: Literal["info", "warning", "critical"] | str
    camera_id: str = Field(description="Empty for store-wide rules (store_occupancy).")
    zone_id: str | None
    state: Literal["firing", "resolved"]
    fired_ts_ms: int
    fired_seq: int
    ts_ms: int = Field(description="Time of the latest transition.")
    cleared_ts_ms: int | None = Field(description="When the condition ended (the stage resolved it).")
    value: float = Field(description="Measured value that fired the alert (kept when it resolves).")
    threshold: float
    message: str = Field(description="What fired it, e.g. `entrance: 8 people in view (max 5)`; once resolved "
                                     "followed by ` - resolved` (and why, e.g. `(rule removed)`).")
    acked_by: str | None
    acked_ts_ms: int | None
    resolved_by: str | None = Field(description="Who closed it by hand (null: not closed by hand).")
    resolved_ts_ms: int | None


class AlertsOut(_Out):
    total: int = Field(description="Alerts matching the filter (page on with offset += limit while offset < total).")
    offset: int
    limit: int
    firing: int = Field(description="Open alerts (state firing) that fired in [from_ms, to_ms) on camera_id, "
                                    "whatever `state`: the dashboard's badge (limit=1 reads it alone).")
    alerts: list[AlertOut]


@router.get(
    "/v1/alerts", response_model=AlertsOut, summary="Alerts, newest first",
    responses={404: {"model": ErrorOut, "description": "camera_id neither configured nor in any stored alert."}},
    description="Alerts that fired in [from_ms, to_ms), newest first, paged by limit/offset (`total` matching; "
                "`firing`: how many of those are open, whatever `state`). `state`: firing (open), resolved "
                "(by the stage when the condition ended, or by hand), acked / unacked, all. `camera_id`: a "
                "configured camera, or one with stored alerts (a removed camera's stay readable), else 404; empty: "
                "the store-wide alerts.")
def get_alerts(
    ctx: ContextDep,
    state: Annotated[aq.AlertFilter, Query(description="Filter.")] = "all",
    from_ms: FromMs = None,
    to_ms: ToMs = None,
    camera_id: Annotated[Text | None, Query(max_length=200, description="Only this camera.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> AlertsOut:
    check_range(from_ms, to_ms)
    # a camera neither configured nor in any stored alert (a removed camera's alerts stay readable): 404, not 0
    if camera_id and camera_id not in ctx.cameras and not aq.camera_has_alerts(ctx.storage, camera_id):
        raise HTTPException(404, f"unknown camera {camera_id!r}: not configured and in no stored alert")
    rows, total = aq.list_alerts(ctx.storage, state, from_ms, to_ms, camera_id, limit, offset)
    firing = total if state == "firing" else aq.count_alerts(ctx.storage, "firing", from_ms, to_ms, camera_id)
    return AlertsOut(total=total, offset=offset, limit=limit, firing=firing, alerts=[AlertOut(**r) for r in rows])


Manager = Annotated[Principal, Depends(require_role("manager"))]


def _act(ctx, fn, alert_id: str, by: str) -> AlertOut:
    row = fn(ctx.storage, alert_id, by, int(time.time() * 1000))
    if row is None:
        raise HTTPException(404, f"unknown alert {alert_id!r}")
    return AlertOut(**row)


@router.post("/v1/alerts/{alert_id}/ack", response_model=AlertOut, responses=NOT_FOUND,
             summary="Acknowledge an alert", description="Idempotent: the first acknowledgement is kept.")
def post_ack(ctx: ContextDep, alert_id: AlertId, principal: Manager) -> AlertOut:
    return _act(ctx, aq.acknowledge, alert_id, principal.name)


@router.post("/v1/alerts/{alert_id}/resolve", response_model=AlertOut, responses=NOT_FOUND,
             summary="Resolve (close) an alert by hand",
             description="Idempotent: the first resolution by hand is kept. The rule fires again only after the "
                         "condition ended and its cooldown passed (also across an embedded restart: the next run "
                         "takes the alert over while the condition goes on).")
def post_resolve(ctx: ContextDep, alert_id: AlertId, principal: Manager) -> AlertOut:
    return _act(ctx, aq.resolve, alert_id, principal.name)
