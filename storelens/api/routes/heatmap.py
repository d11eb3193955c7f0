"""Heatmaps: per camera on its reference frame, store-wide on the floor plan (``/v1/cameras/{camera_id}/heatmap``,
``/v1/heatmap``); the reference frame itself (``/v1/cameras/{camera_id}/snapshot``).

Values are person-milliseconds per grid cell summed over the minutes starting in
``[start_ms, end_ms)`` (see :mod:`storelens.storage.heatmaps`): ``occupancy`` is the
time people stood in the cell, ``dwell`` the part of it they lingered (barely moving;
see :mod:`storelens.domain.heatmap`). ``format=png`` draws the grid over the camera's
reference frame (faces blurred) or the store plan.
"""
from __future__ import annotations

import pathlib
from typing import Annotated, Literal

import numpy as np
from fastapi import HTTPException, Query
from fastapi.responses import Response
from pydantic import Field

from storelens.domain.heatmap import cells_to_grid, fit_homography, plan_grid, walking_stats
from storelens.domain.heatmap_draw import decode_image, heatmap_png
from storelens.domain.privacy import is_suppressed
from storelens.storage import heatmaps as hm

from ..deps import MAX_TS_MS, CameraDep, ConfigDep, EndMs, StartMs, StorageDep, api_router, resolve_range
from ..models import NOT_FOUND, ErrorOut, _Out

router = api_router("heatmaps", role='viewer')

Kind = Annotated[Literal["occupancy", "dwell"], Query(description="occupancy: person-time per cell; "
                                                                  "dwell: the part of it spent lingering.")]
Format = Annotated[Literal["json", "png"], Query(description="json: the grid; png: drawn over the reference frame.")]
Walking = Annotated[bool, Query(description="json of a camera with a floor homography: compute `walking` (reads the "
                                            "range's track points, up to seconds); false: `walking` is null "
                                            "(the grid alone, as the dashboard's overlay asks).")]
PNG = {200: {"content": {"image/png": {}}, "description": "The heatmap (format=png) or the grid (format=json)."}}
JPEG = {200: {"content": {"image/jpeg": {}}, "description": "The reference frame (heads blurred), JPEG; headers "
              "X-Snapshot-Ts-Ms, X-Frame-Width, X-Frame-Height."},
        404: {"model": ErrorOut, "description": "Unknown camera, or no reference frame stored yet."}}
#: Track points read at a time for the walking statistics (a page of whole tracks).
WALK_POINTS = 100_000
#: Most track points the walking statistics of one request read (about 5 s of reading): past them the answer
#: says ``truncated`` and up to when the tracks that began are counted (a busy camera's 17 minutes hold 100,000).
MAX_WALK_POINTS = 500_000


class HeatmapCellOut(_Out):
    gx: int = Field(description="Column: x in [gx * cell_px, (gx + 1) * cell_px).")
    gy: int = Field(description="Row: y in [gy * cell_px, (gy + 1) * cell_px).")
    occupancy_ms: int
    dwell_ms: int


class WalkingOut(_Out):
    tracks: int = Field(description="Tracks seen walking for at least 1 s: a track's points up to its last one "
                                    "flagged stationary are left out (mannequins count nothing; a shopper flagged "
                                    "while standing still since their track appeared counts the walking after).")
    distance_m: float | None = Field(description="Total walked by the tracks; null: suppressed.")
    duration_s: float | None = Field(description="Total time of the tracks; null: suppressed.")
    mean_speed_m_s: float | None = Field(description="distance_m / duration_s; null without time, or suppressed.")
    suppressed: bool = Field(False, description="1 to k_min-1 tracks (privacy.k_min): distance, time and speed "
                                                "are withheld (they would be those of a few people).")
    covered_end_ms: int = Field(description="The statistics are over the tracks that began in [start_ms, "
                                            "covered_end_ms), whole within the range: end_ms unless truncated.")
    truncated: bool = Field(description=f"The range holds more track points than one answer reads "
                                        f"({MAX_WALK_POINTS:,}): the tracks that began from covered_end_ms on "
                                        f"are left out.")


class HeatmapOut(_Out):
    camera_id: str
    kind: str
    start_ms: int
    end_ms: int
    cell_px: int
    width: int = Field(description="Source frame width (px); the grid covers it.")
    height: int
    cols: int
    rows: int
    minutes: int = Field(description="Minutes with data in the range.")
    total_ms: int = Field(description="Sum of the kind over every cell (person-milliseconds).")
    cells: list[HeatmapCellOut] = Field(description="Cells with a non-zero value of the kind, row by row.")
    snapshot_ts_ms: int | None = Field(description="Time of the reference frame the PNG is drawn on.")
    walking: WalkingOut | None = Field(default=None, description=f"Walking on the floor (cameras with a floor "
                                                                 f"homography): every track of the range but "
                                                                 f"its stationary start, up to {MAX_WALK_POINTS:,} "
                                                                 f"points (see truncated); k-anonymous. Null "
                                                                 f"without one, or asked with walking=false.")


class PlanCellOut(_Out):
    gx: int
    gy: int
    x_m: float = Field(description="Centre of the plan cell on the floor (metres).")
    y_m: float
    value_ms: int


class PlanHeatmapOut(_Out):
    kind: str
    start_ms: int
    end_ms: int
    cell_m: float
    cell_px: int = Field(description="Plan pixels per cell.")
    width: int = Field(description="Plan image size (px).")
    height: int
    cameras: list[str] = Field(description="Cameras on the plan (with a floor homography).")
    total_ms: int
    cells: list[PlanCellOut]


def _png(data: bytes) -> Response:
    return Response(content=data, media_type="image/png")


@router.get("/v1/cameras/{camera_id}/heatmap", response_model=HeatmapOut,
            responses={**NOT_FOUND, **PNG}, summary="Heatmap of one camera")
def camera_heatmap(camera: CameraDep, storage: StorageDep, config: ConfigDep, start_ms: StartMs = 0,
                   end_ms: EndMs = None, kind: Kind = "occupancy", format: Format = "json",  # noqa: A002
                   walking: Walking = True):
    start, end = resolve_range(start_ms, end_ms)
    cells = hm.heatmap(storage, camera.id, start, end, cell_px=config.heatmap.cell_px)
    snap = hm.snapshot(storage, camera.id, at_ms=end)
    if cells is not None:
        cell_px, width, height = cells.cell_px, cells.width, cells.height
    elif snap is not None:
        cell_px, width, height = config.heatmap.cell_px, snap.width, snap.height
    else:
        cell_px, width, height = config.heatmap.cell_px, 0, 0
    values = cells.values(kind) if cells is not None else []
    if format == "png":
        if not width or not height:
            raise HTTPException(404, f"no heatmap and no reference frame of camera {camera.id!r} in the range")
        grid = cells_to_grid(values, width, height, cell_px)
        return _png(heatmap_png(grid, cell_px, width, height, snap.jpeg if snap is not None else None))
    walked = None
    if walking and camera.floor is not None:
        # mannequins count nowhere (README, "Stationary objects"), nor does a track's standing still before its
        # walking; a few people's figures are theirs (k_min over the tracks that walked)
        found = storage.track_pages(camera.id, start, end, page_points=WALK_POINTS, max_points=MAX_WALK_POINTS,
                                    skip_stationary=True)
        stats = walking_stats(fit_homography(camera.floor.points),
                              (([p.ts_ms for p in t.points], np.array([p.bbox_xyxy for p in t.points]))
                               for page in found.pages for t in page))
        hidden = is_suppressed(stats.tracks, config.privacy.k_min)
        walked = WalkingOut(tracks=stats.tracks, distance_m=None if hidden else round(stats.distance_m, 3),
                            duration_s=None if hidden else round(stats.duration_s, 3), mean_speed_m_s=None
                            if hidden or stats.mean_speed_m_s is None else round(stats.mean_speed_m_s, 3),
                            suppressed=hidden, covered_end_ms=found.covered_end_ms, truncated=found.truncated)
    keep = {(gx, gy) for gx, gy, _ in values}
    rows, cols = (cells_to_grid([], width, height, cell_px).shape if width and height else (0, 0))
    return HeatmapOut(
        camera_id=camera.id, kind=kind, start_ms=start, end_ms=end, cell_px=cell_px, width=width, height=height,
        cols=cols, rows=rows, minutes=cells.minutes if cells is not None else 0,
        total_ms=cells.total_ms(kind) if cells is not None else 0,
        cells=[HeatmapCellOut(gx=c[0], gy=c[1], occupancy_ms=c[2], dwell_ms=c[3])
               for c in (cells.cells if cells is not None else []) if (c[0], c[1]) in keep],
        snapshot_ts_ms=snap.ts_ms if snap is not None else None, walking=walked)


@router.get("/v1/cameras/{camera_id}/snapshot", response_class=Response, responses=JPEG,
            summary="Reference frame of one camera",
            description="The camera's stored reference frame (heads blurred, see heatmap.snapshot_every_min) "
                        "as JPEG: the latest taken before `at_ms` (default: the latest), else the earliest. "
                        "Lines and zones are in the pixels of this frame.")
def camera_snapshot(camera: CameraDep, storage: StorageDep, at_ms: Annotated[int | None, Query(
        ge=1, le=MAX_TS_MS, description="Latest frame taken before this time (ms since epoch).")] = None) -> Response:
    snap = hm.snapshot(storage, camera.id, at_ms=at_ms)
    if snap is None:
        raise HTTPException(404, f"no reference frame of camera {camera.id!r} is stored yet")
    return Response(content=snap.jpeg, media_type="image/jpeg",
                    headers={"X-Snapshot-Ts-Ms": str(snap.ts_ms), "X-Frame-Width": str(snap.width),
                             "X-Frame-Height": str(snap.height), "Cache-Control": "private, max-age=60"})


@router.get("/v1/heatmap", response_model=PlanHeatmapOut,
            responses={409: {"model": ErrorOut, "description": "No floor plan (or no camera on it) configured."},
                       **PNG},
            summary="Store-wide heatmap on the floor plan")
def plan_heatmap(storage: StorageDep, config: ConfigDep, start_ms: StartMs = 0, end_ms: EndMs = None,
                 kind: Kind = "occupancy", format: Format = "json"):  # noqa: A002
    start, end = resolve_range(start_ms, end_ms)
    plan = config.floor_plan
    if plan is None:
        raise HTTPException(409, "no floor plan is configured (floor_plan: in the site file)")
    on_plan = [c for c in config.cameras if c.floor is not None]
    if not on_plan:
        raise HTTPException(409, "no camera has a floor homography (cameras[].floor.points in the site file)")
    path = pathlib.Path(plan.image)
    image = decode_image(path.read_bytes()) if path.is_file() else None
    if image is None:
        raise HTTPException(409, f"the floor plan image {plan.image!r} cannot be read")
    height, width = image.shape[:2]
    cell_px = max(2, int(round(plan.cell_m * plan.px_per_m)))
    sources = []
    for cam in on_plan:
        cells = hm.heatmap(storage, cam.id, start, end, cell_px=config.heatmap.cell_px)
        if cells is not None:
            sources.append((fit_homography(cam.floor.points), cells.cell_px, cells.values(kind)))
    grid = plan_grid(sources, plan.px_per_m, plan.origin_px, (width, height), cell_px)
    if format == "png":
        return _png(heatmap_png(grid, cell_px, width, height, image))
    ox, oy = plan.origin_px
    ys, xs = np.nonzero(grid)
    return PlanHeatmapOut(
        kind=kind, start_ms=start, end_ms=end, cell_m=plan.cell_m, cell_px=cell_px, width=width, height=height,
        cameras=[c.id for c in on_plan], total_ms=int(grid.sum()),
        cells=[PlanCellOut(gx=int(x), gy=int(y), x_m=round(((x + 0.5) * cell_px - ox) / plan.px_per_m, 3),
                           y_m=round(((y + 0.5) * cell_px - oy) / plan.px_per_m, 3), value_ms=int(grid[y, x]))
               for y, x in zip(ys, xs)])
