"""Journeys: store visits across cameras (``/v1/journeys``), zone-to-zone flows (``/v1/flows``), top paths.

A journey is a chain of one person's tracks (linked across cameras by appearance,
camera adjacency and transit time, and the face identity; :mod:`storelens.domain.journeys`),
cut at each exit from the store. They are linked at query time from the stored track
summaries (:mod:`storelens.storage.journeys`), so ids are stable: ``"<track_id>@<camera_id>"``
of the journey's first track. A journey is in a range when it overlaps it. Staff journeys (a track
recognised as staff, ``staff_tracks``, within a day of it) are left out of every route, as staff are
out of the visitors of ``/v1/kpis``.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query
from pydantic import Field

from storelens.config import entrance_lines_of, journeys_of
from storelens.domain import journeys as dj
from storelens.domain.privacy import is_suppressed
from storelens.storage import journeys as jq
from storelens.storage.schema import track_summaries, zone_events
from storelens.storage.site import has_rows

from ..deps import MAX_TS_MS, ApiContext, ContextDep, EndMs, Text, api_router, check_range, require_role
from ..models import NOT_FOUND, _Out

router = api_router("journeys", role='viewer')

FromMs0 = Annotated[int, Query(ge=0, le=MAX_TS_MS, description="Range start (inclusive), ms since epoch.")]
CameraQ = Annotated[Text | None, Query(max_length=200, description=(
    "Only journeys through this camera (also one removed from the site through /v1/site: its stored tracks; 404 "
    "when neither configured nor stored)."))]
ZoneQ = Annotated[Text | None, Query(max_length=200, description=(
    "Only journeys that visited this zone id (configured, or in the stored zone events)."))]
#: Most stored tracks one journeys answer links (about 20 days of a busy camera; ~1.5 kB each in memory).
MAX_JOURNEY_TRACKS = 100_000


class StepOut(_Out):
    camera_id: str
    track_id: int
    zone_id: str | None = Field(None, description="Null: time on the camera outside any zone.")
    zone_kind: str | None = None
    enter_ms: int
    exit_ms: int


class LinkOut(_Out):
    from_camera_id: str
    from_track_id: int
    to_camera_id: str
    to_track_id: int
    how: str = Field(description="appearance | face")
    score: float = Field(description="Cosine similarity of the mean appearances (2.0: the face identity).")
    transit_ms: int


class AttributesOut(_Out):
    age_years: float | None = None
    gender: str | None = None


class JourneyOut(_Out):
    journey_id: str = Field(description="Visit id: '<track_id>@<camera_id>' of its first track.")
    start_ms: int
    end_ms: int
    dwell_ms: int = Field(description="Total time from the first to the last sighting.")
    cameras: list[str]
    entered: bool = Field(description="Began at an entrance 'in' (a store visit): a line of store.entrance_lines "
                                      "when set (else any line), or without one an entrance zone.")
    exited: bool = Field(description="Ended at an exit 'out' of an entrance line (or in an entrance zone).")
    customer_id: str | None = Field(None, description="When a track of the journey was face-identified.")
    attributes: AttributesOut
    path: list[StepOut]
    links: list[LinkOut]


class JourneysOut(_Out):
    start_ms: int
    end_ms: int
    total: int = Field(description="Journeys matching the filters (all pages).")
    limit: int
    offset: int
    journeys: list[JourneyOut]


class FlowOut(_Out):
    source: str = Field(description="Node: 'camera/zone', or the camera outside zones.")
    target: str
    count: int | None = Field(description="Journeys that made this step (each once, however often it made it). "
                                          "Never null: a step of fewer than k_min journeys is left out.")
    suppressed: bool = Field(False, description="Always false: a step of 1 to k_min-1 journeys is left out of "
                                                "links and nodes (FlowsOut.suppressed says one was).")


class FlowsOut(_Out):
    start_ms: int
    end_ms: int
    journeys: int = Field(description="Journeys that overlap the range (after the filters).")
    nodes: list[str] = Field(description="The nodes of the links listed.")
    links: list[FlowOut]
    suppressed: bool = Field(False, description="Links made by 1 to k_min-1 journeys were left out (withheld: "
                                                "naming them would show a few people's route).")


class PathCountOut(_Out):
    path: list[str] = Field(description="The nodes in order; empty when suppressed (a rare path would show one "
                                        "person's route).")
    count: int | None = Field(description="Journeys that took this path; null: suppressed (fewer than k_min).")
    share: float | None = Field(description="Of the journeys in the range (after the filters); null: suppressed.")
    suppressed: bool = Field(False, description="1 to k_min-1 journeys took this path: count and share withheld.")


class TopPathsOut(_Out):
    start_ms: int
    end_ms: int
    journeys: int
    paths: list[PathCountOut]


def journey_out(j: dj.Journey) -> JourneyOut:
    return JourneyOut(
        journey_id=j.journey_id, start_ms=j.first_ms, end_ms=j.last_ms, dwell_ms=j.dwell_ms, cameras=j.cameras,
        entered=j.entered, exited=j.exited, customer_id=j.customer_id,
        attributes=AttributesOut(**{k: v for k, v in j.attributes.items() if k in AttributesOut.model_fields}),
        path=[StepOut(camera_id=s.camera_id, track_id=s.track_id, zone_id=s.zone_id, zone_kind=s.zone_kind,
                      enter_ms=s.enter_ms, exit_ms=s.exit_ms) for s in j.path],
        links=[LinkOut(from_camera_id=ln.a[0], from_track_id=ln.a[1], to_camera_id=ln.b[0], to_track_id=ln.b[1],
                       how=ln.how, score=round(ln.score, 4), transit_ms=ln.transit_ms) for ln in j.links])


def _selected(ctx: ApiContext, start_ms: int, end_ms: int | None, camera_id: str | None,
              zone_id: str | None) -> tuple[int, list[dj.Journey]]:
    end = end_ms if end_ms is not None else MAX_TS_MS
    check_range(start_ms, end)
    if camera_id is not None:  # 404 unknown camera; one a site version removed keeps its stored journeys
        ctx.history_camera(camera_id, track_summaries)
    if zone_id is not None and not any(z.id == zone_id for c in ctx.config.cameras for z in c.zones
                                       if camera_id is None or c.id == camera_id) and not has_rows(
            ctx.storage, [zone_events], zone_id=zone_id, **({} if camera_id is None else {"camera_id": camera_id})):
        raise HTTPException(404, f"unknown zone {zone_id!r}")
    n = jq.count_tracks(ctx.storage, journeys_of(ctx.config), start_ms, end)
    if n > MAX_JOURNEY_TRACKS:  # each is read and linked in memory (with its appearance embedding)
        raise HTTPException(422, f"the range holds {n} stored tracks; at most {MAX_JOURNEY_TRACKS} are linked into "
                                 "journeys at once: narrow it (start_ms, end_ms)")
    out = jq.journeys(ctx.storage, journeys_of(ctx.config), start_ms, end, entrance_lines_of(ctx.config),
                      exclude_staff=True)  # staff are no customers (as in /v1/kpis, /v1/interest)
    if camera_id is not None:
        out = [j for j in out if any(t.camera_id == camera_id for t in j.tracks)]
    if zone_id is not None:  # a zone of the journey's path (its tracks' zone visits), on camera_id when given
        out = [j for j in out if any(v.zone_id == zone_id for t in j.tracks
                                     if camera_id is None or t.camera_id == camera_id for v in t.zones)]
    return end, out


@router.get("/v1/journeys", response_model=JourneysOut, responses=NOT_FOUND, dependencies=[Depends(require_role("manager"))],
            summary="Store visits across cameras (paged, by start time)",
            description="One row per visit (not an aggregate: each row is one person's path, so k-anonymity "
            "does not apply and the route is for roles that may see individual visits). The aggregates over "
            "visits are /v1/flows and /v1/paths/top, which withhold groups of fewer than k_min journeys. Staff "
            "are left out (a journey with a track recognised as staff within a day of it, as in /v1/kpis).")
def journey_list(ctx: ContextDep, start_ms: FromMs0 = 0, end_ms: EndMs = None, camera_id: CameraQ = None,
                 zone_id: ZoneQ = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> JourneysOut:
    with jq.gc_paused():  # a day's journeys: many objects, no cycles (see storelens.storage.journeys)
        end, found = _selected(ctx, start_ms, end_ms, camera_id, zone_id)
        out = JourneysOut(start_ms=start_ms, end_ms=end, total=len(found), limit=limit, offset=offset,
                          journeys=[journey_out(j) for j in found[offset:offset + limit]])
        del found  # freed by reference counting, before the collector is back
    return out


@router.get("/v1/journeys/{journey_id}", response_model=JourneyOut, responses=NOT_FOUND,
            dependencies=[Depends(require_role("manager"))],
            summary="One store visit")
# the pattern refuses NUL itself (Text's validator would drop the pattern from the OpenAPI schema)
def journey_one(ctx: ContextDep, journey_id: Annotated[str, Path(
        max_length=260, pattern=r"^-?[0-9]{1,19}@[^\x00]+$", description="'<track_id>@<camera_id>'")]) -> JourneyOut:
    key = dj.parse_journey_id(journey_id)
    if key is None:  # past the pattern: a track id outside 64 bits
        raise HTTPException(422, f"malformed journey id {journey_id!r}")
    j = jq.journey(ctx.storage, journeys_of(ctx.config), *key, entrance_lines=entrance_lines_of(ctx.config),
                   exclude_staff=True)
    if j is None:
        raise HTTPException(404, f"unknown journey {journey_id!r}")
    return journey_out(j)


@router.get("/v1/flows", response_model=FlowsOut, responses=NOT_FOUND,
            summary="Zone-to-zone transition counts of the journeys (Sankey links)",
            description="Steps between nodes (zones, or a camera outside its zones) over the journeys that "
            "overlap [start_ms, end_ms), at least min_count journeys each (a journey counts once per step, "
            "however often it made it). k-anonymity: a link made by 1 to k_min-1 journeys (privacy.k_min, "
            "default 5) is left out of `links` and `nodes` (its name would show a few people's route; over a "
            "range of one visit, that person's), and the answer says `suppressed: true`; min_count filters the "
            "counts shown, so it never brings a withheld link back. Journeys of staff (a track recognised as staff "
            "within a day of it: staff_only zone, uniform, staff face) are left out, as in /v1/kpis.")
def flow_list(ctx: ContextDep, start_ms: FromMs0 = 0, end_ms: EndMs = None, camera_id: CameraQ = None,
              zone_id: ZoneQ = None, min_count: Annotated[int, Query(ge=1)] = 1) -> FlowsOut:
    with jq.gc_paused():
        end, found = _selected(ctx, start_ms, end_ms, camera_id, zone_id)
        total, counts = len(found), dj.flows(found)
        del found
    k = ctx.config.privacy.k_min
    # Suppression first: a withheld link (1..k_min-1 journeys) is left out whatever min_count, so min_count only
    # filters the counts shown, and the names of a few people's steps (a route) are never in the answer.
    withheld = any(is_suppressed(n, k) for n in counts.values())
    links = sorted(((a, b, n) for (a, b), n in counts.items() if not is_suppressed(n, k) and n >= min_count),
                   key=lambda x: (-x[2], x[0], x[1]))
    nodes = sorted({x for a, b, _ in links for x in (a, b)})
    return FlowsOut(start_ms=start_ms, end_ms=end, journeys=total, nodes=nodes, suppressed=withheld,
                    links=[FlowOut(source=a, target=b, count=n) for a, b, n in links])


@router.get("/v1/paths/top", response_model=TopPathsOut, responses=NOT_FOUND,
            summary="The most frequent journey paths",
            description="The n most frequent paths (node sequences) of the journeys that overlap "
            "[start_ms, end_ms). k-anonymity: a path taken by 1 to k_min-1 journeys (privacy.k_min, default 5) "
            "has `count` and `share` null, an empty `path` and `suppressed: true`. Journeys of staff are left out "
            "(as in /v1/flows).")
def top_paths(ctx: ContextDep, start_ms: FromMs0 = 0, end_ms: EndMs = None, camera_id: CameraQ = None,
              zone_id: ZoneQ = None, n: Annotated[int, Query(ge=1, le=100)] = 10) -> TopPathsOut:
    with jq.gc_paused():
        end, found = _selected(ctx, start_ms, end_ms, camera_id, zone_id)
        total, top = len(found), dj.top_paths(found, n)
        del found
    k = ctx.config.privacy.k_min
    return TopPathsOut(start_ms=start_ms, end_ms=end, journeys=total,
                       paths=[PathCountOut(path=[], count=None, share=None, suppressed=True)
                              if is_suppressed(c, k) else PathCountOut(path=list(p), count=c, share=round(c / total, 4))
                              for p, c in top])
