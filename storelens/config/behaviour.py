"""Site-file sections of the store-behaviour analytics: heatmaps and the floor plan, journeys, stationary objects.

Each section is a strict model with defaults, so a site file without it keeps working.
(Owners: heatmap/floor -> :mod:`storelens.domain.heatmap`; journeys -> :mod:`storelens.domain.journeys`;
stationary -> :mod:`storelens.domain.stationary`.)
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Sequence

from pydantic import ConfigDict, Field, ValidationInfo, model_validator

from storelens.config.base import FiniteFloat, Strict


class HeatmapConfig(Strict):
    """The ``heatmap:`` section: per-camera grids of track anchors, pre-aggregated per minute."""

    #: Per-camera heatmaps in the analytics stage (and reference frames in detect-track).
    enabled: bool = True
    #: Cell size in source pixels (changed across a restart: the open minutes and hour sum of the old grid are
    #: dropped, the rows written under it stay).
    cell_px: Annotated[int, Field(ge=2, le=512)] = 16
    #: Each frame counts for the time to the next frame, at most this (a gap in the video is not presence),
    #: or twice the camera's frame interval (``1000 / target_fps``) when that is longer: no need to raise it for
    #: a slowly sampled camera.
    max_gap_ms: Annotated[int, Field(ge=1, le=60_000)] = 1_000
    #: Dwell: a person lingers while the anchor moved less than this many of their own box
    #: heights per second over the last ``speed_window_ms`` (0.25 h/s ~ 0.4 m/s, a slow stroll is ~ 0.6 h/s).
    dwell_speed_h_per_s: Annotated[float, Field(ge=0, le=10)] = 0.25
    speed_window_ms: Annotated[int, Field(ge=100, le=10_000)] = 1_000
    #: Reference frame (faces blurred): the first frame of each camera, then every this many minutes (0: once).
    snapshot_every_min: Annotated[int, Field(ge=0, le=10_080)] = 60
    snapshot_jpeg_quality: Annotated[int, Field(ge=30, le=100)] = 80
    #: Besides every person's head region, also blur every face the face detector (``faces.detector``,
    #: at a low score threshold) finds in the reference frame: a person the detector missed is covered too.
    snapshot_blur_faces: bool = True


#: Relative tolerance of :func:`floor_homography`'s rank checks (singular values below it, of the largest, are 0).
_RANK_TOL = 1e-9


def floor_homography(pairs: Sequence[tuple[tuple[float, float], tuple[float, float]]]) -> Any:
    """3x3 homography (numpy) image pixel -> floor metres from >= 4 ``((u, v), (x_m, y_m))`` pairs (normalised DLT;
    :func:`storelens.domain.heatmap.fit_homography`). Raises ``ValueError`` when they do not determine one."""
    import numpy as np

    src = np.array([p[0] for p in pairs], np.float64)
    dst = np.array([p[1] for p in pairs], np.float64)
    if len(src) < 4:
        raise ValueError(f"a homography needs at least 4 point pairs, got {len(src)}")

    def norm(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = p.mean(axis=0)
        d = np.sqrt(((p - c) ** 2).sum(axis=1)).mean() or 1.0
        s = math.sqrt(2) / d
        T = np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1]])
        return (np.c_[p, np.ones(len(p))] @ T.T)[:, :2], T

    a, Ta = norm(src)
    b, Tb = norm(dst)
    rows = []
    for (u, v), (x, y) in zip(a, b):
        rows.append([-u, -v, -1, 0, 0, 0, x * u, x * v, x])
        rows.append([0, 0, 0, -u, -v, -1, y * u, y * v, y])
    _, sv, vt = np.linalg.svd(np.array(rows))
    Hn = vt[-1].reshape(3, 3)
    H = np.linalg.inv(Tb) @ Hn @ Ta
    # one homography: the 2n x 9 system has rank 8 (its 8th singular value, the last of 4 pairs' 8 x 9, is not 0:
    # three of four on one line leave more than one), and it maps the plane onto the plane (Hn not singular: three
    # image points on one line whose floor points are not, or the other way round, or a point given twice)
    hsv = np.linalg.svd(Hn, compute_uv=False)
    if abs(H[2, 2]) < 1e-12 or sv[7] <= _RANK_TOL * sv[0] or hsv[-1] <= _RANK_TOL * hsv[0]:
        raise ValueError("degenerate floor points: three of them on one line (in the image or on the floor), or a "
                         "point given twice")
    return H / H[2, 2]


#: Validation context key: :class:`CameraFloorConfig` takes points that determine no homography (the caller checks
#: them with :func:`floor_homography`).
FLOOR_UNCHECKED = "floor_unchecked"


class CameraFloorConfig(Strict):
    """A camera's homography onto the store plan: >= 4 pairs of image point -> floor point (metres)."""

    #: ``[[u, v], [x_m, y_m]]`` pairs: image pixel (source size) and the same point on the floor in metres.
    points: Annotated[list[tuple[tuple[FiniteFloat, FiniteFloat], tuple[FiniteFloat, FiniteFloat]]],
                      Field(min_length=4)]

    @model_validator(mode="after")
    def _determined(self, info: ValidationInfo) -> "CameraFloorConfig":
        """The pairs determine a homography (the heatmap routes map through it); not checked under
        :data:`FLOOR_UNCHECKED` (a stored site version's floor, checked apart: ``storelens.config.site``)."""
        if info.context and info.context.get(FLOOR_UNCHECKED):
            return self
        try:
            floor_homography(self.points)
        except ValueError as exc:
            raise ValueError(f"points: they determine no homography ({exc}): give 4 or more pairs, no three of the "
                             f"image points nor of the floor points on one line, no point twice") from None
        return self


class FloorPlanConfig(Strict):
    """The store plan image the cameras' floor homographies map onto."""

    #: Image file of the plan (relative to the site file).
    image: str
    #: Plan pixels per metre, and the plan pixel of the floor origin (0 m, 0 m).
    px_per_m: Annotated[float, Field(gt=0)]
    origin_px: tuple[FiniteFloat, FiniteFloat] = (0.0, 0.0)
    #: Cell size of the store-wide heatmap on the plan, in metres.
    cell_m: Annotated[float, Field(gt=0, le=10)] = 0.5


class JourneyLinkConfig(Strict):
    """Camera adjacency: a person last seen on ``from`` may next appear on ``to`` between ``min_s`` and ``max_s``
    later (measured from the end of the first track to the start of the next; negative when the views overlap).
    ``from`` = ``to`` links a camera's tracks to each other (a person lost and found again)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = Field(alias="from", min_length=1)
    target: str = Field(alias="to", min_length=1)
    min_s: float = 0.0
    max_s: float = 60.0
    #: The same window applies from ``to`` back to ``from``.
    both_ways: bool = False

    @model_validator(mode="after")
    def _window(self) -> "JourneyLinkConfig":
        if self.max_s < self.min_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= min_s ({self.min_s})")
        return self


class JourneysConfig(Strict):
    """The ``journeys:`` section: linking one person's tracks across cameras into a store visit."""

    enabled: bool = True
    #: Which camera a person can walk to from which, and how long that takes (see :class:`JourneyLinkConfig`).
    links: list[JourneyLinkConfig] = Field(default_factory=list)
    #: Smallest cosine similarity of two tracks' mean appearance embeddings for a link.
    min_similarity: Annotated[float, Field(ge=-1, le=1)] = 0.5
    #: A track unseen for this long has ended: its summary is sent.
    track_end_after_s: Annotated[float, Field(gt=0)] = 10.0
    #: Tracks seen in fewer frames are no one's journey (flicker, false detections).
    min_track_frames: Annotated[int, Field(ge=1)] = 5
    #: Longest store visit: how far around a queried range the linker looks for the rest of a journey.
    max_visit_s: Annotated[float, Field(gt=0)] = 4 * 3600.0
    #: Two tracks face-identified as one customer are linked whatever their appearance; as two customers, never.
    face_identity: bool = True


class StationaryConfig(Strict):
    """The ``stationary:`` section: tracks that never move (mannequins, standees) are not people.

    A track is stationary once it has stayed put for ``after_s`` since it
    appeared: its box centre within ``radius`` box heights of where it first
    was, its height within ``size_tolerance``. A track that has moved is never
    stationary again. Rules and trade-offs: :mod:`storelens.domain.stationary`.
    """

    enabled: bool = True
    #: Seconds a track must stay put, from its first frame, before it is flagged.
    after_s: Annotated[float, Field(ge=0.0)] = 3.0
    #: Largest drift of the box centre from its first position, in box heights.
    radius: Annotated[float, Field(gt=0.0, le=2.0)] = 0.15
    #: Largest relative change of the box height (a person walking towards the camera grows).
    size_tolerance: Annotated[float, Field(gt=0.0, le=2.0)] = 0.25
    #: Consecutive frames outside ``radius`` / ``size_tolerance`` that count as a move (1: any frame).
    move_frames: Annotated[int, Field(ge=1, le=100)] = 3
    #: IoU for "the same place": a new track id at the box of a lost track, or of a remembered stationary place.
    match_iou: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    #: Seconds a lost track is remembered, so that a new id for the same object continues its state.
    memory_s: Annotated[float, Field(ge=0.0)] = 10.0
    #: Remember where stationary objects were: a new track there is stationary at once (0: no place memory).
    #: A place is forgotten when unseen this many seconds, or when its object walks away.
    place_forget_s: Annotated[float, Field(ge=0.0)] = 3600.0
