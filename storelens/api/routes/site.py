"""Site editing without restarts (``/v1/site``): cameras, lines and zones, versioned in the database.

The site file (YAML) is version 0 and stays the bootstrap and import/export format
(``storelens site export`` / ``import``). Each change here is validated like the YAML (422 names
the field), saved as the next version of the whole ``cameras`` list (table ``site_versions``),
put in force in the API at once and in the running pipeline without a restart: the embedded
pipeline reads new versions from the database, the distributed analytics service from the
compacted ``site-config`` topic. Moving a line can re-derive its camera's stored history
(``rederive=true``: the replay of the stored frames with the new line).

A version stores (and publishes) the site as written: a ``${CAM_PASSWORD}`` in a camera source stays
a template, expanded by each process with its own environment when it puts the version in force
(:func:`~storelens.config.site.site_version_document`); an edit merges into the version in force as written.
An edit may name only the variables the site already names and those of ``api.site_env_allowlist``
(:func:`~storelens.config.site.check_edit_env`: 422 otherwise, whether or not the variable is set), so an
admin cannot have the processes expand another secret of their environment. A value sent back as answers
show it (``${NAME}`` where the site holds ``${NAME:-default}``, e.g. the dashboard's zone with only its polygon
moved) is the value the site holds there (:func:`~storelens.config.site.restore_masked`). Reading the site
is open to every role: answers show values written as templates as the templates (``${NAME}``, defaults dropped), never
what they expand to, and camera sources without credentials; changing it is for admins. Changes are in the
audit log (who moved which line) with the version they made.

Distributed, an edit the broker did not acknowledge answers 503: saved and in force in the API, not yet in the
pipeline; the API sends the newest version again until the broker has it
(:meth:`~storelens.api.deps.ApiContext.deliver_site`: at its start and every
:data:`~storelens.api.app.SITE_REDELIVER_S`), so do not repeat the edit.
"""
from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Callable

from fastapi import Depends, HTTPException, Path, Query
from pydantic import Field

from storelens.config import CameraConfig, LineConfig, ZoneConfig, with_cameras
from storelens.config.alerts import AlertRule
from storelens.config.base import check_storable
from storelens.config.cameras import redact_source
from storelens.config.site import check_edit_env, masked, restore_masked, site_version_document
from storelens.domain.geometry import polygon_in_frame, segment_in_frame
from storelens.errors import ConfigError
from storelens.storage import heatmaps as hm
from storelens.storage import site as sq

from ..deps import ApiContext, ContextDep, api_router, require_role
from ..models import ErrorOut, HTTPErrorWithFields, _Out
from ..security import Principal

log = logging.getLogger(__name__)

router = api_router("site", role="viewer")

Admin = Annotated[Principal, Depends(require_role("admin"))]
ItemId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]
BaseVersion = Annotated[int | None, Query(ge=0, le=2**53 - 1, description=(
    "The version this change is based on; 409 when the site has changed since (default: the version in force)."))]
Rederive = Annotated[bool, Query(description="Re-derive the camera's stored history with the new line "
                                 "(crossings, counts, zones ... from its stored frames).")]


class UndeliveredOut(ErrorOut):
    """503 of an edit saved but not yet delivered to the pipeline: the edit is done (do not repeat it)."""

    version: int = Field(description="The version this change saved (in force in the API).")
    camera: dict[str, Any] | None = Field(default=None, description="The camera after the change (a camera's "
                                          "edit; null: deleted, or an alert rule's edit).")


UNDELIVERED = {503: {"model": UndeliveredOut, "description": "Saved and in force in the API, not yet delivered to the "
                                                           "pipeline; it will be retried (do not repeat the edit). "
                                                           "`version`: the version saved."}}
ERRORS = {404: {"model": ErrorOut, "description": "Unknown camera, line or zone."},
          409: {"model": ErrorOut, "description": "The site changed since `base_version`; reload and retry."},
          **UNDELIVERED}


class SiteOut(_Out):
    version: int = Field(description="0: the site file; then one more per change through the API.")
    store_id: str
    timezone: str = Field(description="The store's IANA time zone (`store.timezone`): the dashboard shows every "
                                      "time in it, wherever the browser is.")
    cameras: list[dict[str, Any]] = Field(description="As in the site file (`cameras:`); sources without "
                                                      "credentials, values written with `${VAR}` as the template "
                                                      "(`${VAR}`, without its default), never its value.")
    alert_rules: list[dict[str, Any]] = Field(description="As in the site file (`alerts.rules:`), templates as "
                                                          "the cameras'.")
    zones_bucket_s: int = Field(description="The width of the stored zone statistics (`zones.bucket_s`): "
                                            "`/v1/zones/stats` takes bucket widths that are multiples of it.")


class SiteChangeOut(_Out):
    version: int = Field(description="The version this change made.")
    camera: dict[str, Any] | None = Field(description="The camera after the change (null: deleted).")
    rederived: dict[str, int] | None = Field(default=None, description="Records re-derived per kind "
                                                                       "(with `rederive=true`).")


def _public(cam: dict[str, Any]) -> dict[str, Any]:
    """A camera as written (:func:`site_version_document`) fit for any role: templates as ``${VAR}``, never their
    values, and the source without credentials."""
    d = masked(cam)
    d["source"] = redact_source(d["source"])  # rtsp://user:secret@host/...?password=... -> rtsp://host/...?password=***
    return d


@router.get("/v1/site", response_model=SiteOut, summary="The site in force: cameras, lines and zones")
def get_site(ctx: ContextDep) -> SiteOut:
    # the newest saved version, whichever replica saved it (one small query): the editor re-reads the site after a
    # save and edits on from it, so a copy up to SITE_CHECK_S old would show the geometry before the save
    try:
        ctx.refresh_site()
    except Exception:  # storage down: the site in force (a save needs the storage and answers the outage)
        log.warning("could not look for a newer site version", exc_info=True)
        ctx.metrics.count_error("site_refresh_failed")
    written = site_version_document(ctx.config)
    return SiteOut(version=ctx.site_version, store_id=ctx.config.store.id, timezone=ctx.config.store.timezone,
                   cameras=[_public(c) for c in written["cameras"]], alert_rules=masked(written["alert_rules"]),
                   zones_bucket_s=ctx.config.zones.bucket_s)


Doc = dict[str, Any]


def _save(ctx: ApiContext, principal: Principal, base_version: int | None,
          edit: Callable[[list[Doc], list[Doc]], tuple[list[Doc], list[Doc]]]
          ) -> tuple[int, Any, HTTPException | None]:
    """Apply ``edit`` to the site's (cameras, alert rules) as written (dicts, ``${VAR}`` templates unexpanded),
    validate the whole site (templates expanded with this process's environment), save it as written as the
    next version, put it in force and deliver it to the pipeline; ``(version, new config, undelivered)``:
    the 503 to raise once the rest of the request is done when the delivery failed."""
    if ctx.site_is_stale():
        ctx.refresh_site()
    base = ctx.site_version
    if base_version is not None and base_version != base:
        raise HTTPException(409, f"the site is at version {base}, not {base_version}: reload and retry")
    written = site_version_document(ctx.config)
    cams, rules = edit(written["cameras"], written["alert_rules"])
    try:
        # a value sent back as answers show it (${VAR}, its default dropped; a source's credentials removed or
        # ***) where the site holds it: as held; another source with *** is refused
        cams, rules = restore_masked(ctx.config, cams, rules)
        check_edit_env(ctx.config, cams, rules)  # before anything is expanded
        new = with_cameras(ctx.config, cams, origin="the site", alert_rules=rules)
    except ConfigError as e:
        raise HTTPException(422, str(e)) from None
    try:
        version = sq.save_site(ctx.storage, base, site_version_document(new), principal.name, int(time.time() * 1000))
    except ConfigError as e:  # text the database cannot store
        raise HTTPException(422, str(e)) from None
    if version is None:
        raise HTTPException(409, "the site changed meanwhile: reload and retry")
    ctx.set_site(version, new)
    try:
        ctx.deliver_site()
    except Exception:  # logged and counted; the app's chore sends it again
        return version, new, HTTPErrorWithFields(503, f"site version {version} saved, not yet delivered to the "
                                                      "pipeline; it will be retried", version=version)
    return version, new, None


def _change(ctx: ApiContext, principal: Principal, base_version: int | None, camera_id: str,
            edit: Callable[[Doc | None], Doc | None], rederive: bool = False) -> SiteChangeOut:
    """Apply ``edit`` to the camera as written (``None``: absent / delete it), validate the whole site, save
    the version."""
    changed: list[Doc | None] = []

    def edit_site(cams: list[Doc], rules: list[Doc]) -> tuple[list[Doc], list[Doc]]:
        index = next((i for i, c in enumerate(cams) if c["id"] == camera_id), None)
        changed.append(edit(cams[index] if index is not None else None))
        if changed[0] is None:
            cams.pop(index)  # edit() raised 404 when there was nothing to delete
        elif index is None:
            cams.append(changed[0])
        else:
            cams[index] = changed[0]
        return cams, rules

    version, new, undelivered = _save(ctx, principal, base_version, edit_site)
    out = _camera_change(ctx, new, version, camera_id, None if changed[0] is None else new.camera(camera_id),
                         rederive)
    if undelivered is not None:
        undelivered.fields["camera"] = out.camera
        raise undelivered
    return out


def _camera_change(ctx: ApiContext, new: Any, version: int, camera_id: str, changed: CameraConfig | None,
                   rederive: bool) -> SiteChangeOut:
    rederived = None
    if rederive and changed is not None:
        from storelens.storage.replay import replay

        rederived = {}
        for res in replay(new, ctx.storage, camera_ids=[camera_id]):
            for kind, n in res.counts.items():
                rederived[kind] = rederived.get(kind, 0) + n
    written = next((c for c in site_version_document(new)["cameras"] if c["id"] == camera_id), None)
    return SiteChangeOut(version=version, camera=None if changed is None or written is None else _public(written),
                         rederived=rederived)


def _camera(cam: Doc | None, camera_id: str) -> Doc:
    if cam is None:
        raise HTTPException(404, f"unknown camera {camera_id!r}")
    return cam


def _check_id(kind: str, path_id: str, body_id: str) -> None:
    if path_id != body_id:
        raise HTTPException(422, f"{kind}.id: {body_id!r} differs from the path's {path_id!r}")


def _check_in_frame(ctx: ApiContext, camera_id: str, line: LineConfig) -> None:
    """422 naming the field when ``line`` lies entirely outside the camera's frame (it would never count anybody),
    as far as the API knows that frame: the size of the camera's latest stored reference frame
    (``GET /v1/cameras/{id}/snapshot``); nothing is checked before one is stored."""
    snap = hm.snapshot(ctx.storage, camera_id)
    if snap is None or snap.width <= 0 or snap.height <= 0:
        return
    if not segment_in_frame(line.a, line.b, snap.width, snap.height):
        raise HTTPException(422, f"line.a, line.b: line {line.id!r} from {list(line.a)} to {list(line.b)} lies "
                                 f"entirely outside camera {camera_id!r}'s frame ({snap.width}x{snap.height} px, "
                                 "its reference frame): it would never count")


def _check_zone_in_frame(ctx: ApiContext, camera_id: str, zone: ZoneConfig) -> None:
    """422 naming the field when ``zone`` lies entirely outside the camera's frame (nobody would ever be in it), as
    :func:`_check_in_frame` checks a line."""
    snap = hm.snapshot(ctx.storage, camera_id)
    if snap is None or snap.width <= 0 or snap.height <= 0:
        return
    if not polygon_in_frame(zone.polygon, snap.width, snap.height):
        raise HTTPException(422, f"zone.polygon: zone {zone.id!r} lies entirely outside camera {camera_id!r}'s "
                                 f"frame ({snap.width}x{snap.height} px, its reference frame): nobody would ever "
                                 "be in it")


def _check_storable(kind: str, body: Any) -> Doc:
    """``body`` dumped (JSON types); 422 naming the field when a text anywhere in it (a key or a value) holds
    what the database cannot store (:func:`~storelens.config.base.check_storable`: NUL, a lone surrogate), before
    anything is saved (:func:`~storelens.storage.site.save_site` refuses such a version too)."""
    doc = body.model_dump(mode="json")
    try:
        check_storable(kind, doc)
    except ConfigError as e:
        raise HTTPException(422, str(e)) from None
    return doc


@router.put("/v1/site/cameras/{camera_id}", response_model=SiteChangeOut, responses=ERRORS,
            summary="Add or replace a camera (admin)")
def put_camera(ctx: ContextDep, principal: Admin, camera_id: ItemId, body: CameraConfig,
               base_version: BaseVersion = None) -> SiteChangeOut:
    _check_id("camera", camera_id, body.id)
    doc = _check_storable("camera", body)
    return _change(ctx, principal, base_version, camera_id, lambda _cam: doc)


@router.delete("/v1/site/cameras/{camera_id}", response_model=SiteChangeOut, responses=ERRORS,
               summary="Remove a camera (admin; its history stays)")
def delete_camera(ctx: ContextDep, principal: Admin, camera_id: ItemId,
                  base_version: BaseVersion = None) -> SiteChangeOut:
    def edit(cam: Doc | None) -> None:
        _camera(cam, camera_id)
        if len(ctx.config.cameras) == 1:
            raise HTTPException(422, "cameras: the site needs at least one camera")
    return _change(ctx, principal, base_version, camera_id, edit)


def _put_item(kind: str, cam: Doc, item: Any) -> Doc:
    items = list(cam[kind])
    index = next((i for i, x in enumerate(items) if x["id"] == item.id), None)
    if index is None:
        items.append(item.model_dump(mode="json"))
    else:
        items[index] = item.model_dump(mode="json")
    return {**cam, kind: items}


def _delete_item(kind: str, cam: Doc, item_id: str) -> Doc:
    items = [x for x in cam[kind] if x["id"] != item_id]
    if len(items) == len(cam[kind]):
        raise HTTPException(404, f"camera {cam['id']!r} has no {kind[:-1]} {item_id!r}")
    return {**cam, kind: items}


@router.put("/v1/site/cameras/{camera_id}/lines/{line_id}", response_model=SiteChangeOut, responses=ERRORS,
            summary="Add, change or move a counting line (admin)")
def put_line(ctx: ContextDep, principal: Admin, camera_id: ItemId, line_id: ItemId, body: LineConfig,
             base_version: BaseVersion = None, rederive: Rederive = False) -> SiteChangeOut:
    _check_id("line", line_id, body.id)
    _check_storable("line", body)
    _check_in_frame(ctx, camera_id, body)
    return _change(ctx, principal, base_version, camera_id,
                   lambda cam: _put_item("lines", _camera(cam, camera_id), body), rederive)


@router.delete("/v1/site/cameras/{camera_id}/lines/{line_id}", response_model=SiteChangeOut, responses=ERRORS,
               summary="Remove a counting line (admin; its history stays)")
def delete_line(ctx: ContextDep, principal: Admin, camera_id: ItemId, line_id: ItemId,
                base_version: BaseVersion = None) -> SiteChangeOut:
    return _change(ctx, principal, base_version, camera_id,
                   lambda cam: _delete_item("lines", _camera(cam, camera_id), line_id))


@router.put("/v1/site/cameras/{camera_id}/zones/{zone_id}", response_model=SiteChangeOut, responses=ERRORS,
            summary="Add or change a zone (admin)")
def put_zone(ctx: ContextDep, principal: Admin, camera_id: ItemId, zone_id: ItemId, body: ZoneConfig,
             base_version: BaseVersion = None, rederive: Rederive = False) -> SiteChangeOut:
    _check_id("zone", zone_id, body.id)
    _check_storable("zone", body)
    _check_zone_in_frame(ctx, camera_id, body)
    return _change(ctx, principal, base_version, camera_id,
                   lambda cam: _put_item("zones", _camera(cam, camera_id), body), rederive)


@router.delete("/v1/site/cameras/{camera_id}/zones/{zone_id}", response_model=SiteChangeOut, responses=ERRORS,
               summary="Remove a zone (admin; its history stays)")
def delete_zone(ctx: ContextDep, principal: Admin, camera_id: ItemId, zone_id: ItemId,
                base_version: BaseVersion = None) -> SiteChangeOut:
    return _change(ctx, principal, base_version, camera_id,
                   lambda cam: _delete_item("zones", _camera(cam, camera_id), zone_id))


# -- alert rules ------------------------------------------------------------------------------


class RuleChangeOut(_Out):
    version: int = Field(description="The version this change made.")
    rule: dict[str, Any] | None = Field(description="The rule after the change (null: deleted).")


RULE_ERRORS = {404: {"model": ErrorOut, "description": "Unknown rule."},
               409: {"model": ErrorOut, "description": "The site changed since `base_version`; reload and retry."},
               **UNDELIVERED}


@router.put("/v1/site/alerts/rules/{rule_id}", response_model=RuleChangeOut, responses=RULE_ERRORS,
            summary="Add or change an alert rule (admin)",
            description="The rule as in the site file's `alerts.rules` (its `kind` chooses the fields); validated "
                        "with the site (422 names the field, e.g. a camera or zone that does not exist); in force in "
                        "the running pipeline without a restart like the cameras' edits.")
def put_rule(ctx: ContextDep, principal: Admin, rule_id: ItemId, body: AlertRule,
             base_version: BaseVersion = None) -> RuleChangeOut:
    _check_id("rule", rule_id, body.id)
    _check_storable("rule", body)

    def edit(cams: list, rules: list) -> tuple[list, list]:
        index = next((i for i, r in enumerate(rules) if r["id"] == rule_id), None)
        rule = body.model_dump(mode="json")
        return cams, (rules + [rule] if index is None else [*rules[:index], rule, *rules[index + 1:]])

    version, _, undelivered = _save(ctx, principal, base_version, edit)
    if undelivered is not None:
        raise undelivered
    return RuleChangeOut(version=version, rule=body.model_dump(mode="json"))


@router.delete("/v1/site/alerts/rules/{rule_id}", response_model=RuleChangeOut, responses=RULE_ERRORS,
               summary="Remove an alert rule (admin; its alerts stay)")
def delete_rule(ctx: ContextDep, principal: Admin, rule_id: ItemId, base_version: BaseVersion = None) -> RuleChangeOut:
    def edit(cams: list, rules: list) -> tuple[list, list]:
        if not any(r["id"] == rule_id for r in rules):
            raise HTTPException(404, f"unknown alert rule {rule_id!r}")
        return cams, [r for r in rules if r["id"] != rule_id]

    version, _, undelivered = _save(ctx, principal, base_version, edit)
    if undelivered is not None:
        raise undelivered
    return RuleChangeOut(version=version, rule=None)
